"""The AlexNet family: structures read from every prototxt style, CaffeNet's order, mean images,
class names in the weights file, Caffe's lr_mult; checked against OpenCV's Caffe runtime and by
hand, and the whole chain on a CaffeNet-ordered model with a mean image."""
import csv
import dataclasses
import json
import os
import subprocess
import sys

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import tensorflow as tf

import alexnet
import fineturn
import graph
import knobs
import netspec
import outside_family
import records
import rundir
import validate_alexnet_on_imagenet as validate
import weights_file
from caffe_to_npy import ConversionError, Net, caffe_pb, convert_file, synthetic
from caffe_to_npy.compare import caffe_forward, load_images, relative_difference, tf_forward, \
    verify
from caffe_to_npy.converter import read_mean, structure_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4
BUG_FLOOR = 1e-2     # a difference must move fc8 by at least this much (100x the tolerance)
tf1 = tf.compat.v1


def photo_like(path, seed, size=(300, 280)):
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.uniform(0, 255, size + (3,)).astype(np.float32), (0, 0), 6)
    image = (image - image.min()) / (image.max() - image.min()) * 255
    cv2.imwrite(str(path), image.astype(np.uint8))
    return str(path)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('photos')
    return [str(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)),
            photo_like(folder / 'a.png', 1), photo_like(folder / 'b.jpg', 2, (240, 250))]


@pytest.fixture(scope='module')
def caffenet(tmp_path_factory):
    """Full-size CaffeNet-ordered Caffe models (V1 and new format) with a mean image, converted."""
    folder = tmp_path_factory.mktemp('caffenet')
    mean = synthetic.mean_image(seed=5)
    mean_path = synthetic.write_mean(str(folder / 'mean.binaryproto'), mean)
    models = {'mean': mean, 'mean_path': mean_path}
    for fmt, style in (('v1', 'v1'), ('new', 'input_shape')):
        prototxt, caffemodel = synthetic.write_alexnet(str(folder), seed=21, fmt=fmt,
                                                       base=netspec.CAFFENET, style=style,
                                                       name='caffenet_' + fmt)
        weights = str(folder / ('caffenet_%s.npz' % fmt))
        convert_file(prototxt, caffemodel, weights, mean=read_mean(mean_path))
        models[fmt] = (prototxt, caffemodel, weights)
    return models


# --- structures from the prototxt ----------------------------------------------------------------

@pytest.mark.parametrize('style', synthetic.PROTOTXT_STYLES)
@pytest.mark.parametrize('base', [netspec.BVLC_ALEXNET, netspec.CAFFENET], ids=['alexnet',
                                                                                 'caffenet'])
def test_every_prototxt_style_gives_its_structure(tmp_path, style, base):
    path = synthetic.write_prototxt(str(tmp_path / 'deploy.prototxt'), 7, 1 / 16, base, style)
    structure, renamed = structure_of(Net(path))
    assert structure == synthetic.structure(7, 1 / 16, base) and renamed == {}
    text = open(path).read()
    assert ('layers {' in text) == (style == 'v1')
    assert ('input_dim:' in text) == (style in ('input_dim', 'v1'))
    assert ('input_shape {' in text) == (style == 'input_shape')
    assert ('type: "Input"' in text) == (style == 'input_layer')


def test_caffenet_pools_before_it_normalises():
    assert [op.kind for op in netspec.CAFFENET.layer('conv1').ops] == ['relu', 'pool', 'lrn']
    assert [op.kind for op in netspec.BVLC_ALEXNET.layer('conv1').ops] == ['relu', 'lrn', 'pool']
    assert netspec.CAFFENET.boundary('conv2') == 'norm1'
    assert netspec.BVLC_ALEXNET.boundary('conv2') == 'pool1'
    assert netspec.CAFFENET.weight_shapes() == netspec.BVLC_ALEXNET.weight_shapes()


