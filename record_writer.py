"""Folder-per-class images -> stratified, reproducible TFRecord splits (records.py reads them).

The input folder, its checks and the split are dataset_folder.py's (no TensorFlow). Images that
can't be decoded are listed, skipped and counted (strict=True turns any skipped image into an
error). Pixels become 8-bit BGR (images.to_bgr8).

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
import os
import time

import tensorflow as tf
from tqdm import tqdm

import dataset_folder
import images
import outputdir
import records
from atomicfile import temporary_path, writing
from dataset_folder import (LABELS_FILE, SPLIT_FILE, SPLIT_HEADER, SPLITS, Conversion,
                            ConvertError, assign_splits, check_earlier_outputs, existing_outputs,
                            shard_names)

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


def convert(image_dir, output_dir, ratios, seed, workers, overwrite=False, strict=False,
            progress=True):
    """Convert IMAGE_DIR/<class>/<image> into records in output_dir with the split `ratios`
    (train, validation, test) and `seed`; returns a dataset_folder.Conversion.

    Raises ConvertError on bad input, before anything is written, and for a failed read or write
    (nothing half-written is left). workers=0: one per CPU core.
    """
    return write(dataset_folder.plan(image_dir, output_dir, ratios, workers, overwrite), seed,
                 strict, progress)


def write(plan, seed, strict=False, progress=True):
    """Convert what dataset_folder.plan() checked; returns a dataset_folder.Conversion."""
    try:
        return _write_plan(plan, seed, strict, progress)
    except OSError as error:
        raise ConvertError(str(error)) from None


def _write_plan(plan, seed, strict, progress):
    started = time.perf_counter()
    image_dir, output_dir = plan.image_dir, plan.output_dir
    classes, found = plan.classes, plan.found
    paths = plan.paths
    absolute = [os.path.join(image_dir, *rel.split('/')) for rel in paths]
    created = not os.path.exists(output_dir)
    lock = outputdir.own(output_dir, '--output-dir')
    temporary, pool = [], None

    def discard():
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
        temporary.clear()
    try:
        check_earlier_outputs(output_dir, plan.overwrite)     # again, now that we own the folder
        pool = images.Workers(min(plan.workers or images.default_workers(), len(paths)))
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
        rows = assign_splits(classes, usable, plan.ratios, seed)

        final = [os.path.join(output_dir, name) for name in
                 [LABELS_FILE, SPLIT_FILE] + [
                     name for split in SPLITS
                     for name in shard_names(split, sum(row[2] == split for row in rows))]]
        # PNG holds about what the source images hold: their size is the space to ask for
        needed = sum(os.path.getsize(path) for path in absolute)
        with writing(output_dir, 'the records in', needed, also=(tf.errors.OpError,)):
            try:
                for path in final:
                    temporary.append(temporary_path(path))
                _write(image_dir, classes, rows, pool, dict(zip(final, temporary)), hide_bar)
            except BaseException:
                discard()                   # before the error counts the free space
                raise
            # Swap in the new set. split.csv marks a complete set: it goes first and comes back
            # last.
            old = existing_outputs(output_dir)
            for path in sorted(old, key=lambda p: not p.endswith(SPLIT_FILE)):
                if path not in final or path.endswith(SPLIT_FILE):
                    os.remove(path)
            for i in sorted(range(len(final)),
                            key=lambda i: final[i].endswith(SPLIT_FILE)):
                os.replace(temporary[i], final[i])
            temporary.clear()
    finally:
        if pool is not None:
            pool.close()
        discard()
        lock.release()
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)                           # failed before writing anything
    return Conversion(classes=classes, rows=rows, skipped=skipped, ignored=plan.ignored,
                      files=sorted(final), seconds=time.perf_counter() - started)


def _write(image_dir, classes, rows, pool, temporary, hide_bar):
    """Write labels.txt, split.csv and the records of `rows` to the temporary files
    `temporary` ({final path: temporary path})."""
    named = {os.path.basename(final): path for final, path in temporary.items()}
    for name, text in ((LABELS_FILE, ''.join(c + '\n' for c in classes)),
                       (SPLIT_FILE, None)):
        with open(named[name], 'w', encoding='utf-8', newline='') as f:
            if text is not None:
                f.write(text)
            else:
                writer = csv.writer(f, lineterminator='\n')
                writer.writerow(SPLIT_HEADER)
                writer.writerows(rows)
    results = pool.map(images.encode_image, [os.path.join(image_dir, *row[0].split('/'))
                                             for row in rows])
    bar = tqdm(total=len(rows), desc='writing', unit='img', disable=hide_bar)
    for split in SPLITS:
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
