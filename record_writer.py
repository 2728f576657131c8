"""Folder-per-class images -> stratified, reproducible TFRecord splits (records.py reads them).

Input: DIR/<class>/<image>. Class folders sorted by name (Unicode code point order) give the label
indices. Image files are .tif .tiff .jpg .jpeg .png .bmp in any letter case; hidden files (a name
starting with '.', e.g. .DS_Store or macOS '._x.tif') and anything else (Thumbs.db, notes, sub
folders) are ignored and counted. Images that can't be decoded are listed, skipped and counted
(strict=True turns any skipped image into an error). Pixels become 8-bit BGR (images.to_bgr8).

Split: per class, the sorted list of readable images is shuffled with a generator seeded by
(seed, class name), so a class's split depends only on its own files. Counts per split: each split
gets floor(n * ratio), the images left over go to the largest fractional parts (ties: train, then
validation), and every split gets at least one image, taken from the split with the most images
over its share. 100 images at 0.8/0.1/0.1 give exactly 80/10/10; 3 give 1/1/1; 15 give 12/2/1.
A class with fewer usable images than splits is an error naming it.

Outputs (records.py describes the layout and the record schema): the split's records, labels.txt
and split.csv. Everything is written under hidden temporary names and renamed at the end,
split.csv last, so an interrupted run never leaves a record file that looks complete. Each
Example is serialized with deterministic=True and the PNG encoder is deterministic, so the same
input and seed give byte-identical files (with the same OpenCV/zlib build). One conversion at a
time owns the output folder (outputdir.own), and it first deletes what killed conversions left
there. A write the machine refuses (a full disk ...) is a WriteError naming the space needed.

Images are decoded and encoded in worker processes (images.Workers) that don't load TensorFlow.
"""
import csv
import dataclasses
import glob
import math
import os
import random
import time

import tensorflow as tf
from tqdm import tqdm

import images
import outputdir
import records
import setting
from atomicfile import temporary_path, writing
from errors import UserError

IMAGE_EXTENSIONS = ('.tif', '.tiff', '.jpg', '.jpeg', '.png', '.bmp')
RECORDS_PER_SHARD = 1000          # ~110 MB shards for 256x256 images


class ConvertError(UserError):
    """Bad input to the converter; the message names the problem and the fix."""


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
    classes, found, ignored = [], {}, []
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
        found[name] = []
        for file in sorted(os.listdir(os.path.join(data_dir, name))):
            rel = name + '/' + file
            if file.startswith('.'):
                ignored.append((rel, 'hidden'))
            elif (os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(data_dir, name, file))):
                found[name].append(rel)
            else:
                ignored.append((rel, 'not an image'))
        if not found[name]:
            raise ConvertError('class folder %s has no images (%s): remove it or add images'
                               % (os.path.join(data_dir, name), '/'.join(IMAGE_EXTENSIONS)))
    return classes, found, ignored


def check_ratios(ratios):
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(records.SPLITS):
        raise ConvertError('--ratios needs %d numbers (%s), got %d'
                           % (len(records.SPLITS), ' '.join(records.SPLITS), len(ratios)))
    if not all(math.isfinite(r) and r > 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ConvertError('--ratios %s: need %d positive numbers summing to 1 (e.g. 0.8 0.1 0.1)'
                           % (' '.join('%g' % r for r in ratios), len(records.SPLITS)))
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
        if len(paths) < len(records.SPLITS):
            raise ConvertError('class %s has %d usable image(s): every class needs at least %d, '
                               'one per split' % (name, len(paths), len(records.SPLITS)))
        random.Random('%s/%s' % (seed, name)).shuffle(paths)
        start = 0
        for split, count in zip(records.SPLITS, split_counts(len(paths), ratios)):
            rows.extend((path, label, split) for path in paths[start:start + count])
            start += count
    order = {split: i for i, split in enumerate(records.SPLITS)}
    return sorted(rows, key=lambda row: (order[row[2]], row[1], row[0]))


# --- writing -------------------------------------------------------------------------------------

def serialize_example(encoded, label, height, width, path, image_format=b'png'):
    """One record with every feature of records.FEATURES: deterministic bytes (protobuf map order
    is otherwise not fixed)."""
    values = {'image/encoded': encoded, 'image/format': image_format, 'image/class/label': label,
              'image/height': height, 'image/width': width, 'image/path': path.encode('utf-8')}
    feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=[values[name]]))
               if dtype == tf.int64 else
               tf.train.Feature(bytes_list=tf.train.BytesList(value=[values[name]]))
               for name, dtype in records.FEATURES.items()}
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def shard_names(split, n):
    shards = max(1, math.ceil(n / RECORDS_PER_SHARD))
    return ['%s-%05d-of-%05d.tfrecord' % (split, i, shards) for i in range(shards)]


def existing_outputs(output_dir):
    """Output files of an earlier conversion in output_dir, sorted."""
    found = [os.path.join(output_dir, name) for name in (records.LABELS_FILE, records.SPLIT_FILE)]
    found = [path for path in found if os.path.exists(path)]
    for split in records.SPLITS:
        found += glob.glob(os.path.join(glob.escape(output_dir), split + '*.tfrecord'))
    return sorted(found)


def _check_output_dir(output_dir, data_dir):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConvertError('output dir %s is a file: pass --output-dir a folder' % output_dir)
    data, out = os.path.realpath(data_dir), os.path.realpath(output_dir)
    if out == data or out.startswith(data + os.sep):
        raise ConvertError('output dir %s is inside the data dir %s, where it would be read as a '
                           'class: write the records elsewhere' % (output_dir, data_dir))


