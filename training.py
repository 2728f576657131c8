"""A training run: the epoch loop (train), and the graph and session it calls.

train(settings) is fineturn.py's training mode: start(settings) opens the run dir, builds the
graph, loads the pretrained weights (or restores the last completed epoch) and, when it is exact,
fills the feature cache; then each epoch the Run it returns trains, validates and saves a
checkpoint, and the epoch's metrics row is recorded; at the end the best epoch is tested.

Full-graph mode reads images through tf.data into AlexNet from conv1. Cache mode computes the
frozen layers once per image and flip variant (the feature cache) and trains the layers above them
from fed feature batches. Both name their variables alike, draw the same batch order and flips,
and keep every layer in their checkpoints, so their checkpoints interchange.
"""
import collections
import math
import os
import signal
import sys
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import alexnet
import atomicfile
import checkpoints
import evaluation
import feature_cache
import graph
import netspec
import records
import report
import rundir
from console import log, warn
from errors import UserError
from rundir import RunError

tf1 = tf.compat.v1

EpochResult = collections.namedtuple('EpochResult', 'loss accuracy images_per_second '
                                                    'learning_rate')


def progress(total, desc):
    return tqdm(total=total, desc=desc, unit='img', leave=False, dynamic_ncols=True,
                disable=None, file=sys.stderr)


def lowest_trained(train_layers):
    return min(train_layers, key=netspec.LAYER_NAMES.index)


def cache_decision(settings, structure=netspec.BVLC_ALEXNET):
    """(use the cache?, why) for the log."""
    names = netspec.LAYER_NAMES
    boundary_layer = lowest_trained(settings.train_layers)
    frozen = names[:names.index(boundary_layer)]
    if not settings.cache:
        return False, 'feature cache off (--no-cache): full graph every step'
    if not frozen:
        return False, 'feature cache off: conv1 is trained, nothing below it is frozen'
    augment = 'flips as the only augmentation' if settings.flip else 'no augmentation'
    frozen_range = '-'.join((frozen[0], frozen[-1])) if len(frozen) > 1 else frozen[0]
    return True, ('feature cache on: %s frozen and %s, so %s (the input of %s) is computed once '
                  'per image%s' % (frozen_range, augment,
                                   structure.boundary(boundary_layer), boundary_layer,
                                   ' and flip variant' if settings.flip else ''))


def split_variants(settings):
    """{split: images per image it holds}: the flip variants of training images."""
    return {'train': records.FLIP_VARIANTS if settings.flip else 1, 'validation': 1, 'test': 1}


def cache_shapes(settings, counts, structure):
    """{split: the shape of its feature cache}: (images, variants, *the boundary's shape)."""
    shape = structure.boundary_shape(lowest_trained(settings.train_layers))
    return {split: (counts[split], variants) + shape
            for split, variants in split_variants(settings).items()}


def epoch_seed(seed, epoch):
    return seed * 1000003 + epoch


def read_pretrained(settings, classes):
    """The weights a new run starts from -> (Weights, None), or for a run started --init-from a
    checkpoint (Weights, (its prefix, the layers taken from it)): checkpoints.init_weights."""
    weights = alexnet.read_weights(settings.weights, allow_pickle=settings.allow_pickle)
    init = None
    if settings.init_from:
        prefix, weights, held = checkpoints.init_weights(
            settings.init_from, weights, classes, settings.skip_layers, settings.records_dir)
        init = prefix, held
    fc8 = weights.get('fc8', {}).get('weights')
    if 'fc8' not in settings.skip_layers and fc8 is not None and fc8.shape[-1] != len(classes):
        raise RunError('%s has %d classes in fc8 but labels.txt in %s has %d: add fc8 to '
                       '--skip-layers (SKIP_LAYERS in setting.py) to replace it'
                       % (settings.weights, fc8.shape[-1], settings.records_dir, len(classes)))
    return weights, init


def record_start(settings, init):
    """Record in the run dir where a run started --init-from begins (rundir.write_start) and say
    it in the log."""
    prefix, held = init
    epoch = checkpoints.epoch_of(prefix)
    row = next((row for row in rundir.read_metrics(os.path.dirname(prefix))
                if row['epoch'] == str(epoch)), None)
    accuracy = float(row['val_accuracy']) if row else None
    rundir.write_start(settings.run_dir, {
        'checkpoint': os.path.abspath(prefix), 'epoch': epoch, 'val_accuracy': accuracy,
        'layers': held, 'weights': os.path.abspath(settings.weights),
        'weights_digest': checkpoints.weights_digest(settings.weights, prefix)})
    return '%s from %s (--init-from%s)' % (
        ', '.join(held), prefix, ': epoch %d, val acc %.4f' % (epoch, accuracy) if row else '')


