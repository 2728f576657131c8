"""The AlexNet graph (tf.compat.v1), its preprocessing, and loading a weights file into it.

The graph follows a netspec.Structure, the one description of the network (bvlc_alexnet's unless
told otherwise), exactly as Caffe computes it; docs/ARCHITECTURE.md lists the Caffe facts this
rests on (grouped convolutions, LRN's alpha, the fc6 row order, BGR input and mean).

Weights files hold float32 arrays in TF layouts under `<layer>/weights` and `<layer>/biases`
(`python -m caffe_to_npy` writes them). They are fed once through the variables' initializers, so
neither the graph nor a checkpoint's `.meta` carries 240 MB of constants.
"""
import os
import zlib

import cv2
import numpy as np
import tensorflow as tf

import netspec
from errors import UserError

tf1 = tf.compat.v1

# --- model facts that come with the pretrained weights ------------------------------------------
IMAGE_SIZE = netspec.BVLC_ALEXNET.input_size   # network input side, 227
RESIZE_SIZE = 256                 # Caffe's recipe: resize to 256x256, then centre crop IMAGE_SIZE
CROP_OFFSET = (RESIZE_SIZE - IMAGE_SIZE) // 2   # 14: Caffe's centre crop rounds down
MEAN_BGR = (104.0, 117.0, 123.0)  # ImageNet mean per channel, BGR order like the weights
NUM_IMAGENET_CLASSES = netspec.BVLC_ALEXNET.num_classes
LAYER_NAMES = netspec.LAYER_NAMES

# Caffe's train_val fillers for bvlc_alexnet, used for layers that are not loaded (SKIP_LAYERS).
FILLERS = {'fc6': (0.005, 0.1), 'fc7': (0.005, 0.1), 'fc8': (0.01, 0.0)}
DEFAULT_FILLER = (0.01, 0.0)


class ImageError(UserError):
    """An image file that can't be read as a picture."""


class WeightsError(UserError):
    """A weights file that can't be loaded into the graph; the message says what to do."""


# --- preprocessing -------------------------------------------------------------------------------

def preprocess(image_bgr):
    """HxWx3 uint8 BGR -> float32 (227, 227, 3): resize 256x256 (INTER_LINEAR), centre crop, mean."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ImageError('expected an HxWx3 BGR image, got shape %s' % (image_bgr.shape,))
    resized = cv2.resize(image_bgr, (RESIZE_SIZE, RESIZE_SIZE), interpolation=cv2.INTER_LINEAR)
    crop = resized[CROP_OFFSET:CROP_OFFSET + IMAGE_SIZE, CROP_OFFSET:CROP_OFFSET + IMAGE_SIZE]
    return crop.astype(np.float32) - np.asarray(MEAN_BGR, np.float32)


def read_bgr(path):
    """cv2.imread as 8-bit BGR colour, with a clear error instead of None."""
    if not os.path.isfile(path):
        raise ImageError('%s: no such image file' % path)
    try:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
    except cv2.error:                 # some decoders raise on a damaged file instead of failing
        image = None
    if image is None:
        raise ImageError('%s: not an image OpenCV can read (corrupt or unsupported format)' % path)
    return image


def load_image(path):
    """Read an image file and preprocess it exactly like Caffe's recipe (see preprocess)."""
    return preprocess(read_bgr(path))


def preprocess_tensor(image_bgr):
    """TF twin of preprocess for tf.data: uint8 [H, W, 3] BGR tensor -> float32 [227, 227, 3].

    Bilinear resize to 256x256 with half-pixel centres, as cv2.INTER_LINEAR; an image already
    256x256 passes through unchanged. Upsampled or downsampled images agree with preprocess() to
    within rounding (OpenCV interpolates uint8 in fixed point).
    """
    image = tf.cast(image_bgr, tf.float32)
    image = tf.image.resize(image, (RESIZE_SIZE, RESIZE_SIZE), method='bilinear', antialias=False)
    image = image[CROP_OFFSET:CROP_OFFSET + IMAGE_SIZE, CROP_OFFSET:CROP_OFFSET + IMAGE_SIZE, :]
    image = image - tf.constant(MEAN_BGR, tf.float32)
    return tf.ensure_shape(image, (IMAGE_SIZE, IMAGE_SIZE, 3))


