"""Shared test setup: quiet TensorFlow, CPU only, repo root importable."""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402


@pytest.fixture(scope='session')
def alexnet_npz(tmp_path_factory):
    """bvlc_alexnet-shaped weights converted from a generated V1 Caffe model (random weights)."""
    from caffe_to_npy import convert_file, synthetic
    directory = tmp_path_factory.mktemp('caffe')
    prototxt, caffemodel = synthetic.write_alexnet(str(directory), seed=7, fmt='v1')
    out = str(directory / 'bvlc_alexnet.npz')
    convert_file(prototxt, caffemodel, out)
    os.remove(caffemodel)
    return out


@pytest.fixture(scope='session')
def tiny_records(tmp_path_factory):
    """A learnable 5-class dataset (20 images each: 16/2/2) as TFRecords."""
    import record_writer
    import synthetic_dataset
    images = tmp_path_factory.mktemp('images')
    records = tmp_path_factory.mktemp('records')
    synthetic_dataset.make_dataset_folder(str(images), num_classes=5, per_class=20, seed=1,
                                          quirks=False)
    record_writer.convert(str(images), str(records), overwrite=True, progress=False)
    return str(records)