class TrainingGraph:
    """The graph of a run: the input pipelines, the classifier, its scores and the SGD step on the
    trained layers; in cache mode also the frozen layers (to extract features and to keep them in
    every checkpoint) and the classifier above them on fed feature batches."""

    def __init__(self, settings, structure, mean, train_count, cached):
        self.structure, self.cached = structure, cached
        self.boundary_layer = lowest_trained(settings.train_layers)
        self.variants = split_variants(settings)
        records_dir, side = settings.records_dir, structure.input_size
        self.graph = tf1.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(settings.seed)
            self.keep_prob = tf1.placeholder_with_default(tf.constant(1.0), [], 'keep_prob')
            self.epoch_seed = tf1.placeholder(tf.int64, [], 'epoch_seed')

            # one iterator, re-initialised per split: (images, labels, paths) batches
            self.iterator = tf1.data.Iterator.from_structure(
                (tf.float32, tf.int64, tf.string),
                (tf.TensorShape([None, side, side, 3]), tf.TensorShape([None]),
                 tf.TensorShape([None])))

            def initializer(dataset, batch):
                return self.iterator.make_initializer(
                    records.without_autotune(dataset.batch(batch).prefetch(2)))

            self.train_init = initializer(records.training_dataset(
                records_dir, train_count, self.epoch_seed, settings.flip, mean),
                settings.batch_size)
            self.eval_init = {split: initializer(records.make_dataset(records_dir, split, mean),
                                                 graph.EVAL_BATCH)
                              for split in ('validation', 'test')}
            images, self.iterator_labels, self.paths = self.iterator.get_next()

            if cached:
                self.features = graph.features(images, structure, self.boundary_layer)
                self.extract_init = {
                    split: initializer(records.variants_dataset(records_dir, split, variants,
                                                                mean),
                                       graph.EVAL_BATCH)
                    for split, variants in self.variants.items()}
                order = tf1.data.make_initializable_iterator(records.without_autotune(
                    records.training_order(train_count, self.epoch_seed, settings.flip)))
                self.order_init, self.order = order.initializer, order.get_next()
                self.labels = tf1.placeholder(tf.int64, [None], 'labels')
                self.inputs = tf1.placeholder(
                    tf.float32, (None,) + structure.boundary_shape(self.boundary_layer),
                    'features')
                logits, self.probabilities = graph.classifier(
                    self.inputs, structure, self.keep_prob, start=self.boundary_layer)
            else:
                self.labels = self.iterator_labels
                logits, self.probabilities = graph.classifier(images, structure, self.keep_prob)

            self.scores = graph.scores(logits, self.labels)
            self.train_op, self.learning_rate = graph.train_op(
                self.scores.mean_loss, self.graph, math.ceil(train_count / settings.batch_size),
                settings.train_layers, settings.learning_rate, settings.lr_decay,
                settings.weight_decay, settings.lr_mult)
            layers = alexnet.graph_layers(self.graph)
            self.others_init = tf1.variables_initializer(
                [v for v in tf1.global_variables() if v.op.name.split('/')[0] not in layers])
            self.saver = tf1.train.Saver(max_to_keep=None)
            self.graph.finalize()


def start(settings):
    """Open the run of `settings`: its inputs, its run dir (resuming after its completed epochs)
    and its graph and session, ready to train -> Run."""
    log('settings: ' + ', '.join('%s=%s' % item for item in settings.saved().items()))
    classes, counts = records.read_inputs(settings.records_dir)
    log('data: %d classes; %d train, %d validation, %d test images in %s'
        % (len(classes), counts['train'], counts['validation'], counts['test'],
           settings.records_dir))
    lock, rows = rundir.open_run(settings, log)
    try:
        if rows:   # resuming: the checkpoints hold the weights, the run dir the model
            starting = None
            description = recorded_model(settings.run_dir, classes, settings.records_dir)
        else:
            starting = read_pretrained(settings, classes)
            weights = starting[0]
            description = rundir.Model(classes, weights.structure.with_classes(len(classes)),
                                       weights.mean)
        rundir.write_model(settings.run_dir, description)
        cached, why = cache_decision(settings, description.structure)
        cache_size = sum(feature_cache.file_size(shape) for shape in cache_shapes(
            settings, counts, description.structure).values()) if cached else 0
        warning = checkpoints.space_warning(settings.run_dir, settings.epochs,
                                            settings.keep_checkpoints, len(rows),
                                            checkpoints.size(len(classes)), cache_size)
        if warning:
            warn(warning)
        log(why)
        return Run(settings, description, counts, rows, starting, cached, lock)
    except BaseException:
        lock.release()
        raise


