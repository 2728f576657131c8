"""The TFRecords that convert_tfrecord.py writes, read back as input pipelines; and the flips.

Layout of a converted folder (the converter writes it, everything else reads it):
  train-00000-of-00002.tfrecord ...   one tf.train.Example per image, in split.csv's order
  validation-*.tfrecord, test-*.tfrecord
  labels.txt                          line i = name of label i
  split.csv                           path,label,split (path relative to the image folder)
The converted folder is a `records_dir` everywhere in the code (fineturn.py --records-dir); the
folder of images it was made from is an `image_dir` (convert_tfrecord.py --image-dir).

The pool: all the records of a folder, train, validation and test in that order (split.csv's), so
that a record has a position in it. A run reads the images of its parts (train, validation, test)
by their positions: a plain run's parts are the records' own splits (split_positions), each split
of a repeated-split protocol (fineturn.py --splits) draws its own from the whole pool. Pipelines
read the records in place and keep the positions asked for (part_records): nothing is copied per
split. index() reads the pool once for what the feature store needs: each image's digest, label
and path.

Record schema (FEATURES):
  image/encoded      bytes   PNG, lossless; decodes to exactly the 8-bit BGR pixels converted
  image/format       bytes   b'png'
  image/class/label  int64   index into labels.txt
  image/height       int64
  image/width        int64
  image/path         bytes   path relative to the image folder, so any prediction traces back
PNG stores RGB: cv2.imencode swaps BGR -> RGB on the way in, and decode_bgr swaps back.

Preprocessing is alexnet.preprocess_tensor, Caffe's recipe: every image, whatever its size, is
resized to 256x256 (bilinear, like cv2.INTER_LINEAR) and centre-cropped to 227x227, BGR, the
model's mean subtracted (its 227 window, for a mean image). 256x256 images pass the resize
unchanged; UC Merced's 44 others (sides 242..257) are squeezed or stretched by at most ~6 %, and
training, validation and test see the same geometry.

Flips (the only augmentation): one of FLIP_VARIANTS per training image and epoch, bit 0 a
left/right flip, bit 1 up/down. shuffle_with_variants draws the epoch's order and each position's
variant from the epoch's seed, statelessly; the full graph flips the decoded images
(training_dataset), the feature store holds every variant of every image (variants_dataset) and
the cached head picks the drawn one (training_order). One draw, two consumers: both train on the
same batches.
As in Caffe's data layer, a flip comes after the mean is subtracted: a flipped image is
flip(crop(image) - crop(mean)), never minus a flipped mean image.
"""
import collections
import contextlib
import csv
import os

import numpy as np
import tensorflow as tf

import alexnet
import class_names
import dataset_folder
from dataset_folder import LABELS_FILE, SPLIT_FILE, SPLITS  # noqa: F401 (the folder's layout)
from errors import UserError
from feature_store import image_digest

CONVERT_COMMAND = 'python convert_tfrecord.py --image-dir IMAGES --output-dir %s'
RECONVERT_COMMAND = CONVERT_COMMAND + ' --overwrite'
FEATURES = {    # feature name -> type, as in tf.io.FixedLenFeature
    'image/encoded': tf.string,
    'image/format': tf.string,
    'image/class/label': tf.int64,
    'image/height': tf.int64,
    'image/width': tf.int64,
    'image/path': tf.string,
}
FLIP_VARIANTS = 4                 # bit 0: left/right flip, bit 1: up/down flip
SHUFFLE_BUFFER = 10000            # records held for shuffling: a full shuffle up to this many


class RecordsError(UserError):
    """Missing or unusable records; the message names the fix."""


# --- the folder ----------------------------------------------------------------------------------