# --- the graph -----------------------------------------------------------------------------------

def op_seed(layer, purpose):
    """A fixed op-level seed per layer and purpose ('filler', 'dropout'): with the graph-level seed
    it fixes the random draws, however many other ops a graph builds before this one."""
    return zlib.crc32(('%s/%s' % (layer, purpose)).encode()) & 0x7fffffff


def lrn_arguments(lrn):
    """A Caffe LRN (netspec.LRN) as tf.nn.local_response_normalization's arguments: Caffe divides
    alpha by local_size, TF does not; TF's depth_radius excludes the centre channel."""
    return dict(depth_radius=(lrn.local_size - 1) // 2, alpha=lrn.alpha / lrn.local_size,
                beta=lrn.beta, bias=lrn.k)


def _padding(layer):
    """Caffe's symmetric zero padding in conv2d's terms: VALID, SAME (stride 1, pad (k-1)/2) or
    explicit."""
    if layer.pad == 0:
        return 'VALID'
    if layer.stride == 1 and 2 * layer.pad == layer.kernel - 1:
        return 'SAME'
    return [[0, 0], [layer.pad, layer.pad], [layer.pad, layer.pad], [0, 0]]


def _variables(name, weights_shape, biases_shape):
    std, bias = FILLERS.get(name, DEFAULT_FILLER)
    weights = tf1.get_variable('weights', weights_shape, tf.float32,
                               initializer=tf1.random_normal_initializer(
                                   stddev=std, seed=op_seed(name, 'filler')))
    biases = tf1.get_variable('biases', biases_shape, tf.float32,
                              initializer=tf1.constant_initializer(bias))
    return weights, biases


def _conv(x, weights, layer):
    stride, padding = [1, layer.stride, layer.stride, 1], _padding(layer)
    if layer.group == 1:
        return tf.nn.conv2d(x, weights, stride, padding)
    # Caffe's group: split input channels and the kernels' output axis, convolve pairwise, concat
    inputs = tf.split(x, layer.group, axis=3)
    kernels = tf.split(weights, layer.group, axis=3)
    return tf.concat([tf.nn.conv2d(i, k, stride, padding) for i, k in zip(inputs, kernels)],
                     axis=3)


def build(inputs, num_classes=None, keep_prob=1.0, start=None, stop=None, structure=None):
    """The network of `structure` from layer `start` (default: the first) to its last layer
    -> (logits, end_points).

    With `stop` (a layer name), build only the layers before it and return (the tensor that
    feeds `stop`, end_points) instead: the frozen part whose output the feature cache stores.

    `inputs` is any tensor (a placeholder, an iterator's batch): the preprocessed images
    [N, 227, 227, 3] for the first layer, else the batch of the blob `structure.boundary(start)`
    (e.g. pool5 [N, 6, 6, 256] for start='fc6'). `num_classes`, if given, replaces the last
    layer's size. `keep_prob` is a float or a scalar tensor (1.0 at evaluation); dropout applies
    where the structure has it, to the next layer's input. Variables live in scopes named like the
    Caffe layers ('conv1/weights', ..., 'fc8/biases') in the current variable scope.
    """
    structure = structure or netspec.BVLC_ALEXNET
    if num_classes is not None:
        structure = structure.with_classes(num_classes)
    first = structure.index(start) if start else 0
    last = structure.index(stop) if stop else len(structure.layers)
    if last <= first:
        raise ValueError('stop layer %s does not come after start layer %s' % (stop, start))
    shapes = structure.weight_shapes()
    end_points = {structure.boundary(structure.layers[first].name): inputs}
    training = not (isinstance(keep_prob, (int, float)) and keep_prob == 1)
    x = inputs
    for index in range(first, last):
        layer = structure.layers[index]
        weights_shape, biases_shape = shapes[layer.name]
        with tf1.variable_scope(layer.name):
            weights, biases = _variables(layer.name, weights_shape, biases_shape)
            if layer.kind == 'conv':
                x = tf.nn.bias_add(_conv(x, weights, layer), biases)
            else:
                dropped = index > 0 and any(op.kind == 'dropout'
                                            for op in structure.layers[index - 1].ops)
                if dropped and training:
                    x = tf.nn.dropout(x, rate=1.0 - keep_prob,
                                      seed=op_seed(layer.name, 'dropout'))
                if x.shape.ndims != 2:
                    # NHWC flattens H, W, C; the converter reordered fc6's rows to match
                    x = tf.reshape(x, [-1, weights_shape[0]])
                x = tf.nn.bias_add(tf.matmul(x, weights), biases)
        blobs = iter(layer.blobs()[1:])
        end_points[layer.name] = x
        for op in layer.ops:
            if op.kind == 'relu':
                x = end_points[layer.name] = tf.nn.relu(x, name=layer.name + '_relu')
            elif op.kind == 'lrn':
                blob = next(blobs)
                x = end_points[blob] = tf.nn.local_response_normalization(
                    x, name=blob, **lrn_arguments(op))
            elif op.kind == 'pool':
                blob = next(blobs)
                x = end_points[blob] = tf.nn.max_pool2d(x, op.kernel, op.stride, 'VALID',
                                                        name=blob)
    if stop is None:
        end_points['prob'] = tf.nn.softmax(x, name='prob')
    return x, end_points