def _check_earlier_outputs(output_dir, overwrite):
    existing = existing_outputs(output_dir)
    if existing and not overwrite:
        raise ConvertError('%s already holds %d output file(s) (%s ...): pass --overwrite to '
                           'replace them'
                           % (output_dir, len(existing), os.path.basename(existing[0])))


def convert(data_dir, output_dir, ratios=setting.SPLIT_RATIOS, seed=setting.SPLIT_SEED,
            workers=setting.CONVERT_WORKERS, overwrite=False, strict=False, progress=True):
    """Convert DIR/<class>/<image> into records in output_dir; returns a Conversion.

    Raises ConvertError on bad input, before anything is written, and for a failed read or write
    (nothing half-written is left). workers=0: one per CPU core.
    """
    try:
        return _convert(data_dir, output_dir, ratios, seed, workers, overwrite, strict, progress)
    except OSError as error:
        raise ConvertError(str(error)) from None


def _convert(data_dir, output_dir, ratios, seed, workers, overwrite, strict, progress):
    started = time.perf_counter()
    ratios = check_ratios(ratios)
    if workers < 0:
        raise ConvertError('--workers %d: need 0 (one per core) or more' % workers)
    classes, found, ignored = scan(data_dir)
    _check_output_dir(output_dir, data_dir)
    paths = [rel for name in classes for rel in found[name]]
    absolute = [os.path.join(data_dir, *rel.split('/')) for rel in paths]
    created = not os.path.exists(output_dir)
    lock = outputdir.own(output_dir, '--output-dir')
    temporary, pool = [], None

    def discard():
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
        temporary.clear()
    try:
        _check_earlier_outputs(output_dir, overwrite)
        pool = images.Workers(min(workers or images.default_workers(), len(paths)))
        skipped = []
        hide_bar = None if progress else True      # tqdm: None = shown on a terminal only
        checks = tqdm(pool.map(images.check_image, absolute), total=len(paths), desc='checking',
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
        usable = {name: [rel for rel in found[name] if rel not in bad] for name in classes}
        rows = assign_splits(classes, usable, ratios, seed)

        final = [os.path.join(output_dir, name) for name in
                 [records.LABELS_FILE, records.SPLIT_FILE] + [
                     name for split in records.SPLITS
                     for name in shard_names(split, sum(row[2] == split for row in rows))]]
        # PNG holds about what the source images hold: their size is the space to ask for
        needed = sum(os.path.getsize(path) for path in absolute)
        with writing(output_dir, 'the records in', needed, also=(tf.errors.OpError,)):
            try:
                for path in final:
                    temporary.append(temporary_path(path))
                _write(data_dir, classes, rows, pool, dict(zip(final, temporary)), hide_bar)
            except BaseException:
                discard()                   # before the error counts the free space
                raise
            # Swap in the new set. split.csv marks a complete set: it goes first and comes back
            # last.
            old = existing_outputs(output_dir)
            for path in sorted(old, key=lambda p: not p.endswith(records.SPLIT_FILE)):
                if path not in final or path.endswith(records.SPLIT_FILE):
                    os.remove(path)
            for i in sorted(range(len(final)),
                            key=lambda i: final[i].endswith(records.SPLIT_FILE)):
                os.replace(temporary[i], final[i])
            temporary.clear()
    finally:
        if pool is not None:
            pool.close()
        discard()
        lock.release()
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)                           # failed before writing anything
    return Conversion(classes=classes, rows=rows, skipped=skipped, ignored=ignored,
                      files=sorted(final), seconds=time.perf_counter() - started)


def _write(data_dir, classes, rows, pool, temporary, hide_bar):
    """Write labels.txt, split.csv and the records of `rows` to the temporary files
    `temporary` ({final path: temporary path})."""
    named = {os.path.basename(final): path for final, path in temporary.items()}
    for name, text in ((records.LABELS_FILE, ''.join(c + '\n' for c in classes)),
                       (records.SPLIT_FILE, None)):
        with open(named[name], 'w', encoding='utf-8', newline='') as f:
            if text is not None:
                f.write(text)
            else:
                writer = csv.writer(f, lineterminator='\n')
                writer.writerow(records.SPLIT_HEADER)
                writer.writerows(rows)
    results = pool.map(images.encode_image, [os.path.join(data_dir, *row[0].split('/'))
                                             for row in rows])
    bar = tqdm(total=len(rows), desc='writing', unit='img', disable=hide_bar)
    for split in records.SPLITS:
        split_rows = [row for row in rows if row[2] == split]
        names = shard_names(split, len(split_rows))
        for i, name in enumerate(names):
            shard = split_rows[i * len(split_rows) // len(names):
                               (i + 1) * len(split_rows) // len(names)]
            with tf.io.TFRecordWriter(named[name]) as writer:
                for path, label, _ in shard:
                    result = next(results)
                    if isinstance(result, str):
                        raise ConvertError('%s changed during the conversion: %s'
                                           % (path, result))
                    encoded, height, width = result
                    writer.write(serialize_example(encoded, label, height, width, path))
                    bar.update()
    bar.close()


def summary(conversion):
    """The per-class x per-split table, totals, and the skipped and ignored files, as text."""
    counts = conversion.counts()
    width = max([len('class'), len('total')] + [len(c) for c in conversion.classes])
    header = ['class'.ljust(width)] + ['%10s' % s for s in records.SPLITS] + ['%10s' % 'total']
    lines = [' '.join(header)]
    for label, name in enumerate(conversion.classes):
        row = [counts.get((label, split), 0) for split in records.SPLITS]
        lines.append(' '.join([name.ljust(width)] + ['%10d' % n for n in row + [sum(row)]]))
    totals = [sum(counts.get((label, split), 0) for label in range(len(conversion.classes)))
              for split in records.SPLITS]
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


