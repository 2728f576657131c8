"""Folder-per-class images -> stratified, reproducible TFRecord splits; and reading them back.

    python convert_tfrecord.py --data-dir UCMerced_LandUse/Images --output-dir data

This module owns the record format: `convert` writes it, `make_dataset` (used by fineturn.py)
reads it, so the two can't drift apart.

Input: DIR/<class>/<image>. Class folders sorted by name (Unicode code point order) give the label
indices. Image files are .tif .tiff .jpg .jpeg .png .bmp in any letter case; hidden files (a name
starting with '.', e.g. .DS_Store or macOS '._x.tif') and anything else (Thumbs.db, notes, sub
folders) are ignored and counted. Images OpenCV can't decode are listed, skipped and counted
(--strict turns any skipped image into an error).

Pixels (to_bgr8): every image becomes 8-bit, 3-channel BGR, OpenCV's and Caffe's order.
  - grayscale -> B = G = R; an alpha channel is dropped (not composited);
  - 16-bit -> 8-bit by rounding v * 255 / 65535, i.e. (v + 128) // 257: the exact inverse of the
    usual 8 -> 16-bit scaling v * 257, unlike OpenCV's own IMREAD_COLOR, which truncates (v >> 8);
  - other pixel types (float, 32-bit) are skipped as unsupported.
  JPEG EXIF orientation is applied (OpenCV's default).

Split: per class, the sorted list of readable images is shuffled with a generator seeded by
(seed, class name), so a class's split depends only on its own files. Counts per split: each split
gets floor(n * ratio), the images left over go to the largest fractional parts (ties: train, then
validation), and every split gets at least one image, taken from the split with the most images
over its share. 100 images at 0.8/0.1/0.1 give exactly 80/10/10; 3 give 1/1/1; 15 give 12/2/1.
A class with fewer usable images than splits is an error naming it.

Outputs in OUT:
  train-00000-of-00002.tfrecord ...   one tf.train.Example per image, in split.csv's order
  validation-*.tfrecord, test-*.tfrecord
  labels.txt                          line i = name of label i
  split.csv                           path,label,split (path relative to DIR, '/' separators),
                                      rows ordered by split, label, path
Everything is written under hidden temporary names and renamed at the end, split.csv last, so an
interrupted run never leaves a record file that looks complete. Each Example is serialized with
deterministic=True and the PNG encoder is deterministic, so the same input and seed give
byte-identical files (with the same OpenCV/zlib build).

Record schema (FEATURES):
  image/encoded      bytes   PNG, lossless; decodes to exactly the 8-bit BGR pixels above
  image/format       bytes   b'png'
  image/class/label  int64   index into labels.txt
  image/height       int64
  image/width        int64
  image/path         bytes   path relative to DIR, so any prediction traces back to its file
PNG stores RGB: cv2.imencode swaps BGR -> RGB on the way in, and decode_bgr swaps back.

Reading: read_labels, record_files, count_records, parse_example / decode_bgr (raw pixels),
decode_example and make_dataset: records -> (image, label, path) with the model's preprocessing,
alexnet.preprocess_tensor, which follows Caffe's recipe: every image, whatever its size, is
resized to 256x256 (bilinear, like cv2.INTER_LINEAR) and centre-cropped to 227x227, BGR, mean
subtracted. 256x256 images pass the resize unchanged. Non-256 images (44 in UC Merced, sides
242..257) are thus squeezed or stretched by at most ~6 % rather than cropped off-centre or padded,
and training, validation and test all see the same geometry.
"""
import argparse
import csv
import dataclasses
import glob
import math
import multiprocessing
import os
import random
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

import setting

# TensorFlow (and alexnet, which imports it) is imported inside the functions that use it: the
# checks, --help and bad-input errors answer at once instead of after TensorFlow's seconds-long
# import, and the image worker processes are forked before TensorFlow starts any thread.