def recorded_model(run_dir, classes, records_dir):
    """The model a run dir records; a RunError if its classes are not those of the records."""
    recorded = rundir.recorded_model(run_dir, classes)
    if recorded.classes != classes:
        raise RunError('%s was trained on other classes than labels.txt in %s lists (%d then, %d '
                       'now): use a new --run-dir, or the records it was trained on'
                       % (run_dir, records_dir, len(recorded.classes), len(classes)))
    return recorded


class Run:
    """A run's session: train an epoch, validate, save, log scalars, test the best epoch. It holds
    the run dir's lock (`lock`, from rundir.open_run) until it closes."""

    def __init__(self, settings, description, counts, rows, starting, cached, lock):
        self.settings, self.counts, self.rows = settings, counts, rows
        self.classes = description.classes
        self.lock, self.writer, self.session = lock, None, None
        self.model = TrainingGraph(settings, description.structure, description.mean,
                                   counts['train'], cached)
        run_dir = settings.run_dir
        try:
            # (the TF1 writer refuses to be made eagerly)
            with self.model.graph.as_default(), atomicfile.writing(
                    run_dir, 'the TensorBoard events in', also=(tf.errors.OpError,)):
                self.writer = tf1.summary.FileWriter(run_dir,
                                                     self.model.graph if not rows else None)
            self.session = tf1.Session(graph=self.model.graph)
            if rows:
                self.rows = checkpoints.resume(
                    run_dir, rows, lambda prefix: checkpoints.restore_or_why(
                        self.session, self.model.saver, prefix), warn)
            done = len(self.rows)
            if done:
                log('resuming %s after epoch %d of %d (from %s)' % (
                    run_dir, done, settings.epochs, checkpoints.path(run_dir, done)))
            else:
                weights, init = starting or read_pretrained(settings, self.classes)
                loaded = alexnet.load_weights(self.session, weights,
                                              skip_layers=settings.skip_layers,
                                              source=settings.weights)
                self.session.run(self.model.others_init)
                sources = [record_start(settings, init)] if init else []
                rest = [name for name in loaded if name not in (init[1] if init else [])]
                if rest:
                    sources.append('%s from %s' % (', '.join(rest), settings.weights))
                log('loaded %s; initialised %s from Caffe\'s fillers; training %s'
                    % ('; '.join(sources) or 'nothing', ', '.join(settings.skip_layers) or
                       'nothing', ', '.join(settings.train_layers)))
            self.cache = self._feature_cache() if cached else None
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        try:
            self.close()
        except UserError:
            if kind is None:
                raise                 # else the error that ended the run is the one to report

    def close(self):
        """Flush the TensorBoard events, close the session, give the run dir back."""
        try:
            if self.writer is not None:
                with atomicfile.writing(self.settings.run_dir, 'the TensorBoard events in',
                                        also=(tf.errors.OpError,)):
                    self.writer.close()
        finally:
            if self.session is not None:
                self.session.close()
            self.lock.release()

    # -- the epoch ---------------------------------------------------------------------------
    def train_epoch(self, epoch, interrupt):
        """Train one epoch -> EpochResult, or None if `interrupt.requested` stopped it."""
        session, model, settings = self.session, self.model, self.settings
        count, batch = self.counts['train'], settings.batch_size
        seed = epoch_seed(settings.seed, epoch)
        learning_rate = session.run(model.learning_rate)
        totals = np.zeros(3)
        started = time.time()
        if self.cache is None:
            session.run(model.train_init, {model.epoch_seed: seed})
            feeds = iter(lambda: {model.keep_prob: settings.keep_prob}, None)
        else:
            features, labels = self.cache['train'][0], self.cache['train'][1]
            order, variants = self._training_order(seed)
            feeds = ({model.inputs: features[order[i:i + batch], variants[i:i + batch]],
                      model.labels: labels[order[i:i + batch]],
                      model.keep_prob: settings.keep_prob} for i in range(0, count, batch))
        fetches = [model.train_op, model.scores.loss_sum, model.scores.correct, model.scores.count]
        with progress(count, 'epoch %d/%d' % (epoch, settings.epochs)) as bar, \
                records.reading(settings.records_dir, 'train'):
            for step, feed in enumerate(feeds, start=1):
                try:
                    _, loss_sum, correct, seen = session.run(fetches, feed)
                except tf.errors.OutOfRangeError:
                    break
                if not np.isfinite(loss_sum):
                    raise RunError('the training loss became %s at epoch %d, step %d: lower '
                                   '--learning-rate (now %g) or check the weights file'
                                   % (loss_sum, epoch, step, settings.learning_rate))
                totals += (loss_sum, correct, seen)
                bar.update(seen)
                bar.set_postfix(loss='%.3f' % (totals[0] / totals[2]),
                                img_s='%.0f' % (totals[2] / (time.time() - started)))
                if interrupt.requested:
                    return None
        if totals[2] != count:
            raise RunError('epoch %d saw %d training images, the records hold %d'
                           % (epoch, totals[2], count))
        return EpochResult(totals[0] / totals[2], totals[1] / totals[2],
                           totals[2] / (time.time() - started), learning_rate)

    def _training_order(self, seed):
        """The cache path's (order, variants) for an epoch: the full graph's shuffle, on indices."""
        self.session.run(self.model.order_init, {self.model.epoch_seed: seed})
        (positions, variants), indices = self.session.run(self.model.order)
        order, drawn = np.empty_like(indices), np.empty_like(variants)
        order[positions], drawn[positions] = indices, variants
        return order, drawn

    def evaluate(self, split):
        """graph.Evaluation over every image of `split`."""
        model = self.model
        fetches = [model.scores.loss_sum, model.scores.correct, model.probabilities]
        if self.cache is None:
            with records.reading(self.settings.records_dir, split):
                self.session.run(model.eval_init[split])
                results = graph.batches(self.session, fetches + [model.labels, model.paths])
        else:
            features, labels, paths = self.cache[split]
            results = []
            for i in range(0, len(labels), graph.EVAL_BATCH):
                part = slice(i, i + graph.EVAL_BATCH)
                results.append(self.session.run(fetches, {model.inputs: features[part, 0],
                                                          model.labels: labels[part]})
                               + [labels[part], paths[part]])
        result = graph.summarize(results)
        if result is None:
            raise RunError('no %s images in %s' % (split, self.settings.records_dir))
        return result

    def validate(self, epoch):
        """The validation split's graph.Evaluation after `epoch`; a RunError if it diverged."""
        result = self.evaluate('validation')
        if not math.isfinite(result.loss):
            raise RunError('the validation loss became %s after epoch %d: lower --learning-rate '
                           '(now %g)' % (result.loss, epoch, self.settings.learning_rate))
        return result

    def save(self, epoch):
        """Save the checkpoint of `epoch`. If that fails (a full disk: TensorFlow's own errors
        become a WriteError), the epoch's files and TensorFlow's temporary files are removed."""
        run_dir = self.settings.run_dir
        prefix = checkpoints.path(run_dir, epoch)
        with atomicfile.writing(prefix, 'the checkpoint of epoch %d' % epoch,
                                needed=checkpoints.size(len(self.classes)),
                                also=(tf.errors.OpError,)):
            try:
                with self.model.graph.as_default():   # a Saver outside its graph works eagerly
                    self.model.saver.save(self.session, prefix, write_meta_graph=True,
                                          write_state=True)
            except BaseException:
                checkpoints.remove(run_dir, epoch)
                atomicfile.remove_orphans(run_dir, held=True)   # ours alone: we hold the run dir
                raise

    def record(self, epoch, trained, validated, seconds):
        """Record the metrics row of `epoch` (saved) in metrics.csv, then prune old checkpoints."""
        run_dir = self.settings.run_dir
        self.rows.append(rundir.metrics_row(
            epoch, trained.loss, trained.accuracy, validated.loss, validated.accuracy,
            trained.learning_rate, seconds, checkpoints.path(run_dir, epoch)))
        checkpoints.record_epoch(run_dir, self.rows, self.settings.keep_checkpoints)

    def log_scalars(self, epoch, values):
        """TensorBoard scalars of an epoch: {tag: value}."""
        self.writer.add_summary(tf1.Summary(value=[
            tf1.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()]), epoch)
        with atomicfile.writing(self.settings.run_dir, 'the TensorBoard events in',
                                also=(tf.errors.OpError,)):
            self.writer.flush()

    def test(self, best):
        """Restore the epoch of metrics row `best` and write the test report and the curves."""
        run_dir = self.settings.run_dir
        checkpoint = checkpoints.path(run_dir, int(best['epoch']))
        checkpoints.restore(self.session, self.model.saver, checkpoint)
        result = evaluation.write_test_report(run_dir, self.classes, self.evaluate('test'),
                                              checkpoint)
        report.plot_curves(os.path.join(run_dir, 'curves.png'), self.rows)
        return result

    # -- the feature cache -------------------------------------------------------------------
    def _feature_cache(self):
        """The feature cache for every split: loaded if a matching, intact one exists, else
        computed (a damaged one is reported and computed again)."""
        settings, model = self.settings, self.model
        structure = model.structure
        below = structure.names[:structure.index(model.boundary_layer)]
        random_below = sorted(set(settings.skip_layers) & set(below))
        cache_dir = os.path.join(settings.run_dir, rundir.CACHE_DIR)
        cache, files = {}, []
        # the frozen layers' values: from --weights, or from the checkpoint of --init-from
        weights = (rundir.read_start(settings.run_dir)['weights_digest'] if settings.init_from
                   else checkpoints.weights_digest(settings.weights))
        for split, shape in cache_shapes(settings, self.counts, structure).items():
            key = feature_cache.cache_key(records.record_files(settings.records_dir, split),
                                          weights=weights, boundary=model.boundary_layer,
                                          variants=shape[1], random_layers=random_below,
                                          seed=settings.seed if random_below else None)
            files.append(feature_cache.path(cache_dir, split, key))
            try:
                cache[split] = feature_cache.load(cache_dir, split, key, shape,
                                                  settings.cache_ram_gb)
            except feature_cache.DamagedCacheError as error:
                warn('%s: recomputing' % error)
                cache[split] = None
            if cache[split] is None:
                cache[split] = feature_cache.write(
                    cache_dir, split, key, shape, self._extract(split, shape[1], shape[2:]),
                    settings.cache_ram_gb)
        feature_cache.remove_stale(cache_dir, files)
        return cache

    def _extract(self, split, variants, shape):
        """Yield (features [n, variants, ...], labels, paths) batches of `split`'s images."""
        model = self.model
        self.session.run(model.extract_init[split])
        with progress(self.counts[split] * variants, 'features %s' % split) as bar, \
                records.reading(self.settings.records_dir, split):
            while True:
                try:
                    features, labels, paths = self.session.run(
                        [model.features, model.iterator_labels, model.paths])
                except tf.errors.OutOfRangeError:
                    return
                bar.update(len(features))
                yield (features.reshape((-1, variants) + shape), labels[::variants],
                       paths[::variants])


