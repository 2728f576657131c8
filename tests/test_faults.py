"""The machine's faults, injected: full disks, damaged files, two processes at once, kill -9.

Each fault is made to happen, not assumed: a write raises OSError(ENOSPC) (or the error TensorFlow
raises for it), bytes of a file are cut or flipped, another process holds the folder, a subprocess
is killed with SIGKILL in the middle of a write. After each one the test checks the exit status,
that the error is one line without a traceback, that no temporary file is left, that the completed
work is intact, and that a rerun ends with the outputs of an undisturbed run.
"""
import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure

import alexnet
import atomicfile
import checkpoints
import classify
import convert_tfrecord
import feature_store
import fineturn
import images
import outputdir
import records
import rundir
import synthetic_dataset
import validate_alexnet_on_imagenet as validate
from caffe_to_npy import __main__ as caffe_to_npy_main
from caffe_to_npy import synthetic
from fault_injection import ENOSPC, FullDisk, flip_byte, temporary_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A subprocess that runs a command line and kills itself with SIGKILL at the Nth call of a
# function (argv: module, dotted attribute, N, a glob to wait for or '-', then the command).
# With a glob, the Nth call starts a thread that kills the process as soon as a file matching it
# exists: how to die in the middle of a write that TensorFlow's C++ code does.
KILLER = r'''
import glob, importlib, os, runpy, signal, sys, threading, time
if __name__ == '__main__':
    sys.path.insert(0, os.environ['FAULTS_ROOT'])
    import environment
    environment.prepare_tensorflow()
    module, attribute, nth, pattern = sys.argv[1:5]
    sys.argv = sys.argv[5:]
    owner = importlib.import_module(module)
    *path, name = attribute.split('.')
    for part in path:
        owner = getattr(owner, part)
    original, calls = getattr(owner, name), []

    def kill_when_written():
        while not glob.glob(pattern):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth):
            if pattern == '-':
                os.kill(os.getpid(), signal.SIGKILL)
            threading.Thread(target=kill_when_written, daemon=True).start()
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)
    if sys.argv[0] == '-m':
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
    else:
        runpy.run_path(sys.argv[0], run_name='__main__')
'''


def killed_mid_write(tmp_path, module, attribute, nth, pattern, command):
    """Run `command` (argv after python) under KILLER; return its output once SIGKILL ended it."""
    script = tmp_path / 'killer.py'
    script.write_text(KILLER)
    process = subprocess.run(
        [sys.executable, str(script), module, attribute, str(nth), pattern] + command,
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, FAULTS_ROOT=ROOT))
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    return process.stdout


# --- checks after every fault --------------------------------------------------------------------

def one_line_error(err, prog):
    """The error: exactly one line `<prog>: error: ...` on stderr besides warnings, no traceback."""
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if line.strip() and
             not line.startswith('warning: ')]
    assert len(lines) == 1 and lines[0].startswith(prog + ': error: '), err
    return lines[0]


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def metrics(run_dir):
    """metrics.csv without its timings."""
    return [{k: v for k, v in row.items() if k != 'seconds'}
            for row in read_csv(os.path.join(run_dir, rundir.METRICS_FILE))]


def assert_close(got, want, where, rel, abs):
    """JSON data equal but for its numbers, which may differ within the tolerance: the same keys,
    lengths, strings and booleans. (pytest.approx of a dict holding strings is a TypeError in
    pytest 9.2.)"""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            assert_close(got[key], want[key], '%s.%s' % (where, key), rel, abs)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for index, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, '%s[%d]' % (where, index), rel, abs)
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), where
        assert got == pytest.approx(want, rel=rel, abs=abs), where
    else:
        assert got == want, where


