"""caffe_to_npy without TensorFlow: formats, layouts, writing, bad input (tiny generated models),
networks outside the AlexNet family against OpenCV's reading of them.

The graph-level proof (our AlexNet == OpenCV's Caffe forward) is in test_alexnet_vs_caffe.py.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

import netspec
import outside_family
import weights_file
from atomicfile import WriteError
from caffe_to_npy import ConversionError, Net, caffe_pb, convert, convert_file, synthetic
from caffe_to_npy.caffemodel import CaffeModel
from weights_file import IMAGENET_MEAN_BGR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16    # conv1 6 ... fc6/fc7 256 channels: a 1 MB model, same 227 input and 6x6 pool5
CLASSES = 7


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """{'v1': (prototxt, caffemodel), 'new': (...), 'weights': Caffe-layout arrays}."""
    directory = tmp_path_factory.mktemp('tiny')
    weights = synthetic.random_weights(CLASSES, seed=3, width=WIDTH)
    prototxt = synthetic.write_prototxt(str(directory / 'deploy.prototxt'), CLASSES, WIDTH)
    models = {'weights': weights}
    for fmt in ('v1', 'new'):
        path = str(directory / ('tiny_%s.caffemodel' % fmt))
        synthetic.write_caffemodel(path, weights, CLASSES, WIDTH, fmt)
        models[fmt] = (prototxt, path)
    return models


def _expected_tf(weights):
    """TF layouts written out directly from the Caffe facts (docs/ARCHITECTURE.md), as an
    independent statement."""
    out = {}
    for name, (w, b) in weights.items():
        if w.ndim == 4:
            tf_w = w.transpose(2, 3, 1, 0)
        elif name == 'fc6':
            tf_w = w.reshape(w.shape[0], -1, 6, 6).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
        else:
            tf_w = w.T
        out[name] = (tf_w, b)
    return out


# --- schema --------------------------------------------------------------------------------------
def test_schema_field_numbers_match_caffe_wire_format():
    # Bytes as Caffe writes them: key = field number << 3 | wire type.
    net = caffe_pb.NetParameter(name='n')
    net.layer.add(name='a')
    net.layers.add(name='b', type=caffe_pb.V1_LAYER_TYPES['INNER_PRODUCT'])
    assert net.SerializeToString() == (b'\x0a\x01n' + b'\x12\x05\x22\x01b\x28\x0e' +
                                       b'\xa2\x06\x03\x0a\x01a')
    blob = caffe_pb.BlobProto(num=1, channels=2, height=3, width=4)
    blob.data.extend([1.0])
    blob.shape.dim.extend([5])
    assert blob.SerializeToString() == (b'\x08\x01\x10\x02\x18\x03\x20\x04' +
                                        b'\x2a\x04\x00\x00\x80\x3f' + b'\x3a\x03\x0a\x01\x05')
    layer = caffe_pb.LayerParameter()
    layer.convolution_param.group = 2
    layer.inner_product_param.num_output = 3
    layer.lrn_param.local_size = 5
    layer.pooling_param.pool = 1
    layer.input_param.shape.add()
    assert layer.SerializeToString() == (b'\xd2\x06\x02\x28\x02' + b'\xaa\x07\x02\x08\x03' +
                                         b'\xb2\x07\x02\x08\x05' + b'\xca\x07\x02\x08\x01' +
                                         b'\xfa\x08\x02\x0a\x00')
    assert {k: caffe_pb.V1_LAYER_TYPES[k] for k in (
        'CONVOLUTION', 'DROPOUT', 'INNER_PRODUCT', 'LRN', 'POOLING', 'RELU', 'SOFTMAX', 'DATA',
        'SOFTMAX_LOSS')} == {'CONVOLUTION': 4, 'DROPOUT': 6, 'INNER_PRODUCT': 14, 'LRN': 15,
                             'POOLING': 17, 'RELU': 18, 'SOFTMAX': 20, 'DATA': 5,
                             'SOFTMAX_LOSS': 21}


def test_schema_defaults():
    assert caffe_pb.ConvolutionParameter().group == 1
    assert caffe_pb.ConvolutionParameter().bias_term is True
    assert caffe_pb.InnerProductParameter().bias_term is True
    lrn = caffe_pb.LRNParameter()
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (5, 1.0, 0.75, 1.0)
    assert caffe_pb.PoolingParameter().stride == 1
    assert caffe_pb.DropoutParameter().dropout_ratio == 0.5


def test_prototxt_with_unknown_fields_and_v1_syntax(tmp_path):
    path = tmp_path / 'v1.prototxt'
    path.write_text('''
name: "CaffeNet"  input: "data"  input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 weight_decay: 1
  convolution_param { num_output: 96 kernel_size: 11 stride: 4
                      weight_filler { type: "gaussian" std: 0.01 } } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } include { phase: TEST } }
layers { name: "fc6" type: INNER_PRODUCT bottom: "pool1" top: "fc6"
  inner_product_param { num_output: 10 bias_term: false } }
''')
    net = Net(str(path))
    assert [(l.name, l.type, l.output_shape) for l in net.layers] == [
        ('conv1', 'Convolution', (96, 55, 55)), ('pool1', 'Pooling', (96, 27, 27)),
        ('fc6', 'InnerProduct', (10,))]
    assert net.layer('fc6').params['bias_term'] is False
    assert net.layer('conv1').params['stride'] == (4, 4)


def test_prototxt_in_the_style_of_the_model_zoo(tmp_path):
    # bvlc_alexnet/deploy.prototxt style: `shape: { ... }`, param {} blocks, comments
    path = tmp_path / 'deploy.prototxt'
    path.write_text('''name: "AlexNet"
layer { name: "data" type: "Input" top: "data"
  input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } } }
# a comment
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
''')
    assert [l.output_shape for l in Net(str(path)).layers] == [None, (96, 55, 55), (96, 27, 27)]


def test_structure_of_the_synthetic_deploy(tiny):
    net = Net(tiny['v1'][0])
    shapes = {l.name: l.output_shape for l in net.layers}
    assert shapes['pool1'][1:] == (27, 27) and shapes['pool2'][1:] == (13, 13)
    assert shapes['pool5'][1:] == (6, 6)
    assert net.layer('conv2').params['group'] == 2 and net.layer('conv2').params['pad'] == (2, 2)
    assert net.layer('norm1').params == pytest.approx(
        {'local_size': 5, 'alpha': 1e-4, 'beta': 0.75, 'k': 1.0, 'norm_region': 'ACROSS_CHANNELS'})


# --- reading both formats ------------------------------------------------------------------------
def test_synthetic_v1_file_is_really_v1(tiny):
    with CaffeModel(tiny['v1'][1]) as model:
        layers = {l.name: l for l in model.layers}
        assert {l.format for l in model.layers} == {'V1'}
        assert 'data' in layers and 'loss' in layers and 'prob' not in layers
        assert layers['fc7'].blobs[0].shape == (1, 1, 256, 256)      # legacy 1 x 1 x out x in
        assert layers['fc7'].blobs[1].shape == (1, 1, 1, 256)
        assert layers['conv1'].type == 'Convolution'
    with CaffeModel(tiny['new'][1]) as model:
        layers = {l.name: l for l in model.layers}
        assert {l.format for l in model.layers} == {'new'}
        assert layers['fc7'].blobs[0].shape == (256, 256)


@pytest.mark.parametrize('fmt', ['v1', 'new'])
def test_convert_gives_tf_layouts(tiny, fmt):
    result = convert(*tiny[fmt])
    expected = _expected_tf(tiny['weights'])
    assert sorted(result) == sorted(expected)
    for name, (w, b) in expected.items():
        assert result[name]['weights'].dtype == np.float32
        np.testing.assert_array_equal(result[name]['weights'], w)
        np.testing.assert_array_equal(result[name]['biases'], b)


def test_fc6_reorder_computes_what_caffe_computes(tiny):
    # Caffe: W @ pool5 flattened C,H,W. Ours: pool5 in NHWC flattened H,W,C @ W_tf. Same numbers.
    result = convert(*tiny['new'])
    w_caffe, b = tiny['weights']['fc6']
    pool5 = np.random.default_rng(0).standard_normal((16, 6, 6)).astype(np.float32)
    caffe_out = w_caffe @ pool5.reshape(-1) + b
    ours = pool5.transpose(1, 2, 0).reshape(-1) @ result['fc6']['weights'] + result['fc6']['biases']
    np.testing.assert_allclose(ours, caffe_out, rtol=1e-5, atol=1e-5)
    assert not np.allclose(pool5.reshape(-1) @ result['fc6']['weights'] + b, caffe_out, atol=1e-2)


@pytest.mark.parametrize('fmt', ['v1', 'new'])
def test_npz_loads_without_pickle(tiny, tmp_path, fmt):
    out = tmp_path / 'w.npz'
    summary = convert_file(*tiny[fmt], str(out), mean=IMAGENET_MEAN_BGR)
    expected = _expected_tf(tiny['weights'])
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(['%s/%s' % (n, k) for n in expected
                                             for k in ('weights', 'biases')]
                                            + ['meta/mean', 'meta/structure.json'])
        # the model's description: the prototxt's structure and the default mean
        assert netspec.Structure.from_json(str(data['meta/structure.json'])) == \
            synthetic.structure(CLASSES, WIDTH)
        assert data['meta/mean'].tolist() == [104, 117, 123]
        for name, (w, b) in expected.items():
            np.testing.assert_array_equal(data[name + '/weights'], w)
            np.testing.assert_array_equal(data[name + '/biases'], b)
    assert [name for name, _ in summary.layers] == list(expected)
    assert summary.parameters == sum(w.size + b.size for w, b in expected.values())
    assert os.listdir(tmp_path) == ['w.npz']


def test_legacy_npy_is_a_dict_of_dicts(tiny, tmp_path):
    out = tmp_path / 'w.npy'
    convert_file(*tiny['v1'], str(out), legacy_npy=True, mean=IMAGENET_MEAN_BGR)
    with pytest.raises(ValueError):
        np.load(out, allow_pickle=False)
    data = np.load(out, allow_pickle=True).item()
    expected = _expected_tf(tiny['weights'])
    assert sorted(data) == sorted(expected)
    for name, (w, b) in expected.items():
        assert sorted(data[name]) == ['biases', 'weights']
        np.testing.assert_array_equal(data[name]['weights'], w)
        np.testing.assert_array_equal(data[name]['biases'], b)


def test_output_suffix_must_match_the_format(tiny, tmp_path):
    with pytest.raises(ConversionError, match='--legacy-npy'):
        convert_file(*tiny['v1'], str(tmp_path / 'w.npy'), mean=IMAGENET_MEAN_BGR)
    with pytest.raises(ConversionError, match=r'\.npy'):
        convert_file(*tiny['v1'], str(tmp_path / 'w.npz'), legacy_npy=True, mean=IMAGENET_MEAN_BGR)
    assert os.listdir(tmp_path) == []


# --- small hand-made nets: no bias, unusual blob encodings ----------------------------------------
def _small_net(v1, bias_term=True):
    """Input 3x8x8 -> conv 4 k3 (group 1) -> pool 2/2 -> ip 5, as a NetParameter with blobs."""
    rng = np.random.default_rng(1)
    net = caffe_pb.NetParameter(name='small')
    w_conv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_ip = rng.standard_normal((5, 4 * 3 * 3)).astype(np.float32)
    b_conv, b_ip = np.arange(4, dtype=np.float32), np.arange(5, dtype=np.float32)
    specs = [('conv', 'Convolution', 'data', [w_conv, b_conv]), ('pool', 'Pooling', 'conv', []),
             ('ip', 'InnerProduct', 'pool', [w_ip, b_ip])]
    if not v1:
        data = net.layer.add(name='data', type='Input')
        data.top.append('data')
        data.input_param.shape.add().dim.extend([1, 3, 8, 8])
    else:
        net.input.append('data')
        net.input_dim.extend([1, 3, 8, 8])
    for name, kind, bottom, blobs in specs:
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        layer.type = caffe_pb.V1_LAYER_TYPES[{'Convolution': 'CONVOLUTION', 'Pooling': 'POOLING',
                                              'InnerProduct': 'INNER_PRODUCT'}[kind]] if v1 else kind
        layer.bottom.append(bottom)
        layer.top.append(name)
        if kind == 'Convolution':
            layer.convolution_param.num_output = 4
            layer.convolution_param.kernel_size.append(3)
            layer.convolution_param.bias_term = bias_term
        elif kind == 'Pooling':
            layer.pooling_param.kernel_size = 2
            layer.pooling_param.stride = 2
        else:
            layer.inner_product_param.num_output = 5
            layer.inner_product_param.bias_term = bias_term
        for array in blobs[:2 if bias_term else 1]:
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(array.ravel().tolist())
    return net, {'conv': (w_conv, b_conv), 'ip': (w_ip, b_ip)}


def _write_net(tmp_path, net, name='small'):
    prototxt, caffemodel = tmp_path / (name + '.prototxt'), tmp_path / (name + '.caffemodel')
    structure = type(net)()
    structure.CopyFrom(net)
    for layer in list(structure.layer) + list(structure.layers):
        del layer.blobs[:]
    prototxt.write_text(text_format.MessageToString(structure))
    caffemodel.write_bytes(net.SerializeToString())
    return str(prototxt), str(caffemodel)


@pytest.mark.parametrize('v1', [True, False])
@pytest.mark.parametrize('bias_term', [True, False])
def test_layers_with_and_without_bias(tmp_path, v1, bias_term):
    net, arrays = _small_net(v1, bias_term)
    result = convert(*_write_net(tmp_path, net))
    w_conv, b_conv = arrays['conv']
    w_ip, b_ip = arrays['ip']
    np.testing.assert_array_equal(result['conv']['weights'], w_conv.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(result['ip']['weights'],
                                  w_ip.reshape(5, 4, 3, 3).transpose(2, 3, 1, 0).reshape(36, 5))
    if bias_term:
        np.testing.assert_array_equal(result['ip']['biases'], b_ip)
    else:
        assert sorted(result['ip']) == ['weights'] and sorted(result['conv']) == ['weights']


def _reencode_first_blob(net, how):
    """Serialize `net` with conv's weights as unpacked floats or double_data, plus a diff."""
    layer = net.layer[1]
    values = np.asarray(layer.blobs[0].data, np.float32)
    del layer.blobs[0].data[:]
    if how == 'double':
        layer.blobs[0].double_data.extend(values.astype(np.float64).tolist())
    layer.blobs[0].diff.extend([9.0] * len(values))  # gradients: must be ignored
    data = net.SerializeToString()
    if how == 'unpacked':  # append field 5 as one fixed32 per value (wire type 5)
        raw = b''.join(b'\x2d' + v.tobytes() for v in values.astype('<f4'))
        # the blob is inside the layer inside the net: rebuild those two lengths
        blob = layer.blobs[0].SerializeToString() + raw
        layer_bytes = b''.join(
            [_field(7, blob)] + [_field(7, b.SerializeToString()) for b in layer.blobs[1:]])
        rest = caffe_pb.LayerParameter()
        rest.CopyFrom(layer)
        del rest.blobs[:]
        head = caffe_pb.NetParameter()
        head.CopyFrom(net)
        del head.layer[:]
        parts = [head.SerializeToString()]
        for i, other in enumerate(net.layer):
            body = (rest.SerializeToString() + layer_bytes) if i == 1 else other.SerializeToString()
            parts.append(_field(100, body))
        data = b''.join(parts)
    return data