SPLITS = ('train', 'validation', 'test')
IMAGE_EXTENSIONS = ('.tif', '.tiff', '.jpg', '.jpeg', '.png', '.bmp')
LABELS_FILE = 'labels.txt'
SPLIT_FILE = 'split.csv'
SPLIT_HEADER = ('path', 'label', 'split')
RECORDS_PER_SHARD = 1000          # ~110 MB shards for 256x256 images
FLIP_VARIANTS = 4                 # bit 0: left/right flip, bit 1: up/down flip
# Fast lossless PNG: Huffman-only deflate after the Sub filter. Measured here on 256x256 textures:
# 3.6 ms and 140 kB per image, against 9 ms and 141 kB for zlib level 1 (the PNG default level 3
# is slower still) and 0.6 ms but 197 kB for no compression.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
# Keep 16-bit depth (we round it ourselves) and drop alpha; EXIF orientation applies.
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
CONVERT_COMMAND = 'python convert_tfrecord.py --data-dir IMAGES --output-dir %s'
AUTOTUNE = -1                     # tf.data.AUTOTUNE
# The record schema: feature name -> (type, as in tf.io.FixedLenFeature)
FEATURES = {
    'image/encoded': 'string',
    'image/format': 'string',
    'image/class/label': 'int64',
    'image/height': 'int64',
    'image/width': 'int64',
    'image/path': 'string',
}


class ConvertError(Exception):
    """Bad input or missing records; the message names the problem and the fix."""


class ImageReadError(Exception):
    """One image that can't be converted; the message is the reason."""


# --- pixels --------------------------------------------------------------------------------------

def to_bgr8(image):
    """Any decoded OpenCV image -> uint8 HxWx3 BGR (rules in the module docstring)."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError('unsupported pixel type %s (8- or 16-bit integers only)' % image.dtype)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels in (1, 2):                    # gray, gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image if image.ndim == 2 else image[..., 0]),
                            cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return image
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ImageReadError('unsupported number of channels: %d' % channels)


def read_bgr8(path):
    """An image file -> uint8 HxWx3 BGR, or ImageReadError with the reason."""
    try:
        data = np.fromfile(path, np.uint8)    # works for any path, unlike cv2.imread on Windows
    except OSError as error:
        raise ImageReadError('cannot read file (%s)' % (error.strerror or error)) from None
    if data.size == 0:
        raise ImageReadError('empty file')
    image = cv2.imdecode(data, DECODE_FLAGS)
    if image is None:
        raise ImageReadError('not decodable (corrupt, truncated or unsupported format)')
    return to_bgr8(image)


def encode_png(image_bgr8):
    ok, encoded = cv2.imencode('.png', image_bgr8, PNG_PARAMS)
    if not ok:
        raise ImageReadError('PNG encoding failed')
    return encoded.tobytes()


def _check_image(path):
    """Worker: None if the image converts, else the reason it doesn't."""
    try:
        read_bgr8(path)
    except ImageReadError as error:
        return str(error)
    return None


def _encode_image(path):
    """Worker: (PNG bytes, height, width) or the reason string."""
    try:
        image = read_bgr8(path)
        return encode_png(image), image.shape[0], image.shape[1]
    except ImageReadError as error:
        return str(error)


def pool_context():
    """fork when it is safe, spawn when not.

    Forked children start in milliseconds with OpenCV loaded, but once TensorFlow is loaded in this
    process its thread pools may hold locks at the fork, and the children hang (seen here: the demo
    converting after a verify). Spawned children import only this module (no TensorFlow).
    """
    if 'fork' in multiprocessing.get_all_start_methods() and 'tensorflow' not in sys.modules:
        return multiprocessing.get_context('fork')
    return multiprocessing.get_context('spawn')


def _init_worker():
    cv2.setNumThreads(1)                                   # one process per core is the parallelism
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)   # we report bad files