def test_structure_round_trips_through_json():
    lrn = netspec.LRN(local_size=3, alpha=2e-4, beta=0.5, k=2.0)
    odd = dataclasses.replace(netspec.CAFFENET, layers=(
        dataclasses.replace(netspec.CAFFENET.layers[0], ops=(netspec.ReLU(), netspec.MaxPool(),
                                                              lrn)),) + netspec.CAFFENET.layers[1:])
    assert netspec.Structure.from_json(odd.to_json()) == odd != netspec.CAFFENET
    with pytest.raises(netspec.StructureError):
        netspec.Structure.from_json('{"layers": [{"name": "conv1"}]}')


def edit_net(path, out, edit):
    net = caffe_pb.NetParameter()
    from google.protobuf import text_format
    text_format.Parse(open(path).read(), net)
    edit(net)
    out.write_text(text_format.MessageToString(net))
    return str(out)


def _drop_conv3(net):
    names = [layer.name for layer in net.layer]
    index = names.index('conv3')
    del net.layer[index:index + 2]
    net.layer[index].bottom[0] = 'pool2'


def _average_pooling(net):
    for layer in net.layer:
        if layer.name == 'pool5':
            layer.pooling_param.pool = 1          # AVE


def _within_channel(net):
    for layer in net.layer:
        if layer.type == 'LRN':
            layer.lrn_param.norm_region = 1       # WITHIN_CHANNEL


def _batch_norm(net):
    layer = net.layer.add(name='bn8', type='BatchNorm')
    layer.bottom.append('fc8')
    layer.top.append('fc8')
    net.layer.insert(len(net.layer) - 2, layer)   # before prob
    del net.layer[-1]


def _branch(net):
    for layer in net.layer:
        if layer.name == 'conv4':
            layer.bottom[0] = 'pool2'


def _input_224(net):
    net.layer[0].input_param.shape[0].dim[2] = 224
    net.layer[0].input_param.shape[0].dim[3] = 224


@pytest.mark.parametrize('edit, says', [
    (_drop_conv3, '4 convolution and 3 inner-product'),
    (_input_224, "a 224x224 input (the family's is 227x227"),
    (_average_pooling, 'pool5 is AVE pooling'),
    (_within_channel, 'WITHIN_CHANNEL'),
    (_batch_norm, 'type BatchNorm'),
    (_branch, 'conv4 reads'),
])
def test_networks_outside_the_family_are_refused_saying_what_differs(tmp_path, edit, says):
    path = synthetic.write_prototxt(str(tmp_path / 'deploy.prototxt'), 7, 1 / 16)
    edited = edit_net(path, tmp_path / 'edited.prototxt', edit)
    with pytest.raises(ConversionError, match='not a network of the AlexNet family') as error:
        structure_of(Net(edited))
    assert says in str(error.value) and '\n' not in str(error.value)


def test_a_renamed_last_layer_is_stored_as_fc8(tmp_path):
    """Fine-tuned descendants (finetune_flickr_style's fc8_flickr) keep the family's layers."""
    base = dataclasses.replace(netspec.BVLC_ALEXNET, layers=netspec.BVLC_ALEXNET.layers[:-1] + (
        dataclasses.replace(netspec.BVLC_ALEXNET.layers[-1], name='fc8_flickr'),))
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), 5, seed=2, fmt='new',
                                                   width=1 / 16, base=base)
    assert 'fc8_flickr' in open(prototxt).read()
    summary = convert_file(prototxt, caffemodel, str(tmp_path / 'w.npz'),
                           mean=weights_file.IMAGENET_MEAN_BGR)
    assert summary.renamed == {'fc8_flickr': 'fc8'}
    loaded = alexnet.read_weights(str(tmp_path / 'w.npz'))
    expected = synthetic.random_weights(5, seed=2, width=1 / 16, base=base)['fc8_flickr']
    np.testing.assert_array_equal(loaded['fc8']['biases'], expected[1])
    assert loaded.structure.names == netspec.LAYER_NAMES


# --- networks outside the family: converted, and refused by everything that builds a network -----

@pytest.fixture(scope='module')
def lenet_npz(tmp_path_factory):
    folder = tmp_path_factory.mktemp('lenet')
    out = str(folder / 'lenet.npz')
    summary = convert_file(*outside_family.write(folder, 'lenet', 'v1'), out, mean=None)
    assert summary.structure is None and 'inner-product' in summary.outside_family
    return out