def _field(number, payload):
    return synthetic._key(number) + synthetic._varint(len(payload)) + payload


@pytest.mark.parametrize('how', ['unpacked', 'double'])
def test_unusual_blob_encodings_fall_back_to_protobuf(tmp_path, how):
    net, arrays = _small_net(v1=False)
    prototxt, caffemodel = _write_net(tmp_path, net)
    with open(caffemodel, 'wb') as f:
        f.write(_reencode_first_blob(net, how))
    result = convert(prototxt, caffemodel)
    np.testing.assert_array_equal(result['conv']['weights'], arrays['conv'][0].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(result['ip']['biases'], arrays['ip'][1])


# --- bad input -----------------------------------------------------------------------------------
def test_every_truncation_is_a_clean_error(tiny, tmp_path):
    prototxt, caffemodel = tiny['v1']
    data = open(caffemodel, 'rb').read()
    with CaffeModel(caffemodel) as model:
        end_of_weights = max(b.span[1] for l in model.layers for b in l.blobs)
    cut = tmp_path / 'cut.caffemodel'
    offsets = sorted(set(np.linspace(0, end_of_weights - 1, 60).astype(int)) | {1, 2, 3, 17})
    for offset in offsets:
        cut.write_bytes(data[:offset])
        with pytest.raises(ConversionError):
            convert(prototxt, str(cut))


def test_garbage_is_a_clean_error(tiny, tmp_path):
    garbage = tmp_path / 'garbage.caffemodel'
    rng = np.random.default_rng(0)
    for _ in range(20):
        garbage.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(ConversionError):
            convert(tiny['v1'][0], str(garbage))


def test_wrong_blob_size_is_reported(tmp_path):
    net, _ = _small_net(v1=False)
    net.layer[1].blobs[0].shape.dim[0] = 5   # claims 5 x 3 x 3 x 3 but holds 4 x 3 x 3 x 3
    prototxt, caffemodel = _write_net(tmp_path, net)
    with pytest.raises(ConversionError, match='corrupt'):
        convert(prototxt, caffemodel)


def _run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'caffe_to_npy'] + [str(a) for a in args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _edited_prototxt(path, tmp_path, edit):
    net = caffe_pb.NetParameter()
    text_format.Parse(open(path).read(), net)
    edit(net)
    out = tmp_path / ('%s.prototxt' % edit.__name__.strip('_'))
    out.write_text(text_format.MessageToString(net))
    return out


def _remove_conv3(net):
    index = [l.name for l in net.layer].index('conv3')
    del net.layer[index:index + 2]              # conv3 and relu3
    net.layer[index].bottom[0] = 'pool2'        # conv4 now reads pool2 (256 not 384 channels)


def _rename_fc8(net):
    for layer in net.layer:
        layer.name = 'fc8_new' if layer.name == 'fc8' else layer.name


def _scale_layer(net):
    scale = net.layer.add(name='scale_fc8', type='Scale')
    scale.bottom.append('fc8')
    scale.top.append('fc8')


def _bad_inputs(tiny, tmp_path):
    prototxt, caffemodel = tiny['v1']
    data = open(caffemodel, 'rb').read()
    truncated = tmp_path / 'truncated.caffemodel'
    truncated.write_bytes(data[:len(data) // 2])
    empty = tmp_path / 'empty.caffemodel'
    empty.write_bytes(b'')
    # a caffemodel with one more layer, of an unsupported type, that carries weights
    with_scale = tmp_path / 'scale.caffemodel'
    scale = caffe_pb.V1LayerParameter(name='scale_fc8')
    scale.blobs.add().data.extend([1.0] * CLASSES)
    with_scale.write_bytes(data + _field(2, scale.SerializeToString()))
    wider = tmp_path / 'wider.prototxt'
    synthetic.write_prototxt(str(wider), CLASSES + 1, WIDTH)
    return {
        'missing caffemodel': ((prototxt, tmp_path / 'nope.caffemodel'), 'not found'),
        'missing prototxt': ((tmp_path / 'nope.prototxt', caffemodel), 'not found'),
        'truncated caffemodel': ((prototxt, truncated), 'truncated'),
        'empty caffemodel': ((prototxt, empty), 'empty'),
        'arguments swapped': ((caffemodel, prototxt), 'not a text prototxt'),
        'prototxt missing a layer': ((_edited_prototxt(prototxt, tmp_path, _remove_conv3),
                                      caffemodel), 'conv4'),
        'caffemodel missing a layer': ((_edited_prototxt(prototxt, tmp_path, _rename_fc8),
                                        caffemodel), 'fc8_new'),
        'wrong shape': ((wider, caffemodel), 'shape'),
        'unsupported layer with weights': ((_edited_prototxt(prototxt, tmp_path, _scale_layer),
                                            with_scale), 'Scale'),
    }


BAD_INPUTS = ['missing caffemodel', 'missing prototxt', 'truncated caffemodel', 'empty caffemodel',
              'arguments swapped', 'prototxt missing a layer', 'caffemodel missing a layer',
              'wrong shape', 'unsupported layer with weights']


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_cli_bad_input_one_line_no_output(tiny, tmp_path, case):
    inputs, words = _bad_inputs(tiny, tmp_path)[case]
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    out = out_dir / 'w.npz'
    result = _run_cli(*inputs, out)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'Traceback' not in result.stderr
    assert lines[0].startswith('caffe_to_npy: error: ') and words in lines[0], lines[0]
    assert os.listdir(out_dir) == []


def test_cli_converts_and_prints_a_summary(tiny, tmp_path):
    result = _run_cli(*tiny['new'], tmp_path / 'w.npy', '--legacy-npy')
    assert result.returncode == 0, result.stderr
    assert 'fc6    weights (576, 256)' in result.stdout
    assert '8 layers' in result.stdout and 'parameters' in result.stdout
    assert sorted(np.load(tmp_path / 'w.npy', allow_pickle=True).item()) == sorted(
        tiny['weights'])
    assert os.listdir(tmp_path) == ['w.npy']


def test_cli_help():
    result = _run_cli('--help')
    assert result.returncode == 0 and '--legacy-npy' in result.stdout and '--verify' in result.stdout


def test_cli_usage_error_is_argparses_2(tiny):
    result = _run_cli(tiny['v1'][0])
    assert result.returncode == 2 and result.stderr.startswith('python -m caffe_to_npy: error: ')
    assert len(result.stderr.strip().splitlines()) == 1 and '(see --help)' in result.stderr


def test_failed_write_or_check_leaves_nothing(tiny, tmp_path, monkeypatch):
    (tmp_path / 'w.npz').write_bytes(b'previous')

    def refuse(path):
        assert os.path.getsize(path) > 100000    # the check sees the complete temporary file
        raise RuntimeError('check failed')
    with pytest.raises(RuntimeError):
        convert_file(*tiny['v1'], str(tmp_path / 'w.npz'), check=refuse, mean=IMAGENET_MEAN_BGR)
    assert os.listdir(tmp_path) == ['w.npz']
    assert (tmp_path / 'w.npz').read_bytes() == b'previous'

    calls = []
    original = np.lib.format.write_array

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, 'No space left on device')
        return original(*args, **kwargs)
    monkeypatch.setattr(np.lib.format, 'write_array', fail_on_third)
    with pytest.raises(WriteError, match='cannot write the weights .*new.npz: no space left'):
        convert_file(*tiny['v1'], str(tmp_path / 'new.npz'), mean=IMAGENET_MEAN_BGR)
    assert os.listdir(tmp_path) == ['w.npz']


def test_synthetic_full_size_shapes_match_bvlc_alexnet():
    shapes = synthetic.blob_shapes()
    assert shapes['conv1'][0] == (96, 3, 11, 11) and shapes['conv2'][0] == (256, 48, 5, 5)
    assert shapes['conv4'][0] == (384, 192, 3, 3) and shapes['fc6'][0] == (4096, 9216)
    assert sum(np.prod(w) + np.prod(b) for w, b in shapes.values()) == 60965224


# --- networks outside the AlexNet family -----------------------------------------------------------
NOT_FAMILY = 'is not a network of the AlexNet family'


def _opencv_in_tf_layouts(reader, layer, shapes, fc_input):
    """The blobs OpenCV's Caffe importer holds for `layer`, in TF layouts, written out from the
    Caffe facts: conv (out, in/group, kh, kw) -> HWIO; inner product (out, in) -> (in, out), its
    rows first reordered from Caffe's C,H,W flattening to TF's H,W,C after a spatial blob."""
    weights = reader.getParam(layer, 0).reshape(shapes[0])
    if weights.ndim == 4:
        weights = weights.transpose(2, 3, 1, 0)
    else:
        if fc_input is not None:
            weights = weights.reshape((-1,) + fc_input).transpose(0, 2, 3, 1).reshape(
                weights.shape[0], -1)
        weights = weights.T
    arrays = {'weights': weights}
    if len(shapes) == 2:
        arrays['biases'] = reader.getParam(layer, 1).reshape(-1)
    return arrays


@pytest.mark.parametrize('fmt', ['v1', 'new'])
@pytest.mark.parametrize('name', sorted(outside_family.OUTSIDE))
def test_networks_outside_the_family_convert_as_opencv_reads_them(tmp_path, name, fmt):
    prototxt, caffemodel = outside_family.write(tmp_path, name, fmt)
    out = tmp_path / 'w.npz'
    result = _run_cli(prototxt, caffemodel, out)
    assert result.returncode == 0 and result.stderr == '', result.stderr
    said = [line for line in result.stdout.splitlines() if 'AlexNet family' in line]
    assert len(said) == 1 and said[0].startswith('parameters converted, but the network is not '
                                                 'of the AlexNet family (')
    assert said[0].endswith("fineturn.py and validate_alexnet_on_imagenet.py can't use %s" % out)
    _, dims, shapes, fc_inputs = outside_family.OUTSIDE[name]
    reader = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    reader.setInput(np.ones(dims[1:], np.float32)[None])
    assert np.isfinite(reader.forward()).all()     # a consistent net: OpenCV runs it
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(
            ['%s/%s' % (layer, key) for layer, layer_shapes in shapes.items()
             for key in ('weights', 'biases')[:len(layer_shapes)]] +
            [weights_file.OUTSIDE_FAMILY_KEY])      # no structure, mean or labels
        for layer in shapes:
            expected = _opencv_in_tf_layouts(reader, layer, shapes[layer], fc_inputs.get(layer))
            for key, array in expected.items():
                stored = data['%s/%s' % (layer, key)]
                assert stored.dtype == np.float32 and stored.shape == array.shape
                np.testing.assert_array_equal(stored, array)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(prototxt), os.path.basename(caffemodel), 'w.npz'])   # no temporary
    with pytest.raises(weights_file.WeightsError, match='outside the AlexNet family'):
        weights_file.read(str(out))


@pytest.mark.parametrize('flags, named', [
    (['--verify', '{dir}/photo.jpg'], '--verify is'),
    (['--labels', '{dir}/labels.txt', '--mean-values', '1', '2', '3'],
     '--mean-values and --labels are'),
    (['--legacy-npy'], '--legacy-npy'),
])
def test_what_only_the_family_has_is_refused_outside_it(tmp_path, flags, named):
    """Refused before any work, in one line that says what differs, and nothing written."""
    prototxt, caffemodel = outside_family.write(tmp_path, 'lenet', 'new')
    (tmp_path / 'labels.txt').write_text('a\n' * 10)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    out = out_dir / ('w.npy' if '--legacy-npy' in flags else 'w.npz')
    result = _run_cli(prototxt, caffemodel, out, *[flag.format(dir=tmp_path) for flag in flags])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith('caffe_to_npy: error: ') and NOT_FAMILY in lines[0]
    assert named in lines[0]
    assert os.listdir(out_dir) == []