def test_assert_close_compares_numbers_within_tolerance_and_the_rest_exactly():
    report = {'checkpoint': 'model.ckpt-2', 'accuracy': 0.5, 'per_class': [{'name': 'a',
                                                                              'recall': 1.0}]}
    assert_close({'checkpoint': 'model.ckpt-2', 'accuracy': 0.50000001,
                  'per_class': [{'name': 'a', 'recall': 1.0}]}, report, 'r', rel=1e-4, abs=1e-6)
    for different in ({'checkpoint': 'model.ckpt-3'}, {'accuracy': 0.51},
                      {'accuracy': '0.5'}, {'per_class': [{'name': 'b', 'recall': 1.0}]},
                      {'per_class': []}, {'extra': 1}):
        with pytest.raises(AssertionError):
            assert_close(dict(report, **different), report, 'r', rel=1e-4, abs=1e-6)


def assert_same_run(run_dir, reference):
    """The outputs of an undisturbed run: the same files, epochs, figures, report, predictions."""
    def names(folder):
        return sorted(n for n in os.listdir(folder) if not n.startswith('events.'))
    assert names(run_dir) == names(reference)
    # close, not equal: a killed subprocess may have computed the feature cache with TensorFlow's
    # other CPU kernels (oneDNN or not, by the environment at its import), which round otherwise
    close = dict(rel=1e-4, abs=1e-6)
    got, want = metrics(run_dir), metrics(reference)
    assert [r['epoch'] for r in got] == [r['epoch'] for r in want]
    for a, b in zip(got, want):
        for key in ('train_loss', 'train_accuracy', 'val_loss', 'val_accuracy', 'learning_rate'):
            assert float(a[key]) == pytest.approx(float(b[key]), **close), key
    for name in ('best.json', 'test_report.json'):
        with open(os.path.join(run_dir, name)) as f, open(os.path.join(reference, name)) as g:
            assert_close(json.load(f), json.load(g), name, **close)
    got, want = (read_csv(os.path.join(folder, 'predictions.csv')) for folder in (run_dir,
                                                                                  reference))
    assert [(r['path'], r['label'], r['predicted']) for r in got] == \
        [(r['path'], r['label'], r['predicted']) for r in want]
    assert [float(r['confidence']) for r in got] == \
        pytest.approx([float(r['confidence']) for r in want], **close)
    assert temporary_files(run_dir) == []


# --- fineturn.py ---------------------------------------------------------------------------------

def fineturn_args(data, weights, run_dir, epochs=2, store=None):
    """Deterministic (no dropout, no flips), so a resumed run equals an undisturbed one; the
    frozen features in the feature store `store` (the session's if None)."""
    return [str(a) for a in ('--records-dir', data, '--weights', weights, '--run-dir', run_dir,
                             '--epochs', epochs, '--batch-size', 16, '--seed', 3,
                             '--keep-prob', 1, '--no-flip')
            + (('--feature-store', store) if store else ())]


def store_entries(store):
    """The feature store entries under `store`, sorted."""
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(store)
                  for name in names if name.endswith(feature_store.SUFFIX)
                  and not atomicfile.temporary_writer(name)[0])


def run_fineturn(args, capfd):
    """fineturn.main in this process -> (exit status, stdout, stderr); capfd sees TensorFlow's
    own C++ logging too."""
    code = fineturn.main(args)
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture(scope='module')
def undisturbed(tiny_records, alexnet_npz, tmp_path_factory):
    """The run dir of an undisturbed run, its features in a store of its own (next to it, as
    run_dir + '-store')."""
    run_dir = str(tmp_path_factory.mktemp('undisturbed'))
    assert fineturn.main(fineturn_args(tiny_records, alexnet_npz, run_dir,
                                       store=run_dir + '-store')) == 0
    return run_dir


def linked_copy(run_dir, to, damaged=()):
    """A copy of a run dir made of hard links (every file in a run dir is replaced by a rename,
    never written in place), with real copies of the files named in `damaged`, to damage."""
    shutil.copytree(run_dir, to, copy_function=os.link)
    for name in damaged:
        path = os.path.join(to, name)
        os.remove(path)
        shutil.copyfile(os.path.join(run_dir, name), path)
    return str(to)


