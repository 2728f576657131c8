"""A folder-per-class image set and its split: what the converter checks before it writes.

Input: an image dir, IMAGE_DIR/<class>/<image>. Class folders sorted by name (Unicode code point
order) give the label indices. Image files are those named like images (images.IMAGE_EXTENSIONS,
the list --predict uses too: .tif .jpg .png .gif ... in any letter case); hidden files (a name
starting with '.', e.g. .DS_Store or macOS '._x.tif') and anything else (Thumbs.db, notes, sub
folders) are ignored and counted.

Split: per class, the sorted list of readable images is shuffled with a generator seeded by
(seed, class name), so a class's split depends only on its own files. Counts per split: each split
gets floor(n * ratio), the images left over go to the largest fractional parts (ties: train, then
validation), and every split of a non-zero ratio gets at least one image, taken from the split
with the most images over its share (a ratio of 0, which only fineturn.py --split-ratios allows,
gets none). 100 images at 0.8/0.1/0.1 give exactly 80/10/10; 3 give 1/1/1; 15 give 12/2/1. A
class with fewer usable images than non-zero ratios is an error naming it.

The converted folder (records.py reads it): the records of each split, labels.txt, split.csv.

No TensorFlow here: convert_tfrecord.py checks its inputs with plan() before TensorFlow loads, so
a wrong folder or ratio is answered at once.
"""
import dataclasses
import glob
import math
import os
import random

from errors import UserError
from images import IMAGE_EXTENSIONS, skip_reason

SPLITS = ('train', 'validation', 'test')
LABELS_FILE = 'labels.txt'
SPLIT_FILE = 'split.csv'
SPLIT_HEADER = ('path', 'label', 'split')
RECORDS_PER_SHARD = 1000          # ~110 MB shards for 256x256 images


class ConvertError(UserError):
    """Bad input to the converter; the message names the problem and the fix."""


@dataclasses.dataclass
class Plan:
    """A conversion's checked inputs: what plan() found."""
    image_dir: str
    output_dir: str
    ratios: tuple
    workers: int                        # image processes; 0 = one per CPU core
    overwrite: bool                     # may replace an earlier conversion in output_dir
    classes: list                       # class names, sorted: label -> name
    found: dict                         # {class: [image paths relative to image_dir]}
    ignored: list                       # (path, reason) of hidden files and non-images

    @property
    def paths(self):
        return [rel for name in self.classes for rel in self.found[name]]


def plan(image_dir, output_dir, ratios, workers=0, overwrite=False):
    """The checks a conversion can make before reading an image -> Plan; a ConvertError that names
    the problem otherwise."""
    ratios = check_ratios(ratios)
    if workers < 0:
        raise ConvertError('--workers %d: need 0 (one per core) or more' % workers)
    try:
        classes, found, ignored = scan(image_dir)
        check_output_dir(output_dir, image_dir)
        check_earlier_outputs(output_dir, overwrite)
    except OSError as error:                 # a folder we may not list, ...
        raise ConvertError(str(error)) from None
    return Plan(image_dir, output_dir, ratios, workers, overwrite, classes, found, ignored)


@dataclasses.dataclass
class Conversion:
    """What convert() did. Paths are relative to the image dir, with '/' separators."""
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


def scan(image_dir):
    """IMAGE_DIR -> (class names, {class: [relative image paths]}, [(ignored path, reason)])."""
    if not os.path.isdir(image_dir):
        raise ConvertError('image dir %s does not exist (or is not a folder): pass --image-dir '
                           'with one sub folder of images per class' % image_dir)
    classes, found, ignored = [], {}, []
    for name in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, name)
        if skip_reason(name) == 'hidden':
            ignored.append((name, 'hidden'))
        elif not os.path.isdir(path):
            ignored.append((name, 'not a class folder'))
        else:
            classes.append(name)
    if not classes:
        raise ConvertError('image dir %s holds no class folders: expected %s/<class>/<image>'
                           % (image_dir, image_dir))
    for name in classes:
        found[name] = []
        for file in sorted(os.listdir(os.path.join(image_dir, name))):
            rel = name + '/' + file
            reason = skip_reason(file)
            if reason is None and not os.path.isfile(os.path.join(image_dir, name, file)):
                reason = 'not an image'
            if reason is None:
                found[name].append(rel)
            else:
                ignored.append((rel, reason))
        if not found[name]:
            raise ConvertError('class folder %s has no images (%s): remove it or add images'
                               % (os.path.join(image_dir, name), ' '.join(IMAGE_EXTENSIONS)))
    return classes, found, ignored


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
        while counts[i] == 0 and ratios[i] > 0:
            donor = max((j for j in range(len(counts)) if counts[j] > 1),
                        key=lambda j: (counts[j] - ideal[j], counts[j]))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def minimum_per_class(ratios):
    """The fewest images a class can be split into `ratios` with: one per non-zero ratio."""
    return sum(1 for ratio in ratios if ratio > 0)


def assign_splits(classes, usable, ratios, seed):
    """{class: [usable relative paths]} -> [(path, label, split)] ordered by split, label, path."""
    rows = []
    for label, name in enumerate(classes):
        paths = sorted(usable[name])
        if len(paths) < minimum_per_class(ratios):
            raise ConvertError('class %s has %d usable image(s): every class needs at least %d, '
                               'one per split' % (name, len(paths), minimum_per_class(ratios)))
        random.Random('%s/%s' % (seed, name)).shuffle(paths)
        start = 0
        for split, count in zip(SPLITS, split_counts(len(paths), ratios)):
            rows.extend((path, label, split) for path in paths[start:start + count])
            start += count
    order = {split: i for i, split in enumerate(SPLITS)}
    return sorted(rows, key=lambda row: (order[row[2]], row[1], row[0]))


# --- writing -------------------------------------------------------------------------------------

def shard_names(split, n):
    shards = max(1, math.ceil(n / RECORDS_PER_SHARD))
    return ['%s-%05d-of-%05d.tfrecord' % (split, i, shards) for i in range(shards)]


def record_files(records_dir, split):
    """The record files of `split` in a converted folder, sorted (their concatenation is
    split.csv's order); [] if there are none."""
    return sorted(glob.glob(os.path.join(glob.escape(records_dir), split + '*.tfrecord')))


def existing_outputs(output_dir):
    """Output files of an earlier conversion in output_dir, sorted."""
    found = [os.path.join(output_dir, name) for name in (LABELS_FILE, SPLIT_FILE)]
    found = [path for path in found if os.path.exists(path)]
    for split in SPLITS:
        found += record_files(output_dir, split)
    return sorted(found)


def check_output_dir(output_dir, image_dir):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConvertError('output dir %s is a file: pass --output-dir a folder' % output_dir)
    source, out = os.path.realpath(image_dir), os.path.realpath(output_dir)
    if out == source or out.startswith(source + os.sep):
        raise ConvertError('output dir %s is inside the image dir %s, where it would be read as a '
                           'class: write the records elsewhere' % (output_dir, image_dir))


def check_earlier_outputs(output_dir, overwrite):
    existing = existing_outputs(output_dir)
    if existing and not overwrite:
        raise ConvertError('%s already holds %d output file(s) (%s ...): pass --overwrite to '
                           'replace them'
                           % (output_dir, len(existing), os.path.basename(existing[0])))


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