class _Workers:
    """Ordered parallel map over files, in `workers` processes (or in this one for 1)."""

    def __init__(self, workers):
        self.workers, self.pool = workers, None
        if workers > 1:
            self.pool = pool_context().Pool(workers, initializer=_init_worker)

    def map(self, function, paths):
        if self.pool is None:
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            try:
                yield from map(function, paths)
            finally:
                cv2.utils.logging.setLogLevel(level)
        else:
            chunksize = max(1, min(32, len(paths) // (self.workers * 8)))
            yield from self.pool.imap(function, paths, chunksize)

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# --- finding images and splitting ----------------------------------------------------------------

@dataclasses.dataclass
class Conversion:
    """What convert() did. Paths are relative to the data dir, with '/' separators."""
    classes: list                       # label -> class name
    rows: list                          # (path, label, split) in split.csv order
    skipped: list                       # (path, reason) of images that could not be read
    ignored: list                       # (path, reason) of hidden files and non-images
    files: list                         # output files written, absolute
    seconds: float = 0.0

    def counts(self):
        """{(label, split): number of images}."""
        table = {}
        for _, label, split in self.rows:
            table[label, split] = table.get((label, split), 0) + 1
        return table


def scan(data_dir):
    """DIR -> (class names, {class: [relative image paths]}, [(ignored path, reason)])."""
    if not os.path.isdir(data_dir):
        raise ConvertError('data dir %s does not exist (or is not a folder): pass --data-dir with '
                           'one sub folder of images per class' % data_dir)
    classes, images, ignored = [], {}, []
    for name in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, name)
        if name.startswith('.'):
            ignored.append((name, 'hidden'))
        elif not os.path.isdir(path):
            ignored.append((name, 'not a class folder'))
        else:
            classes.append(name)
    if not classes:
        raise ConvertError('data dir %s holds no class folders: expected %s/<class>/<image>'
                           % (data_dir, data_dir))
    for name in classes:
        images[name] = []
        for file in sorted(os.listdir(os.path.join(data_dir, name))):
            rel = name + '/' + file
            if file.startswith('.'):
                ignored.append((rel, 'hidden'))
            elif (os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(data_dir, name, file))):
                images[name].append(rel)
            else:
                ignored.append((rel, 'not an image'))
        if not images[name]:
            raise ConvertError('class folder %s has no images (%s): remove it or add images'
                               % (os.path.join(data_dir, name), '/'.join(IMAGE_EXTENSIONS)))
    return classes, images, ignored


def check_ratios(ratios):
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(SPLITS):
        raise ConvertError('--ratios needs %d numbers (%s), got %d'
                           % (len(SPLITS), ' '.join(SPLITS), len(ratios)))
    if not all(math.isfinite(r) and r > 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ConvertError('--ratios %s: need %d positive numbers summing to 1 (e.g. 0.8 0.1 0.1)'
                           % (' '.join('%g' % r for r in ratios), len(SPLITS)))
    return ratios


def split_counts(n, ratios):
    """Images per split for a class of n (rule in the module docstring)."""
    ideal = [n * r for r in ratios]
    counts = [math.floor(round(x, 9)) for x in ideal]    # round: 100 * 0.29 is 28.999999999999996
    for _ in range(n - sum(counts)):
        i = max(range(len(counts)), key=lambda j: (ideal[j] - counts[j], -j))
        counts[i] += 1
    for i in range(len(counts)):
        while counts[i] == 0:
            donor = max((j for j in range(len(counts)) if counts[j] > 1),
                        key=lambda j: (counts[j] - ideal[j], counts[j]))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def assign_splits(classes, usable, ratios, seed):
    """{class: [usable relative paths]} -> [(path, label, split)] ordered by split, label, path."""
    rows = []
    for label, name in enumerate(classes):
        paths = sorted(usable[name])
        if len(paths) < len(SPLITS):
            raise ConvertError('class %s has %d usable image(s): every class needs at least %d, '
                               'one per split' % (name, len(paths), len(SPLITS)))
        random.Random('%s/%s' % (seed, name)).shuffle(paths)
        start = 0
        for split, count in zip(SPLITS, split_counts(len(paths), ratios)):
            rows.extend((path, label, split) for path in paths[start:start + count])
            start += count
    order = {split: i for i, split in enumerate(SPLITS)}
    return sorted(rows, key=lambda row: (order[row[2]], row[1], row[0]))


# --- writing -------------------------------------------------------------------------------------

def serialize_example(encoded, label, height, width, path, image_format=b'png'):
    """One record: deterministic bytes (protobuf map order is otherwise not fixed)."""
    import tensorflow as tf
    feature = {
        'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        'image/format': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_format])),
        'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        'image/height': tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
        'image/width': tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
        'image/path': tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode('utf-8')])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def shard_names(split, n):
    shards = max(1, math.ceil(n / RECORDS_PER_SHARD))
    return ['%s-%05d-of-%05d.tfrecord' % (split, i, shards) for i in range(shards)]


