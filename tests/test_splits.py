"""Repeated random splits: stratified, disjoint, different from each other, reproducible."""
import collections
import os

import pytest

import dataset_folder
import splits
from splits import SplitError

CLASSES = ['beach', 'forest', 'harbor']
SIZES = {'beach': 100, 'forest': 7, 'harbor': 10}
RATIOS = (0.7, 0.1, 0.2)
# per class at 0.7/0.1/0.2, worked by hand from the rule in splits.py:
#   100 -> 70/10/20; 7 -> 4.9/0.7/1.4 floored 4/0/1, the 2 left to train (.9) and val (.7)
#   -> 5/1/1; 10 -> 7/1/2
EXPECTED = {'beach': (70, 10, 20), 'forest': (5, 1, 1), 'harbor': (7, 1, 2)}


def pool(sizes=SIZES):
    # deliberately not in path order: the draw must not depend on the pool's order
    return [('%s/%s%03d.tif' % (name, name, i), CLASSES.index(name))
            for name in CLASSES for i in reversed(range(sizes[name]))]


def per_class_counts(split):
    counts = collections.Counter((CLASSES[label], part) for _, label, part in split.rows)
    return {name: tuple(counts[name, part] for part in dataset_folder.SPLITS)
            for name in CLASSES}


def test_splits_are_stratified_and_partition_the_pool():
    items = pool()
    for k in (1, 2, 3):
        split = splits.draw(items, CLASSES, RATIOS, seed=42, k=k)
        assert per_class_counts(split) == EXPECTED
        parts = {part: {path for path, _, name in split.rows if name == part}
                 for part in dataset_folder.SPLITS}
        assert not parts['train'] & parts['validation']
        assert not parts['train'] & parts['test']
        assert not parts['validation'] & parts['test']
        assert parts['train'] | parts['validation'] | parts['test'] == {p for p, _ in items}
        assert len(split.rows) == len(items)
        # each image keeps its label
        assert {(p, l) for p, l, _ in split.rows} == set(items)
        assert split.counts() == {'train': 82, 'validation': 12, 'test': 23}


def test_splits_differ_and_each_is_reproducible_from_its_seed():
    items = pool()
    drawn = [splits.draw(items, CLASSES, RATIOS, seed=42, k=k) for k in (1, 2, 3)]
    assert [split.seed for split in drawn] == [42001, 42002, 42003]
    trains = [frozenset(p for p, _, part in split.rows if part == 'train') for split in drawn]
    assert len(set(trains)) == 3
    # per class too, not just overall (a class drawn the same way every time is a bug)
    for name in CLASSES:
        assignments = {frozenset((p, part) for p, _, part in split.rows if p.startswith(name))
                       for split in drawn}
        assert len(assignments) == 3
    # the same seed draws the same split, whatever the pool's order ...
    assert splits.draw(list(reversed(items)), CLASSES, RATIOS, seed=42, k=2) == drawn[1]
    # ... and anyone holding a split's recorded seed redraws it with the converter's rule
    by_class = {name: [p for p, l in items if CLASSES[l] == name] for name in CLASSES}
    assert tuple(dataset_folder.assign_splits(CLASSES, by_class, RATIOS, 42002)) == drawn[1].rows
    # another protocol seed gives other splits
    assert splits.draw(items, CLASSES, RATIOS, seed=43, k=2).rows != drawn[1].rows


def test_no_validation_part():
    split = splits.draw(pool({'beach': 10, 'forest': 2, 'harbor': 5}), CLASSES, (0.8, 0, 0.2),
                        seed=1, k=1)
    assert per_class_counts(split) == {'beach': (8, 0, 2), 'forest': (1, 0, 1),
                                       'harbor': (4, 0, 1)}
    assert split.counts()['validation'] == 0


def test_positions_index_the_pool():
    items = pool()
    split = splits.draw(items, CLASSES, RATIOS, seed=5, k=1)
    positions = split.positions([path for path, _ in items])
    for part, where in positions.items():
        assert where == sorted(where)
        assert sorted(items[i][0] for i in where) == sorted(p for p, _, name in split.rows
                                                            if name == part)


def test_split_csv_round_trip_and_damage(tmp_path):
    split = splits.draw(pool(), CLASSES, RATIOS, seed=42, k=1)
    path = str(tmp_path / 'split.csv')
    splits.write_split(path, split.rows)
    assert tuple(splits.read_split(path, 'fix it')) == split.rows
    with open(path, encoding='utf-8') as f:
        assert f.readline() == 'path,label,split\n'
    assert os.listdir(tmp_path) == ['split.csv']          # no temporary file left
    with open(path, 'a', encoding='utf-8') as f:
        f.write('beach/x.tif,1,holdout\n')
    with pytest.raises(SplitError, match=r'split.csv is damaged \(line 119 is not '
                                         r'path,label,split\): fix it'):
        splits.read_split(path, 'fix it')
    with pytest.raises(SplitError, match='does not exist: fix it'):
        splits.read_split(str(tmp_path / 'none.csv'), 'fix it')


