"""AlexNet-shaped Caffe models with random weights: a deploy.prototxt and a .caffemodel.

Used by the tests, the benchmark and `fineturn.py --demo`, so the whole chain runs without the
model zoo's 244 MB download. The prototxt is written from a netspec.Structure (bvlc_alexnet's
deploy net, layer for layer, by default); the caffemodel is written in the V1 format of the model
zoo's file (`layers`, enum types, 4-D legacy blob dims, fc weights 1x1xOUTxIN, plus the train
net's data and loss layers) or in the new format (`layer`, string types, BlobShape). `width` < 1
shrinks every hidden width for fast unit tests. write_model writes any other network the same
way, from its layers and arrays (networks outside the AlexNet family, for the converter's tests).

    python -m caffe_to_npy.synthetic OUT_DIR [--format v1|new] [--num-classes N] [--seed S]
        [--caffenet] [--style input_layer|input_dim|input_shape|v1]
"""
import dataclasses
import os
import sys

import numpy as np
from google.protobuf import text_format

import cli
import netspec
import weights_file
from errors import UserError

from . import caffe_pb

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


def structure(num_classes=1000, width=1.0, base=netspec.BVLC_ALEXNET):
    """`base` with `num_classes` outputs in its last layer and every other width scaled by
    `width` (kept even, so groups of 2 still divide it)."""
    layers = []
    for layer in base.layers[:-1]:
        outputs = layer.outputs if width == 1.0 else \
            max(2, int(round(layer.outputs * width / 2)) * 2)
        layers.append(dataclasses.replace(layer, outputs=outputs))
    return dataclasses.replace(base, layers=tuple(layers) + base.layers[-1:]).with_classes(
        num_classes)


def layers(net=netspec.BVLC_ALEXNET):
    """The deploy net of a netspec.Structure as Caffe layers (name, type, bottom, top, params):
    each conv or fc layer, then its ReLU (in place), LRN, pooling and dropout in the structure's
    order, and a Softmax `prob` at the end."""
    out, top = [], 'data'
    for layer in net.layers:
        number = layer.name[len(layer.name.rstrip('0123456789')):]
        if layer.kind == 'conv':
            params = {'num_output': layer.outputs, 'kernel_size': [layer.kernel]}
            if layer.stride != 1:
                params['stride'] = [layer.stride]
            if layer.pad:
                params['pad'] = [layer.pad]
            if layer.group != 1:
                params['group'] = layer.group
            out.append((layer.name, 'Convolution', top, layer.name, params))
        else:
            out.append((layer.name, 'InnerProduct', top, layer.name,
                        {'num_output': layer.outputs}))
        top = layer.name
        for op, blob in zip(layer.ops, _op_blobs(layer)):
            if op.kind == 'relu':
                out.append(('relu' + number, 'ReLU', top, top, {}))
            elif op.kind == 'dropout':
                out.append(('drop' + number, 'Dropout', top, top, {'dropout_ratio': op.ratio}))
            elif op.kind == 'lrn':
                params = {'local_size': op.local_size, 'alpha': op.alpha, 'beta': op.beta}
                if op.k != 1.0:                            # Caffe's default
                    params['k'] = op.k
                out.append((blob, 'LRN', top, blob, params))
                top = blob
            else:
                out.append((blob, 'Pooling', top, blob, {'pool': 'MAX', 'kernel_size': op.kernel,
                                                         'stride': op.stride}))
                top = blob
    out.append(('prob', 'Softmax', top, 'prob', {}))
    return out


def _op_blobs(layer):
    """The blob each op of `layer` writes: LRN and pooling their own, the others in place."""
    new = iter(layer.blobs()[1:])
    return [next(new) if op.kind in netspec.BLOB_PREFIX else layer.name for op in layer.ops]


def blob_shapes(num_classes=1000, width=1.0, base=netspec.BVLC_ALEXNET):
    """{layer: (Caffe weight shape, bias shape)}: conv (out, in/group, kh, kw), fc (out, in); the
    structure's TF shapes in Caffe's layouts."""
    return {name: (tuple(w[::-1]) if len(w) == 2 else (w[3], w[2], w[0], w[1]), b)
            for name, (w, b) in structure(num_classes, width, base).weight_shapes().items()}


