"""Every command's console holds its own lines only: none of TensorFlow's start-up chatter (absl's
preamble, oneDNN and CPU-feature notices, CUDA probing, deprecation warnings of tf.compat.v1), also
not from convert_tfrecord's worker processes; TF_CPP_MIN_LOG_LEVEL=0 brings it back. And --help
answers without loading TensorFlow.

Each command runs in a subprocess with the environment of a user's shell (conftest's user_env).
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow and its libraries print, recognised by its form rather than by the filter's own
# list (environment.NOISE), so that a new kind of line shows up here.
TF_NOISE = re.compile(r'^[IWEF]\d{4} \d\d:\d\d:\d\d|absl|oneDNN|cuda|cuInit|TF-TRT|TensorRT|'
                      r'rebuild TensorFlow|This TensorFlow binary|WARNING:tensorflow|deprecat',
                      re.IGNORECASE | re.MULTILINE)


def command(*args, cwd=ROOT, env, timeout=600):
    process = subprocess.run([sys.executable] + [str(a) for a in args], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=timeout)
    return process


def assert_quiet(process, *expected):
    """Succeeded, printed `expected`, and nothing of TensorFlow's."""
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    noise = [line for line in output.splitlines() if TF_NOISE.search(line)]
    assert noise == [], '\n'.join(noise)
    for text in expected:
        assert text in output, output


@pytest.fixture(scope='module')
def trained_in_a_subprocess(tiny_records, alexnet_npz, user_env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('console_run')
    process = command(os.path.join(ROOT, 'fineturn.py'), '--records-dir', tiny_records, '--weights',
                      alexnet_npz, '--run-dir', run_dir, '--epochs', 1, '--batch-size', 16,
                      '--no-cache', env=user_env)   # no feature cache: less to compute here
    return str(run_dir), process


def test_fineturn_training(trained_in_a_subprocess):
    assert_quiet(trained_in_a_subprocess[1], 'epoch 1/1', ' * best epoch 1')


def test_fineturn_evaluate(trained_in_a_subprocess, tiny_records, user_env):
    process = command(os.path.join(ROOT, 'fineturn.py'), '--records-dir', tiny_records,
                      '--evaluate', trained_in_a_subprocess[0], '--ten-crop', env=user_env)
    assert_quiet(process, 'ten-crop  test Acc@1')


def test_fineturn_predict(tempered, tiny_test_images, user_env):
    args = (os.path.join(ROOT, 'fineturn.py'), '--predict', tiny_test_images[0], '--run-dir',
            tempered)
    assert_quiet(command(*args, env=user_env), ' * 1 image(s) classified')
    # the noise is TensorFlow's to show when asked for
    verbose = command(*args, env=dict(user_env, TF_CPP_MIN_LOG_LEVEL='0'))
    assert verbose.returncode == 0 and TF_NOISE.search(verbose.stderr), verbose.stderr


def test_fineturn_export(exported):
    assert_quiet(exported[1], ' * exported ')


def test_convert_tfrecord_and_its_workers(user_env, tmp_path):
    """Run from a folder holding the images in `images/`, a name its worker module also has."""
    import synthetic_dataset
    synthetic_dataset.make_dataset_folder(str(tmp_path / 'images'), num_classes=3, per_class=6,
                                          seed=2, quirks=False)
    process = command(os.path.join(ROOT, 'convert_tfrecord.py'), '--image-dir', 'images',
                      '--output-dir', 'records', '--workers', 2, cwd=str(tmp_path), env=user_env,
                      timeout=120)
    assert_quiet(process, '18 images in 3 classes written')


def test_validate(alexnet_npz, tiny_test_images, user_env):
    process = command(os.path.join(ROOT, 'validate_alexnet_on_imagenet.py'), '--weights',
                      alexnet_npz, tiny_test_images[0], env=user_env)
    assert_quiet(process, ' * 1 image(s) classified')


def test_caffe_to_npy_verify(tiny_test_images, user_env, tmp_path):
    from caffe_to_npy import synthetic
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), num_classes=10, seed=3)
    process = command('-m', 'caffe_to_npy', prototxt, caffemodel, tmp_path / 'out.npz',
                      '--verify', tiny_test_images[0], env=user_env)
    assert_quiet(process, 'OK', '8 layers')


# What `--help` of each command may not import.
HELP_CHECK = r'''
import runpy, sys
sys.argv = [sys.argv[1]] + ['--help']
try:
    runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py') else \
        runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
except SystemExit:
    pass
heavy = [name for name in ('tensorflow', 'alexnet', 'classify') if name in sys.modules]
print('HEAVY' if heavy else 'LIGHT', heavy)
'''


@pytest.mark.parametrize('entry', ['fineturn.py', 'convert_tfrecord.py',
                                   'validate_alexnet_on_imagenet.py', 'caffe_to_npy'])
def test_help_does_not_load_tensorflow(entry, user_env):
    target = os.path.join(ROOT, entry) if entry.endswith('.py') else entry
    process = command('-c', HELP_CHECK, target, env=user_env)
    assert process.returncode == 0, process.stderr
    assert 'usage:' in process.stdout and process.stdout.strip().endswith('LIGHT []'), \
        process.stdout[-300:]