def read_labels(records_dir):
    """labels.txt -> [class name of label 0, 1, ...] (class_names.read)."""
    path = os.path.join(records_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise RecordsError('no %s in %s: run %s' % (LABELS_FILE, records_dir,
                                                    CONVERT_COMMAND % records_dir))
    return class_names.read(path)


def _check_split(split):
    if split not in SPLITS:
        raise ValueError('unknown split %r: one of %s' % (split, ', '.join(SPLITS)))


def record_files(records_dir, split):
    """Sorted record files of a split (their concatenation is split.csv's order)."""
    _check_split(split)
    files = dataset_folder.record_files(records_dir, split)
    if not files:
        raise RecordsError('no %s*.tfrecord in %s: run %s' % (split, records_dir,
                                                              CONVERT_COMMAND % records_dir))
    return files


def count_records(records_dir, split):
    """Number of records in a split: from split.csv, else by reading the records."""
    files = record_files(records_dir, split)
    path = os.path.join(records_dir, SPLIT_FILE)
    if os.path.isfile(path):
        with open(path, encoding='utf-8', newline='') as f:
            return sum(1 for row in csv.DictReader(f) if row['split'] == split)
    with reading(records_dir, split):
        return sum(1 for file in files for _ in tf.compat.v1.io.tf_record_iterator(file))


# --- damaged records -----------------------------------------------------------------------------

def damaged_record(records_dir, split):
    """A RecordsError naming the first record file of `split` that fails its CRC check or doesn't
    parse, what is wrong and the fix; None if every record reads and decodes."""
    with tf.init_scope():                     # eager, even when called inside a graph's block
        for file in record_files(records_dir, split):
            index = 0                         # the record being read, from 0
            try:
                for serialized in tf.compat.v1.io.tf_record_iterator(file):
                    decode_bgr(parse_example(serialized)['image/encoded'])
                    index += 1
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                what = ('fails its CRC check' if isinstance(error, tf.errors.DataLossError)
                        else 'does not parse')
                detail = error.message.strip().splitlines()[-1] if error.message else ''
                return RecordsError('%s is damaged: record %d %s (%s): convert the images again '
                                    'with %s' % (file, index, what, detail,
                                                 RECONVERT_COMMAND % records_dir))
    return None


@contextlib.contextmanager
def reading(records_dir, split=SPLITS):
    """Inside the block, a record of `split` (one, or a tuple of splits: by default the pool)
    that fails its CRC check or doesn't parse becomes damaged_record's RecordsError (TensorFlow's
    own error names no file)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
        for name in (split,) if isinstance(split, str) else split:
            damaged = damaged_record(records_dir, name)
            if damaged is not None:
                raise damaged from None
        raise


def read_inputs(records_dir):
    """(class names, {split: image count}) of a converted folder; every split must hold images."""
    classes = read_labels(records_dir)
    counts = split_counts(records_dir)
    for split, count in counts.items():
        if count == 0:
            raise RecordsError('the %s split in %s is empty: rerun python convert_tfrecord.py with '
                               'other --ratios' % (split, records_dir))
    return classes, counts


# --- the pool: every record by its position ------------------------------------------------------

def split_counts(records_dir):
    """{split: records}, in the pool's order."""
    return {split: count_records(records_dir, split) for split in SPLITS}


def split_positions(records_dir, split, counts=None):
    """The positions in the pool of the records of `split` (`counts`: split_counts, if known)."""
    _check_split(split)
    counts = counts or split_counts(records_dir)
    start = sum(counts[name] for name in SPLITS[:SPLITS.index(split)])
    return list(range(start, start + counts[split]))


def own_parts(records_dir, counts=None):
    """{part: positions} of a plain run: the records' own train, validation and test splits."""
    counts = counts or split_counts(records_dir)
    return {split: split_positions(records_dir, split, counts) for split in SPLITS}


def _masked(files, mask):
    """The serialized records of `files` (read in order) where `mask` (bool, one per record) is
    True."""
    def kept(index, serialized):
        return tf.gather(mask, index)

    def record(index, serialized):
        return serialized
    return tf.data.TFRecordDataset(files).enumerate().filter(kept).map(record)


def part_records(records_dir, positions, counts=None):
    """The serialized records at `positions` (ascending) of the pool, in the pool's order. Only
    the files of the splits from the first position's to the last one's are read."""
    counts = counts or split_counts(records_dir)
    positions = np.asarray(positions, np.int64)
    if positions.size == 0 or np.any(np.diff(positions) <= 0):
        raise ValueError('positions must be ascending and not empty')
    starts = np.cumsum([0] + [counts[split] for split in SPLITS])
    first = int(np.searchsorted(starts, positions[0], side='right')) - 1
    last = int(np.searchsorted(starts, positions[-1], side='right')) - 1
    if positions[0] < 0 or last >= len(SPLITS):
        raise ValueError('positions outside the pool of %d records' % starts[-1])
    files = [file for split in SPLITS[first:last + 1]
             for file in record_files(records_dir, split)]
    mask = np.zeros(starts[last + 1] - starts[first], bool)
    mask[positions - starts[first]] = True
    return _masked(files, tf.constant(mask))


def pool_records(records_dir, mask):
    """The serialized records of the pool where `mask` (a bool tensor, one per record: e.g. a
    placeholder fed per pass) is True, in the pool's order."""
    return _masked([file for split in SPLITS for file in record_files(records_dir, split)], mask)


RecordIndex = collections.namedtuple('RecordIndex', 'paths labels digests counts')


def index(records_dir, batch=256):
    """The pool's RecordIndex: paths (str), labels (int64 array) and image digests
    (feature_store.image_digest of the encoded bytes) by position, and {split: records}."""
    paths, labels, digests, counts = [], [], [], {}
    with tf.init_scope():                     # eager, even when called inside a graph's block
        for split in SPLITS:
            dataset = tf.data.TFRecordDataset(record_files(records_dir, split)).map(
                parse_example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
            before = len(paths)
            with reading(records_dir, split):
                for features in dataset:
                    digests.extend(image_digest(encoded)
                                   for encoded in features['image/encoded'].numpy())
                    labels.extend(features['image/class/label'].numpy().tolist())
                    paths.extend(path.decode('utf-8') for path in features['image/path'].numpy())
            counts[split] = len(paths) - before
    return RecordIndex(paths, np.array(labels, np.int64), digests, counts)


# --- one record ----------------------------------------------------------------------------------

def parse_example(serialized):
    """A serialized record -> {feature name: tensor} (FEATURES)."""
    return tf.io.parse_single_example(serialized, {
        name: tf.io.FixedLenFeature([], dtype) for name, dtype in FEATURES.items()})


def decode_bgr(encoded):
    """PNG bytes tensor -> uint8 [H, W, 3] BGR tensor (PNG holds RGB)."""
    return tf.reverse(tf.io.decode_png(encoded, channels=3), axis=[-1])


def decode_example(serialized, mean, crops=alexnet.CENTRE_CROP):
    """A serialized record -> (image preprocessed with the model's `mean` and `crops`, label,
    path): the model's input (alexnet.preprocess_tensor)."""
    features = parse_example(serialized)
    image = alexnet.preprocess_tensor(decode_bgr(features['image/encoded']), mean, crops)
    return image, features['image/class/label'], features['image/path']


def read_records(records_dir, split):
    """Eagerly yield (uint8 BGR numpy image, label, path, features dict) of a split's records."""
    with reading(records_dir, split):
        for serialized in tf.data.TFRecordDataset(record_files(records_dir, split)):
            features = parse_example(serialized)
            yield (decode_bgr(features['image/encoded']).numpy(),
                   int(features['image/class/label']),
                   features['image/path'].numpy().decode('utf-8'), features)


# --- flips ---------------------------------------------------------------------------------------

def flip_variant(image, variant):
    """Flip one of FLIP_VARIANTS ways: bit 0 of `variant` left/right, bit 1 up/down.

    Works on one image [H, W, C] or a batch [N, H, W, C]; `variant` is an int32 scalar (tensor).
    """
    variant = tf.convert_to_tensor(variant, tf.int32)
    image = tf.cond(tf.equal(tf.bitwise.bitwise_and(variant, 1), 1),
                    lambda: tf.reverse(image, axis=[-2]), lambda: tf.identity(image))
    return tf.cond(tf.equal(tf.bitwise.bitwise_and(variant, 2), 2),
                   lambda: tf.reverse(image, axis=[-3]), lambda: tf.identity(image))


def random_variant(seed_pair, position):
    """The flip variant of the element at `position` of a pass seeded by `seed_pair` (two int64):
    uniform in [0, FLIP_VARIANTS), stateless, so a rerun or a feature cache draws the same."""
    seed = tf.random.experimental.stateless_fold_in(seed_pair, position)
    return tf.random.stateless_uniform([], seed, 0, FLIP_VARIANTS, tf.int32)


def shuffle_with_variants(dataset, count, seed, flip):
    """((position, variant), element) for each element of `dataset`, shuffled by `seed` (an int64
    scalar tensor: the epoch's seed); variant 0 (no flip) without `flip`."""
    shuffled = dataset.shuffle(min(count, SHUFFLE_BUFFER), seed=seed,
                               reshuffle_each_iteration=False).enumerate()

    def variant(position, element):
        if not flip:
            return (position, tf.constant(0, tf.int32)), element
        pair = tf.stack([seed, tf.constant(0, tf.int64)])
        return (position, random_variant(pair, position)), element
    return shuffled.map(variant)


# --- input pipelines -----------------------------------------------------------------------------

def without_autotune(dataset):
    """`dataset` with tf.data's autotuning off: parallel maps run at a fixed, default parallelism.

    The training graph re-initialises one iterator from the training pipeline to validation every
    epoch, and with autotuning on that switch sometimes sat idle, every thread asleep, for tens
    of seconds (docs/BENCHMARKS.md gives the measurements). Off, it doesn't, and the pipeline
    still outpaces the model many times over."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def decoded(serialized, mean, crops=alexnet.CENTRE_CROP):
    """A dataset of serialized records as an unbatched dataset of (image, label, path), in its
    order: image float32 [227, 227, 3] preprocessed with the model's `mean` ([len(crops), 227,
    227, 3] for several `crops`), label int64, path string. Decoding runs in a parallel map that
    keeps the order; the caller batches."""
    return serialized.map(lambda record: decode_example(record, mean, crops),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def part_dataset(records_dir, positions, mean, crops=alexnet.CENTRE_CROP, counts=None):
    """The pool's images at `positions` (ascending) as decoded() gives them."""
    return decoded(part_records(records_dir, positions, counts), mean, crops)