def test_a_file_outside_the_family_is_refused_in_one_line(lenet_npz, alexnet_npz, tiny_records,
                                                          tiny_test_images, tmp_path, capsys):
    """Training, validate, --predict, --export and --evaluate: exit 1, one line that names the
    file, what differs and the fix, no traceback; nothing written where an output was asked."""
    image, run_dir, export_dir = tiny_test_images[0], tmp_path / 'run', tmp_path / 'export'
    refused = '%s holds the parameters of a network outside the AlexNet family (' % lenet_npz
    fix = 'use weights converted from bvlc_alexnet, CaffeNet or a Places AlexNet'
    commands = {
        'training': (fineturn.main, 'fineturn.py', ['--data-dir', tiny_records, '--weights',
                                                    lenet_npz, '--run-dir', str(run_dir)]),
        'validate': (validate.main, validate.PROG, [image, '--weights', lenet_npz]),
        'predict': (fineturn.main, 'fineturn.py', ['--predict', image, '--checkpoint', lenet_npz,
                                                   '--save-csv', str(tmp_path / 'p.csv')]),
        'export': (fineturn.main, 'fineturn.py', ['--export', str(export_dir), '--checkpoint',
                                                  lenet_npz]),
        'evaluate': (fineturn.main, 'fineturn.py', ['--data-dir', tiny_records, '--evaluate',
                                                    lenet_npz]),
    }
    for name, (main, prog, argv) in commands.items():
        assert main(argv) == 1, name
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and 'Traceback' not in err, (name, err)
        assert lines[0].startswith('%s: error: %s' % (prog, refused)), (name, lines[0])
        assert '2 convolution and 2 inner-product layers' in lines[0] and fix in lines[0]
    assert not os.path.exists(tmp_path / 'p.csv') and not os.path.exists(export_dir)
    assert not os.path.exists(run_dir / 'model.json')
    # a family file given as a checkpoint: what it is, and what to do with it
    assert fineturn.main(['--predict', image, '--checkpoint', alexnet_npz]) == 1
    assert capsys.readouterr().err.strip() == (
        'fineturn.py: error: %s is a weights file, not a checkpoint: fine-tune it with python '
        'fineturn.py --weights %s, then use that run dir' % (alexnet_npz, alexnet_npz))


# --- the weights file's description --------------------------------------------------------------

def test_a_mean_image_is_subtracted_at_the_crops_window():
    mean = synthetic.mean_image(seed=3)
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    resized = image.astype(np.float32)                      # 256x256: the resize keeps it
    # Caffe's data layer: the mean image at the crop's window, not its per-channel average
    expected = resized[14:241, 14:241] - mean[14:241, 14:241]
    np.testing.assert_array_equal(alexnet.preprocess(image, mean), expected)
    flat = resized[14:241, 14:241] - mean.reshape(-1, 3).mean(0)
    assert np.abs(alexnet.preprocess(image, mean) - flat).max() > 5


def test_mean_binaryproto_is_read_in_caffes_layout(tmp_path):
    mean = synthetic.mean_image(seed=4)
    path = synthetic.write_mean(str(tmp_path / 'mean.binaryproto'), mean)
    blob = caffe_pb.BlobProto.FromString(open(path, 'rb').read())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 256, 256)
    chw = np.asarray(blob.data, np.float32).reshape(3, 256, 256)
    assert chw[0, 10, 20] == mean[10, 20, 0] and chw[2, 200, 3] == mean[200, 3, 2]
    np.testing.assert_array_equal(read_mean(path), mean)
    small = caffe_pb.BlobProto(num=1, channels=3, height=4, width=4)
    small.data.extend([1.0] * 48)
    (tmp_path / 'small.binaryproto').write_bytes(small.SerializeToString())
    with pytest.raises(ConversionError, match='3 x 256 x 256'):
        read_mean(str(tmp_path / 'small.binaryproto'))


