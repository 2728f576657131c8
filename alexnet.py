"""bvlc_alexnet as a tf.compat.v1 graph, its preprocessing, and loading a weights file into it.

The graph is Caffe's deploy net exactly (DESIGN.md, "Caffe facts"):
conv1 96 k11 s4 VALID -> ReLU -> LRN -> max-pool 3/2; conv2 256 k5 SAME group 2 -> ReLU -> LRN ->
pool; conv3 384 k3; conv4 384 k3 group 2; conv5 256 k3 group 2 -> pool; fc6, fc7 4096 with ReLU and
dropout; fc8 -> softmax. Input: BGR, 227x227, ImageNet mean subtracted.

Weights files hold float32 arrays in TF layouts under `<layer>/weights` and `<layer>/biases`
(`python -m caffe_to_npy` writes them). They are fed once through the variables' initializers, so
neither the graph nor a checkpoint's `.meta` carries 240 MB of constants.
"""
import os
import zlib

import cv2
import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

# --- model facts that come with the pretrained weights ------------------------------------------
IMAGE_SIZE = 227                  # network input side
RESIZE_SIZE = 256                 # Caffe's recipe: resize to 256x256, then centre crop IMAGE_SIZE
CROP_OFFSET = (RESIZE_SIZE - IMAGE_SIZE) // 2   # 14: Caffe's centre crop rounds down
MEAN_BGR = (104.0, 117.0, 123.0)  # ImageNet mean per channel, BGR order like the weights
NUM_IMAGENET_CLASSES = 1000

# The net as data: one row per layer. `ops` is the order of what follows the conv (so a test can
# swap LRN and pooling, the CaffeNet order); `dropout` means dropout is applied to the layer's
# input while training. Caffe's in-place ReLU means the blob named like the layer holds the ReLU
# output, and so does our end point.
LAYERS = (
    ('conv1', dict(kind='conv', filters=96, kernel=11, stride=4, padding='VALID', group=1,
                   ops=('relu', 'lrn', 'pool'))),
    ('conv2', dict(kind='conv', filters=256, kernel=5, stride=1, padding='SAME', group=2,
                   ops=('relu', 'lrn', 'pool'))),
    ('conv3', dict(kind='conv', filters=384, kernel=3, stride=1, padding='SAME', group=1,
                   ops=('relu',))),
    ('conv4', dict(kind='conv', filters=384, kernel=3, stride=1, padding='SAME', group=2,
                   ops=('relu',))),
    ('conv5', dict(kind='conv', filters=256, kernel=3, stride=1, padding='SAME', group=2,
                   ops=('relu', 'pool'))),
    ('fc6', dict(kind='fc', units=4096, dropout=False, ops=('relu',))),
    ('fc7', dict(kind='fc', units=4096, dropout=True, ops=('relu',))),
    ('fc8', dict(kind='fc', units=None, dropout=True, ops=())),   # units = number of classes
)
LAYER_NAMES = tuple(name for name, _ in LAYERS)
CONV_LAYERS = tuple(name for name, spec in LAYERS if spec['kind'] == 'conv')
FC_LAYERS = tuple(name for name, spec in LAYERS if spec['kind'] == 'fc')

# Caffe LRN(local_size 5, alpha 1e-4, beta 0.75, k 1) in TF terms: Caffe divides alpha by
# local_size, TF does not; TF's radius excludes the centre channel.
LRN = dict(depth_radius=2, alpha=1e-4 / 5, beta=0.75, bias=1.0)
POOL = dict(ksize=3, strides=2, padding='VALID')   # equals Caffe's ceil-mode pooling at 227 input

# Blob (end point) names Caffe gives each layer's output after its `ops`.
_OP_BLOB = {'lrn': 'norm', 'pool': 'pool'}

# Caffe's train_val fillers for bvlc_alexnet, used for layers that are not loaded (SKIP_LAYERS).
FILLERS = {'fc6': (0.005, 0.1), 'fc7': (0.005, 0.1), 'fc8': (0.01, 0.0)}
DEFAULT_FILLER = (0.01, 0.0)


class ImageError(Exception):
    """An image file that can't be read as a picture."""


class WeightsError(Exception):
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
    image = cv2.imread(path, cv2.IMREAD_COLOR)
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

def layer_name(name):
    """`name` if AlexNet has such a layer, else a ValueError that lists the layers."""
    if name not in LAYER_NAMES:
        raise ValueError('unknown layer %r: AlexNet has %s' % (name, ', '.join(LAYER_NAMES)))
    return name


