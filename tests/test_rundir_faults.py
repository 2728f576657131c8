"""The fault handling of the output folders and files, without TensorFlow: the messages of
refused writes, the folder lock, the leftovers of killed writers, whole-folder writes and the
checked feature cache. rundir, feature_cache, outputdir and atomicfile load no TensorFlow, and
neither does this file. (Resuming past damaged checkpoints, the best epoch's choice and the
disk-space warning are checkpoints.py's: tests/test_checkpoints.py.)
"""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import atomicfile
import feature_cache
import outputdir
from fault_injection import FullDisk, flip_byte

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_these_modules_load_no_tensorflow():
    code = ('import sys; sys.path.insert(0, %r); import atomicfile, class_names, console, '
            'feature_cache, fineturn, knobs, outputdir, rundir; '
            'sys.exit("tensorflow" in sys.modules)' % ROOT)
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


@pytest.mark.parametrize('number, says', [
    (errno.ENOSPC, 'no space left on the device (it needs about 2.0 MB, '),
    (errno.EDQUOT, 'disk quota exceeded (it needs about 2.0 MB, '),
    (errno.EIO, 'input/output error: the disk or its connection failed (it needs about 2.0 MB)'),
    (errno.EROFS, 'read-only file system (it needs about 2.0 MB): write elsewhere'),
])
def test_a_refused_write_says_what_where_and_how_much(tmp_path, number, says):
    target = str(tmp_path / 'metrics.csv')

    def refused(f):
        f.write('epoch')
        raise OSError(number, os.strerror(number))
    with pytest.raises(atomicfile.WriteError) as caught:
        atomicfile.atomic_write(target, refused, what='the metrics', needed=2e6)
    message = str(caught.value)
    assert message.startswith('cannot write the metrics %s: %s' % (target, says)), message
    assert message.endswith('then rerun the same command') and '\n' not in message
    assert os.listdir(tmp_path) == []


def test_a_read_only_run_dir_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(outputdir.LOCK_FILE):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, 'open', read_only)
    with pytest.raises(atomicfile.WriteError, match='lock file .*: read-only file system'):
        outputdir.own(str(tmp_path), '--run-dir')


def test_orphans_are_those_of_dead_writers(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    names = {'.metrics.tmp-%s-abcd1234.csv' % dead: True,            # ours, writer dead
             '.metrics.tmp-%d-abcd1234.csv' % os.getpid(): False,     # ours, writer alive
             'model.ckpt-3.data-00000-of-00001.tempstate12345': 'held',   # TensorFlow's
             'checkpoint.tmp0123456789abcdef0123456789abcdef': 'held',
             '.train-key.x1y2z3w4.tmp.npy': 'held',                   # before the PID was there
             'model.ckpt-3.index': False, 'metrics.csv': False, '.lock': False}
    (tmp_path / 'feature_cache').mkdir()
    for name in names:
        (tmp_path / 'feature_cache' / name).write_bytes(b'x' * 1000)
    (tmp_path / ('.export.tmp-%s-qwer5678' % dead)).mkdir()            # a folder, whole
    (tmp_path / ('.export.tmp-%s-qwer5678' % dead) / 'saved_model.pb').write_bytes(b'y' * 500)
    for held in (False, True):
        expected = sorted([str(tmp_path / ('.export.tmp-%s-qwer5678' % dead))] + [
            str(tmp_path / 'feature_cache' / n) for n, kind in names.items()
            if kind is True or (held and kind == 'held')])
        assert sorted(atomicfile.orphans(str(tmp_path), held)) == expected
    assert atomicfile.remove_orphans(str(tmp_path), held=True) == (5, 4500)
    assert sorted(os.listdir(tmp_path / 'feature_cache')) == sorted(
        n for n, kind in names.items() if kind is False)


def test_atomic_dir_is_complete_or_absent(tmp_path):
    target = str(tmp_path / 'export')
    with pytest.raises(KeyboardInterrupt):
        with atomicfile.atomic_dir(target) as folder:
            (tmp_path / os.path.basename(folder) / 'a').write_text('half')
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    for text in ('first', 'second'):
        with atomicfile.atomic_dir(target, replace=True) as folder:
            with open(os.path.join(folder, 'a'), 'w') as f:
                f.write(text)
        assert open(os.path.join(target, 'a')).read() == text
    assert os.listdir(tmp_path) == ['export']
    with pytest.raises(FileExistsError):
        with atomicfile.atomic_dir(target):
            pass
    assert os.listdir(tmp_path) == ['export']


@pytest.mark.parametrize('damage, says', [
    ('truncate', 'truncated: '),
    ('flip data', 'checksum mismatch'),
    ('flip header', 'header checksum mismatch'),
    ('foreign', 'written for split validation'),
    ('not a cache', 'not a feature cache file'),
])
def test_a_damaged_cache_file_is_never_used(tmp_path, damage, says):
    shape = (5, 2, 3, 3, 4)
    features = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    batches = [(features[:3], np.arange(3), np.array(['a', 'b', 'c'])),
               (features[3:], np.arange(3, 5), np.array(['d', 'é']))]
    folder = str(tmp_path)
    loaded = feature_cache.write(folder, 'train', 'k', shape, iter(batches), ram_gb=1)
    assert np.array_equal(loaded[0], features) and list(loaded[2]) == list('abcdé')
    path = feature_cache.path(folder, 'train', 'k')
    if damage == 'truncate':
        os.truncate(path, os.path.getsize(path) - 1)
    elif damage == 'flip data':
        flip_byte(path, feature_cache.HEADER_SIZE + 17)
    elif damage == 'flip header':
        flip_byte(path, len(feature_cache.MAGIC) + 3)
    elif damage == 'foreign':
        feature_cache.write(folder, 'validation', 'k', shape, iter(batches), ram_gb=1)
        os.replace(feature_cache.path(folder, 'validation', 'k'), path)
    else:
        with open(path, 'wb') as f:
            np.save(f, features)
    with pytest.raises(feature_cache.DamagedCacheError) as caught:
        feature_cache.load(folder, 'train', 'k', shape, ram_gb=1)
    assert str(caught.value).startswith('feature cache %s is damaged (%s' % (path, says))
    assert not os.path.exists(path)                          # deleted: it is recomputed


def test_a_full_disk_while_caching_leaves_nothing(tmp_path, monkeypatch):
    shape = (4, 1, 2)
    monkeypatch.setattr(feature_cache, 'open', FullDisk('train-', room=feature_cache.HEADER_SIZE),
                        raising=False)
    batches = iter([(np.ones((4, 1, 2), np.float32), np.arange(4), np.array(list('abcd')))])
    with pytest.raises(atomicfile.WriteError, match='the feature cache .*needs about 4.2 kB'):
        feature_cache.write(str(tmp_path), 'train', 'k', shape, batches, ram_gb=1)
    assert os.listdir(tmp_path) == []