def existing_outputs(output_dir):
    """Output files of an earlier conversion in output_dir, sorted."""
    found = [os.path.join(output_dir, name) for name in (LABELS_FILE, SPLIT_FILE)]
    found = [path for path in found if os.path.exists(path)]
    for split in SPLITS:
        found += glob.glob(os.path.join(glob.escape(output_dir), split + '*.tfrecord'))
    return sorted(found)


def _check_output_dir(output_dir, data_dir, overwrite):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConvertError('output dir %s is a file: pass --output-dir a folder' % output_dir)
    data, out = os.path.realpath(data_dir), os.path.realpath(output_dir)
    if out == data or out.startswith(data + os.sep):
        raise ConvertError('output dir %s is inside the data dir %s, where it would be read as a '
                           'class: write the records elsewhere' % (output_dir, data_dir))
    existing = existing_outputs(output_dir) if os.path.isdir(output_dir) else []
    if existing and not overwrite:
        raise ConvertError('%s already holds %d output file(s) (%s ...): pass --overwrite to '
                           'replace them'
                           % (output_dir, len(existing), os.path.basename(existing[0])))


def default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                 # macOS, Windows
        return os.cpu_count() or 1


def convert(data_dir, output_dir, ratios=setting.SPLIT_RATIOS, seed=setting.SPLIT_SEED,
            workers=setting.CONVERT_WORKERS, overwrite=False, strict=False, progress=True):
    """Convert DIR/<class>/<image> into records in output_dir; returns a Conversion.

    Raises ConvertError on bad input, before anything is written. workers=0: one per CPU core.
    """
    started = time.perf_counter()
    ratios = check_ratios(ratios)
    if workers < 0:
        raise ConvertError('--workers %d: need 0 (one per core) or more' % workers)
    classes, images, ignored = scan(data_dir)
    _check_output_dir(output_dir, data_dir, overwrite)
    paths = [rel for name in classes for rel in images[name]]
    absolute = [os.path.join(data_dir, *rel.split('/')) for rel in paths]
    pool = _Workers(min(workers or default_workers(), len(paths)))
    temporary, created = [], not os.path.exists(output_dir)
    try:
        skipped = []
        hide_bar = None if progress else True      # tqdm: None = shown on a terminal only
        checks = tqdm(pool.map(_check_image, absolute), total=len(paths), desc='checking',
                      unit='img', disable=hide_bar)
        for rel, reason in zip(paths, checks):
            if reason is not None:
                skipped.append((rel, reason))
        if strict and skipped:
            shown = ', '.join('%s (%s)' % item for item in skipped[:5])
            more = ' and %d more' % (len(skipped) - 5) if len(skipped) > 5 else ''
            raise ConvertError('--strict: %d unreadable image(s): %s%s'
                               % (len(skipped), shown, more))
        bad = {rel for rel, _ in skipped}
        usable = {name: [rel for rel in images[name] if rel not in bad] for name in classes}
        rows = assign_splits(classes, usable, ratios, seed)

        import tensorflow as tf
        os.makedirs(output_dir, exist_ok=True)
        final, temporary = [], []

        def open_temporary(name):
            path = os.path.join(output_dir, '.%s.%d.partial' % (name, os.getpid()))
            temporary.append(path)
            final.append(os.path.join(output_dir, name))
            return path

        for name, text in ((LABELS_FILE, ''.join(c + '\n' for c in classes)),
                           (SPLIT_FILE, None)):
            with open(open_temporary(name), 'w', encoding='utf-8', newline='') as f:
                if text is not None:
                    f.write(text)
                else:
                    writer = csv.writer(f, lineterminator='\n')
                    writer.writerow(SPLIT_HEADER)
                    writer.writerows(rows)
        results = pool.map(_encode_image, [os.path.join(data_dir, *row[0].split('/'))
                                           for row in rows])
        bar = tqdm(total=len(rows), desc='writing', unit='img', disable=hide_bar)
        for split in SPLITS:
            split_rows = [row for row in rows if row[2] == split]
            names = shard_names(split, len(split_rows))
            for i, name in enumerate(names):
                shard = split_rows[i * len(split_rows) // len(names):
                                   (i + 1) * len(split_rows) // len(names)]
                with tf.io.TFRecordWriter(open_temporary(name)) as writer:
                    for path, label, _ in shard:
                        result = next(results)
                        if isinstance(result, str):
                            raise ConvertError('%s changed during the conversion: %s'
                                               % (path, result))
                        encoded, height, width = result
                        writer.write(serialize_example(encoded, label, height, width, path))
                        bar.update()
        bar.close()
        # Swap in the new set. split.csv marks a complete set: it goes first and comes back last.
        old = existing_outputs(output_dir)
        for path in sorted(old, key=lambda p: not p.endswith(SPLIT_FILE)):
            if path not in final or path.endswith(SPLIT_FILE):
                os.remove(path)
        for i in sorted(range(len(final)), key=lambda i: final[i].endswith(SPLIT_FILE)):
            os.replace(temporary[i], final[i])
        temporary = []
    finally:
        pool.close()
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)                           # failed before writing anything
    return Conversion(classes=classes, rows=rows, skipped=skipped, ignored=ignored,
                      files=sorted(final), seconds=time.perf_counter() - started)