def _walk(num_classes):
    """(layer, input shape without batch, weights shape, biases shape) for each layer in order."""
    side, channels, rows = IMAGE_SIZE, 3, []
    for name, spec in LAYERS:
        if spec['kind'] == 'conv':
            k, out = spec['kernel'], spec['filters']
            rows.append((name, (side, side, channels), (k, k, channels // spec['group'], out), (out,)))
            if spec['padding'] == 'VALID':
                side = (side - k) // spec['stride'] + 1
            else:
                side = -(-side // spec['stride'])
            if 'pool' in spec['ops']:
                side = (side - POOL['ksize']) // POOL['strides'] + 1
            channels = out
        else:
            units = spec['units'] or num_classes
            shape = (side, side, channels) if side > 1 else (channels,)
            rows.append((name, shape, (side * side * channels, units), (units,)))
            side, channels = 1, units
    return rows


def weight_shapes(num_classes=NUM_IMAGENET_CLASSES):
    """{layer: (weights shape, biases shape)} in TF layouts (conv HWIO per group, fc (in, out))."""
    return {name: (w, b) for name, _, w, b in _walk(num_classes)}


def boundary(layer):
    """Name of the end point that feeds `layer` (what build(start=layer) takes as input)."""
    index = LAYER_NAMES.index(layer_name(layer))
    if index == 0:
        return 'data'
    previous, spec = LAYERS[index - 1]
    return _blob_names(previous, spec)[-1]


def boundary_shape(layer):
    """Shape (without batch) of the tensor that feeds `layer`, e.g. (6, 6, 256) for fc6."""
    return {name: shape for name, shape, _, _ in _walk(NUM_IMAGENET_CLASSES)}[layer_name(layer)]


def _blob_names(name, spec):
    number = name[len(name.rstrip('0123456789')):]
    return [name] + [_OP_BLOB[op] + number for op in spec['ops'] if op in _OP_BLOB]


def op_seed(layer, purpose):
    """A fixed op-level seed per layer and purpose ('filler', 'dropout'): with the graph-level seed
    it fixes the random draws, however many other ops a graph builds before this one."""
    return zlib.crc32(('%s/%s' % (layer, purpose)).encode()) & 0x7fffffff


def _variables(name, weights_shape, biases_shape):
    std, bias = FILLERS.get(name, DEFAULT_FILLER)
    weights = tf1.get_variable('weights', weights_shape, tf.float32,
                               initializer=tf1.random_normal_initializer(
                                   stddev=std, seed=op_seed(name, 'filler')))
    biases = tf1.get_variable('biases', biases_shape, tf.float32,
                              initializer=tf1.constant_initializer(bias))
    return weights, biases


def _conv(x, weights, spec):
    stride = [1, spec['stride'], spec['stride'], 1]
    if spec['group'] == 1:
        return tf.nn.conv2d(x, weights, stride, spec['padding'])
    # Caffe's group: split input channels and the kernels' output axis, convolve pairwise, concat
    inputs = tf.split(x, spec['group'], axis=3)
    kernels = tf.split(weights, spec['group'], axis=3)
    return tf.concat([tf.nn.conv2d(i, k, stride, spec['padding'])
                      for i, k in zip(inputs, kernels)], axis=3)


def build(inputs, num_classes=NUM_IMAGENET_CLASSES, keep_prob=1.0, start='conv1', stop=None):
    """AlexNet from layer `start` to fc8 -> (logits, end_points).

    With `stop` (a layer name), build only the layers before it and return (the tensor that
    feeds `stop`, end_points) instead: the frozen part whose output the feature cache stores.

    `inputs` is the preprocessed image batch [N, 227, 227, 3] for start='conv1', else the batch of
    the end point `boundary(start)` (e.g. pool5 [N, 6, 6, 256] for start='fc6'). `keep_prob` is a
    float or a scalar tensor (1.0 at evaluation). Variables live in scopes named like the Caffe
    layers ('conv1/weights', ..., 'fc8/biases') in the current variable scope.
    """
    first = LAYER_NAMES.index(layer_name(start))
    last = LAYER_NAMES.index(layer_name(stop)) if stop else len(LAYERS)
    if last <= first:
        raise ValueError('stop layer %s does not come after start layer %s' % (stop, start))
    shapes = weight_shapes(num_classes)
    end_points = {boundary(start): inputs}
    x = inputs
    for name, spec in LAYERS[first:last]:
        weights_shape, biases_shape = shapes[name]
        with tf1.variable_scope(name):
            weights, biases = _variables(name, weights_shape, biases_shape)
            if spec['kind'] == 'conv':
                x = tf.nn.bias_add(_conv(x, weights, spec), biases)
            else:
                if spec['dropout'] and not (isinstance(keep_prob, (int, float)) and keep_prob == 1):
                    x = tf.nn.dropout(x, rate=1.0 - keep_prob,
                                      seed=op_seed(name, 'dropout'))
                if x.shape.ndims != 2:
                    # NHWC flattens H, W, C; the converter reordered fc6's rows to match
                    x = tf.reshape(x, [-1, weights_shape[0]])
                x = tf.nn.bias_add(tf.matmul(x, weights), biases)
        blobs = iter(_blob_names(name, spec)[1:])
        end_points[name] = x
        for op in spec['ops']:
            if op == 'relu':
                x = end_points[name] = tf.nn.relu(x, name=name + '_relu')
            elif op == 'lrn':
                blob = next(blobs)
                x = end_points[blob] = tf.nn.local_response_normalization(x, name=blob, **LRN)
            elif op == 'pool':
                blob = next(blobs)
                x = end_points[blob] = tf.nn.max_pool2d(
                    x, POOL['ksize'], POOL['strides'], POOL['padding'], name=blob)
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
        raise WeightsError('%s: not a readable .npz weights file (%s)' % (path, error)) from None


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


def load_weights(session, weights, skip_layers=(), allow_pickle=False, scope=''):
    """Initialise the graph's AlexNet variables: loaded ones from `weights` (a path or the dict
    read_weights returns), those of `skip_layers` from their fillers.

    Values go in through feeds of the variables' initializers: no constants are added to the
    graph. Every problem (missing, unexpected, wrong-shaped layers) is reported in one error.
    Returns the list of loaded layer names.
    """
    source = weights if isinstance(weights, str) else 'weights'
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
        raise WeightsError('%s: %s' % (source, '; '.join(problems)))
    session.run(ops, feed_dict=feeds)
    return [layer for layer in loaded if layer not in skip_layers]