def inference_session(weights, allow_pickle=False):
    """The deploy graph with `weights` (a path or a read_weights dict) loaded, for inference:
    (session, images placeholder [N, 227, 227, 3], end_points). The class count is fc8's (1000
    when the weights have no fc8, which load_weights then reports). The caller closes the session.
    """
    if isinstance(weights, str):
        weights = read_weights(weights, allow_pickle=allow_pickle)
    fc8 = weights.get('fc8', {}).get('biases')
    num_classes = int(fc8.shape[0]) if fc8 is not None and fc8.ndim else NUM_IMAGENET_CLASSES
    graph = tf1.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name='images')
        _, end_points = build(images, num_classes=num_classes, keep_prob=1.0)
    graph.finalize()
    session = tf1.Session(graph=graph)
    try:
        load_weights(session, weights)
    except BaseException:
        session.close()
        raise
    return session, images, end_points


# --- weights files -------------------------------------------------------------------------------

_NPY_MAGIC, _ZIP_MAGIC, _PICKLE_MAGIC = b'\x93NUMPY', b'PK\x03\x04', b'\x80'
RECONVERT = ('convert the Caffe model again with `python -m caffe_to_npy deploy.prototxt '
             'bvlc_alexnet.caffemodel %s`')


def read_weights(path, allow_pickle=False):
    """{layer: {'weights': array, 'biases': array}} from a `.npz` (never unpickled) or, only with
    allow_pickle=True, a legacy pickled `.npy` dict (dict of dicts or dict of [W, b] lists,
    Python-2 pickles included)."""
    if not os.path.isfile(path):
        raise WeightsError('no weights file %s: convert the Caffe model with `python -m caffe_to_npy '
                           'deploy.prototxt bvlc_alexnet.caffemodel %s`' % (path, path))
    with open(path, 'rb') as f:
        magic = f.read(6)
    if magic.startswith(_ZIP_MAGIC):
        return _read_npz(path)
    if not (magic.startswith(_NPY_MAGIC) or magic.startswith(_PICKLE_MAGIC)):
        raise WeightsError('%s is not a weights file (.npz from python -m caffe_to_npy, or a '
                           'legacy pickled .npy)' % path)
    if not allow_pickle:
        raise WeightsError(
            '%s is a pickled .npy: loading it runs code stored in the file. Convert the Caffe model '
            'to .npz with `python -m caffe_to_npy`, or, if you trust where this file comes from, '
            'pass --allow-pickle' % path)
    return _read_pickled(path)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            weights = {}
            for key in data.files:
                layer, _, kind = key.rpartition('/')
                if kind not in ('weights', 'biases') or not layer:
                    raise WeightsError('%s: unexpected key %r (expected <layer>/weights and '
                                       '<layer>/biases)' % (path, key))
                weights.setdefault(layer, {})[kind] = data[key]
            return weights
    except WeightsError:
        raise
    except Exception as error:   # zipfile.BadZipFile, truncated members, object arrays ...
        raise WeightsError('%s: not a readable .npz weights file, damaged or cut short (%s): %s'
                           % (path, error, RECONVERT % path)) from None