def failing_save(epoch_to_fail):
    """Saver.save that fails like TensorFlow on a full disk at one epoch's checkpoint: part of
    the data is written under TF's temporary name, then ResourceExhaustedError."""
    original = tf.compat.v1.train.Saver.save

    def save(self, session, prefix, *args, **kwargs):
        if prefix.endswith('-%d' % epoch_to_fail):
            partial = prefix + '.data-00000-of-00001.tempstate8731254127712831641'
            with open(partial, 'wb') as f:
                f.write(bytes(1 << 20))
            raise tf.errors.ResourceExhaustedError(
                None, None, '%s; No space left on device' % partial)
        return original(self, session, prefix, *args, **kwargs)
    return save


def test_full_disk_at_each_write_of_a_run(undisturbed, tiny_records, alexnet_npz, tmp_path,
                                          capfd, monkeypatch):
    """The disk fills at a feature store entry, at a checkpoint, at metrics.csv and at the test
    report in turn: each time one line, nothing partial, the completed epochs kept; the rerun
    after the last fault resumes and ends like the undisturbed run."""
    run_dir, store = str(tmp_path / 'run'), str(tmp_path / 'store')
    args = fineturn_args(tiny_records, alexnet_npz, run_dir, store=store)
    faults = [   # (what fails, where, where to patch, with what, completed epochs afterwards)
        ('a feature store entry', store, feature_store, 'open', FullDisk(feature_store.SUFFIX,
                                                                         room=100), 0),
        ('the checkpoint of epoch 2', run_dir, tf.compat.v1.train.Saver, 'save',
         failing_save(2), 1),
        ('the metrics', run_dir, atomicfile, 'open', FullDisk('metrics', room=10), 1),
        ('the test report', run_dir, atomicfile, 'open', FullDisk('test_report', room=10), 2),
    ]
    for what, where, owner, name, fault, completed in faults:
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, fault, raising=False)
            code, out, err = run_fineturn(args, capfd)
        line = one_line_error(err, 'fineturn.py')
        assert code == 1
        assert 'cannot write %s %s' % (what, where) in line and 'no space left' in line, line
        assert temporary_files(run_dir) == temporary_files(store) == [], what
        if what.startswith('a feature store'):
            assert store_entries(store) == []         # the first entry's write failed
        done = rundir.completed_epochs(run_dir)
        assert [int(row['epoch']) for row in done] == list(range(1, completed + 1)), what
        for epoch in range(1, completed + 1):
            assert checkpoints.exists(run_dir, epoch), (what, epoch)
        if what.startswith('the checkpoint'):
            assert 'it needs about 228.6 MB' in line
            assert not [n for n in os.listdir(run_dir) if n.startswith('model.ckpt-2')]
    code, out, err = run_fineturn(args, capfd)
    assert code == 0, err
    assert 'resuming %s after epoch 2' % run_dir in out
    assert_same_run(run_dir, undisturbed)


