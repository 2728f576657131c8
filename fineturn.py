"""Fine-tune Caffe's pretrained AlexNet on a folder-per-class dataset (the seed's recipe).

    python fineturn.py                      # the recipe in setting.py
    python fineturn.py --demo               # the whole chain on synthetic weights and images
    python fineturn.py --evaluate runs/alexnet-ucmerced/model.ckpt-12

Reads TFRecords made by convert_tfrecord.py and a weights file made by `python -m caffe_to_npy`,
trains TRAIN_LAYERS with plain SGD, saves model.ckpt-<epoch> and a metrics.csv row per epoch,
picks the best epoch on validation accuracy and writes a test report for it. Rerunning the same
command on the same run dir resumes after the last completed epoch.

When every layer below the lowest trained layer is frozen and flips are the only augmentation
(always, in this recipe), the input of that layer is computed once per image and flip variant and
the head is trained from that cache: exact, and several times faster (--no-cache turns it off).
"""
import argparse
import csv
import json
import math
import os
import signal
import sys
import time

import setting

METRICS_HEADER = ('epoch', 'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy',
                  'learning_rate', 'seconds', 'checkpoint')
CHECKPOINT_PREFIX = 'model.ckpt'
SHUFFLE_BUFFER = 10000   # records held for shuffling; a full shuffle up to this many images
EVAL_BATCH = 64
CACHE_DIR = 'feature_cache'
DEMO_EPOCHS = 6          # --demo: enough for the synthetic textures, a minute or two on 2 cores


class RunError(Exception):
    """A problem with the run's inputs or settings; the message says how to fix it."""


def layer_list(text):
    names = [name.strip() for name in text.split(',') if name.strip()]
    return [] if names in ([], ['none']) else names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fine-tune bvlc_alexnet on TFRecords made by convert_tfrecord.py. '
                    'Defaults come from setting.py.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default=setting.DATA_DIR,
                        help='folder with {train,validation,test}*.tfrecord and labels.txt')
    parser.add_argument('--weights', default=setting.WEIGHTS_PATH,
                        help='pretrained weights (.npz from python -m caffe_to_npy)')
    parser.add_argument('--run-dir', default=setting.RUN_DIR,
                        help='checkpoints, metrics.csv, reports; rerun to resume')
    parser.add_argument('--epochs', type=int, default=None,
                        help='epochs to train (default: %d from setting.py; %d with --demo)'
                        % (setting.EPOCHS, DEMO_EPOCHS))
    parser.add_argument('--batch-size', type=int, default=setting.BATCH_SIZE)
    parser.add_argument('--learning-rate', type=float, default=setting.LEARNING_RATE,
                        help='initial SGD learning rate')
    parser.add_argument('--lr-decay', type=float, default=setting.LR_DECAY,
                        help='learning rate factor applied once per epoch')
    parser.add_argument('--weight-decay', type=float, default=setting.WEIGHT_DECAY,
                        help='L2 factor on the trained layers\' weights')
    parser.add_argument('--keep-prob', type=float, default=setting.KEEP_PROB,
                        help='dropout keep probability before fc7 and fc8 while training')
    parser.add_argument('--train-layers', type=layer_list, default=list(setting.TRAIN_LAYERS),
                        help='comma-separated layers to train (the optimiser\'s var_list)')
    parser.add_argument('--skip-layers', type=layer_list, default=list(setting.SKIP_LAYERS),
                        help='comma-separated layers not loaded from --weights ("none" for none)')
    parser.add_argument('--no-flip', dest='flip', action='store_false', default=setting.FLIP,
                        help='no random up/down and left/right flips of training images')
    parser.add_argument('--seed', type=int, default=setting.SEED)
    parser.add_argument('--keep-checkpoints', type=int, default=setting.KEEP_CHECKPOINTS,
                        help='keep the last N epoch checkpoints (and the best); 0 keeps all')
    parser.add_argument('--no-cache', dest='cache', action='store_false',
                        default=setting.USE_FEATURE_CACHE,
                        help='run the full graph every step instead of the frozen-feature cache')
    parser.add_argument('--cache-ram-gb', type=float, default=setting.CACHE_RAM_GB,
                        help='a feature cache larger than this is memory-mapped from disk')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='allow a legacy pickled .npy weights file (runs code from the file)')
    parser.add_argument('--evaluate', metavar='CHECKPOINT',
                        help='only write the test report for this checkpoint')
    parser.add_argument('--demo', action='store_true',
                        help='run the whole chain on synthetic weights and images under --demo-dir')
    parser.add_argument('--demo-dir', default=os.path.join(setting.RUNS_DIR, 'demo'),
                        help='where --demo writes everything')
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS if args.demo else setting.EPOCHS
    return args