def random_weights(num_classes=1000, seed=0, width=1.0, base=netspec.BVLC_ALEXNET):
    """{layer: (weights, biases)} float32 in Caffe layouts, scaled as described above."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (w_shape, b_shape) in blob_shapes(num_classes, width, base).items():
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


PROTOTXT_STYLES = ('input_layer', 'input_dim', 'input_shape', 'v1')


def deploy_net(num_classes=1000, width=1.0, batch=10, base=netspec.BVLC_ALEXNET,
               style='input_layer'):
    """The deploy NetParameter, in one of the model zoo's styles: `layer` blocks after an Input
    layer (bvlc_alexnet/deploy.prototxt), `layer` blocks under a top-level `input`/`input_dim`
    or `input`/`input_shape` header (Places365's deploy files), or V1 `layers` blocks with enum
    types under an `input_dim` header (older zoo files)."""
    net = structure(num_classes, width, base)
    return net_message(layers(net), [batch, net.input_channels, net.input_size, net.input_size],
                       style)


def net_message(specs, dims, style='input_layer', name='AlexNet'):
    """The deploy NetParameter of any network: an input blob `data` of `dims` (N, C, H, W) in
    prototxt `style` (see deploy_net), then `specs`, each (name, type, bottom, top, params) as
    layers() gives them."""
    if style not in PROTOTXT_STYLES:
        raise ValueError('style must be one of %s, got %r' % (', '.join(PROTOTXT_STYLES), style))
    message = caffe_pb.NetParameter(name=name)
    if style == 'input_layer':
        data = message.layer.add(name='data', type='Input')
        data.top.append('data')
        data.input_param.shape.add().dim.extend(dims)
    else:
        message.input.append('data')
        if style == 'input_shape':
            message.input_shape.add().dim.extend(dims)
        else:
            message.input_dim.extend(dims)
    v1 = style == 'v1'
    for spec in specs:
        _fill_layer(message.layers.add() if v1 else message.layer.add(), *spec, v1=v1)
    return message


def write_prototxt(path, num_classes=1000, width=1.0, base=netspec.BVLC_ALEXNET,
                   style='input_layer'):
    with open(path, 'w') as f:
        f.write(text_format.MessageToString(deploy_net(num_classes, width, base=base,
                                                       style=style)))
    return path


def mean_image(seed=0):
    """A plausible 256x256 BGR mean image, float32: per-channel levels near ImageNet's with a
    smooth spatial variation of several units, as real mean images have."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32) / 255
    levels = (np.float32(weights_file.IMAGENET_MEAN_BGR)
              + rng.uniform(-6, 6, 3).astype(np.float32))
    waves = [rng.uniform(4, 12) * np.sin(rng.uniform(1, 4) * xx + rng.uniform(0, 6))
             * np.cos(rng.uniform(1, 4) * yy) for _ in range(3)]
    return (levels + np.stack(waves, axis=-1)).astype(np.float32)


def write_mean(path, mean):
    """Write a (256, 256, 3) BGR mean as Caffe's mean file: a BlobProto with legacy dims
    1 x 3 x 256 x 256 holding C,H,W floats (imagenet_mean.binaryproto's layout)."""
    blob = caffe_pb.BlobProto(num=1, channels=3, height=mean.shape[0], width=mean.shape[1])
    blob.data.extend(np.asarray(mean, np.float32).transpose(2, 0, 1).ravel().tolist())
    with open(path, 'wb') as f:
        f.write(blob.SerializeToString())
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


def write_caffemodel(path, weights, num_classes=1000, width=1.0, fmt='v1',
                     base=netspec.BVLC_ALEXNET):
    """Write `weights` ({layer: (W, b)} in Caffe layouts) as a .caffemodel, V1 or new format."""
    return write_layers(path, layers(structure(num_classes, width, base)), weights, fmt)


def write_layers(path, specs, weights, fmt='v1', name='AlexNet'):
    """Write the layers `specs` (as layers() gives them) with `weights` ({layer: blobs in Caffe
    layouts}) as a .caffemodel, V1 or new format. A V1 file is, like the model zoo's, a snapshot
    of the train net: a Data layer first, and a SoftmaxWithLoss instead of a final Softmax."""
    if fmt not in ('v1', 'new'):
        raise ValueError("fmt must be 'v1' or 'new', got %r" % (fmt,))
    v1 = fmt == 'v1'
    if v1:
        specs = [('data', 'Data', None, 'data', {})] + list(specs)
        if specs[-1][1] == 'Softmax':
            specs[-1] = ('loss', 'SoftmaxWithLoss', specs[-1][2], 'loss', {})
    layer_class = caffe_pb.V1LayerParameter if v1 else caffe_pb.LayerParameter
    layers_field = caffe_pb.NET_V1_LAYERS if v1 else caffe_pb.NET_LAYER
    blobs_field = caffe_pb.V1_BLOBS if v1 else caffe_pb.LAYER_BLOBS
    data_key = _key(caffe_pb.BLOB_DATA)
    with open(path, 'wb') as f:
        f.write(caffe_pb.NetParameter(name=name).SerializeToString())
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


def write_alexnet(directory, num_classes=1000, seed=0, fmt='v1', width=1.0, name=None,
                  base=netspec.BVLC_ALEXNET, style='input_layer'):
    """Write <name>.prototxt (deploy, in prototxt `style`) and <name>.caffemodel of the network
    `base` (bvlc_alexnet's by default); return their paths.

    name defaults to 'alexnet_<fmt>'. Full width takes ~1 s and 244 MB of disk.
    """
    name = name or 'alexnet_%s' % fmt
    prototxt = write_prototxt(os.path.join(directory, name + '.prototxt'), num_classes, width,
                              base, style)
    caffemodel = write_caffemodel(os.path.join(directory, name + '.caffemodel'),
                                  random_weights(num_classes, seed, width, base), num_classes,
                                  width, fmt, base)
    return prototxt, caffemodel


def write_model(directory, name, specs, dims, weights, fmt='new', style=None):
    """Write <name>.prototxt and <name>.caffemodel of any network: an input `data` of `dims`
    (N, C, H, W), the layers `specs` (name, type, bottom, top, params), `weights` ({layer: blobs
    in Caffe layouts}) in format `fmt`. The prototxt's style defaults to the format's: V1
    `layers` under an input_dim header, or `layer` blocks after an Input layer. Returns the
    paths."""
    style = style or ('v1' if fmt == 'v1' else 'input_layer')
    prototxt = os.path.join(directory, name + '.prototxt')
    with open(prototxt, 'w') as f:
        f.write(text_format.MessageToString(net_message(specs, dims, style, name)))
    return prototxt, write_layers(os.path.join(directory, name + '.caffemodel'), specs, weights,
                                  fmt, name)


def parser():
    parser = cli.Parser(
        prog='python -m caffe_to_npy.synthetic',
        description='Write an AlexNet-shaped Caffe model with random weights '
                    '(deploy .prototxt + .caffemodel).')
    parser.add_argument('out_dir', metavar='OUT_DIR',
                        help='directory to write into (created if missing)')
    parser.add_argument('--format', choices=('v1', 'new'), default='v1',
                        help=cli.with_default('caffemodel format: v1 like the model zoo file, or '
                                              'new', 'v1'))
    parser.add_argument('--num-classes', type=int, default=1000, metavar='N',
                        help=cli.with_default('fc8 outputs', 1000))
    parser.add_argument('--seed', type=int, default=0, metavar='N',
                        help=cli.with_default('random seed', 0))
    parser.add_argument('--width', type=float, default=1.0, metavar='SCALE',
                        help=cli.with_default('scale of the hidden widths; < 1 for tiny test '
                                              'models', cli.show_number(1.0)))
    parser.add_argument('--caffenet', action='store_true',
                        help='CaffeNet\'s order (pooling before LRN) and a mean image '
                             '(mean.binaryproto), like bvlc_reference_caffenet and the Places '
                             'AlexNets')
    parser.add_argument('--style', choices=PROTOTXT_STYLES, default='input_layer',
                        help=cli.with_default('prototxt style', 'input_layer'))
    return parser


def main(argv=None):
    args = parser().parse_args(argv)

    def work():
        os.makedirs(args.out_dir, exist_ok=True)
        base = netspec.CAFFENET if args.caffenet else netspec.BVLC_ALEXNET
        for path in write_alexnet(args.out_dir, args.num_classes, args.seed, args.format,
                                  args.width, base=base, style=args.style):
            print(path)
        if args.caffenet:
            print(write_mean(os.path.join(args.out_dir, 'mean.binaryproto'),
                             mean_image(args.seed)))
    # sizes the network can't have, or a folder it can't write: the user's to fix
    return cli.run('python -m caffe_to_npy.synthetic', work, (UserError, ValueError, OSError))


if __name__ == '__main__':
    sys.exit(main())
