"""Caffe deploy.prototxt + .caffemodel -> float32 arrays in TensorFlow layouts -> .npz / .npy.

Structure (kernel, stride, pad, group, num_output, bias_term, LRN parameters) comes from the
prototxt; blobs come from the caffemodel, matched by layer name. Layout changes are the table
WEIGHT_LAYOUTS below. Output keys are `<layer>/weights` and `<layer>/biases`.
"""
import collections
import dataclasses
import os
import time

import numpy as np
from google.protobuf import text_format

import netspec
import weights_file
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


def _decimal(value):
    """A protobuf float as the shortest decimal that is the same float32: 1e-4, not
    9.999999747378752e-05."""
    return float(str(np.float32(value)))


def _lrn_params(layer, name):
    p = layer.lrn_param
    region = caffe_pb.LRNParameter.DESCRIPTOR.enum_types_by_name['NormRegion']
    return {'local_size': p.local_size, 'alpha': _decimal(p.alpha), 'beta': _decimal(p.beta),
            'k': _decimal(p.k), 'norm_region': region.values_by_number[p.norm_region].name}


def _dropout_params(layer, name):
    return {'dropout_ratio': _decimal(layer.dropout_param.dropout_ratio)}


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


# --- the network's structure, for the AlexNet family -----------------------------------------
_OPS = {'ReLU', 'LRN', 'Pooling', 'Dropout'}
_PASSED = {'Input', 'Data', 'ImageData', 'MemoryData', 'HDF5Data', 'DummyData', 'WindowData',
           'Flatten', 'Softmax', 'Silence', 'Split', 'Accuracy', 'SoftmaxWithLoss'}


def _square(values, what, layer):
    if len(set(values)) != 1:
        raise netspec.StructureError('%s has a %s of %s (the family\'s are square)'
                                     % (layer.name, what, ' x '.join(map(str, values))))
    return values[0]


def _op(layer):
    """The netspec op of a ReLU, LRN, Pooling or Dropout layer."""
    p = layer.params
    if layer.type == 'ReLU':
        return netspec.ReLU()
    if layer.type == 'Dropout':
        return netspec.Dropout(p['dropout_ratio'])
    if layer.type == 'LRN':
        if p['norm_region'] != 'ACROSS_CHANNELS':
            raise netspec.StructureError('%s normalises %s (the family across channels)'
                                         % (layer.name, p['norm_region']))
        return netspec.LRN(p['local_size'], p['alpha'], p['beta'], p['k'])
    if p['pool'] != 'MAX' or p['global_pooling']:
        raise netspec.StructureError('%s is %s pooling (the family max-pools)' % (
            layer.name, 'global' if p['global_pooling'] else p['pool']))
    if any(p['pad']):
        raise netspec.StructureError('%s pads its pooling (the family does not)' % layer.name)
    return netspec.MaxPool(_square(p['kernel'], 'pooling window', layer),
                           _square(p['stride'], 'pooling stride', layer))


def _structure(net):
    """(netspec.Structure, {prototxt name: family name}) of `net`, or a StructureError."""
    layers, renamed, top = [], {}, None
    for layer in net.layers:
        weighted = layer.type in ('Convolution', 'InnerProduct')
        if top is not None and (weighted or layer.type in _OPS) and layer.bottoms[:1] != (top,):
            raise netspec.StructureError('%s reads %s, not the output of the layer before it (the '
                                         'family is a chain)' % (layer.name, layer.bottoms))
        if weighted:
            index = len(layers)
            name = netspec.FAMILY_NAMES[index] if index < len(netspec.FAMILY_NAMES) \
                else layer.name
            p = layer.params
            if not p['bias_term']:
                raise netspec.StructureError('%s has no bias (the family\'s layers all do)'
                                             % layer.name)
            if layer.type == 'Convolution':
                if p['dilation'] != (1, 1):
                    raise netspec.StructureError('%s is dilated' % layer.name)
                entry = netspec.Layer(name, 'conv', p['num_output'],
                                      _square(p['kernel'], 'kernel', layer),
                                      _square(p['stride'], 'stride', layer),
                                      _square(p['pad'], 'padding', layer), p['group'])
            else:
                entry = netspec.Layer(name, 'fc', p['num_output'])
            if not layers:
                if layer.input_shape is None or len(layer.input_shape) != 3:
                    raise netspec.StructureError('the input shape of %s is unknown' % layer.name)
                channels, height, width = layer.input_shape
                if height != width:
                    raise netspec.StructureError('a %dx%d input (the family\'s is square)'
                                                 % (height, width))
            layers.append([entry, []])
            if layer.name != name:
                renamed[layer.name] = name
            top = layer.tops[0]
        elif layer.type in _OPS:
            if not layers:
                raise netspec.StructureError('%s (%s) comes before the first convolution'
                                             % (layer.name, layer.type))
            layers[-1][1].append(_op(layer))
            top = layer.tops[0]
        elif layer.type not in _PASSED:
            raise netspec.StructureError(
                'layer %s is of type %s (the family has convolutions, inner products, ReLU, LRN, '
                'max pooling, dropout and a softmax)' % (layer.name, layer.type))
    if not layers:
        raise netspec.StructureError('no convolution or inner-product layers')
    structure = netspec.Structure(
        tuple(dataclasses.replace(entry, ops=tuple(ops)) for entry, ops in layers),
        input_size=height, input_channels=channels)
    return netspec.check_family(structure), renamed


def structure_of(net):
    """(netspec.Structure, {prototxt name: family name}) of a Net in the AlexNet family: its
    layers named conv1..fc8 by position. A ConversionError that says what differs otherwise."""
    try:
        return _structure(net)
    except netspec.StructureError as error:
        raise ConversionError(_not_family(net, error)) from None


