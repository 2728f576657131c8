"""AlexNet-shaped Caffe models with random weights: a deploy.prototxt and a .caffemodel.

Used by the tests, the benchmark and `fineturn.py --demo`, so the whole chain runs without the
model zoo's 244 MB download. The prototxt is bvlc_alexnet's deploy net layer for layer; the
caffemodel is written in the V1 format of the model zoo's file (`layers`, enum types, 4-D legacy
blob dims, fc weights 1x1xOUTxIN, plus the train net's data and loss layers) or in the new format
(`layer`, string types, BlobShape). `width` < 1 shrinks every hidden width for fast unit tests.

    python -m caffe_to_npy.synthetic OUT_DIR [--format v1|new] [--num-classes N] [--seed S]
"""
import argparse
import os

import numpy as np
from google.protobuf import text_format

from . import caffe_pb

IMAGE_SIZE = 227

# bvlc_alexnet's deploy.prototxt: (name, type, bottom, top, layer parameters)
ALEXNET_DEPLOY = (
    ('conv1', 'Convolution', 'data', 'conv1', {'num_output': 96, 'kernel_size': [11], 'stride': [4]}),
    ('relu1', 'ReLU', 'conv1', 'conv1', {}),
    ('norm1', 'LRN', 'conv1', 'norm1', {'local_size': 5, 'alpha': 1e-4, 'beta': 0.75}),
    ('pool1', 'Pooling', 'norm1', 'pool1', {'pool': 'MAX', 'kernel_size': 3, 'stride': 2}),
    ('conv2', 'Convolution', 'pool1', 'conv2',
     {'num_output': 256, 'pad': [2], 'kernel_size': [5], 'group': 2}),
    ('relu2', 'ReLU', 'conv2', 'conv2', {}),
    ('norm2', 'LRN', 'conv2', 'norm2', {'local_size': 5, 'alpha': 1e-4, 'beta': 0.75}),
    ('pool2', 'Pooling', 'norm2', 'pool2', {'pool': 'MAX', 'kernel_size': 3, 'stride': 2}),
    ('conv3', 'Convolution', 'pool2', 'conv3', {'num_output': 384, 'pad': [1], 'kernel_size': [3]}),
    ('relu3', 'ReLU', 'conv3', 'conv3', {}),
    ('conv4', 'Convolution', 'conv3', 'conv4',
     {'num_output': 384, 'pad': [1], 'kernel_size': [3], 'group': 2}),
    ('relu4', 'ReLU', 'conv4', 'conv4', {}),
    ('conv5', 'Convolution', 'conv4', 'conv5',
     {'num_output': 256, 'pad': [1], 'kernel_size': [3], 'group': 2}),
    ('relu5', 'ReLU', 'conv5', 'conv5', {}),
    ('pool5', 'Pooling', 'conv5', 'pool5', {'pool': 'MAX', 'kernel_size': 3, 'stride': 2}),
    ('fc6', 'InnerProduct', 'pool5', 'fc6', {'num_output': 4096}),
    ('relu6', 'ReLU', 'fc6', 'fc6', {}),
    ('drop6', 'Dropout', 'fc6', 'fc6', {'dropout_ratio': 0.5}),
    ('fc7', 'InnerProduct', 'fc6', 'fc7', {'num_output': 4096}),
    ('relu7', 'ReLU', 'fc7', 'fc7', {}),
    ('drop7', 'Dropout', 'fc7', 'fc7', {'dropout_ratio': 0.5}),
    ('fc8', 'InnerProduct', 'fc7', 'fc8', {'num_output': 1000}),
    ('prob', 'Softmax', 'fc8', 'prob', {}),
)
_PARAM_FIELD = {'Convolution': 'convolution_param', 'InnerProduct': 'inner_product_param',
                'LRN': 'lrn_param', 'Pooling': 'pooling_param', 'Dropout': 'dropout_param'}
_V1_ENUM = {new: caffe_pb.V1_LAYER_TYPES[old] for old, new in caffe_pb.V1_TYPE_NAMES.items()
            if new}

