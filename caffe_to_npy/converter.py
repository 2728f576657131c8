"""Caffe deploy.prototxt + .caffemodel -> float32 arrays in TensorFlow layouts -> .npz / .npy.

Structure (kernel, stride, pad, group, num_output, bias_term, LRN parameters) comes from the
prototxt; blobs come from the caffemodel, matched by layer name. Layout changes are the table
WEIGHT_LAYOUTS below. Output keys are `<layer>/weights` and `<layer>/biases`.
"""
import collections
import os
import pickle
import time
import zipfile

import numpy as np
from google.protobuf import text_format

import netspec
from atomicfile import atomic_path, writing

from . import caffe_pb
from .caffemodel import CaffeModel
from .errors import ConversionError

Layer = collections.namedtuple('Layer', 'name type bottoms tops params input_shape output_shape')


# --- reading the prototxt --------------------------------------------------------------------
def _pair(repeated, h, w, default, what, layer):
    """Caffe's kernel/stride/pad: `x: 3`, `x: 3 x: 3`, or `x_h: 3 x_w: 3`."""
    if h is not None or w is not None:
        return (default if h is None else h, default if w is None else w)
    values = list(repeated)
    if not values:
        if default is None:
            raise ConversionError('layer %r has no %s in the prototxt' % (layer, what))
        return (default, default)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return tuple(values)
    raise ConversionError('layer %r: %d-D %s is not supported (2-D only)' % (layer, len(values), what))


def _opt(message, field):
    return getattr(message, field) if message.HasField(field) else None


def _conv_params(layer, name):
    p = layer.convolution_param
    if p.axis != 1:
        raise ConversionError('layer %r: convolution axis %d is not supported' % (name, p.axis))
    return {
        'num_output': p.num_output, 'bias_term': p.bias_term, 'group': p.group,
        'kernel': _pair(p.kernel_size, _opt(p, 'kernel_h'), _opt(p, 'kernel_w'), None,
                        'kernel_size', name),
        'stride': _pair(p.stride, _opt(p, 'stride_h'), _opt(p, 'stride_w'), 1, 'stride', name),
        'pad': _pair(p.pad, _opt(p, 'pad_h'), _opt(p, 'pad_w'), 0, 'pad', name),
        'dilation': _pair(p.dilation, None, None, 1, 'dilation', name),
    }


def _ip_params(layer, name):
    p = layer.inner_product_param
    if p.axis != 1:
        raise ConversionError('layer %r: inner product axis %d is not supported' % (name, p.axis))
    return {'num_output': p.num_output, 'bias_term': p.bias_term, 'transpose': p.transpose}


def _pool_params(layer, name):
    p = layer.pooling_param
    return {
        'pool': caffe_pb.PoolingParameter.DESCRIPTOR.enum_types_by_name['PoolMethod']
        .values_by_number[p.pool].name,
        'global_pooling': p.global_pooling,
        'kernel': (None if p.global_pooling else
                   _pair([p.kernel_size] if p.HasField('kernel_size') else [],
                         _opt(p, 'kernel_h'), _opt(p, 'kernel_w'), None, 'kernel_size', name)),
        'stride': _pair([p.stride], _opt(p, 'stride_h'), _opt(p, 'stride_w'), 1, 'stride', name),
        'pad': _pair([p.pad], _opt(p, 'pad_h'), _opt(p, 'pad_w'), 0, 'pad', name),
        'ceil_mode': p.round_mode == 0,
    }


def _lrn_params(layer, name):
    p = layer.lrn_param
    region = caffe_pb.LRNParameter.DESCRIPTOR.enum_types_by_name['NormRegion']
    return {'local_size': p.local_size, 'alpha': p.alpha, 'beta': p.beta, 'k': p.k,
            'norm_region': region.values_by_number[p.norm_region].name}


def _dropout_params(layer, name):
    return {'dropout_ratio': layer.dropout_param.dropout_ratio}


_PARAMS = {'Convolution': _conv_params, 'InnerProduct': _ip_params, 'Pooling': _pool_params,
           'LRN': _lrn_params, 'Dropout': _dropout_params}


# --- blob shapes through the net: shape of one image, (C, H, W) or (D,) ---------------------
# Caffe's rules themselves are netspec's (conv_output, pool_output), applied here per axis.
def _conv_shape(params, shape, name):
    c, h, w = _spatial(shape, name)
    out = tuple(netspec.conv_output(size, k, s, p, d) for size, k, s, p, d in zip(
        (h, w), params['kernel'], params['stride'], params['pad'], params['dilation']))
    if min(out) < 1:
        raise ConversionError('layer %r: kernel larger than its %dx%d input' % (name, h, w))
    return (params['num_output'],) + out