def test_damaged_checkpoint_and_cache_are_found_and_redone(
        undisturbed, tiny_records, alexnet_npz, tiny_test_images, tmp_path, capfd):
    """The newest checkpoint is cut short and a feature store entry has a flipped byte:
    --evaluate, --predict and --export of the checkpoint say it is damaged; the resume says so
    in one line each, restores the epoch before, computes that entry again and trains the last
    epoch again. (A missing .index: the resume tests; truncated, torn or foreign entries:
    tests/test_feature_store.py.)"""
    original = undisturbed + '-store'
    entry = os.path.relpath(store_entries(original)[7], original)
    store = linked_copy(original, tmp_path / 'store', damaged=(entry,))
    flip_byte(os.path.join(store, entry), feature_store.HEADER_SIZE + 1000)
    data = 'model.ckpt-2.data-00000-of-00001'
    run_dir = linked_copy(undisturbed, tmp_path / 'run', damaged=(data,))
    os.truncate(os.path.join(run_dir, data), os.path.getsize(os.path.join(run_dir, data)) // 2)
    args = fineturn_args(tiny_records, alexnet_npz, run_dir, store=store)
    code, _, err = run_fineturn(args + ['--evaluate', checkpoints.path(run_dir, 2)], capfd)
    line = one_line_error(err, 'fineturn.py')
    assert code == 1 and 'model.ckpt-2 is damaged (Read less bytes than requested)' in line
    export_dir = str(tmp_path / 'export')
    for mode in (['--predict', tiny_test_images[0]], ['--export', export_dir]):
        code, _, err = run_fineturn(mode + ['--checkpoint', checkpoints.path(run_dir, 2)],
                                    capfd)
        line = one_line_error(err, 'fineturn.py')
        assert code == 1 and 'model.ckpt-2 is damaged (Read less bytes than requested)' in line
    assert not os.path.exists(export_dir) and temporary_files(str(tmp_path)) == []

    code, out, err = run_fineturn(args, capfd)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith('warning: ')]
    assert len(warnings) == 2, err
    assert 'model.ckpt-2 of epoch 2 does not restore (Read less bytes than requested)' in \
        warnings[0]
    assert 'feature store entry %s is damaged (checksum mismatch' % os.path.join(store, entry) in \
        warnings[1] and warnings[1].endswith(': computing it again')
    assert 'resuming %s after epoch 1' % run_dir in out
    key_folder = os.path.join(store, entry.split(os.sep)[0])
    assert 'features of 100 images: 99 reused from %s, 1 computed (1 damaged entries ' \
        'recomputed)' % key_folder in out
    assert_same_run(run_dir, undisturbed)


# A process killed half way through writing a feature store entry (numpy only: no TensorFlow).
STORE_WRITER_KILLED = r'''
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import feature_store

def killed(f, head, payload):
    f.write(head)
    f.write(payload.tobytes()[:payload.nbytes // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
feature_store._write_entry = killed
key = feature_store.FeatureKey('weights', (104.0, 117.0, 123.0), {}, 'pool5', (0,), (1000,))
feature_store.FeatureStore(sys.argv[2], key).fill(
    ['ab' * 16], lambda positions: iter([np.ones((1, 1, 1000), np.float32)]))
'''


def test_kill_9_mid_write_then_rerun(undisturbed, tiny_records, alexnet_npz, tmp_path, capfd,
                                     monkeypatch):
    """SIGKILL while a feature store entry is written, then while a checkpoint is written: each
    next run removes what the dead process left (and says how much), and the last one ends like
    the undisturbed run. It also warns that the disk looks too small, and goes on."""
    run_dir, store = str(tmp_path / 'run'), str(tmp_path / 'store')
    killed = subprocess.run([sys.executable, '-c', STORE_WRITER_KILLED, ROOT, store])
    assert killed.returncode == -signal.SIGKILL
    left = temporary_files(store)
    assert len(left) == 1 and os.path.getsize(left[0]) == feature_store.HEADER_SIZE + 2000
    assert store_entries(store) == []                  # nothing torn under an entry's name

    command = [os.path.join(ROOT, 'fineturn.py')] + fineturn_args(tiny_records, alexnet_npz,
                                                                 run_dir, store=store)
    out = killed_mid_write(tmp_path, 'tensorflow', 'compat.v1.train.Saver.save', 1,
                           os.path.join(run_dir, '*.tempstate*'), command)
    assert 'removed 1 temporary file(s) that interrupted writes left in %s' \
        % os.path.dirname(left[0]) in out
    assert temporary_files(store) == [] and len(store_entries(store)) == 100
    assert [os.path.basename(p).split('.tempstate')[0] for p in temporary_files(run_dir)] == \
        ['model.ckpt-1.data-00000-of-00001']

    monkeypatch.setattr(checkpoints, 'free_space', lambda path: 100e6)
    code, out, err = run_fineturn(fineturn_args(tiny_records, alexnet_npz, run_dir, store=store),
                                  capfd)
    assert code == 0, err
    assert 'removed 1 temporary file(s) that interrupted writes left in %s: ' % run_dir in out
    warning = [line for line in err.splitlines() if line.startswith('warning: ')]
    assert len(warning) == 1 and '100.0 MB is free' in warning[0], err
    assert 'up to 2 checkpoints of 228.6 MB' in warning[0] and '--keep-checkpoints N' in warning[0]
    assert_same_run(run_dir, undisturbed)


