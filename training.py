"""A training run: the epoch loop (train), and the graph and session it calls.

train(settings) is fineturn.py's training mode: start(settings) opens the run dir, builds the
graph, loads the pretrained weights (or restores the last completed epoch) and, when it is exact,
reads the frozen features from the feature store (computing what it lacks); then each epoch the
Run it returns trains, validates and saves a checkpoint, and the epoch's metrics row is recorded;
at the end the best epoch is tested.

A run's images are its parts, train, validation and test, as positions in its records folder's
pool (records.py): the records' own splits, or a protocol split's (train(settings, parts),
protocol_run.py). Without a validation part (a protocol's VAL = 0) the epochs are not validated
and the last one is tested.

Full-graph mode reads images through tf.data into AlexNet from conv1. Cache mode reads the frozen
layers' output, once per image and flip variant, from the feature store (frozen_features.py) and
trains the layers above them from fed feature batches. Both name their variables alike, draw the
same batch order and flips, and keep every layer in their checkpoints, so their checkpoints
interchange.
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
import frozen_features
import graph
import netspec
import records
import report
import rundir
import splits
from console import log, warn
from errors import UserError
from rundir import RunError

tf1 = tf.compat.v1

EpochResult = collections.namedtuple('EpochResult', 'loss accuracy images_per_second '
                                                    'learning_rate')


def progress(total, desc):
    return tqdm(total=total, desc=desc, unit='img', leave=False, dynamic_ncols=True,
                disable=None, file=sys.stderr)


def read_features(store, digests, extract, settings):
    """frozen_features.load of the pool `digests` from `store`, what is missing computed by
    `extract`, with a progress bar; memory-mapped above --cache-ram-gb from the run dir."""
    with progress(len(store.missing(digests)), 'features') as bar:
        return frozen_features.load(store, digests, extract, bar.update, settings.cache_ram_gb,
                                    settings.run_dir, log)


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
                  'per image%s, in the feature store %s'
                  % (frozen_range, augment, structure.boundary(boundary_layer), boundary_layer,
                     ' and flip variant' if settings.flip else '', settings.feature_store))


def store_variants(settings):
    """The flip variants the feature store holds for a fine-tuning run: those it trains on."""
    return tuple(range(records.FLIP_VARIANTS)) if settings.flip else (0,)


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
    # (a run without a validation part leaves the column empty)
    accuracy = float(row['val_accuracy']) if row and row['val_accuracy'] else None
    rundir.write_start(settings.run_dir, {
        'checkpoint': os.path.abspath(prefix), 'epoch': epoch, 'val_accuracy': accuracy,
        'layers': held, 'weights': os.path.abspath(settings.weights),
        'weights_digest': frozen_features.source_digest(
            settings.weights, [prefix + suffix for suffix in checkpoints.SUFFIXES[:2]])})
    return '%s from %s (--init-from: epoch %d%s)' % (
        ', '.join(held), prefix, epoch,
        ', val acc %.4f' % accuracy if accuracy is not None else '')


def start_from(settings, classes):
    """The weights a new run starts from -> (Weights, None), or for a run started --init-from
    (Weights, (the log's words for where its layers came from, the layers taken from the
    checkpoint)): read_pretrained, recorded in the run dir (record_start) before the feature store
    is keyed by it (frozen_features.frozen_source_digest).
    """
    weights, init = read_pretrained(settings, classes)
    return weights, ((record_start(settings, init), init[1]) if init else None)


class TrainingGraph:
    """The graph of a run: the classifier, its scores and the SGD step on the trained layers; in
    full-graph mode the input pipelines of the run's parts (positions in the pool, `parts`); in
    cache mode the frozen layers' extraction (to fill the feature store, and to keep them in every
    checkpoint) and the classifier above them on fed feature batches."""

    def __init__(self, settings, structure, mean, parts, cached):
        self.structure, self.cached = structure, cached
        self.boundary_layer = lowest_trained(settings.train_layers)
        records_dir, side = settings.records_dir, structure.input_size
        counts = records.split_counts(records_dir)
        train_count = len(parts['train'])
        self.graph = tf1.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(settings.seed)
            self.keep_prob = tf1.placeholder_with_default(tf.constant(1.0), [], 'keep_prob')
            self.epoch_seed = tf1.placeholder(tf.int64, [], 'epoch_seed')
            if cached:
                self.extractor = graph.FeatureExtractor(
                    records_dir, sum(counts.values()), mean, structure, self.boundary_layer,
                    store_variants(settings))
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
                # one iterator, re-initialised per part: (images, labels, paths) batches
                iterator = tf1.data.Iterator.from_structure(
                    (tf.float32, tf.int64, tf.string),
                    (tf.TensorShape([None, side, side, 3]), tf.TensorShape([None]),
                     tf.TensorShape([None])))

                def initializer(dataset, batch):
                    return iterator.make_initializer(
                        records.without_autotune(dataset.batch(batch).prefetch(2)))

                self.train_init = initializer(records.training_dataset(
                    records_dir, parts['train'], self.epoch_seed, settings.flip, mean, counts),
                    settings.batch_size)
                self.eval_init = {part: initializer(records.part_dataset(
                    records_dir, parts[part], mean, counts=counts), graph.EVAL_BATCH)
                    for part in ('validation', 'test') if len(parts[part])}
                images, self.labels, self.paths = iterator.get_next()
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


def prepare(settings, parts=None, split_rows=None):
    """What every run does first: log its settings and data, own its run dir (resuming after its
    completed epochs), and record its model -> Prepared. `parts`: {part: positions in the pool}
    (a protocol's split, whose (path, label, part) `split_rows` go to the run dir's split.csv),
    or None for the records' own splits."""
    log('settings: ' + ', '.join('%s=%s' % item for item in settings.saved().items()))
    records_dir = settings.records_dir
    if parts is None:
        classes, counts = records.read_inputs(records_dir)
        parts = records.own_parts(records_dir, counts)
        log('data: %d classes; %d train, %d validation, %d test images in %s'
            % (len(classes), counts['train'], counts['validation'], counts['test'], records_dir))
    else:
        classes = records.read_labels(records_dir)
        log('data: %d classes; %d train, %d validation, %d test images of the %d in %s'
            % (len(classes), len(parts['train']), len(parts['validation']), len(parts['test']),
               sum(records.split_counts(records_dir).values()), records_dir))
    parts = {part: np.asarray(positions, np.int64) for part, positions in parts.items()}
    lock, rows = rundir.open_run(settings, log)
    try:
        if split_rows is not None:
            splits.write_split(os.path.join(settings.run_dir, splits.SPLIT_FILE), split_rows)
        if rows:   # resuming: the checkpoints hold the weights, the run dir the model
            weights, started = None, None
            description = recorded_model(settings.run_dir, classes, records_dir)
        else:
            weights, started = start_from(settings, classes)
            description = rundir.Model(classes, weights.structure.with_classes(len(classes)),
                                       weights.mean)
        rundir.write_model(settings.run_dir, description)
    except BaseException:
        lock.release()
        raise
    return Prepared(parts, lock, rows, description, weights, started)