def check_settings(args):
    import alexnet
    for flag, names in (('--train-layers', args.train_layers), ('--skip-layers', args.skip_layers)):
        unknown = [name for name in names if name not in alexnet.LAYER_NAMES]
        if unknown:
            raise RunError('%s: unknown layer(s) %s; AlexNet has %s'
                           % (flag, ', '.join(unknown), ', '.join(alexnet.LAYER_NAMES)))
    if not args.train_layers:
        raise RunError('--train-layers is empty: name at least one layer to train, e.g. fc8')
    frozen_random = [name for name in args.skip_layers if name not in args.train_layers]
    if frozen_random:
        raise RunError('layer(s) %s would be neither loaded nor trained (random forever): add them '
                       'to --train-layers or remove them from --skip-layers' % ', '.join(frozen_random))
    if args.epochs < 1 or args.batch_size < 1:
        raise RunError('--epochs and --batch-size must be at least 1')
    if not 0 < args.keep_prob <= 1:
        raise RunError('--keep-prob must be in (0, 1], got %g' % args.keep_prob)
    if not (args.learning_rate > 0 and args.lr_decay > 0 and args.weight_decay >= 0):
        raise RunError('--learning-rate and --lr-decay must be positive, --weight-decay >= 0')


def resolved_settings(args):
    keys = ('data_dir', 'weights', 'run_dir', 'epochs', 'batch_size', 'learning_rate', 'lr_decay',
            'weight_decay', 'keep_prob', 'train_layers', 'skip_layers', 'flip', 'seed',
            'keep_checkpoints', 'cache', 'cache_ram_gb')
    return {key: getattr(args, key) for key in keys}


# Settings that change what an epoch computes: a run dir can only be resumed with the same ones.
RECIPE_KEYS = ('batch_size', 'learning_rate', 'lr_decay', 'weight_decay', 'keep_prob',
               'train_layers', 'skip_layers', 'flip', 'seed')


# --- run dir state: checkpoints and metrics.csv --------------------------------------------------

def checkpoint_path(run_dir, epoch):
    return os.path.join(run_dir, '%s-%d' % (CHECKPOINT_PREFIX, epoch))


def has_checkpoint(run_dir, epoch):
    prefix = checkpoint_path(run_dir, epoch)
    return os.path.exists(prefix + '.index') and os.path.exists(prefix + '.data-00000-of-00001')