# Weight scales. He-like std sqrt(2 / fan_in) keeps the mean square of ReLU activations roughly
# constant from the mean-subtracted 0..255 input (RMS ~ 60) to fc7, so LRN works in the same
# regime as with the real weights (its alpha matters) and nothing is float noise. fc8 is scaled
# down so the logits have a spread of a few units and softmax is not one-hot. Biases are small
# but not negligible, so a lost or misplaced bias shows up in fc8.
_GAIN = {'fc8': 0.05}
_BIAS_STD = 1.0


def layers(num_classes=1000, width=1.0):
    """The deploy net as (name, type, bottom, top, params) with num_classes and width applied."""
    out = []
    for name, kind, bottom, top, params in ALEXNET_DEPLOY:
        params = dict(params)
        if name == 'fc8':
            params['num_output'] = num_classes
        elif 'num_output' in params and width != 1.0:
            params['num_output'] = max(2, int(round(params['num_output'] * width / 2)) * 2)
        out.append((name, kind, bottom, top, params))
    return out


def blob_shapes(num_classes=1000, width=1.0):
    """{layer: (Caffe weight shape, bias shape)}: conv (out, in/group, kh, kw), fc (out, in)."""
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)  # C, H, W of one image
    shapes = {}
    for name, kind, _, _, p in layers(num_classes, width):
        if kind == 'Convolution':
            k, s, pad = p['kernel_size'][0], p.get('stride', [1])[0], p.get('pad', [0])[0]
            shapes[name] = ((p['num_output'], shape[0] // p.get('group', 1), k, k),
                            (p['num_output'],))
            size = (shape[1] + 2 * pad - k) // s + 1
            shape = (p['num_output'], size, size)
        elif kind == 'Pooling':
            size = -(-(shape[1] - p['kernel_size']) // p['stride']) + 1  # Caffe rounds up
            shape = (shape[0], size, size)
        elif kind == 'InnerProduct':
            shapes[name] = ((p['num_output'], int(np.prod(shape))), (p['num_output'],))
            shape = (p['num_output'],)
    return shapes


def random_weights(num_classes=1000, seed=0, width=1.0):
    """{layer: (weights, biases)} float32 in Caffe layouts, scaled as described above."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (w_shape, b_shape) in blob_shapes(num_classes, width).items():
        fan_in = int(np.prod(w_shape[1:]))
        weights[name] = (_uniform(rng, w_shape, _GAIN.get(name, 1.0) * np.sqrt(2.0 / fan_in)),
                         _uniform(rng, b_shape, _BIAS_STD))
    return weights


def _uniform(rng, shape, std):
    """Zero-mean uniform noise with standard deviation `std` (cheaper to draw than normal)."""
    values = rng.random(shape, dtype=np.float32)
    values -= np.float32(0.5)
    values *= np.float32(std * np.sqrt(12.0))
    return values


def _fill_layer(layer, name, kind, bottom, top, params, v1):
    layer.name = name
    layer.type = _V1_ENUM[kind] if v1 else kind
    if bottom:
        layer.bottom.append(bottom)
    layer.top.append(top)
    if kind in _PARAM_FIELD:
        param = getattr(layer, _PARAM_FIELD[kind])
        for key, value in params.items():
            if isinstance(value, list):
                getattr(param, key).extend(value)
            else:
                setattr(param, key, value)


def deploy_net(num_classes=1000, width=1.0, batch=10):
    """The deploy NetParameter (new format, Input layer), as in bvlc_alexnet/deploy.prototxt."""
    net = caffe_pb.NetParameter(name='AlexNet')
    data = net.layer.add(name='data', type='Input')
    data.top.append('data')
    data.input_param.shape.add().dim.extend([batch, 3, IMAGE_SIZE, IMAGE_SIZE])
    for spec in layers(num_classes, width):
        _fill_layer(net.layer.add(), *spec, v1=False)
    return net


def write_prototxt(path, num_classes=1000, width=1.0):
    with open(path, 'w') as f:
        f.write(text_format.MessageToString(deploy_net(num_classes, width)))
    return path


# --- the binary file, streamed: protobuf for the small fields, raw bytes for blob data -------
def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number, wire=2):
    return _varint(number << 3 | wire)


def _blob_header(array, v1):
    blob = caffe_pb.BlobProto()
    if v1:  # legacy 4-D dims, padded with leading 1s (an fc weight is 1 x 1 x out x in)
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    return blob.SerializeToString()


def write_caffemodel(path, weights, num_classes=1000, width=1.0, fmt='v1'):
    """Write `weights` ({layer: (W, b)} in Caffe layouts) as a .caffemodel, V1 or new format."""
    if fmt not in ('v1', 'new'):
        raise ValueError("fmt must be 'v1' or 'new', got %r" % (fmt,))
    v1 = fmt == 'v1'
    specs = list(layers(num_classes, width))
    if v1:  # the model zoo's file is a snapshot of the train net: data and loss, no prob
        specs = ([('data', 'Data', None, 'data', {})] + specs[:-1] +
                 [('loss', 'SoftmaxWithLoss', 'fc8', 'loss', {})])
    layer_class = caffe_pb.V1LayerParameter if v1 else caffe_pb.LayerParameter
    layers_field = caffe_pb.NET_V1_LAYERS if v1 else caffe_pb.NET_LAYER
    blobs_field = caffe_pb.V1_BLOBS if v1 else caffe_pb.LAYER_BLOBS
    data_key = _key(caffe_pb.BLOB_DATA)
    with open(path, 'wb') as f:
        f.write(caffe_pb.NetParameter(name='AlexNet').SerializeToString())
        for spec in specs:
            layer = layer_class()
            _fill_layer(layer, *spec, v1=v1)
            head = layer.SerializeToString()
            blobs = []
            for array in weights.get(spec[0], ()):
                array = np.ascontiguousarray(array, dtype='<f4')
                blob_head = _blob_header(array, v1) + data_key + _varint(array.nbytes)
                blobs.append((_key(blobs_field) + _varint(len(blob_head) + array.nbytes),
                              blob_head, array))
            size = len(head) + sum(len(a) + len(b) + c.nbytes for a, b, c in blobs)
            f.write(_key(layers_field) + _varint(size) + head)
            for blob_key, blob_head, array in blobs:
                f.write(blob_key)
                f.write(blob_head)
                f.write(memoryview(array).cast('B'))
    return path


def write_alexnet(directory, num_classes=1000, seed=0, fmt='v1', width=1.0, name=None):
    """Write <name>.prototxt (deploy) and <name>.caffemodel; return their paths.

    name defaults to 'alexnet_<fmt>'. Full width takes ~1 s and 244 MB of disk.
    """
    name = name or 'alexnet_%s' % fmt
    prototxt = write_prototxt(os.path.join(directory, name + '.prototxt'), num_classes, width)
    caffemodel = write_caffemodel(os.path.join(directory, name + '.caffemodel'),
                                  random_weights(num_classes, seed, width), num_classes, width, fmt)
    return prototxt, caffemodel


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m caffe_to_npy.synthetic',
        description='Write an AlexNet-shaped Caffe model with random weights '
                    '(deploy .prototxt + .caffemodel).')
    parser.add_argument('out_dir', help='directory to write into (created if missing)')
    parser.add_argument('--format', choices=('v1', 'new'), default='v1',
                        help='caffemodel format: v1 like the model zoo file (default), or new')
    parser.add_argument('--num-classes', type=int, default=1000, help='fc8 outputs (default 1000)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--width', type=float, default=1.0,
                        help='scale of the hidden widths; < 1 for tiny test models (default 1)')
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    for path in write_alexnet(args.out_dir, args.num_classes, args.seed, args.format, args.width):
        print(path)


if __name__ == '__main__':
    main()