def _pool_shape(params, shape, name):
    c, h, w = _spatial(shape, name)
    if params['global_pooling']:
        return (c, 1, 1)
    return (c,) + tuple(netspec.pool_output(size, k, s, p, params['ceil_mode']) for size, k, s, p
                        in zip((h, w), params['kernel'], params['stride'], params['pad']))


def _spatial(shape, name):
    if len(shape) != 3:
        raise ConversionError('layer %r needs a C x H x W input, got shape %s' % (name, shape))
    return shape


_SHAPE_RULES = {
    'Convolution': _conv_shape,
    'Pooling': _pool_shape,
    'InnerProduct': lambda params, shape, name: (params['num_output'],),
    # Flatten keeps the C,H,W shape on purpose: the next InnerProduct must still reorder its
    # rows from Caffe's C,H,W flattening to TF's H,W,C.
    'Flatten': lambda params, shape, name: shape,
}
_SAME_SHAPE = {'ReLU', 'LRN', 'Dropout', 'Softmax', 'Sigmoid', 'TanH', 'AbsVal', 'BNLL', 'Power',
               'Exp', 'Log', 'ELU', 'Threshold', 'Split', 'Silence'}
_NO_WEIGHTS = _SAME_SHAPE | {'Input', 'Data', 'ImageData', 'MemoryData', 'HDF5Data', 'DummyData',
                             'WindowData', 'Pooling', 'Flatten', 'Accuracy', 'SoftmaxWithLoss',
                             'EuclideanLoss', 'Concat', 'Eltwise', 'Slice', 'Reshape', 'ArgMax'}


def _net_inputs(net, prototxt):
    """{blob: shape of one image} for the net's inputs (Input layers or deprecated input_dim)."""
    shapes = {}
    dims = list(net.input_dim)
    for i, blob in enumerate(net.input):
        if i < len(net.input_shape):
            dims_i = list(net.input_shape[i].dim)
        elif len(dims) >= 4 * (i + 1):
            dims_i = dims[4 * i:4 * i + 4]
        else:
            raise ConversionError('%s: input %r has no input_shape/input_dim' % (prototxt, blob))
        shapes[blob] = tuple(int(d) for d in dims_i[1:])
    return shapes