def test_description_is_stored_and_read_back(caffenet, tmp_path):
    loaded = alexnet.read_weights(caffenet['v1'][2])
    assert loaded.structure == netspec.CAFFENET
    np.testing.assert_array_equal(loaded.mean, caffenet['mean'])
    assert loaded.labels is None
    prototxt, caffemodel, _ = caffenet['new']
    labels = ['class %d' % i for i in range(1000)]
    out = str(tmp_path / 'labelled.npz')
    convert_file(prototxt, caffemodel, out, mean=(100.0, 110.0, 120.0), labels=labels)
    loaded = alexnet.read_weights(out)
    assert loaded.labels == labels and tuple(loaded.mean) == (100, 110, 120)
    with pytest.raises(ConversionError, match='999 labels for the 1000 outputs'):
        convert_file(prototxt, caffemodel, str(tmp_path / 'x.npz'), labels=labels[:-1],
                     mean=weights_file.IMAGENET_MEAN_BGR)
    assert not os.path.exists(tmp_path / 'x.npz')


def test_files_without_a_description_load_as_bvlc_alexnet(tmp_path):
    rng = np.random.default_rng(0)
    layers = {'%s/%s' % (layer, kind): rng.normal(size=shape).astype(np.float32)
              for layer, shapes in netspec.BVLC_ALEXNET.with_classes(7).weight_shapes().items()
              for kind, shape in zip(('weights', 'biases'), shapes)}
    np.savez(tmp_path / 'old.npz', **layers)
    loaded = alexnet.read_weights(str(tmp_path / 'old.npz'))
    assert loaded.structure == netspec.BVLC_ALEXNET.with_classes(7)
    assert tuple(loaded.mean) == weights_file.IMAGENET_MEAN_BGR and loaded.labels is None


def test_a_damaged_description_is_a_clear_error(tmp_path):
    structure = netspec.BVLC_ALEXNET.with_classes(3)
    meta = weights_file.description(structure, weights_file.IMAGENET_MEAN_BGR)
    meta[weights_file.STRUCTURE_KEY] = np.array('{"layers": "garbage"}')
    np.savez(tmp_path / 'bad.npz', **meta)
    with pytest.raises(alexnet.WeightsError, match='model description is damaged.*caffe_to_npy'):
        alexnet.read_weights(str(tmp_path / 'bad.npz'))


def test_legacy_npy_refuses_what_it_cannot_record(caffenet, tmp_path):
    with pytest.raises(ConversionError, match='write an .npz'):
        convert_file(*caffenet['new'][:2], str(tmp_path / 'w.npy'), legacy_npy=True,
                     mean=weights_file.IMAGENET_MEAN_BGR)
    assert os.listdir(tmp_path) == []


# --- --verify on the family, against OpenCV's Caffe runtime ----------------------------------------

@pytest.mark.parametrize('fmt', ['v1', 'new'])
def test_caffenet_with_a_mean_image_matches_opencv(caffenet, photos, fmt):
    result = verify(*caffenet[fmt], photos)
    assert result['fc8'] < TOLERANCE and result['prob'] < TOLERANCE, result
    assert result['top1_agreement'] == 1.0


def fc8_error(caffenet, photos, structure=None, mean=None):
    """fc8's relative difference from OpenCV's Caffe when our side changes one thing."""
    prototxt, caffemodel, path = caffenet['new']
    weights = alexnet.read_weights(path)
    reference = caffe_forward(prototxt, caffemodel, load_images(photos, weights.mean))
    if structure is not None:
        weights.structure = structure
    ours = tf_forward(weights, load_images(photos, weights.mean if mean is None else mean))
    return relative_difference(ours['fc8'], reference['fc8'])


def test_the_order_matters(caffenet, photos):
    assert fc8_error(caffenet, photos) < TOLERANCE
    assert fc8_error(caffenet, photos, structure=netspec.BVLC_ALEXNET) > BUG_FLOOR


def test_the_mean_image_matters(caffenet, photos):
    """Its per-channel average is what some ports subtract instead."""
    average = caffenet['mean'].reshape(-1, 3).mean(0)
    assert fc8_error(caffenet, photos, mean=average) > BUG_FLOOR


