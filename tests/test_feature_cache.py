"""The feature cache's storage: keys, spilling to a memory-mapped file, nothing half-written."""
import os

import numpy as np
import pytest

import feature_cache
import fineturn
import training


def batches(features, labels, paths, size=3):
    for i in range(0, len(features), size):
        yield features[i:i + size], labels[i:i + size], paths[i:i + size]


def sample(n=7):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, 4, 6, 6, 8)).astype(np.float32), np.arange(n) % 3,
            np.array(['c%d/img%d.tif' % (i % 3, i) for i in range(n)]))


def test_write_then_load_in_ram_or_memory_mapped(tmp_path):
    features, labels, paths = sample()
    got = feature_cache.write(str(tmp_path), 'train', 'k1', features.shape,
                              batches(features, labels, paths), ram_gb=1)
    assert not isinstance(got[0], np.memmap)
    np.testing.assert_array_equal(got[0], features)
    np.testing.assert_array_equal(got[1], labels)
    assert list(got[2]) == list(paths)
    spilled = feature_cache.load(str(tmp_path), 'train', 'k1', features.shape,
                                 ram_gb=0)   # "doesn't fit"
    assert isinstance(spilled[0], np.memmap)
    np.testing.assert_array_equal(spilled[0], features)
    assert feature_cache.load(str(tmp_path), 'train', 'other-key', features.shape,
                              ram_gb=1) is None


def test_failed_extraction_leaves_nothing(tmp_path):
    features, labels, paths = sample()

    def broken():
        yield features[:3], labels[:3], paths[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        feature_cache.write(str(tmp_path), 'train', 'k1', features.shape, broken(), ram_gb=1)
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match='expected 7 images, got 3'):
        feature_cache.write(str(tmp_path), 'train', 'k1', features.shape,
                            batches(features[:3], labels[:3], paths[:3]), ram_gb=1)
    assert os.listdir(tmp_path) == []


def test_key_follows_contents_and_facts(tmp_path):
    weights, records = tmp_path / 'w.npz', tmp_path / 'train.tfrecord'
    weights.write_bytes(b'weights v1')
    records.write_bytes(b'records')
    files = [str(records), str(weights)]
    key = feature_cache.cache_key(files, boundary='fc6', variants=4)
    assert key == feature_cache.cache_key(files, boundary='fc6', variants=4)
    assert key != feature_cache.cache_key(files, boundary='fc7', variants=4)
    assert key != feature_cache.cache_key(files, boundary='fc6', variants=1)
    weights.write_bytes(b'weights v2')       # same size, other contents
    assert key != feature_cache.cache_key(files, boundary='fc6', variants=4)


def test_remove_stale_keeps_current_files(tmp_path):
    for name in ('train-old.cache', 'train-new.cache', 'test-new.cache', 'test-new.npy'):
        (tmp_path / name).write_bytes(b'x')
    feature_cache.remove_stale(str(tmp_path), [str(tmp_path / 'train-new.cache'),
                                               str(tmp_path / 'test-new.cache')])
    assert sorted(os.listdir(tmp_path)) == ['test-new.cache', 'train-new.cache']


@pytest.mark.parametrize('flags, on, says', [
    ([], True, 'pool5 (the input of fc6)'),
    (['--train-layers', 'conv5,fc6,fc7,fc8'], True, 'conv4 (the input of conv5)'),
    (['--train-layers', 'fc8', '--skip-layers', 'fc8'], True, 'fc7 (the input of fc8)'),
    (['--train-layers', 'conv1,fc8'], False, 'conv1 is trained'),
    (['--no-cache'], False, '--no-cache'),
])
def test_cache_decision_follows_the_lowest_trained_layer(flags, on, says):
    used, why = training.cache_decision(fineturn.settings_from(fineturn.parse_args(flags)))
    assert used is on and says in why