def make_dataset(records_dir, split, mean, crops=alexnet.CENTRE_CROP):
    """A split of the records as decoded() gives them, in split.csv's order."""
    counts = split_counts(records_dir)
    return part_dataset(records_dir, split_positions(records_dir, split, counts), mean, crops,
                        counts)


def training_dataset(records_dir, positions, seed, flip, mean, counts=None):
    """The training images, the pool's at `positions` (ascending), for one epoch: shuffled by
    `seed` (an int64 scalar tensor), each image in the flip variant drawn for its position
    (shuffle_with_variants)."""
    count = len(positions)
    records = part_records(records_dir, positions, counts)
    indexed = tf.data.Dataset.zip((tf.data.Dataset.range(count), records))

    def decode(position_variant, index_record):
        image, label, path = decode_example(index_record[1], mean)
        return flip_variant(image, position_variant[1]), label, path
    return shuffle_with_variants(indexed, count, seed, flip).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE)


def training_order(count, seed, flip):
    """The same epoch's draw on bare indices: ((positions, variants), indices) in one batch, for
    the feature cache (element i of the epoch is image indices[j], variant variants[j], at
    position positions[j])."""
    return shuffle_with_variants(tf.data.Dataset.range(count), count, seed, flip).batch(count)


def variants_dataset(serialized, variants, mean):
    """Each image of a dataset of serialized records followed by its other flip variants
    (variants 0 .. variants-1), for feature extraction: unbatched (image, label, path)."""
    def stack(image, label, path):
        images = tf.stack([flip_variant(image, v) for v in range(variants)])
        return images, tf.fill([variants], label), tf.fill([variants], path)
    return decoded(serialized, mean).map(stack, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