def test_lrn_parameters_come_from_the_prototxt(tmp_path, photos):
    # k stays 1 here: OpenCV's Caffe importer ignores LRN's k (it reads a `bias` field that Caffe
    # doesn't have); test_lrn_k_is_caffes checks k by hand
    lrn = netspec.LRN(local_size=3, alpha=5e-4, beta=0.6, k=1.0)
    base = dataclasses.replace(netspec.BVLC_ALEXNET, layers=tuple(
        dataclasses.replace(layer, ops=tuple(lrn if op.kind == 'lrn' else op for op in layer.ops))
        for layer in netspec.BVLC_ALEXNET.layers))
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), seed=8, fmt='new', base=base)
    out = str(tmp_path / 'w.npz')
    convert_file(prototxt, caffemodel, out, mean=weights_file.IMAGENET_MEAN_BGR)
    assert alexnet.read_weights(out).structure.layer('conv1').ops[1] == lrn
    assert verify(prototxt, caffemodel, out, photos)['ok']
    weights = alexnet.read_weights(out)
    weights.structure = netspec.BVLC_ALEXNET     # the default LRN instead of the prototxt's
    images = load_images(photos, weights.mean)
    reference = caffe_forward(prototxt, caffemodel, images)
    assert relative_difference(tf_forward(weights, images)['fc8'], reference['fc8']) > BUG_FLOOR


def test_lrn_k_is_caffes():
    """Caffe's LRN across channels, by hand: x / (k + alpha / n * sum of x^2 over the n channels
    centred on it) ** beta."""
    lrn = netspec.LRN(local_size=3, alpha=0.5, beta=0.6, k=2.0)
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 6)).astype(np.float32)
    squares = np.pad(x ** 2, [(0, 0)] * 3 + [(1, 1)])
    window = sum(squares[..., i:i + 6] for i in range(3))
    expected = x / (lrn.k + lrn.alpha / lrn.local_size * window) ** lrn.beta
    got = tf.nn.local_response_normalization(x, **alexnet.lrn_arguments(lrn)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cli_records_mean_and_labels_and_verifies(caffenet, photos, tmp_path):
    prototxt, caffemodel, _ = caffenet['v1']
    labels = tmp_path / 'labels.txt'
    labels.write_text(''.join('n%08d thing %d\n' % (i, i) for i in range(1000)))
    out = tmp_path / 'w.npz'
    result = subprocess.run([sys.executable, '-m', 'caffe_to_npy', prototxt, caffemodel, str(out),
                             '--mean', caffenet['mean_path'], '--labels', str(labels),
                             '--verify', photos[0]], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'OK' in result.stdout and 'conv1 relu-pool-lrn' in result.stdout
    assert 'mean image 256x256' in result.stdout and '1000 labels' in result.stdout
    loaded = alexnet.read_weights(str(out))
    assert loaded.labels[3] == 'n00000003 thing 3'
    np.testing.assert_array_equal(loaded.mean, caffenet['mean'])


# --- Caffe's lr_mult -----------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('fc8=10', {'fc8': [10.0, 20.0]}),
    ('fc8=10/30, fc7=2', {'fc8': [10.0, 30.0], 'fc7': [2.0, 4.0]}),
])
def test_lr_mult_flag(text, expected):
    assert fineturn.parse_args(['--lr-mult', text]).lr_mult == expected
    assert knobs.lr_multipliers({'fc8': (10, 20)}) == {'fc8': [10.0, 20.0]}


@pytest.mark.parametrize('text', ['fc9=10', 'fc8=0', 'fc8=a', 'fc8=1/2/3'])
def test_lr_mult_flag_refuses_nonsense(text, capsys):
    with pytest.raises(SystemExit):
        fineturn.parse_args(['--lr-mult', text])
    assert '--lr-mult' in capsys.readouterr().err