# --- the epoch loop ------------------------------------------------------------------------------

class Interrupt:
    """First Ctrl-C: stop after the current step. Second: stop now."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print('\nstopping after this step (Ctrl-C again to stop now)', file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def train(settings):
    """Train a run of `settings`: an epoch at a time, train, validate, save, record, log; then
    test the best epoch. Returns the exit status."""
    with start(settings) as run:
        return epochs(settings, run)


def epochs(settings, run):
    """The epoch loop on a Run, from the epoch after its last completed one."""
    with Interrupt() as interrupt:
        for epoch in range(len(run.rows) + 1, settings.epochs + 1):
            started = time.time()
            trained = run.train_epoch(epoch, interrupt)
            if trained is None:
                log('interrupted during epoch %d: nothing of it was saved. Rerun the same command '
                    'to resume after epoch %d.' % (epoch, epoch - 1))
                return 130
            validated = run.validate(epoch)
            run.save(epoch)
            run.record(epoch, trained, validated, time.time() - started)
            run.log_scalars(epoch, {'loss/train': trained.loss, 'loss/validation': validated.loss,
                                    'accuracy/train': trained.accuracy,
                                    'accuracy/validation': validated.accuracy,
                                    'learning_rate': trained.learning_rate})
            log('epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | '
                '%.0f img/s | %.1f s' % (epoch, settings.epochs, trained.loss, trained.accuracy,
                                          validated.loss, validated.accuracy,
                                          trained.learning_rate, trained.images_per_second,
                                          time.time() - started))
            if interrupt.requested:
                log('stopped after epoch %d. Rerun the same command to resume.' % epoch)
                return 130
    best = checkpoints.write_best(settings.run_dir, run.rows)
    result = run.test(best)
    log(' * best epoch %d (val acc %.4f)  test Acc@1 %.4f (%d/%d)  report: %s'
        % (int(best['epoch']), float(best['val_accuracy']), result['accuracy'], result['correct'],
           result['total'], os.path.join(settings.run_dir, 'test_report.md')))
    return 0
