"""Repeated random splits (fineturn.py --splits N): the evaluation protocol of the papers.

Remote-sensing papers report overall accuracy as mean ± std over N random, class-stratified
splits at a fixed training ratio. The images split here are all those of a converted folder, its
train, validation and test records together: the pool, listed by the folder's split.csv in the
records' order, so a pool position is also a record's position.

Split k (1 <= k <= N) of a protocol with seed S:
- its seed is split_seed(S, k) = 1000 * S + k (so k <= MAX_SPLITS = 999): split 3 of --seed 42
  is seed 42003. The protocol records it, and the split's own run trains with it;
- within each class, the paths sorted by code point are shuffled by
  random.Random('<split seed>/<class name>') (the string seeds Python's generator through
  SHA-512, the same on every platform) and cut, in that order, into train, validation and test
  by counts. This is dataset_folder.assign_splits, the converter's own rule: the converter's
  split with --seed S is this draw with seed S;
- the counts per class are dataset_folder.split_counts: floor(n * ratio) each, the images left
  over to the largest fractional parts (ties: train, then validation), then every part of a
  non-zero ratio gets at least one image, taken from the part with most images over its share.
  100 images at 0.7/0.1/0.2 give 70/10/20, at 0.8/0/0.2 give 80/0/20; 7 give 5/1/1.

`--split-ratios TRAIN VAL TEST` must be non-negative and sum to 1 (within 1e-6); TRAIN and TEST
must be above 0, VAL may be 0 (the papers' plain train/test: no model selection). A class needs
at least one image per non-zero part (dataset_folder.minimum_per_class).

A split's assignment is written as split.csv (path,label,split, ordered by split, label, path:
the converter's format and order), so anyone can rerun exactly that split elsewhere.

No TensorFlow here: the flags and the folder are checked before it loads.
"""
import csv
import dataclasses
import hashlib
import math
import os

from atomicfile import atomic_write
from dataset_folder import (SPLIT_FILE, SPLIT_HEADER, SPLITS, assign_splits, minimum_per_class,
                            record_files)
from errors import UserError
from feature_store import file_digest

MAX_SPLITS = 999                 # split seeds 1000 * S + k stay distinct for k < 1000
RATIOS_FLAG = '--split-ratios'


class SplitError(UserError):
    """A bad split setting or split list; the message names the fix."""


# --- the settings --------------------------------------------------------------------------------

def check_ratios(ratios):
    """TRAIN VAL TEST as a tuple of floats, or a SplitError that names the fix."""
    ratios = tuple(float(r) for r in ratios)
    shown = ' '.join('%g' % r for r in ratios)
    if len(ratios) != len(SPLITS):
        raise SplitError('%s takes 3 numbers, TRAIN VAL TEST (e.g. 0.7 0.1 0.2), got %d'
                         % (RATIOS_FLAG, len(ratios)))
    if not all(math.isfinite(r) for r in ratios) or min(ratios) < 0:
        raise SplitError('%s %s: a ratio cannot be negative; give TRAIN VAL TEST of 0 or more '
                         'summing to 1 (e.g. 0.7 0.1 0.2, or 0.8 0 0.2 without validation)'
                         % (RATIOS_FLAG, shown))
    if abs(sum(ratios) - 1) > 1e-6:
        raise SplitError('%s %s: they sum to %.6g, not 1; give TRAIN VAL TEST summing to 1 '
                         '(e.g. 0.7 0.1 0.2)' % (RATIOS_FLAG, shown, sum(ratios)))
    if ratios[0] == 0 or ratios[2] == 0:
        raise SplitError('%s %s: TRAIN and TEST must be above 0 (only VAL may be 0)'
                         % (RATIOS_FLAG, shown))
    return ratios


def check_split(k, n):
    """A SplitError unless 1 <= n <= MAX_SPLITS and, if `k` is given, 1 <= k <= n."""
    if not 1 <= n <= MAX_SPLITS:
        raise SplitError('--splits %d: give a number of splits from 1 to %d' % (n, MAX_SPLITS))
    if k is not None and not 1 <= k <= n:
        raise SplitError('--split %d is outside 1..%d: pass a K from 1 to --splits %d'
                         % (k, n, n))


def split_seed(seed, k):
    """The seed of split k of a protocol seeded `seed` (module docstring)."""
    return 1000 * seed + k


def folder_name(k, n):
    """split-01 ... split-N, zero-padded to N's digits (at least 2): they sort in order."""
    return 'split-%0*d' % (max(2, len(str(n))), k)


def ratios_text(ratios):
    """0.7 0.1 0.2 -> '70/10/20' (percentages, as the papers write them)."""
    return '/'.join('%g' % round(100 * r, 4) for r in ratios)