def test_sgd_step_with_lr_mult_matches_a_hand_computation():
    """One step on fc7-fc8 with fc8 x10 (biases x20), fc7 x1, L2 on the weights: numpy's
    gradients, then w - lr * mult * (g + wd * w), b - lr * mult * g."""
    rng = np.random.default_rng(0)
    n, d, h, classes = 6, 12, 10, 4
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, n)
    w7, b7 = rng.normal(0, 0.3, (d, h)).astype(np.float32), rng.normal(0, 0.1, h).astype(np.float32)
    w8, b8 = rng.normal(0, 0.3, (h, classes)).astype(np.float32), \
        rng.normal(0, 0.1, classes).astype(np.float32)
    lr, wd = 0.05, 0.01
    g = tf1.Graph()
    with g.as_default():
        inputs = tf1.placeholder(tf.float32, [None, d])
        labels = tf1.placeholder(tf.int64, [None])
        structure = dataclasses.replace(netspec.BVLC_ALEXNET, layers=(
            dataclasses.replace(netspec.BVLC_ALEXNET.layer('fc6'), outputs=d),
            dataclasses.replace(netspec.BVLC_ALEXNET.layer('fc7'), outputs=h),
            dataclasses.replace(netspec.BVLC_ALEXNET.layer('fc8'), outputs=classes)))
        logits, _ = graph.classifier(inputs, structure, start='fc7')
        scores = graph.scores(logits, labels)
        step, _ = graph.train_op(scores.mean_loss, g, 100, ('fc7', 'fc8'), lr, 1.0, wd,
                                 {'fc8': (10.0, 20.0)})
        with tf1.Session() as session:
            alexnet.load_weights(session, {'fc7': {'weights': w7, 'biases': b7},
                                           'fc8': {'weights': w8, 'biases': b8}})
            session.run(tf1.variables_initializer([tf1.train.get_global_step()]))
            session.run(step, {inputs: x, labels: y})
            got = session.run(alexnet.graph_layers(g))
    hidden = np.maximum(x @ w7 + b7, 0)
    z = hidden @ w8 + b8
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(classes)[y]) / n
    grads = {'fc8': (hidden.T @ dz, dz.sum(0))}
    dpre = (dz @ w8.T) * (x @ w7 + b7 > 0)
    grads['fc7'] = (x.T @ dpre, dpre.sum(0))
    for layer, (w, b), (mw, mb) in (('fc7', (w7, b7), (1, 1)), ('fc8', (w8, b8), (10, 20))):
        np.testing.assert_allclose(got[layer]['weights'],
                                   w - lr * mw * (grads[layer][0] + wd * w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[layer]['biases'], b - lr * mb * grads[layer][1],
                                   rtol=1e-5, atol=1e-6)
    # and the multiplier is not a no-op: fc8 moved 10x what it would have at x1
    assert not np.allclose(got['fc8']['weights'], w8 - lr * (grads['fc8'][0] + wd * w8),
                           atol=1e-4)


def test_a_run_from_before_lr_mult_resumes(tiny_records, alexnet_npz, tmp_path, capsys):
    """settings.json without lr_mult means no multipliers: the same recipe, not another one."""
    args = ['--records-dir', tiny_records, '--weights', alexnet_npz, '--run-dir', str(tmp_path),
            '--epochs', '1', '--batch-size', '16']
    assert fineturn.main(args) == 0
    path = tmp_path / 'settings.json'
    saved = json.loads(path.read_text())
    del saved['lr_mult']
    path.write_text(json.dumps(saved))
    assert fineturn.main(args[:-3] + ['2', '--batch-size', '16']) == 0
    assert 'after epoch 1' in capsys.readouterr().out
    assert fineturn.main(args + ['--lr-mult', 'fc8=10']) == 1
    assert 'trained with other lr_mult' in capsys.readouterr().err


# --- the whole chain on CaffeNet with a mean image -------------------------------------------------

def test_chain_on_caffenet_with_a_mean_image(caffenet, tiny_records, tiny_test_images, tmp_path,
                                             capsys):
    """convert + verify (fixture) -> records (conftest) -> fine-tune -> report; the run records
    CaffeNet's structure and the mean image, and what reads them back reproduces the run's own
    predictions: --evaluate (records), --predict (image files) and the export (a SavedModel)."""
    _, _, weights = caffenet['new']
    run_dir = tmp_path / 'run'
    args = ['--records-dir', tiny_records, '--weights', weights, '--run-dir', str(run_dir),
            '--epochs', '2', '--batch-size', '16', '--lr-mult', 'fc8=10']
    assert fineturn.main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert 'pool1 (the input of conv2)' not in out and 'test Acc@1' in out
    model = rundir.read_model(str(run_dir))
    assert model.structure == netspec.CAFFENET.with_classes(5)
    np.testing.assert_array_equal(model.mean, caffenet['mean'])
    report = json.loads((run_dir / 'test_report.json').read_text())
    assert report['total'] == 10
    best = json.loads((run_dir / 'best.json').read_text())['checkpoint']
    assert fineturn.main(args + ['--evaluate', str(run_dir / best)]) == 0
    with open(run_dir / 'predictions.csv') as f:
        run_rows = list(csv.DictReader(f))
    with open(run_dir / ('evaluate-' + best) / 'predictions.csv') as f:
        evaluated = list(csv.DictReader(f))
    assert [r['predicted'] for r in evaluated] == [r['predicted'] for r in run_rows]
    for a, b in zip(evaluated, run_rows):
        assert float(a['confidence']) == pytest.approx(float(b['confidence']), abs=1e-5)
    # --predict on the test images' files, and the export on their pixels (RGB)
    probs_path = tmp_path / 'probs.npz'
    assert fineturn.main(['--predict'] + tiny_test_images + [
        '--run-dir', str(run_dir), '--save-probs', str(probs_path)]) == 0, capsys.readouterr().err
    with np.load(probs_path) as data:
        predicted = data['probs']
    assert predicted.argmax(1).tolist() == [int(r['predicted']) for r in run_rows]
    np.testing.assert_allclose(predicted.max(1), [float(r['confidence']) for r in run_rows],
                               atol=1e-5)
    out_dir = tmp_path / 'export'
    assert fineturn.main(['--export', str(out_dir), '--run-dir', str(run_dir)]) == 0
    serve = tf.saved_model.load(str(out_dir)).signatures['serving_default']
    pixels = np.stack([cv2.imread(path)[..., ::-1] for path in tiny_test_images])
    exported = serve(images=tf.constant(pixels))['probabilities'].numpy()
    np.testing.assert_allclose(exported, predicted, atol=1e-5)


def test_flips_come_after_the_mean_image(tiny_records):
    """Caffe mirrors after subtracting: flip(crop - mean), never crop - flip(mean)."""
    mean = synthetic.mean_image(seed=9)
    plain = {p.numpy(): i.numpy() for i, _, p in records.make_dataset(tiny_records, 'train', mean)}
    count = len(plain)
    seen = 0
    for image, _, path in records.training_dataset(
            tiny_records, records.split_positions(tiny_records, 'train'),
            tf.constant(4, tf.int64), True, mean):
        base = plain[path.numpy()]
        flips = [base, base[:, ::-1], base[::-1], base[::-1, ::-1]]
        assert any(np.array_equal(image.numpy(), f) for f in flips)
        seen += 1
    assert seen == count


def test_each_cached_flip_variant_comes_after_the_mean_image(tiny_records):
    """The feature store's flip variants (variants_dataset) of each image are the flips of the
    full graph's image (make_dataset), with a mean image: flip(crop - mean), never
    crop - flip(mean)."""
    mean = synthetic.mean_image(seed=9)
    plain = list(records.make_dataset(tiny_records, 'validation', mean))
    variants = list(records.variants_dataset(records.part_records(
        tiny_records, records.split_positions(tiny_records, 'validation')),
        records.FLIP_VARIANTS, mean))
    assert len(variants) == records.FLIP_VARIANTS * len(plain) == 40
    for n, (image, label, path) in enumerate(variants):
        base, base_label, base_path = (t.numpy() for t in plain[n // records.FLIP_VARIANTS])
        variant = n % records.FLIP_VARIANTS
        # bit 0 left/right (the width axis), bit 1 up/down (the height axis)
        flipped = base[::-1 if variant & 2 else 1, ::-1 if variant & 1 else 1]
        assert (path.numpy(), label.numpy()) == (base_path, base_label)
        np.testing.assert_array_equal(image.numpy(), flipped,
                                      err_msg='variant %d of %s' % (variant, base_path))