def summary(conversion):
    """The per-class x per-split table, totals, and the skipped and ignored files, as text."""
    counts = conversion.counts()
    width = max([len('class'), len('total')] + [len(c) for c in conversion.classes])
    header = ['class'.ljust(width)] + ['%10s' % s for s in SPLITS] + ['%10s' % 'total']
    lines = [' '.join(header)]
    for label, name in enumerate(conversion.classes):
        row = [counts.get((label, split), 0) for split in SPLITS]
        lines.append(' '.join([name.ljust(width)] + ['%10d' % n for n in row + [sum(row)]]))
    totals = [sum(counts.get((label, split), 0) for label in range(len(conversion.classes)))
              for split in SPLITS]
    lines.append(' '.join(['total'.ljust(width)] + ['%10d' % n for n in totals + [sum(totals)]]))
    lines.append('%d images in %d classes written to %d files in %.1f s' % (
        sum(totals), len(conversion.classes), len(conversion.files), conversion.seconds))
    reasons = {}
    for _, reason in conversion.ignored:
        reasons[reason] = reasons.get(reason, 0) + 1
    lines.append('ignored %d file(s)%s' % (len(conversion.ignored), ''.join(
        ', %d %s' % (n, reason) for reason, n in sorted(reasons.items()))))
    lines.append('skipped %d unreadable image(s)%s'
                 % (len(conversion.skipped), ':' if conversion.skipped else ''))
    lines.extend('  %s: %s' % item for item in conversion.skipped)
    return '\n'.join(lines)


# --- reading -------------------------------------------------------------------------------------