def _not_family(net, why):
    return '%s is not a network of the AlexNet family: %s' % (net.path, why)


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


# --- the model's mean and class names --------------------------------------------------------
def read_mean(path):
    """A Caffe mean file (a BlobProto, e.g. imagenet_mean.binaryproto: 1 x 3 x 256 x 256, C,H,W,
    BGR) -> float32 (256, 256, 3) BGR image."""
    try:
        with open(path, 'rb') as f:
            blob = caffe_pb.BlobProto.FromString(f.read())
    except OSError as e:
        raise ConversionError('cannot read the mean file %s: %s' % (path, e.strerror)) from None
    except Exception as e:   # protobuf's DecodeError and kin
        raise ConversionError('%s is not a Caffe mean file (a BlobProto .binaryproto): %s'
                              % (path, e)) from None
    if blob.HasField('shape'):
        dims = tuple(int(d) for d in blob.shape.dim)
    else:
        dims = (blob.num, blob.channels, blob.height, blob.width)
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, np.float32)
    dims, side = _strip_ones(dims), netspec.RESIZE_SIZE
    if dims != (3, side, side) or values.size != 3 * side * side:
        raise ConversionError('%s holds a mean of shape %s with %d values: expected 3 x %d x %d '
                              '(BGR, the size images are resized to before the crop)'
                              % (path, dims, values.size, side, side))
    return values.reshape(3, side, side).transpose(1, 2, 0).copy()


def describe_structure(structure):
    """'conv1 relu-lrn-pool, conv2 ..., fc6 relu-dropout, ...': the order of each layer's ops."""
    return ', '.join('%s %s' % (layer.name, '-'.join(op.kind for op in layer.ops) or '-')
                     for layer in structure.layers)


Summary = collections.namedtuple('Summary', 'path layers parameters seconds format ignored '
                                            'structure mean labels renamed outside_family')


def _layout(structure):
    """What a file without a description is read as (bvlc_alexnet's), widths aside: those are
    checked against the arrays when the weights are loaded."""
    return [(layer.kind, layer.kernel, layer.stride, layer.pad, layer.group, layer.ops)
            for layer in structure.layers]


def convert_file(prototxt, caffemodel, out_path, legacy_npy=False, check=None, *, mean,
                 labels=None):
    """Convert and write atomically. Returns a Summary.

    Any network's convolutions and inner products convert. For a network of the AlexNet family
    (netspec.check_family) its structure, `mean` (3 BGR values or a 256x256x3 BGR image: the mean
    the model was trained with; bvlc_alexnet's is weights_file.IMAGENET_MEAN_BGR) and `labels`
    (class names, one per fc8 output; optional) are recorded in the .npz next to the arrays, whose
    layers are named conv1..fc8 by position. A network outside the family keeps the prototxt's
    layer names, and the .npz records only why it is not of the family (Summary.outside_family):
    weights_file refuses it, `mean` and `labels` are not recorded (the command line refuses them
    for such a network), and --legacy-npy, which could not record it, is refused.
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
        try:
            structure, renamed = _structure(net)
            outside = None
        except netspec.StructureError as error:
            structure, renamed, outside, mean, labels = None, {}, str(error), None, None
        if outside is not None:
            if legacy_npy:
                raise ConversionError('%s: --legacy-npy files hold arrays only and could not '
                                      'record that: write an .npz (np.load reads its arrays)'
                                      % _not_family(net, outside))
            meta = weights_file.outside_family(outside)
        else:
            meta = _description(structure, mean, labels, legacy_npy)
        shapes = []
        converted = {layer.name for layer, _ in steps}
        ignored = [l.name for l in model.layers if l.blobs and l.name not in converted]
        directory = os.path.dirname(os.path.abspath(out_path))
        if not os.path.isdir(directory):
            raise ConversionError('output directory %s does not exist: create it first' % directory)
        arrays = ((renamed.get(name, name), key, array)
                  for name, key, array in _iter_arrays(steps, model, shapes))
        # the weights file holds the same float32 values as the .caffemodel: about its size
        with writing(out_path, 'the weights', needed=os.path.getsize(caffemodel)):
            with atomic_path(out_path, check) as tmp:
                with open(tmp, 'wb') as f:
                    if legacy_npy:
                        weights_file.write_legacy_npy(f, arrays)
                    else:
                        weights_file.write_npz(f, arrays, meta)
                del steps, arrays
                seconds = time.perf_counter() - start   # the conversion, not the --verify check
    layers = collections.OrderedDict()
    for name, key, shape in shapes:
        layers.setdefault(renamed.get(name, name), []).append((key, shape))
    parameters = sum(int(np.prod(shape)) for _, _, shape in shapes)
    return Summary(out_path, list(layers.items()), parameters, seconds,
                   'legacy-npy' if legacy_npy else 'npz', ignored, structure,
                   None if mean is None else weights_file.mean_array(mean), labels, renamed,
                   outside)


def _description(structure, mean, labels, legacy_npy):
    """The meta/ entries of a network of the family, its `mean` and `labels` checked."""
    if labels is not None and len(labels) != structure.num_classes:
        raise ConversionError('%d labels for the %d outputs of %s: give one class name per '
                              'output' % (len(labels), structure.num_classes,
                                          structure.layers[-1].name))
    if legacy_npy and (_layout(structure) != _layout(netspec.BVLC_ALEXNET)
                       or not np.array_equal(mean, weights_file.IMAGENET_MEAN_BGR)
                       or labels is not None):
        raise ConversionError('--legacy-npy files hold arrays only, and this model differs '
                              'from bvlc_alexnet (its structure, mean or labels): write an '
                              '.npz, which records them')
    try:
        return weights_file.description(structure, mean, labels)
    except ValueError as e:
        raise ConversionError('the mean: %s' % e) from None
