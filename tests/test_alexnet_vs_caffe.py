"""Converted weights in our AlexNet graph == OpenCV's Caffe runtime on the same Caffe files.

Full-size AlexNet models with random weights (synthetic, ~1 s each), in the model zoo's V1 format
and the new format; real photo (matplotlib's grace_hopper.jpg) plus generated photo-like images.
Relative difference = max|ours - caffe| / max|caffe|. Each historic bug of public ports is put back
in and must show up far above the 1e-4 tolerance, so the comparison can tell.
"""
import os
import subprocess
import sys

import cv2
import matplotlib.cbook
import numpy as np
import pytest

import alexnet
import netspec
from caffe_to_npy import TOLERANCE, compare, convert_file, synthetic
from caffe_to_npy.compare import relative_difference, verify
from caffe_to_npy.__main__ import EXIT_ERROR, main as cli_main
from weights_file import IMAGENET_MEAN_BGR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUG_FLOOR = 1e-2   # a bug must move fc8 by at least this much (100x the tolerance)


def _photo_like(path, height, width, seed):
    """Smooth shaded background, blurred shapes, texture and sensor noise: a stand-in photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * (xx / width) +
                      rng.uniform(-60, 60) * (yy / height) for _ in range(3)], axis=-1)
    for _ in range(12):
        color = [float(c) for c in rng.uniform(0, 255, 3)]
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(10, width // 3)), int(rng.integers(10, height // 3)))
        cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)
    image += 20 * np.sin(xx / 3.0 + yy / 5.0)[..., None] + rng.normal(0, 6, image.shape)
    cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
    return str(path)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    directory = tmp_path_factory.mktemp('photos')
    paths = [str(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)),
             _photo_like(directory / 'scene.png', 300, 400, seed=1),
             _photo_like(directory / 'small.jpg', 240, 250, seed=2)]
    return paths


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """{fmt: (prototxt, caffemodel, weights.npz)} for the full-size random AlexNet."""
    directory = tmp_path_factory.mktemp('alexnet')
    result = {}
    for fmt, seed in (('v1', 11), ('new', 12)):
        prototxt, caffemodel = synthetic.write_alexnet(str(directory), seed=seed, fmt=fmt)
        weights = str(directory / ('alexnet_%s.npz' % fmt))
        convert_file(prototxt, caffemodel, weights, mean=IMAGENET_MEAN_BGR)
        result[fmt] = (prototxt, caffemodel, weights)
    return result


@pytest.fixture(scope='module')
def reference(models, images):
    """OpenCV's Caffe outputs and the preprocessed images, for the V1 model."""
    prototxt, caffemodel, weights = models['v1']
    batch = compare.load_images(images, IMAGENET_MEAN_BGR)
    return batch, compare.caffe_forward(prototxt, caffemodel, batch)


@pytest.mark.parametrize('fmt', ['v1', 'new'])
def test_converted_graph_matches_caffe(models, images, fmt):
    result = verify(*models[fmt], images)
    assert result['images'] == len(images)
    assert result['fc8'] < TOLERANCE and result['prob'] < TOLERANCE, result
    assert result['top1_agreement'] == 1.0
    assert result['ok'] is True


def test_outputs_are_well_conditioned(reference):
    # The check is only meaningful if fc8 is far from float noise and softmax is not one-hot.
    _, outputs = reference
    assert 1.0 < outputs['fc8'].std() < 50.0
    assert 0.01 < outputs['prob'].max(axis=1).min() and outputs['prob'].max() < 0.999
    assert len(set(outputs['prob'].argmax(axis=1))) > 1   # different images, different top-1


def _error(reference, weights, flip_channels=False):
    batch, outputs = reference
    ours = compare.tf_forward(weights, batch[..., ::-1] if flip_channels else batch)
    error = relative_difference(ours['fc8'], outputs['fc8'])
    print('fc8 relative error %.3g' % error)   # shown with pytest -s
    return error


@pytest.fixture(scope='module')
def correct_error(reference, models):
    """fc8 error of the correct graph on the V1 model: what every bug is measured against."""
    error = _error(reference, models['v1'][2])
    assert error < TOLERANCE
    return error


def lrn_alpha_not_divided(lrn, correct=alexnet.lrn_arguments):
    """The classic port bug: Caffe's alpha copied into TF without dividing it by local_size."""
    return dict(correct(lrn), alpha=lrn.alpha)


def test_bug_lrn_alpha_not_divided_by_local_size(reference, models, correct_error, monkeypatch):
    monkeypatch.setattr(alexnet, 'lrn_arguments', lrn_alpha_not_divided)
    assert _error(reference, models['v1'][2]) > BUG_FLOOR


def test_bug_conv1_padded_same(reference, models, correct_error, monkeypatch):
    padding = alexnet._padding
    monkeypatch.setattr(alexnet, '_padding',
                        lambda layer: 'SAME' if layer.name == 'conv1' else padding(layer))
    assert _error(reference, models['v1'][2]) > BUG_FLOOR


def test_bug_lrn_and_pool_swapped(reference, models, correct_error):
    # CaffeNet's order (pool, then LRN) in place of AlexNet's, in both layers that have LRN
    weights = alexnet.read_weights(models['v1'][2])
    assert weights.structure == netspec.BVLC_ALEXNET
    weights.structure = netspec.CAFFENET
    assert _error(reference, weights) > BUG_FLOOR


def test_bug_rgb_input(reference, models, correct_error):
    assert _error(reference, models['v1'][2], flip_channels=True) > BUG_FLOOR


def test_bug_fc6_not_reordered(reference, models, correct_error):
    weights = alexnet.read_weights(models['v1'][2])
    w = weights['fc6']['weights']                    # rows in H,W,C order: put back C,H,W
    weights['fc6']['weights'] = w.reshape(6, 6, 256, -1).transpose(2, 0, 1, 3).reshape(9216, -1)
    assert _error(reference, weights) > BUG_FLOOR


def test_cli_verify_passes_and_writes(models, images, tmp_path):
    prototxt, caffemodel, _ = models['new']
    out = tmp_path / 'w.npz'
    result = subprocess.run([sys.executable, '-m', 'caffe_to_npy', prototxt, caffemodel, str(out),
                             '--verify', images[0]], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'OK' in result.stdout and 'fc8' in result.stdout and 'prob' in result.stdout
    assert os.listdir(tmp_path) == ['w.npz']


def test_cli_verify_mismatch_fails_and_writes_nothing(models, images, tmp_path, monkeypatch,
                                                      capsys):
    prototxt, caffemodel, _ = models['v1']
    monkeypatch.setattr(alexnet, 'lrn_arguments', lrn_alpha_not_divided)   # a broken graph must
    # not get weights
    out = tmp_path / 'w.npz'
    assert cli_main([prototxt, caffemodel, str(out), '--verify', images[0]]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert 'MISMATCH' in captured.out and 'nothing written' in captured.err
    assert os.listdir(tmp_path) == []


def test_opencv_without_caffe_reader_is_a_clear_error(monkeypatch):
    """OpenCV 5 removed readNetFromCaffe: say what to install instead of an AttributeError."""
    import cv2
    from caffe_to_npy import ConversionError
    monkeypatch.delattr(cv2.dnn, 'readNetFromCaffe')
    with pytest.raises(ConversionError, match='opencv-python-headless<5'):
        compare.caffe_forward('deploy.prototxt', 'model.caffemodel', np.zeros((1, 227, 227, 3)))