def _read_pickled(path):
    try:
        data = np.load(path, allow_pickle=True, encoding='latin1').item()
    except Exception as error:
        raise WeightsError('%s: not a readable pickled weights dict (%s)' % (path, error)) from None
    if not isinstance(data, dict):
        raise WeightsError('%s: expected a dict of layers, found %s' % (path, type(data).__name__))
    weights = {}
    for layer, value in data.items():
        layer = layer.decode('latin1') if isinstance(layer, bytes) else str(layer)
        if isinstance(value, dict):
            value = {(k.decode('latin1') if isinstance(k, bytes) else k): v for k, v in value.items()}
            entry = {k: value[k] for k in ('weights', 'biases') if k in value}
            extra = set(value) - {'weights', 'biases'}
            if extra:
                raise WeightsError('%s: layer %s has unexpected keys %s' % (path, layer, sorted(extra)))
        elif isinstance(value, (list, tuple)) and 1 <= len(value) <= 2:
            entry = dict(zip(('weights', 'biases'), value))
        else:
            raise WeightsError('%s: layer %s is neither a dict nor a [weights, biases] list'
                               % (path, layer))
        weights[layer] = {k: np.asarray(v) for k, v in entry.items()}
    return weights


def graph_layers(graph=None, scope=''):
    """{layer: {'weights': var, 'biases': var}} for the AlexNet variables in `graph`."""
    graph = graph or tf1.get_default_graph()
    prefix = scope + '/' if scope else ''
    found = {}
    for var in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES):
        name = var.op.name
        if not name.startswith(prefix):
            continue
        layer, _, kind = name[len(prefix):].rpartition('/')
        if layer in LAYER_NAMES and kind in ('weights', 'biases'):
            found.setdefault(layer, {})[kind] = var
    return found


def load_weights(session, weights, skip_layers=(), allow_pickle=False, scope='', source=None):
    """Initialise the graph's AlexNet variables: loaded ones from `weights` (a path or the dict
    read_weights returns from the file `source`), those of `skip_layers` from their fillers.

    Values go in through feeds of the variables' initializers: no constants are added to the
    graph. Every problem (missing, unexpected, wrong-shaped layers) is reported in one error.
    Returns the list of loaded layer names.
    """
    source = weights if isinstance(weights, str) else source or 'weights'
    if isinstance(weights, str):
        weights = read_weights(weights, allow_pickle=allow_pickle)
    unknown = sorted(set(skip_layers) - set(LAYER_NAMES))
    if unknown:
        raise WeightsError('unknown layer(s) to skip: %s (AlexNet has %s)'
                           % (', '.join(unknown), ', '.join(LAYER_NAMES)))
    variables = graph_layers(session.graph, scope)
    problems, feeds, ops, loaded = [], {}, [], []
    unexpected = sorted(set(weights) - set(LAYER_NAMES))
    if unexpected:
        problems.append('unexpected layer(s) %s' % ', '.join(unexpected))
    for layer in LAYER_NAMES:
        if layer not in variables:
            continue
        if layer in skip_layers:
            ops.extend(var.initializer for var in variables[layer].values())
            continue
        if layer not in weights:
            problems.append('missing layer %s' % layer)
            continue
        for kind, var in sorted(variables[layer].items()):
            if kind not in weights[layer]:
                problems.append('missing %s/%s' % (layer, kind))
                continue
            value = weights[layer][kind]
            expected = tuple(var.shape.as_list())
            if tuple(value.shape) != expected:
                hint = ' (a different number of classes? add fc8 to the skipped layers)' \
                    if layer == 'fc8' else ''
                problems.append('%s/%s has shape %s, the graph needs %s%s'
                                % (layer, kind, tuple(value.shape), expected, hint))
                continue
            feeds[var.initializer.inputs[1]] = np.asarray(value, np.float32)
            ops.append(var.initializer)
        loaded.append(layer)
    if problems:
        raise WeightsError('%s: %s; if the file is damaged, %s'
                           % (source, '; '.join(problems), RECONVERT % source))
    session.run(ops, feed_dict=feeds)
    return [layer for layer in loaded if layer not in skip_layers]