def read_labels(records_dir):
    """labels.txt -> [class name of label 0, 1, ...]."""
    path = os.path.join(records_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise ConvertError('no %s in %s: run %s' % (LABELS_FILE, records_dir,
                                                    CONVERT_COMMAND % records_dir))
    with open(path, encoding='utf-8') as f:
        return [line.rstrip('\r\n') for line in f if line.rstrip('\r\n')]


def _check_split(split):
    if split not in SPLITS:
        raise ValueError('unknown split %r: one of %s' % (split, ', '.join(SPLITS)))


def record_files(records_dir, split):
    """Sorted record files of a split (their concatenation is split.csv's order)."""
    _check_split(split)
    files = sorted(glob.glob(os.path.join(glob.escape(records_dir), split + '*.tfrecord')))
    if not files:
        raise ConvertError('no %s*.tfrecord in %s: run %s' % (split, records_dir,
                                                              CONVERT_COMMAND % records_dir))
    return files


def count_records(records_dir, split):
    """Number of records in a split: from split.csv, else by reading the records."""
    files = record_files(records_dir, split)
    path = os.path.join(records_dir, SPLIT_FILE)
    if os.path.isfile(path):
        with open(path, encoding='utf-8', newline='') as f:
            return sum(1 for row in csv.DictReader(f) if row['split'] == split)
    import tensorflow as tf
    return sum(1 for file in files for _ in tf.compat.v1.io.tf_record_iterator(file))


def parse_example(serialized):
    """A serialized record -> {feature name: tensor} (FEATURES)."""
    import tensorflow as tf
    return tf.io.parse_single_example(serialized, {
        name: tf.io.FixedLenFeature([], tf.as_dtype(dtype)) for name, dtype in FEATURES.items()})


def decode_bgr(encoded):
    """PNG bytes tensor -> uint8 [H, W, 3] BGR tensor (PNG holds RGB)."""
    import tensorflow as tf
    return tf.reverse(tf.io.decode_png(encoded, channels=3), axis=[-1])


def flip_variant(image, variant):
    """Flip one of FLIP_VARIANTS ways: bit 0 of `variant` left/right, bit 1 up/down.

    Works on one image [H, W, C] or a batch [N, H, W, C]; `variant` is an int32 scalar (tensor).
    Random training flips are flip_variant(image, uniform random variant in [0, FLIP_VARIANTS)),
    so a feature cache that stores all variants reproduces them exactly.
    """
    import tensorflow as tf
    variant = tf.convert_to_tensor(variant, tf.int32)
    image = tf.cond(tf.equal(tf.bitwise.bitwise_and(variant, 1), 1),
                    lambda: tf.reverse(image, axis=[-2]), lambda: tf.identity(image))
    return tf.cond(tf.equal(tf.bitwise.bitwise_and(variant, 2), 2),
                   lambda: tf.reverse(image, axis=[-3]), lambda: tf.identity(image))


def random_variant(seed_pair, position):
    """The flip variant of the element at `position` of a pass seeded by `seed_pair` (two int64):
    uniform in [0, FLIP_VARIANTS), stateless, so a rerun or a feature cache draws the same."""
    import tensorflow as tf
    seed = tf.random.experimental.stateless_fold_in(seed_pair, position)
    return tf.random.stateless_uniform([], seed, 0, FLIP_VARIANTS, tf.int32)


def make_dataset(records_dir, split, flip=False, seed=None, num_parallel_calls=AUTOTUNE,
                 epoch=None):
    """A split as an unbatched tf.data.Dataset of (image, label, path), in split.csv's order.

    image: float32 [227, 227, 3], alexnet.preprocess_tensor of the stored BGR pixels; with
    flip=True, flip_variant(image, v) with v drawn uniformly from [0, FLIP_VARIANTS) per element.
    label: int64 scalar. path: string scalar, relative to the converted data dir. Decoding runs in
    a parallel map that keeps the order; the caller shuffles and batches.

    Which flips (works eagerly and inside a tf.compat.v1 graph):
      - epoch given (a Python int or an int64 scalar tensor, e.g. a placeholder fed when the
        iterator is initialised): v is a stateless function of (seed or 0, epoch, position), so a
        given epoch always gets the same flips: runs are reproducible and a resumed run draws what
        an uninterrupted one would have.
      - epoch=None: v comes from tf.data.Dataset.random(seed), fresh on every pass eagerly and
        under .repeat(). In a tf.compat.v1 graph, re-initialising an iterator replays the same
        draws (as shuffle's reshuffle_each_iteration does there) and a one-shot iterator can't
        hold it at all: pass epoch there.
    """
    import tensorflow as tf
    dataset = tf.data.TFRecordDataset(record_files(records_dir, split))
    if flip and epoch is None:
        # drawn sequentially and zipped to the records: the parallel map can't reorder the draws
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, draws.map(
            lambda draw: tf.cast(tf.math.floormod(draw, FLIP_VARIANTS), tf.int32))))
    elif flip:
        pair = tf.stack([tf.constant(seed or 0, tf.int64), tf.cast(epoch, tf.int64)])
        dataset = dataset.enumerate().map(
            lambda position, serialized: (serialized, random_variant(pair, position)))

    def preprocess(serialized, variant=None):
        image, label, path = decode_example(serialized)
        if variant is not None:
            image = flip_variant(image, variant)
        return image, label, path

    return dataset.map(preprocess, num_parallel_calls=num_parallel_calls, deterministic=True)


