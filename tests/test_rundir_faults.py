"""The fault handling of the output folders and files, without TensorFlow: the messages of
refused writes, the folder lock, the leftovers of killed writers, whole-folder writes and the
per-run cache of earlier versions. rundir, outputdir and atomicfile load no TensorFlow, and
neither does this file. (Resuming past damaged checkpoints, the best epoch's choice and the
disk-space warning are checkpoints.py's: tests/test_checkpoints.py; damaged and torn feature
store entries are tests/test_feature_store.py's.)
"""
import errno
import os
import subprocess
import sys

import pytest

import atomicfile
import fineturn
import outputdir
import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_these_modules_load_no_tensorflow():
    code = ('import sys; sys.path.insert(0, %r); import atomicfile, class_names, console, '
            'feature_store, fineturn, frozen_features, knobs, outputdir, protocol, '
            'protocol_table, rundir, splits, svm; sys.exit("tensorflow" in sys.modules)' % ROOT)
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


def test_the_per_run_cache_of_earlier_versions_is_removed_and_said(tmp_path):
    run_dir = tmp_path / 'run'
    old = run_dir / 'feature_cache'
    old.mkdir(parents=True)
    (old / 'train-0123abcd.cache').write_bytes(bytes(3000))
    (old / 'test-0123abcd.cache').write_bytes(bytes(1000))
    said = []
    settings = fineturn.settings_from(fineturn.parse_args(['--run-dir', str(run_dir)]))
    lock, rows = rundir.open_run(settings, said.append)
    lock.release()
    assert not old.exists() and rows == []
    assert said == ['removed %s, the per-run feature cache of earlier versions (4.0 kB): frozen '
                    'features now live in the feature store (--feature-store)' % old]