class Net:
    """The prototxt's structure: `layers` in order, each a Layer with params and blob shapes."""

    def __init__(self, prototxt):
        self.path = prototxt
        message = _parse_prototxt(prototxt)
        self.name = message.name
        raw = list(message.layer) or list(message.layers)
        if message.layer and message.layers:
            raise ConversionError('%s mixes `layer {}` and V1 `layers {}` blocks: use one format'
                                  % prototxt)
        if not raw:
            raise ConversionError('%s defines no layers: is it a deploy.prototxt?' % prototxt)
        shapes = _net_inputs(message, prototxt)
        self.layers = []
        for layer in raw:
            kind = caffe_pb.layer_type(layer)
            name = layer.name
            params = _PARAMS[kind](layer, name) if kind in _PARAMS else {}
            if kind == 'Input':
                if not layer.input_param.shape:
                    raise ConversionError('%s: Input layer %r has no shape' % (prototxt, name))
                for i, top in enumerate(layer.top):
                    dims = layer.input_param.shape[min(i, len(layer.input_param.shape) - 1)].dim
                    shapes[top] = tuple(int(d) for d in dims[1:])
            bottom_shape = shapes.get(layer.bottom[0]) if layer.bottom else None
            out_shape = None
            if bottom_shape is not None:
                if kind in _SHAPE_RULES:
                    out_shape = _SHAPE_RULES[kind](params, bottom_shape, name)
                elif kind in _SAME_SHAPE:
                    out_shape = bottom_shape
            if kind != 'Input':
                for top in layer.top:
                    shapes[top] = out_shape
            self.layers.append(Layer(name, kind, tuple(layer.bottom), tuple(layer.top), params,
                                     bottom_shape, out_shape))

    def layer(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def _parse_prototxt(path):
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8')
    except FileNotFoundError:
        raise ConversionError('prototxt not found: %s (check the path)' % path) from None
    except IsADirectoryError:
        raise ConversionError('prototxt %s is a directory, not a file' % path) from None
    except UnicodeDecodeError:
        raise ConversionError('%s is not a text prototxt (a binary file?): arguments are '
                              'DEPLOY.prototxt MODEL.caffemodel OUT' % path) from None
    except OSError as e:
        raise ConversionError('cannot read prototxt %s: %s' % (path, e.strerror)) from None
    message = caffe_pb.NetParameter()
    try:
        text_format.Parse(text, message, allow_unknown_field=True)
    except text_format.ParseError as e:
        raise ConversionError('%s is not a valid prototxt: %s' % (path, e)) from None
    return message


# --- layouts: Caffe blob -> TF array --------------------------------------------------------
def _expected_conv(layer):
    p, (c, _, _) = layer.params, _spatial(layer.input_shape, layer.name)
    if c % p['group'] or p['num_output'] % p['group']:
        raise ConversionError('layer %r: group %d does not divide %d inputs / %d outputs'
                              % (layer.name, p['group'], c, p['num_output']))
    return (p['num_output'], c // p['group']) + p['kernel']


def _expected_ip(layer):
    p, n_in = layer.params, int(np.prod(layer.input_shape))
    return (n_in, p['num_output']) if p['transpose'] else (p['num_output'], n_in)


def _conv_to_hwio(blob, layer):
    return np.ascontiguousarray(blob.transpose(2, 3, 1, 0))   # (out, in/g, kh, kw) -> HWIO


def _fc_to_in_out(blob, layer):
    """(out, in) -> (in, out). After a spatial layer (fc6) the `in` axis is Caffe's C,H,W
    flattening; TF flattens NHWC as H,W,C, so each row is reordered first. The result is
    returned as a transposed view (Fortran order): no copy of the big matrix is needed, and
    np.save/np.load keep its values and shape."""
    w = blob.T if layer.params['transpose'] else blob
    if len(layer.input_shape) == 3:
        c, h, wd = layer.input_shape
        w = np.ascontiguousarray(w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1)).reshape(-1, h * wd * c)
    return w.T


def _vector(blob, layer):
    return blob.reshape(-1)


# Caffe layer type -> (expected Caffe weight shape, [(TF key, blob index, layout)])
WEIGHT_LAYOUTS = {
    'Convolution': (_expected_conv, (('weights', 0, _conv_to_hwio), ('biases', 1, _vector))),
    'InnerProduct': (_expected_ip, (('weights', 0, _fc_to_in_out), ('biases', 1, _vector))),
}


def _strip_ones(shape):
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def plan(net, model):
    """Check the prototxt against the caffemodel; return [(Layer, [(key, caffe array, layout)])].

    Raises ConversionError for a missing layer, a wrong shape or blob count, a type
    disagreement, and an unsupported layer type that carries weights.
    """
    raw = {}
    for layer in model.layers:
        raw.setdefault(layer.name, layer)
    steps = []
    for layer in net.layers:
        found = raw.get(layer.name)
        if layer.type not in WEIGHT_LAYOUTS:
            if found is not None and found.blobs:
                raise ConversionError(
                    'layer %r of type %s carries %d weight blob(s), which caffe_to_npy does not '
                    'convert (supported: %s); remove it or convert that layer another way'
                    % (layer.name, layer.type, len(found.blobs), ', '.join(sorted(WEIGHT_LAYOUTS))))
            continue
        if found is None:
            raise ConversionError(
                'layer %r of the prototxt is not in %s: the prototxt and caffemodel do not belong '
                'together (use the deploy.prototxt that came with this caffemodel)'
                % (layer.name, model.path))
        if found.type != layer.type:
            raise ConversionError('layer %r is %s in %s but %s in %s: use the matching prototxt'
                                  % (layer.name, layer.type, net.path, found.type, model.path))
        if layer.input_shape is None:
            raise ConversionError(
                'cannot infer the input shape of layer %r from %s: give it an Input layer (or '
                'input_dim) and only supported layers before it' % (layer.name, net.path))
        expected_fn, outputs = WEIGHT_LAYOUTS[layer.type]
        expected = [expected_fn(layer), (layer.params['num_output'],)]
        n_blobs = 2 if layer.params['bias_term'] else 1
        if len(found.blobs) != n_blobs:
            raise ConversionError(
                'layer %r has %d blob(s) in the caffemodel but the prototxt expects %d (bias_term: '
                '%s): use the matching prototxt' % (layer.name, len(found.blobs), n_blobs,
                                                   str(layer.params['bias_term']).lower()))
        arrays = []
        for key, index, layout in outputs[:n_blobs]:
            blob = found.blobs[index]
            if _strip_ones(blob.shape) != _strip_ones(expected[index]):
                raise ConversionError(
                    'layer %r %s: the prototxt implies shape %s but the caffemodel holds %s: the '
                    'prototxt and caffemodel do not belong together (num_output, kernel, group or '
                    'input size differ)' % (layer.name, key, expected[index], blob.shape))
            arrays.append((key, blob, expected[index], layout))
        steps.append((layer, arrays))
    return steps


def _iter_arrays(steps, model, shapes=None):
    """Yield (layer name, key, TF array) one at a time; release each blob once converted.
    Appends (layer, key, TF shape) to `shapes` if given."""
    for layer, arrays in steps:
        for key, blob, caffe_shape, layout in arrays:
            array = layout(blob.data.reshape(caffe_shape), layer)
            if shapes is not None:
                shapes.append((layer.name, key, array.shape))
            yield layer.name, key, array
            del array
            model.release(blob)


def convert(prototxt, caffemodel):
    """Return {layer: {'weights': W, 'biases': b}} as float32 arrays in TF layouts (in memory).

    fc weights may come back Fortran-ordered (a transposed array); values and shapes are exact.
    """
    net = Net(prototxt)
    with CaffeModel(caffemodel) as model:
        result = {}
        for name, key, array in _iter_arrays(plan(net, model), model):
            result.setdefault(name, {})[key] = np.array(array, dtype=np.float32, order='K')
        return result


# --- writing --------------------------------------------------------------------------------
def _write_npz(f, items):
    # What np.savez does, one array at a time so only one converted layer is alive at once.
    with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, key, array in items:
            with zf.open('%s/%s.npy' % (name, key), 'w', force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _write_legacy_npy(f, items):
    # The pickled dict of dicts other ports read: np.load(path, allow_pickle=True).item().
    weights = {}
    for name, key, array in items:
        weights.setdefault(name, {})[key] = np.array(array, dtype=np.float32, order='K')
    holder = np.empty((), dtype=object)
    holder[()] = weights
    np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': ()})
    pickler = pickle.Pickler(f, protocol=4)  # protocol 4: readable by Python >= 3.4
    pickler.fast = True  # no memo: each array's pickled bytes are freed once written
    pickler.dump(holder)


Summary = collections.namedtuple('Summary', 'path layers parameters seconds format ignored')


def convert_file(prototxt, caffemodel, out_path, legacy_npy=False, check=None):
    """Convert and write atomically. Returns a Summary.

    `check(tmp_path)`, if given, runs on the complete temporary file before it replaces
    `out_path` (the CLI's --verify); if it raises, nothing is left behind.
    """
    want = '.npy' if legacy_npy else '.npz'
    if not out_path.endswith(want):
        raise ConversionError('output %s should end in %s%s' % (
            out_path, want, ' (--legacy-npy writes a pickled .npy)' if legacy_npy else
            ' (or pass --legacy-npy for a pickled .npy)'))
    start = time.perf_counter()
    net = Net(prototxt)
    with CaffeModel(caffemodel) as model:
        steps = plan(net, model)
        shapes = []
        converted = {layer.name for layer, _ in steps}
        ignored = [l.name for l in model.layers if l.blobs and l.name not in converted]
        writer = _write_legacy_npy if legacy_npy else _write_npz
        directory = os.path.dirname(os.path.abspath(out_path))
        if not os.path.isdir(directory):
            raise ConversionError('output directory %s does not exist: create it first' % directory)
        # the weights file holds the same float32 values as the .caffemodel: about its size
        with writing(out_path, 'the weights', needed=os.path.getsize(caffemodel)):
            with atomic_path(out_path, check) as tmp:
                with open(tmp, 'wb') as f:
                    writer(f, _iter_arrays(steps, model, shapes))
                del steps
                seconds = time.perf_counter() - start   # the conversion, not the --verify check
    layers = collections.OrderedDict()
    for name, key, shape in shapes:
        layers.setdefault(name, []).append((key, shape))
    parameters = sum(int(np.prod(shape)) for _, _, shape in shapes)
    return Summary(out_path, list(layers.items()), parameters, seconds,
                   'legacy-npy' if legacy_npy else 'npz', ignored)