def decode_example(serialized):
    """A serialized record -> (image, label, path) as make_dataset yields them without flips."""
    import alexnet
    features = parse_example(serialized)
    image = alexnet.preprocess_tensor(decode_bgr(features['image/encoded']))
    return image, features['image/class/label'], features['image/path']


def read_records(records_dir, split):
    """Eagerly yield (uint8 BGR numpy image, label, path, features dict) of a split's records."""
    import tensorflow as tf
    for serialized in tf.data.TFRecordDataset(record_files(records_dir, split)):
        features = parse_example(serialized)
        yield (decode_bgr(features['image/encoded']).numpy(),
               int(features['image/class/label']), features['image/path'].numpy().decode('utf-8'),
               features)


# --- command line --------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert DIR/<class>/<image> into stratified train/validation/test TFRecords, '
                    'labels.txt and split.csv.')
    parser.add_argument('--data-dir', default=setting.IMAGE_DIR,
                        help='one sub folder of images per class (default %(default)s)')
    parser.add_argument('--output-dir', default=setting.DATA_DIR,
                        help='where the records, labels.txt and split.csv go (default %(default)s)')
    parser.add_argument('--ratios', type=float, nargs='+', default=list(setting.SPLIT_RATIOS),
                        metavar='R', help='train validation test fractions, positive, summing to '
                                          '1 (default %(default)s)')
    parser.add_argument('--seed', type=int, default=setting.SPLIT_SEED,
                        help='seed of the per-class shuffle (default %(default)s)')
    parser.add_argument('--workers', type=int, default=setting.CONVERT_WORKERS,
                        help='decode/encode processes, 0 = one per CPU core (default %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the outputs of an earlier conversion in the output dir')
    parser.add_argument('--strict', action='store_true',
                        help='fail if any image is unreadable instead of skipping it')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar (it shows only on a terminal anyway)')
    args = parser.parse_args(argv)
    print('convert_tfrecord: data dir %s -> %s, ratios %s, seed %d, workers %s%s%s'
          % (args.data_dir, args.output_dir, ' '.join('%g' % r for r in args.ratios), args.seed,
             args.workers or '%d (one per core)' % default_workers(),
             ', overwrite' if args.overwrite else '', ', strict' if args.strict else ''))
    try:
        conversion = convert(args.data_dir, args.output_dir, args.ratios, args.seed, args.workers,
                             args.overwrite, args.strict, progress=not args.quiet)
    except (ConvertError, OSError) as error:   # the one-line answer to bad input
        print('convert_tfrecord.py: error: %s' % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('convert_tfrecord.py: interrupted, nothing written', file=sys.stderr)
        return 130
    print(summary(conversion))
    return 0


if __name__ == '__main__':
    sys.exit(main())