def read_metrics(run_dir):
    path = os.path.join(run_dir, 'metrics.csv')
    if not os.path.exists(path):
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def write_metrics(run_dir, rows):
    """Rewrite metrics.csv whole through a rename: a kill never leaves half a row."""
    from atomicfile import atomic_write

    def write(f):
        writer = csv.DictWriter(f, METRICS_HEADER, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(os.path.join(run_dir, 'metrics.csv'), write)


def completed_epochs(run_dir):
    """metrics rows up to the last epoch that has both its row and its checkpoint.

    Each epoch saves its checkpoint, then rewrites metrics.csv whole, then prunes old checkpoints
    (--keep-checkpoints), so after a kill at any moment the newest row's checkpoint exists unless
    the kill came between the two writes: that epoch lacks its row and runs again."""
    rows = []
    for expected, row in enumerate(read_metrics(run_dir), start=1):
        if int(row['epoch']) != expected:
            break
        rows.append(row)
    while rows and not has_checkpoint(run_dir, len(rows)):
        rows.pop()
    return rows


def best_epoch(rows):
    """Highest validation accuracy; ties: lower validation loss, then the earlier epoch."""
    return min(rows, key=lambda r: (-float(r['val_accuracy']), float(r['val_loss']),
                                    int(r['epoch'])))


def prune_checkpoints(run_dir, rows, keep):
    if keep <= 0:
        return
    protected = {int(best_epoch(rows)['epoch'])} | {int(r['epoch']) for r in rows[-keep:]}
    for row in rows:
        epoch = int(row['epoch'])
        if epoch in protected:
            continue
        prefix = checkpoint_path(run_dir, epoch)
        for suffix in ('.index', '.data-00000-of-00001', '.meta'):
            if os.path.exists(prefix + suffix):
                os.remove(prefix + suffix)


# --- the graph -----------------------------------------------------------------------------------

def lowest_trained(train_layers):
    import alexnet
    return min(train_layers, key=alexnet.LAYER_NAMES.index)


def cache_decision(args):
    """(use the cache?, why) for the log."""
    boundary_layer = lowest_trained(args.train_layers)
    import alexnet
    frozen = alexnet.LAYER_NAMES[:alexnet.LAYER_NAMES.index(boundary_layer)]
    if not args.cache:
        return False, 'feature cache off (--no-cache): full graph every step'
    if not frozen:
        return False, 'feature cache off: conv1 is trained, nothing below it is frozen'
    augment = 'flips as the only augmentation' if args.flip else 'no augmentation'
    return True, ('feature cache on: %s frozen and %s, so %s (the input of %s) is computed once '
                  'per image%s' % ('-'.join((frozen[0], frozen[-1])) if len(frozen) > 1 else frozen[0],
                                   augment, alexnet.boundary(boundary_layer), boundary_layer,
                                   ' and flip variant' if args.flip else ''))


def epoch_seed(seed, epoch):
    return seed * 1000003 + epoch


class Model:
    """The tf.compat.v1 graph of a run: input pipelines, AlexNet, loss, SGD on the trained layers.

    Full-graph mode reads images through tf.data into AlexNet from conv1. Cache mode also builds the
    frozen layers (to extract features and to keep them in every checkpoint) and trains the head
    from fed feature batches; both modes name their variables alike, so checkpoints interchange.
    """

    def __init__(self, args, num_classes, train_count, cached):
        import tensorflow as tf
        import alexnet
        import convert_tfrecord
        tf1 = tf.compat.v1
        self.tf1, self.cached, self.args = tf1, cached, args
        self.boundary_layer = lowest_trained(args.train_layers)
        self.graph = tf1.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(args.seed)
            self.global_step = tf1.train.get_or_create_global_step()
            steps_per_epoch = math.ceil(train_count / args.batch_size)
            self.learning_rate = tf1.train.exponential_decay(
                args.learning_rate, self.global_step, steps_per_epoch, args.lr_decay, staircase=True)
            self.keep_prob = tf1.placeholder_with_default(tf.constant(1.0), [], 'keep_prob')
            self.epoch_seed = tf1.placeholder(tf.int64, [], 'epoch_seed')

            # one iterator, re-initialised per split: (images, labels, paths) batches
            self.iterator = tf1.data.Iterator.from_structure(
                (tf.float32, tf.int64, tf.string),
                (tf.TensorShape([None, alexnet.IMAGE_SIZE, alexnet.IMAGE_SIZE, 3]),
                 tf.TensorShape([None]), tf.TensorShape([None])))
            self.train_init = self.iterator.make_initializer(without_autotune(
                self._train_dataset(train_count).batch(args.batch_size).prefetch(2)))
            self.eval_init = {split: self.iterator.make_initializer(without_autotune(
                convert_tfrecord.make_dataset(args.data_dir, split)
                .batch(EVAL_BATCH).prefetch(2))) for split in ('validation', 'test')}
            images, labels, self.paths = self.iterator.get_next()
            self.iterator_labels = labels

            if cached:
                # the frozen layers once per image and flip variant
                self.features, _ = alexnet.build(images, num_classes, start='conv1',
                                                 stop=self.boundary_layer)
                self.labels = tf1.placeholder(tf.int64, [None], 'labels')
                self.inputs = tf1.placeholder(
                    tf.float32, (None,) + alexnet.boundary_shape(self.boundary_layer), 'features')
                logits, _ = alexnet.build(self.inputs, num_classes, self.keep_prob,
                                          start=self.boundary_layer)
                order = tf1.data.make_initializable_iterator(without_autotune(shuffle_with_variants(
                    tf.data.Dataset.range(train_count), train_count, self.epoch_seed,
                    args.flip).batch(train_count)))
                self.order_init, self.order = order.initializer, order.get_next()
                self.extract_init = {split: self.iterator.make_initializer(without_autotune(
                    self._variants_dataset(split, variants).batch(EVAL_BATCH).prefetch(2)))
                    for split, variants in self.variants().items()}
            else:
                self.labels = labels
                logits, _ = alexnet.build(images, num_classes, self.keep_prob)

            self.probabilities = tf.nn.softmax(logits)
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self.labels, logits=logits)
            self.loss_sum = tf.reduce_sum(xent)
            self.correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), self.labels),
                                                 tf.int64))
            self.count = tf.size(self.labels)
            variables = alexnet.graph_layers(self.graph)
            self.train_op = sgd_step(
                tf.reduce_mean(xent), [variables[layer]['weights'] for layer in args.train_layers],
                [variables[layer]['biases'] for layer in args.train_layers], self.learning_rate,
                args.weight_decay, self.global_step,
                largest_rate=args.learning_rate if args.lr_decay <= 1 else math.inf)
            self.others_init = tf1.variables_initializer(
                [v for v in tf1.global_variables() if v.op.name.split('/')[0] not in variables])
            self.saver = tf1.train.Saver(max_to_keep=None)
            self.graph.finalize()

    def variants(self):
        import convert_tfrecord
        return {'train': convert_tfrecord.FLIP_VARIANTS if self.args.flip else 1,
                'validation': 1, 'test': 1}

    def _train_dataset(self, count):
        """Shuffled training images, each in a flip variant drawn per (epoch, position).

        The order comes from shuffling record indices with the epoch's seed, so the cache path,
        which shuffles bare indices with the same op, visits images in the same order."""
        import tensorflow as tf
        import convert_tfrecord
        records = tf.data.TFRecordDataset(convert_tfrecord.record_files(self.args.data_dir, 'train'))
        indexed = tf.data.Dataset.zip((tf.data.Dataset.range(count), records))
        shuffled = shuffle_with_variants(indexed, count, self.epoch_seed, self.args.flip)

        def decode(position_variant, index_record):
            image, label, path = convert_tfrecord.decode_example(index_record[1])
            image = convert_tfrecord.flip_variant(image, position_variant[1])
            return image, label, path
        return shuffled.map(decode, num_parallel_calls=tf.data.AUTOTUNE)

    def _variants_dataset(self, split, variants):
        """Each image followed by its other flip variants, for feature extraction (EVAL_BATCH is a
        multiple of the variant count, so a batch holds whole images)."""
        import tensorflow as tf
        import convert_tfrecord

        def stack(image, label, path):
            images = tf.stack([convert_tfrecord.flip_variant(image, v) for v in range(variants)])
            return images, tf.fill([variants], label), tf.fill([variants], path)
        return convert_tfrecord.make_dataset(self.args.data_dir, split).map(
            stack, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def without_autotune(dataset):
    """`dataset` with tf.data's autotuning off: parallel maps run at a fixed, default parallelism.

    The model's iterator is re-initialised from the training pipeline to validation every epoch.
    With autotuning on, that re-initialisation sometimes sits idle for 10-55 s (TF 2.21, 2 cores:
    validation took 40 s instead of 4 s in 2 of 4 epochs of a full-graph run, and feature
    extraction stalled 54 s at its switch from training to validation images in 2 of 4 runs);
    with it off, 0 stalls in 10 tries that gave 1 in 5 with it on, and the pipeline alone is as
    fast (570-670 vs 510-550 img/s here, far above the model's 50-90)."""
    import tensorflow as tf
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def sgd_step(loss, weights, biases, learning_rate, weight_decay, global_step, largest_rate):
    """Plain SGD on loss + weight_decay * sum(w**2)/2 over `weights`; biases are not decayed.

    The head step is bound by memory traffic over the 218 MB of fc6/fc7 weights, so the L2 term
    is folded into the update instead of differentiated: TF would otherwise add a pass for its
    gradient (wd * w) and three for adding it to the data gradient. SGD's w - lr (g + wd w) is
    (1 - lr wd) w - lr g, which TF's proximal step (w - a g) / (1 + a l2) computes in place with
    a = lr / (1 - lr wd) and l2 = wd: the same number, to float rounding. That needs
    lr wd < 1 (`largest_rate`: the learning rate's largest value); otherwise, a setting no one
    trains with, the L2 gradient is added explicitly."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    gradients = tf.gradients(loss, weights + biases)
    weight_gradients = list(zip(gradients[:len(weights)], weights))
    plain = tf1.train.GradientDescentOptimizer(learning_rate)
    if weight_decay and largest_rate * weight_decay < 1:
        updates = [tf1.train.ProximalGradientDescentOptimizer(
            learning_rate / (1 - learning_rate * weight_decay),
            l2_regularization_strength=weight_decay).apply_gradients(weight_gradients)]
    else:
        updates = [plain.apply_gradients([(g + weight_decay * w, w) if weight_decay else (g, w)
                                          for g, w in weight_gradients])]
    updates.append(plain.apply_gradients(list(zip(gradients[len(weights):], biases))))
    with tf.control_dependencies(updates):   # learning_rate reads the step: count it after
        return tf1.assign_add(global_step, 1).op


def shuffle_with_variants(dataset, count, seed, flip):
    """(position, variant) paired with each element of `dataset`, shuffled by `seed`."""
    import tensorflow as tf
    import convert_tfrecord
    shuffled = dataset.shuffle(min(count, SHUFFLE_BUFFER), seed=seed,
                               reshuffle_each_iteration=False).enumerate()

    def variant(position, element):
        if not flip:
            return (position, tf.constant(0, tf.int32)), element
        pair = tf.stack([seed, tf.constant(0, tf.int64)])
        return (position, convert_tfrecord.random_variant(pair, position)), element
    return shuffled.map(variant)


# --- one epoch -----------------------------------------------------------------------------------

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


def progress(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit='img', leave=False, dynamic_ncols=True,
                disable=None, file=sys.stderr)


def train_epoch(session, model, epoch, train_count, cache, interrupt):
    """Train one epoch; return (loss, accuracy, images/s) or None if interrupted."""
    import numpy as np
    tf1, args = model.tf1, model.args
    seed = epoch_seed(args.seed, epoch)
    totals = np.zeros(3)
    start = time.time()
    if cache is None:
        session.run(model.train_init, {model.epoch_seed: seed})
        batches = iter(lambda: {model.keep_prob: args.keep_prob}, None)
    else:
        features, labels = cache['train'][0], cache['train'][1]
        order, variants = training_order(session, model, seed)
        batches = ({model.inputs: features[order[i:i + args.batch_size], variants[i:i + args.batch_size]],
                    model.labels: labels[order[i:i + args.batch_size]],
                    model.keep_prob: args.keep_prob}
                   for i in range(0, train_count, args.batch_size))
    with progress(train_count, 'epoch %d/%d' % (epoch, args.epochs)) as bar:
        for step, feed in enumerate(batches, start=1):
            try:
                _, loss_sum, correct, count = session.run(
                    [model.train_op, model.loss_sum, model.correct, model.count], feed)
            except tf1.errors.OutOfRangeError:
                break
            if not np.isfinite(loss_sum):
                raise RunError('the training loss became %s at epoch %d, step %d: lower '
                               '--learning-rate (now %g) or check the weights file'
                               % (loss_sum, epoch, step, args.learning_rate))
            totals += (loss_sum, correct, count)
            bar.update(count)
            bar.set_postfix(loss='%.3f' % (totals[0] / totals[2]),
                            img_s='%.0f' % (totals[2] / (time.time() - start)))
            if interrupt.requested:
                return None
    if totals[2] != train_count:
        raise RunError('epoch %d saw %d training images, the records hold %d'
                       % (epoch, totals[2], train_count))
    return totals[0] / totals[2], totals[1] / totals[2], totals[2] / (time.time() - start)


def training_order(session, model, seed):
    """The cache path's (order, variants) for an epoch: the full graph's shuffle op, on indices."""
    import numpy as np
    session.run(model.order_init, {model.epoch_seed: seed})
    (positions, variants), indices = session.run(model.order)
    order = np.empty_like(indices)
    drawn = np.empty_like(variants)
    order[positions], drawn[positions] = indices, variants
    return order, drawn


def evaluate(session, model, split, cache):
    """(mean loss, accuracy, probabilities, labels, paths) over every image of `split`."""
    import numpy as np
    tf1 = model.tf1
    fetches = [model.loss_sum, model.correct, model.probabilities, model.labels, model.paths]
    results = []
    if cache is None:
        session.run(model.eval_init[split])
        while True:
            try:
                results.append(session.run(fetches))
            except tf1.errors.OutOfRangeError:
                break
    else:
        features, labels, paths = cache[split]
        for i in range(0, len(labels), EVAL_BATCH):
            batch = session.run(fetches[:3], {model.inputs: features[i:i + EVAL_BATCH, 0],
                                              model.labels: labels[i:i + EVAL_BATCH]})
            results.append(batch + [labels[i:i + EVAL_BATCH], paths[i:i + EVAL_BATCH]])
    total = sum(len(r[3]) for r in results)
    if total == 0:
        raise RunError('no %s images in %s' % (split, model.args.data_dir))
    paths = [p.decode() if isinstance(p, bytes) else str(p) for r in results for p in r[4]]
    return (sum(r[0] for r in results) / total, sum(r[1] for r in results) / total,
            np.concatenate([r[2] for r in results]), np.concatenate([r[3] for r in results]), paths)


def extract_features(session, model, data_dir, run_dir, counts, weights_path):
    """The feature cache for every split: loaded if a matching one exists, else computed."""
    import alexnet
    import convert_tfrecord
    import feature_cache
    tf1 = model.tf1
    args = model.args
    shape = alexnet.boundary_shape(model.boundary_layer)
    below = alexnet.LAYER_NAMES[:alexnet.LAYER_NAMES.index(model.boundary_layer)]
    cache_dir = os.path.join(run_dir, CACHE_DIR)
    cache, keys = {}, []
    for split, variants in model.variants().items():
        files = convert_tfrecord.record_files(data_dir, split) + [weights_path]
        key = feature_cache.cache_key(
            files, boundary=model.boundary_layer, variants=variants,
            random_layers=sorted(set(args.skip_layers) & set(below)),
            seed=args.seed if set(args.skip_layers) & set(below) else None)
        keys.append(key)
        found = feature_cache.load(cache_dir, split, key, args.cache_ram_gb)
        if found is not None and len(found[1]) == counts[split]:
            cache[split] = found
            continue

        def batches(split=split, variants=variants):
            session.run(model.extract_init[split])
            with progress(counts[split] * variants, 'features %s' % split) as bar:
                while True:
                    try:
                        features, labels, paths = session.run(
                            [model.features, model.iterator_labels, model.paths])
                    except tf1.errors.OutOfRangeError:
                        return
                    bar.update(len(features))
                    yield (features.reshape((-1, variants) + shape), labels[::variants],
                           paths[::variants])
        cache[split] = feature_cache.write(cache_dir, split, key, (counts[split], variants) + shape,
                                           batches(), args.cache_ram_gb)
    feature_cache.remove_stale(cache_dir, keys)
    return cache


# --- the run -------------------------------------------------------------------------------------

def log(message):
    print(message, flush=True)


def read_inputs(args):
    """labels and per-split image counts of the records."""
    import convert_tfrecord
    classes = convert_tfrecord.read_labels(args.data_dir)
    counts = {split: convert_tfrecord.count_records(args.data_dir, split)
              for split in ('train', 'validation', 'test')}
    for split, count in counts.items():
        if count == 0:
            raise RunError('the %s split in %s is empty: rerun python convert_tfrecord.py with '
                           'other --ratios' % (split, args.data_dir))
    return classes, counts


def read_pretrained(args, num_classes):
    import alexnet
    weights = alexnet.read_weights(args.weights, allow_pickle=args.allow_pickle)
    fc8 = weights.get('fc8', {}).get('weights')
    if 'fc8' not in args.skip_layers and fc8 is not None and fc8.shape[-1] != num_classes:
        raise RunError('%s has %d classes in fc8 but labels.txt in %s has %d: add fc8 to '
                       '--skip-layers (SKIP_LAYERS in setting.py) to replace it'
                       % (args.weights, fc8.shape[-1], args.data_dir, num_classes))
    return weights


def save_json(path, value):
    from atomicfile import atomic_write
    atomic_write(path, lambda f: json.dump(value, f, indent=1))


def prepare_run_dir(args):
    """Create or reopen the run dir; return the metrics rows of completed epochs (resume)."""
    if os.path.exists(args.run_dir) and not os.path.isdir(args.run_dir):
        raise RunError('--run-dir %s is a file' % args.run_dir)
    os.makedirs(args.run_dir, exist_ok=True)
    rows = completed_epochs(args.run_dir)
    settings_path = os.path.join(args.run_dir, 'settings.json')
    if rows and os.path.exists(settings_path):
        with open(settings_path) as f:
            saved = json.load(f)
        changed = [key for key in RECIPE_KEYS if saved.get(key) != resolved_settings(args)[key]]
        if changed:
            raise RunError('%s was trained with other %s (%s): use a new --run-dir, or the same '
                           'settings to resume' % (args.run_dir, ', '.join(changed), ', '.join(
                               '%s=%s' % (key, saved.get(key)) for key in changed)))
    save_json(settings_path, resolved_settings(args))
    return rows


def train(args):
    import alexnet
    check_settings(args)
    log('settings: ' + ', '.join('%s=%s' % item for item in resolved_settings(args).items()))
    classes, counts = read_inputs(args)
    log('data: %d classes; %d train, %d validation, %d test images in %s'
        % (len(classes), counts['train'], counts['validation'], counts['test'], args.data_dir))
    rows = prepare_run_dir(args)
    done = len(rows)
    weights = None if done else read_pretrained(args, len(classes))
    cached, why = cache_decision(args)
    log(why)
    model = Model(args, len(classes), counts['train'], cached)

    import tensorflow as tf
    with model.graph.as_default():   # the TF1 writer refuses to be made eagerly
        writer = tf.compat.v1.summary.FileWriter(args.run_dir, model.graph if not done else None)
    with tf.compat.v1.Session(graph=model.graph) as session, Interrupt() as interrupt:
        if done:
            model.saver.restore(session, checkpoint_path(args.run_dir, done))
            log('resuming %s after epoch %d of %d (from %s)'
                % (args.run_dir, done, args.epochs, checkpoint_path(args.run_dir, done)))
        else:
            loaded = alexnet.load_weights(session, weights, skip_layers=args.skip_layers)
            session.run(model.others_init)
            weights = None   # free the arrays: the session holds the values now
            log('loaded %s from %s; initialised %s from Caffe\'s fillers; training %s'
                % (', '.join(loaded), args.weights, ', '.join(args.skip_layers) or 'nothing',
                   ', '.join(args.train_layers)))
        cache = extract_features(session, model, args.data_dir, args.run_dir, counts,
                                 args.weights) if cached else None

        for epoch in range(done + 1, args.epochs + 1):
            start = time.time()
            learning_rate = session.run(model.learning_rate)
            result = train_epoch(session, model, epoch, counts['train'], cache, interrupt)
            if result is None:
                log('interrupted during epoch %d: nothing of it was saved. Rerun the same command to '
                    'resume after epoch %d.' % (epoch, epoch - 1))
                return 130
            train_loss, train_accuracy, speed = result
            val_loss, val_accuracy = evaluate(session, model, 'validation', cache)[:2]
            if not math.isfinite(val_loss):
                raise RunError('the validation loss became %s after epoch %d: lower '
                               '--learning-rate (now %g)' % (val_loss, epoch, args.learning_rate))
            model.saver.save(session, checkpoint_path(args.run_dir, epoch),
                             write_meta_graph=True, write_state=True)
            rows.append({'epoch': epoch, 'train_loss': '%.6f' % train_loss,
                         'train_accuracy': '%.6f' % train_accuracy, 'val_loss': '%.6f' % val_loss,
                         'val_accuracy': '%.6f' % val_accuracy,
                         'learning_rate': '%.6g' % learning_rate,
                         'seconds': '%.2f' % (time.time() - start),
                         'checkpoint': os.path.basename(checkpoint_path(args.run_dir, epoch))})
            write_metrics(args.run_dir, rows)
            prune_checkpoints(args.run_dir, rows, args.keep_checkpoints)
            for tag, value in (('loss/train', train_loss), ('loss/validation', val_loss),
                               ('accuracy/train', train_accuracy),
                               ('accuracy/validation', val_accuracy),
                               ('learning_rate', learning_rate)):
                writer.add_summary(tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(
                    tag=tag, simple_value=float(value))]), epoch)
            writer.flush()
            log('epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | '
                '%.0f img/s | %.1f s' % (epoch, args.epochs, train_loss, train_accuracy, val_loss,
                                          val_accuracy, learning_rate, speed, time.time() - start))
            if interrupt.requested:
                log('stopped after epoch %d. Rerun the same command to resume.' % epoch)
                return 130
        writer.close()

        best = best_epoch(rows)
        best_path = checkpoint_path(args.run_dir, int(best['epoch']))
        save_json(os.path.join(args.run_dir, 'best.json'),
                  {'epoch': int(best['epoch']), 'val_accuracy': float(best['val_accuracy']),
                   'val_loss': float(best['val_loss']), 'checkpoint': os.path.basename(best_path)})
        model.saver.restore(session, best_path)
        result = test_report(session, model, args.run_dir, classes, cache, best_path)
    import report
    report.plot_curves(os.path.join(args.run_dir, 'curves.png'), rows)
    log(' * best epoch %d (val acc %.4f)  test Acc@1 %.4f (%d/%d)  report: %s'
        % (int(best['epoch']), float(best['val_accuracy']), result['accuracy'], result['correct'],
           result['total'], os.path.join(args.run_dir, 'test_report.md')))
    return 0


def test_report(session, model, out_dir, classes, cache, checkpoint):
    import report
    _, _, probabilities, labels, paths = evaluate(session, model, 'test', cache)
    return report.write_report(out_dir, classes, paths, labels, probabilities,
                               os.path.relpath(checkpoint, out_dir))


def checkpoint_prefix(path):
    """Accept model.ckpt-5, model.ckpt-5.index or a run dir (its best.json checkpoint)."""
    if os.path.isdir(path):
        best = os.path.join(path, 'best.json')
        if not os.path.exists(best):
            raise RunError('%s has no best.json: name a checkpoint such as %s'
                           % (path, checkpoint_path(path, 1)))
        with open(best) as f:
            return os.path.join(path, json.load(f)['checkpoint'])
    for suffix in ('.index', '.meta', '.data-00000-of-00001'):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    if not os.path.exists(path + '.index'):
        raise RunError('no checkpoint %s (expected %s.index)' % (path, path))
    return path


def evaluate_checkpoint(args):
    """--evaluate: the test report of any checkpoint, through the full graph."""
    import tensorflow as tf
    check_settings(args)
    prefix = checkpoint_prefix(args.evaluate)
    classes, counts = read_inputs(args)
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    if shapes.get('fc8/biases') != [len(classes)]:
        raise RunError('%s has %s classes in fc8 but labels.txt in %s has %d'
                       % (prefix, (shapes.get('fc8/biases') or ['no'])[0], args.data_dir,
                          len(classes)))
    model = Model(args, len(classes), counts['train'], cached=False)
    out_dir = os.path.join(os.path.dirname(prefix), 'evaluate-' + os.path.basename(prefix))
    os.makedirs(out_dir, exist_ok=True)
    with tf.compat.v1.Session(graph=model.graph) as session:
        model.saver.restore(session, prefix)
        result = test_report(session, model, out_dir, classes, None, prefix)
    log(' * %s  test Acc@1 %.4f (%d/%d)  report: %s'
        % (prefix, result['accuracy'], result['correct'], result['total'],
           os.path.join(out_dir, 'test_report.md')))
    return 0


def user_errors():
    import alexnet
    import convert_tfrecord
    return (RunError, alexnet.WeightsError, convert_tfrecord.ConvertError)


def tensorflow_environment():
    """Defaults that must be set before TensorFlow is imported.

    oneDNN kernels: TF enables them by default only on CPUs with AVX-512 VNNI or newer; on this
    project's AVX2 machines they run the head step ~2x and the conv layers ~1.2x faster than
    Eigen's (benchmarks/bench_fineturn.py). TF_ENABLE_ONEDNN_OPTS=0 in the environment wins."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


def main(argv=None):
    args = parse_args(argv)
    tensorflow_environment()
    try:
        if args.demo:
            import demo
            return demo.run(args)
        if args.evaluate:
            return evaluate_checkpoint(args)
        return train(args)
    except user_errors() as error:
        print('fineturn.py: error: %s' % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('fineturn.py: stopped; rerun the same command to resume after the last saved epoch',
              file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