# weights: what a new run starts from (None when resuming); started: start_from's second value
Prepared = collections.namedtuple('Prepared', 'parts lock rows description weights started')


def start(settings, parts=None, index=None, split_rows=None):
    """Open the run of `settings` (prepare: `parts` and `split_rows` as there): its inputs, its
    run dir (resuming after its completed epochs), the feature store in cache mode (`index`: the
    pool's records.index, if known) and its graph and session, ready to train -> Run."""
    ready = prepare(settings, parts, split_rows)
    try:
        classes, structure = ready.description.classes, ready.description.structure
        cached, why = cache_decision(settings, structure)
        store, features = None, None
        if cached:
            index = index if index is not None else records.index(settings.records_dir)
            store = frozen_features.open_store(settings, structure, ready.description.mean,
                                               lowest_trained(settings.train_layers),
                                               store_variants(settings), log, warn)
            features = (settings.feature_store, frozen_features.missing_bytes(store,
                                                                              index.digests))
        warning = checkpoints.space_warning(settings.run_dir, settings.epochs,
                                            settings.keep_checkpoints, len(ready.rows),
                                            checkpoints.size(len(classes)), features)
        if warning:
            warn(warning)
        log(why)
        return Run(settings, ready, store, index)
    except BaseException:
        ready.lock.release()
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
    the run dir's lock (from prepare) until it closes. In cache mode (`store` given, with the
    pool's records.index `index`) the frozen features of the whole pool are read (or computed)
    first."""

    def __init__(self, settings, ready, store=None, index=None):
        self.settings, self.parts, self.rows = settings, ready.parts, ready.rows
        self.counts = {part: len(positions) for part, positions in ready.parts.items()}
        self.classes = ready.description.classes
        self.lock, self.writer, self.session = ready.lock, None, None
        self.store = store
        self.model = TrainingGraph(settings, ready.description.structure, ready.description.mean,
                                   ready.parts, store is not None)
        run_dir, rows = settings.run_dir, ready.rows
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
                weights, started = ready.weights, ready.started
                if weights is None:        # every checkpoint of a resumed run was damaged
                    weights, started = start_from(settings, self.classes)
                loaded = alexnet.load_weights(self.session, weights,
                                              skip_layers=settings.skip_layers,
                                              source=settings.weights)
                self.session.run(self.model.others_init)
                sources, held = ([started[0]], started[1]) if started else ([], [])
                rest = [name for name in loaded if name not in held]
                if rest:
                    sources.append('%s from %s' % (', '.join(rest), settings.weights))
                log('loaded %s; initialised %s from Caffe\'s fillers; training %s'
                    % ('; '.join(sources) or 'nothing', ', '.join(settings.skip_layers) or
                       'nothing', ', '.join(settings.train_layers)))
            self.features = None
            if store is not None:
                self.labels, self.paths = index.labels, np.array(index.paths)
                self.features = read_features(
                    store, index.digests,
                    lambda positions: self.model.extractor.batches(self.session, positions),
                    settings)
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
        if self.features is None:
            session.run(model.train_init, {model.epoch_seed: seed})
            feeds = iter(lambda: {model.keep_prob: settings.keep_prob}, None)
        else:
            order, variants = self._training_order(seed)
            rows = self.parts['train'][order]       # the epoch's images as positions in the pool
            feeds = ({model.inputs: self.features[rows[i:i + batch], variants[i:i + batch]],
                      model.labels: self.labels[rows[i:i + batch]],
                      model.keep_prob: settings.keep_prob} for i in range(0, count, batch))
        fetches = [model.train_op, model.scores.loss_sum, model.scores.correct, model.scores.count]
        with progress(count, 'epoch %d/%d' % (epoch, settings.epochs)) as bar, \
                records.reading(settings.records_dir):
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

    def evaluate(self, part):
        """graph.Evaluation over every image of `part` ('validation' or 'test')."""
        model = self.model
        fetches = [model.scores.loss_sum, model.scores.correct, model.probabilities]
        if self.features is None:
            with records.reading(self.settings.records_dir):
                self.session.run(model.eval_init[part])
                results = graph.batches(self.session, fetches + [model.labels, model.paths])
        else:
            results = []
            for i in range(0, self.counts[part], graph.EVAL_BATCH):
                rows = self.parts[part][i:i + graph.EVAL_BATCH]
                labels = self.labels[rows]
                results.append(self.session.run(fetches, {model.inputs: self.features[rows, 0],
                                                          model.labels: labels})
                               + [labels, self.paths[rows]])
        result = graph.summarize(results)
        if result is None:
            raise RunError('no %s images in %s' % (part, self.settings.records_dir))
        return result

    def validate(self, epoch):
        """The validation part's graph.Evaluation after `epoch` (None without a validation
        part); a RunError if it diverged."""
        if not self.counts['validation']:
            return None
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
            epoch, trained.loss, trained.accuracy, validated and validated.loss,
            validated and validated.accuracy, trained.learning_rate, seconds,
            checkpoints.path(run_dir, epoch)))
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


def train(settings, parts=None, index=None, split_rows=None):
    """Train a run of `settings` (`parts`, `index`, `split_rows`: see start): an epoch at a time,
    train, validate, save, record, log; then test the best epoch. Returns the exit status."""
    with start(settings, parts, index, split_rows) as run:
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
            scalars = {'loss/train': trained.loss, 'accuracy/train': trained.accuracy,
                       'learning_rate': trained.learning_rate}
            if validated:
                scalars.update({'loss/validation': validated.loss,
                                'accuracy/validation': validated.accuracy})
            run.log_scalars(epoch, scalars)
            log('epoch %d/%d  train loss %.4f acc %.4f | %s | lr %.3g | %.0f img/s | %.1f s'
                % (epoch, settings.epochs, trained.loss, trained.accuracy,
                   'val loss %.4f acc %.4f' % (validated.loss, validated.accuracy) if validated
                   else 'no validation part', trained.learning_rate,
                   trained.images_per_second, time.time() - started))
            if interrupt.requested:
                log('stopped after epoch %d. Rerun the same command to resume.' % epoch)
                return 130
    best = checkpoints.write_best(settings.run_dir, run.rows)
    result = run.test(best)
    log(' * %s  test Acc@1 %.4f (%d/%d)  report: %s'
        % ('best epoch %d (val acc %.4f)' % (int(best['epoch']), float(best['val_accuracy']))
           if checkpoints.validated(run.rows) else
           'last epoch %d (no validation part)' % int(best['epoch']),
           result['accuracy'], result['correct'], result['total'],
           os.path.join(settings.run_dir, 'test_report.md')))
    return 0