def test_read_pool_keeps_the_records_order(tmp_path):
    rows = [('b/1.tif', 1, 'train'), ('a/2.tif', 0, 'train'), ('a/1.tif', 0, 'test')]
    splits.write_split(str(tmp_path / 'split.csv'), rows)
    assert splits.read_pool(str(tmp_path)) == [('b/1.tif', 1), ('a/2.tif', 0), ('a/1.tif', 0)]
    splits.write_split(str(tmp_path / 'split.csv'), rows + [('a/2.tif', 0, 'test')])
    with pytest.raises(SplitError, match='lists an image twice'):
        splits.read_pool(str(tmp_path))
    assert splits.pool_digest([('a', 1), ('b', 0)]) == splits.pool_digest([('b', 0), ('a', 1)])
    assert splits.pool_digest([('a', 1), ('b', 0)]) != splits.pool_digest([('a', 0), ('b', 0)])


def test_the_pool_digest_covers_the_records_bytes(tmp_path):
    """The same names and labels with other pixels (images generated or converted again) are
    another pool."""
    items = [('a', 1), ('b', 0)]
    for split, data in (('train', b'one'), ('test', b'two')):
        (tmp_path / ('%s-00000-of-00001.tfrecord' % split)).write_bytes(data)
    first = splits.pool_digest(items, str(tmp_path))
    assert first != splits.pool_digest(items)
    assert splits.pool_digest(items, str(tmp_path)) == first
    (tmp_path / 'test-00000-of-00001.tfrecord').write_bytes(b'twO')
    assert splits.pool_digest(items, str(tmp_path)) != first


@pytest.mark.parametrize('ratios, message', [
    ((0.7, 0.2, 0.2), r'--split-ratios 0.7 0.2 0.2: they sum to 1.1, not 1; give TRAIN VAL '
                      r'TEST summing to 1'),
    ((0.9, -0.1, 0.2), r'--split-ratios 0.9 -0.1 0.2: a ratio cannot be negative'),
    ((0.7, 0.1), r'--split-ratios takes 3 numbers, TRAIN VAL TEST \(e.g. 0.7 0.1 0.2\), got 2'),
    ((1, 0, 0), r'TRAIN and TEST must be above 0 \(only VAL may be 0\)'),
    ((0.7, 0.1, float('nan')), r'a ratio cannot be negative'),
])
def test_bad_ratios(ratios, message):
    with pytest.raises(SplitError, match=message):
        splits.check_ratios(ratios)


def test_ratios_within_tolerance():
    assert splits.check_ratios(['0.7', '0.1', '0.2000005']) == (0.7, 0.1, 0.2000005)
    assert splits.check_ratios((0.8, 0, 0.2)) == (0.8, 0.0, 0.2)


def test_too_small_class_is_named_with_the_minimum():
    items = pool({'beach': 10, 'forest': 2, 'harbor': 5})
    with pytest.raises(SplitError, match=r'^class forest has 2 image\(s\), too few for '
                                         r'--split-ratios 0.7 0.1 0.2: each class needs at '
                                         r'least 3 \(one per non-zero part\); add images, or set '
                                         r'VAL to 0 \(then 2 are enough\)$'):
        splits.draw(items, CLASSES, RATIOS, seed=1, k=1)
    items = pool({'beach': 10, 'forest': 1, 'harbor': 0})
    with pytest.raises(SplitError, match=r'^classes forest \(1\), harbor \(0\) have too few '
                                         r'images for --split-ratios 0.8 0 0.2: each class needs '
                                         r'at least 2 \(one per non-zero part\); add images$'):
        splits.draw(items, CLASSES, (0.8, 0, 0.2), seed=1, k=1)


@pytest.mark.parametrize('k, n, message', [
    (0, 5, r'^--split 0 is outside 1..5: pass a K from 1 to --splits 5$'),
    (6, 5, r'^--split 6 is outside 1..5'),
    (None, 0, r'^--splits 0: give a number of splits from 1 to 999$'),
    (1, 1000, r'^--splits 1000'),
])
def test_split_index_outside_the_range(k, n, message):
    with pytest.raises(SplitError, match=message):
        splits.check_split(k, n)


def test_names():
    splits.check_split(5, 5)
    splits.check_split(None, 999)
    assert splits.folder_name(3, 10) == 'split-03'
    assert splits.folder_name(7, 120) == 'split-007'
    assert splits.ratios_text((0.7, 0.1, 0.2)) == '70/10/20'
    assert splits.ratios_text((0.8, 0.0, 0.2)) == '80/0/20'
