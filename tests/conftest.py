"""Shared test setup: quiet TensorFlow, CPU only, repo root importable, a feature store of the
session's own."""
import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402

import setting  # noqa: E402

# The runs of a test session keep their frozen features in a store of the session's own (the
# repository's runs/feature_store is the user's): the default --feature-store, set before knobs.py
# reads it. Runs on the same records and weights share it, as users' runs do; a test that counts
# what is computed passes a store of its own. Subprocesses pass --feature-store themselves.
SESSION_STORE = tempfile.mkdtemp(prefix='fineturn-test-store-')
atexit.register(shutil.rmtree, SESSION_STORE, True)
USER_STORE = setting.FEATURE_STORE          # what users get, and docs/USAGE.md shows
setting.FEATURE_STORE = SESSION_STORE


def converted_alexnet(directory, mean):
    """bvlc_alexnet-shaped weights converted from a generated V1 Caffe model (random weights),
    with `mean` -> the .npz's path."""
    from caffe_to_npy import convert_file, synthetic
    prototxt, caffemodel = synthetic.write_alexnet(str(directory), seed=7, fmt='v1')
    out = str(directory / 'bvlc_alexnet.npz')
    convert_file(prototxt, caffemodel, out, mean=mean)
    os.remove(caffemodel)
    return out


@pytest.fixture(scope='session')
def alexnet_npz(tmp_path_factory):
    """bvlc_alexnet-shaped weights with the ImageNet mean per channel (converted_alexnet)."""
    import weights_file
    return converted_alexnet(tmp_path_factory.mktemp('caffe'), weights_file.IMAGENET_MEAN_BGR)


@pytest.fixture(scope='session')
def mean_image_npz(tmp_path_factory):
    """alexnet_npz's weights with a 256x256 mean image instead, as CaffeNet's and the Places
    AlexNets' files have."""
    from caffe_to_npy import synthetic
    return converted_alexnet(tmp_path_factory.mktemp('mean_image'), synthetic.mean_image(seed=9))


@pytest.fixture(scope='session')
def tiny_images(tmp_path_factory):
    """A learnable 5-class image folder (20 256x256 8-bit .tif images each)."""
    import synthetic_dataset
    images = tmp_path_factory.mktemp('images')
    synthetic_dataset.make_dataset_folder(str(images), num_classes=5, per_class=20, seed=1,
                                          quirks=False)
    return str(images)


@pytest.fixture(scope='session')
def tiny_records(tiny_images, tmp_path_factory):
    """tiny_images as TFRecords (16/2/2 images per class)."""
    import record_writer
    import setting
    records = tmp_path_factory.mktemp('records')
    record_writer.convert(tiny_images, str(records), setting.SPLIT_RATIOS, setting.SPLIT_SEED,
                          setting.CONVERT_WORKERS, overwrite=True, progress=False)
    return str(records)


# The recipe of the `trained` run; test_fineturn.base_args gives the same, so that its resume
# tests can continue a copy of it.
TRAINED_RECIPE = ('--epochs', 3, '--batch-size', 16, '--learning-rate', 1e-4, '--seed', 3)


@pytest.fixture(scope='session')
def trained(tiny_records, alexnet_npz, tmp_path_factory):
    """The run dir of a 3-epoch fine-tuning run on tiny_records (python fineturn.py)."""
    import fineturn
    run_dir = tmp_path_factory.mktemp('run')
    code = fineturn.main([str(a) for a in ('--records-dir', tiny_records, '--weights',
                                           alexnet_npz, '--run-dir', run_dir) + TRAINED_RECIPE])
    assert code == 0
    return str(run_dir)


@pytest.fixture(scope='session')
def tiny_test_images(tiny_records, tiny_images):
    """The files of the test split of tiny_records, in split.csv's (and the records') order."""
    import csv
    with open(os.path.join(tiny_records, 'split.csv'), newline='', encoding='utf-8') as f:
        return [os.path.join(tiny_images, row['path']) for row in csv.DictReader(f)
                if row['split'] == 'test']


@pytest.fixture(scope='session')
def tempered(trained, tiny_test_images, tmp_path_factory):
    """A run dir holding the best checkpoint of `trained` with fc8 scaled so that the test
    images' logits spread by about 2: the same predictions, but probabilities far from 0 and 1
    (the trained run's are saturated), so that comparisons of probabilities mean something."""
    import numpy as np
    import tensorflow as tf
    import alexnet
    import checkpoints
    import graph
    import rundir
    tf1 = tf.compat.v1
    run_dir = str(tmp_path_factory.mktemp('tempered'))
    model = rundir.read_model(trained)
    batch = np.stack([alexnet.load_image(path, model.mean) for path in tiny_test_images])
    with tf1.Graph().as_default() as tempered_graph:
        images = tf1.placeholder(tf.float32, [None, 227, 227, 3])
        logits, _ = graph.classifier(images, model.structure)
        scale = tf1.placeholder(tf.float32, [])
        temper = [tf1.assign(variable, variable * scale)
                  for variable in alexnet.graph_layers(tempered_graph)['fc8'].values()]
        saver = tf1.train.Saver()
        with tf1.Session() as session:
            saver.restore(session, checkpoints.find(trained))
            spread = session.run(logits, {images: batch}).std(axis=1).mean()
            session.run(temper, {scale: 2.0 / spread})
            saver.save(session, checkpoints.path(run_dir, 1), write_meta_graph=False)
    rundir.write_model(run_dir, model)
    rundir.save_json(os.path.join(run_dir, checkpoints.BEST_FILE),
                     {'epoch': 1, 'checkpoint': 'model.ckpt-1'}, 'best.json')
    return run_dir


@pytest.fixture(scope='session')
def user_env():
    """The environment a user's shell gives a command: without the TF_CPP_MIN_LOG_LEVEL and
    CUDA_VISIBLE_DEVICES this file sets for the tests in this process."""
    return {key: value for key, value in os.environ.items()
            if key not in ('TF_CPP_MIN_LOG_LEVEL', 'CUDA_VISIBLE_DEVICES')}


@pytest.fixture(scope='session')
def exported(tempered, user_env, tmp_path_factory):
    """(export dir, the finished process) of `python fineturn.py --export` of `tempered`."""
    import subprocess
    import sys
    out_dir = str(tmp_path_factory.mktemp('exported') / 'alexnet' / '1')
    process = subprocess.run([sys.executable, os.path.join(ROOT, 'fineturn.py'), '--export',
                              out_dir, '--run-dir', tempered], cwd=ROOT, env=user_env,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    return out_dir, process