def test_a_second_process_is_refused_and_a_killed_holder_frees_the_folder(
        tiny_records, alexnet_npz, images_and_conversion, tmp_path, capfd):
    held = tmp_path / 'held'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; sys.path.insert(0, %r); import outputdir; '
         'lock = outputdir.own(%r, "--run-dir"); print("held", flush=True); time.sleep(120)'
         % (ROOT, str(held))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        code, _, err = run_fineturn(fineturn_args(tiny_records, alexnet_npz, held), capfd)
        line = one_line_error(err, 'fineturn.py')
        assert code == 1
        assert '%s is in use by another process (PID %d)' % (held, holder.pid) in line
        assert convert_tfrecord.main(['--image-dir', images_and_conversion[0], '--output-dir',
                                      str(held), '--quiet']) == 1
        line = one_line_error(capfd.readouterr().err, 'convert_tfrecord.py')
        assert '(PID %d)' % holder.pid in line and 'another --output-dir' in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with outputdir.own(str(held), '--run-dir'):       # the kernel let go at once
        assert open(held / outputdir.LOCK_FILE).read().strip() == str(os.getpid())
    assert not os.path.exists(held / outputdir.LOCK_FILE)


def test_a_damaged_record_is_named_with_the_fix(tiny_records, alexnet_npz, tmp_path, capfd):
    data = str(tmp_path / 'records')
    shutil.copytree(tiny_records, data)
    damaged = records.record_files(data, 'validation')[0]
    flip_byte(damaged, os.path.getsize(damaged) // 2)
    run_dir, store = str(tmp_path / 'run'), str(tmp_path / 'store')
    code, _, err = run_fineturn(fineturn_args(data, alexnet_npz, run_dir, store=store), capfd)
    line = one_line_error(err, 'fineturn.py')
    assert code == 1
    assert '%s is damaged: record' % damaged in line and 'fails its CRC check' in line
    assert line.endswith(records.RECONVERT_COMMAND % data)
    assert temporary_files(run_dir) == []
    # found while the records are indexed, before any image's features are computed
    assert not os.path.exists(store)


def test_a_record_that_does_not_parse_is_named(tmp_path):
    data = str(tmp_path)
    with open(os.path.join(data, records.LABELS_FILE), 'w') as f:
        f.write('a\n')
    path = os.path.join(data, 'test-00000-of-00001.tfrecord')
    with tf.io.TFRecordWriter(path) as writer:      # valid CRCs, not an Example
        writer.write(b'\x01\x02not a protobuf')
    error = records.damaged_record(data, 'test')
    assert error is not None and str(error).startswith(
        '%s is damaged: record 0 does not parse' % path)


@pytest.mark.parametrize('damage', ['truncated', 'wrong arrays'])
def test_a_damaged_weights_file_is_named_with_the_fix(tiny_records, alexnet_npz, tmp_path,
                                                      capfd, damage):
    weights = str(tmp_path / 'weights.npz')
    if damage == 'truncated':
        with open(alexnet_npz, 'rb') as f, open(weights, 'wb') as g:
            g.write(f.read(50 << 20))
    else:
        arrays = dict(np.load(alexnet_npz))
        arrays['fc7/weights'] = arrays['fc7/weights'][:100]
        np.savez(weights, **arrays)
    code, _, err = run_fineturn(fineturn_args(tiny_records, weights, tmp_path / 'run'), capfd)
    line = one_line_error(err, 'fineturn.py')
    assert code == 1 and weights in line and 'python -m caffe_to_npy' in line
    assert ('damaged' in line) if damage == 'truncated' else ('fc7/weights has shape' in line)


# --- convert_tfrecord.py -------------------------------------------------------------------------

@pytest.fixture(scope='module')
def images_and_conversion(tmp_path_factory):
    """A small image folder with one damaged image, and its undisturbed conversion."""
    image_dir = str(tmp_path_factory.mktemp('images'))
    folder = synthetic_dataset.make_dataset_folder(image_dir, num_classes=3, per_class=8,
                                                   size=64, quirks=False, workers=1)
    good, victim = (os.path.join(image_dir, path) for path in sorted(folder.images)[4:6])
    with open(victim, 'r+b') as f:                   # its header overwritten: not decodable
        f.write(bytes(64))
    out = str(tmp_path_factory.mktemp('records'))
    assert convert_tfrecord.main(['--image-dir', image_dir, '--output-dir', out, '--workers', '1',
                                  '--quiet', '--overwrite']) == 0
    return image_dir, out, victim, good


def same_files(folder, reference):
    names = sorted(os.listdir(reference))
    assert sorted(os.listdir(folder)) == names
    for name in names:
        with open(os.path.join(folder, name), 'rb') as f, \
                open(os.path.join(reference, name), 'rb') as g:
            assert f.read() == g.read(), name


def test_convert_full_disk_keeps_the_earlier_conversion(images_and_conversion, tmp_path, capfd,
                                                       monkeypatch):
    image_dir, reference = images_and_conversion[:2]
    out = str(tmp_path / 'out')
    shutil.copytree(reference, out)
    original, written = tf.io.TFRecordWriter, []

    class FillingWriter(original):
        def write(self, record):
            written.append(record)
            if len(written) == 5:
                raise tf.errors.ResourceExhaustedError(None, None, 'x; No space left on device')
            return super().write(record)
    monkeypatch.setattr(tf.io, 'TFRecordWriter', FillingWriter)
    args = ['--image-dir', image_dir, '--output-dir', out, '--workers', '1', '--quiet',
            '--overwrite']
    code = convert_tfrecord.main(args)
    line = one_line_error(capfd.readouterr().err, 'convert_tfrecord.py')
    assert code == 1
    assert 'cannot write the records in %s: no space left' % out in line and 'needs about' in line
    assert temporary_files(out) == []
    same_files(out, reference)                       # the earlier conversion, untouched
    monkeypatch.undo()
    assert convert_tfrecord.main(args) == 0
    same_files(out, reference)


def test_convert_killed_mid_write_then_rerun(images_and_conversion, tmp_path, capfd):
    image_dir, reference = images_and_conversion[:2]
    out = str(tmp_path / 'out')
    command = [os.path.join(ROOT, 'convert_tfrecord.py'), '--image-dir', image_dir, '--output-dir',
               out, '--workers', '1', '--quiet']
    killed_mid_write(tmp_path, 'record_writer', 'serialize_example', 5, '-', command)
    assert len(temporary_files(out)) == 5          # labels.txt, split.csv and 3 splits' records
    assert [name for name in os.listdir(out) if not name.startswith('.')] == []
    assert convert_tfrecord.main(command[1:]) == 0
    out_text = capfd.readouterr().out
    assert 'removed 5 temporary file(s) that interrupted writes left in %s: ' % out in out_text
    same_files(out, reference)


def test_a_damaged_image_is_named(images_and_conversion, tmp_path, capfd):
    image_dir, _, victim, _ = images_and_conversion
    code = convert_tfrecord.main(['--image-dir', image_dir, '--output-dir', str(tmp_path / 'out'),
                                  '--workers', '1', '--quiet', '--strict'])
    out, err = capfd.readouterr()
    line = one_line_error(err, 'convert_tfrecord.py')
    assert code == 1 and os.path.relpath(victim, image_dir).replace(os.sep, '/') in line
    assert 'not decodable' in line and not os.path.exists(tmp_path / 'out')


def test_a_decoder_that_raises_is_an_unreadable_image(images_and_conversion, monkeypatch):
    """Some OpenCV decoders raise on a damaged file instead of returning None: still one clear
    error, from the one reader the converter, --predict and validate use."""
    def raising(*args):
        raise cv2.error('OpenCV: (-2:Unspecified error) Unexpected end of input stream')
    monkeypatch.setattr(cv2, 'imdecode', raising)
    good = images_and_conversion[3]
    with pytest.raises(images.ImageReadError, match='not decodable .*Unexpected end of input'):
        images.read_bgr8(good)
    with pytest.raises(images.ImageReadError, match='not decodable .*Unexpected end of input'):
        alexnet.load_image(good, (104.0, 117.0, 123.0))


# --- validate_alexnet_on_imagenet.py and caffe_to_npy ---------------------------------------------

def test_validate_full_disk_at_probs_then_figure(alexnet_npz, images_and_conversion, tmp_path,
                                                 capfd, monkeypatch):
    image = images_and_conversion[3]
    probs, figure = str(tmp_path / 'probs.npz'), str(tmp_path / 'check.png')
    args = [image, '--weights', alexnet_npz, '--save-probs', probs, '--figure', figure]

    def fill_disk(self, path, **kwargs):
        with open(path, 'wb') as f:
            f.write(bytes(1000))
        raise ENOSPC
    for what, inject in (
            ('the probabilities %s' % probs,
             lambda: monkeypatch.setattr(classify, 'open', FullDisk('probs'), raising=False)),
            ('the figure %s' % figure, lambda: monkeypatch.setattr(Figure, 'savefig', fill_disk))):
        inject()
        code = validate.main(args)
        line = one_line_error(capfd.readouterr().err, validate.PROG)
        assert code == 1 and 'cannot write %s: no space left' % what in line
        assert temporary_files(str(tmp_path)) == []
        monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ['probs.npz']     # the completed one is kept
    assert validate.main(args) == 0
    assert np.load(probs)['probs'].shape == (1, alexnet.NUM_IMAGENET_CLASSES)
    assert os.path.getsize(figure) > 0 and temporary_files(str(tmp_path)) == []


def test_caffe_to_npy_killed_mid_write_then_rerun(tmp_path, capsys):
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), num_classes=10, width=0.25)
    out, reference = str(tmp_path / 'w.npz'), str(tmp_path / 'reference.npz')
    assert caffe_to_npy_main.main([prototxt, caffemodel, reference]) == 0
    killed_mid_write(tmp_path, 'numpy', 'lib.format.write_array', 6, '-',
                     ['-m', 'caffe_to_npy', prototxt, caffemodel, out])
    left = temporary_files(str(tmp_path))
    assert len(left) == 1 and os.path.basename(left[0]).startswith('.w.tmp-')
    capsys.readouterr()
    assert caffe_to_npy_main.main([prototxt, caffemodel, out]) == 0
    assert 'removed 1 temporary file(s)' in capsys.readouterr().out
    with open(out, 'rb') as f, open(reference, 'rb') as g:
        assert f.read() == g.read()
    assert temporary_files(str(tmp_path)) == []


def test_tensorflow_write_errors_become_one_line(tmp_path):
    """TensorFlow's errors carry the system's text, not the errno: writing() finds it there."""
    target = str(tmp_path / 'model.ckpt-1')
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
        error = tf.errors.ResourceExhaustedError(None, None, 'x.tempstate1; %s'
                                                 % os.strerror(number))
        with pytest.raises(atomicfile.WriteError) as caught:
            with atomicfile.writing(target, 'the checkpoint', also=(tf.errors.OpError,)):
                raise error
        assert str(caught.value).startswith('cannot write the checkpoint %s: %s'
                                            % (target, atomicfile.REFUSALS[number][0]))
    with pytest.raises(tf.errors.InvalidArgumentError):    # not a write fault: passes unchanged
        with atomicfile.writing(target, 'the checkpoint', also=(tf.errors.OpError,)):
            raise tf.errors.InvalidArgumentError(None, None, 'shapes differ')