# --- drawing -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Split:
    """Split k of a protocol: its seed and its (path, label, part) rows in split.csv's order."""
    k: int
    seed: int
    rows: tuple

    def counts(self):
        """{part: images}, for every part (0 for an empty validation part)."""
        return {part: sum(1 for row in self.rows if row[2] == part) for part in SPLITS}

    def positions(self, pool_paths):
        """{part: [positions in `pool_paths` of the part's images, ascending]}: the order in
        which a pass over the records meets them, and the order of the part's images in a run."""
        return positions(self.rows, pool_paths)


def draw(items, classes, ratios, seed, k):
    """Split k of `items` ((path, label) pairs, label indexing `classes`) with the protocol's
    `seed` and checked `ratios` -> Split; a SplitError names a class too small for the ratios."""
    by_class = {name: [] for name in classes}
    for path, label in items:
        if not 0 <= label < len(classes):
            raise SplitError('%s has label %d but there are %d classes: convert the images again '
                             'with convert_tfrecord.py' % (path, label, len(classes)))
        by_class[classes[label]].append(path)
    needed = minimum_per_class(ratios)
    small = [(name, len(paths)) for name, paths in by_class.items() if len(paths) < needed]
    if small:
        which = ('class %s has %d image(s), too few' % small[0] if len(small) == 1 else
                 'classes %s have too few images' % ', '.join('%s (%d)' % pair for pair in small))
        raise SplitError('%s for %s %s: each class needs at least %d (one per non-zero '
                         'part); add images%s' % (
                             which, RATIOS_FLAG, ' '.join('%g' % r for r in ratios), needed,
                             ', or set VAL to 0 (then %d are enough)' % (needed - 1)
                             if ratios[1] > 0 else ''))
    seed_k = split_seed(seed, k)
    return Split(k, seed_k, tuple(assign_splits(classes, by_class, ratios, seed_k)))


def positions(rows, pool_paths):
    """{part: [positions in `pool_paths` of the images `rows` ((path, label, part)) assign to
    it, ascending]}."""
    where = {path: i for i, path in enumerate(pool_paths)}
    return {part: sorted(where[path] for path, _, name in rows if name == part)
            for part in SPLITS}


def pool_digest(items, records_dir=None):
    """A hex digest of the pool: its (path, label) pairs, in any order, and with `records_dir`
    the contents of its record files, so that the same names with other pixels (the images
    generated or converted again) are another pool."""
    digest = hashlib.blake2b(digest_size=16)
    for path, label in sorted(items):
        digest.update(('%s\t%d\n' % (path, label)).encode('utf-8'))
    if records_dir is not None:
        for split in SPLITS:
            for path in record_files(records_dir, split):
                digest.update(('%s\n' % os.path.basename(path)).encode('utf-8'))
                file_digest(path, digest)
    return digest.hexdigest()


# --- split.csv -----------------------------------------------------------------------------------

def write_split(path, rows):
    """Write `rows` ((path, label, part)) as a split.csv, whole or not at all."""
    def write(f):
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(SPLIT_HEADER)
        writer.writerows(rows)
    atomic_write(path, write, what='the split list')


def read_split(path, fix):
    """The (path, label, part) rows of a split.csv; a SplitError that ends with `fix` if the file
    is missing or is not a split list."""
    try:
        with open(path, encoding='utf-8', newline='') as f:
            reader = csv.reader(f)
            if tuple(next(reader, ())) != SPLIT_HEADER:
                raise ValueError('its first line is not %s' % ','.join(SPLIT_HEADER))
            rows = []
            for line, row in enumerate(reader, start=2):
                if len(row) != 3 or row[2] not in SPLITS or not row[1].isdigit():
                    raise ValueError('line %d is not path,label,split' % line)
                rows.append((row[0], int(row[1]), row[2]))
    except FileNotFoundError:
        raise SplitError('%s does not exist: %s' % (path, fix)) from None
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        raise SplitError('%s is damaged (%s): %s' % (path, error, fix)) from None
    return rows


def read_pool(records_dir):
    """The images of a converted folder as (path, label) pairs in the records' order (train, then
    validation, then test, as its split.csv lists them)."""
    rows = read_split(os.path.join(records_dir, SPLIT_FILE),
                      'convert the images into %s again with convert_tfrecord.py' % records_dir)
    if len({path for path, _, _ in rows}) != len(rows):
        raise SplitError('%s lists an image twice: convert the images into %s again with '
                         'convert_tfrecord.py' % (os.path.join(records_dir, SPLIT_FILE),
                                                  records_dir))
    return [(path, label) for path, label, _ in rows]
