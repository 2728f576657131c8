"""The AlexNet graph (tf.compat.v1), its preprocessing, and loading a weights file into it.

The graph follows a netspec.Structure, the one description of the network (bvlc_alexnet's unless
told otherwise), exactly as Caffe computes it; docs/ARCHITECTURE.md lists the Caffe facts this
rests on (grouped convolutions, LRN's alpha, the fc6 row order, BGR input and mean).

Preprocessing is one function, preprocess_tensor: the records' input pipelines, --predict,
validate, --verify (through preprocess, which runs it on a numpy image) and the export all resize,
crop and subtract with this one code, so the network gets the same tensor from an image whichever
way it comes.

Weights files (weights_file.py) hold float32 arrays in TF layouts under `<layer>/weights` and
`<layer>/biases`, and the description of their model (structure, mean, class names). They are fed
once through the variables' initializers, so neither the graph nor a checkpoint's `.meta` carries
240 MB of constants.
"""
import zlib

import numpy as np
import tensorflow as tf

import images
import netspec
import weights_file
from weights_file import Weights, WeightsError, read as read_weights  # noqa: F401 (re-exported)

tf1 = tf.compat.v1

# --- model facts that come with the pretrained weights ------------------------------------------
IMAGE_SIZE = netspec.BVLC_ALEXNET.input_size   # network input side, 227
RESIZE_SIZE = netspec.RESIZE_SIZE  # Caffe's recipe: resize to 256x256, then centre crop
CROP_OFFSET = (RESIZE_SIZE - IMAGE_SIZE) // 2   # 14: Caffe's centre crop rounds down
# `crops`, everywhere: a tuple of crop windows of the 256x256 image, each (top, left, mirrored).
# One window gives one view per image ([..., 227, 227, 3]); several give [..., views, 227, 227, 3].
# The centre one, and Caffe's oversample (caffe/python/caffe/io.py): the four corners and the
# centre, then their mirrors.
CENTRE_CROP = ((CROP_OFFSET, CROP_OFFSET, False),)
_FAR = RESIZE_SIZE - IMAGE_SIZE   # 29: the far corners' offset
TEN_CROPS = tuple((top, left, mirror) for mirror in (False, True)
                  for top, left in ((0, 0), (0, _FAR), (_FAR, 0), (_FAR, _FAR),
                                    (CROP_OFFSET, CROP_OFFSET)))
NUM_IMAGENET_CLASSES = netspec.BVLC_ALEXNET.num_classes
LAYER_NAMES = netspec.LAYER_NAMES

# Caffe's train_val fillers for bvlc_alexnet, used for layers that are not loaded (SKIP_LAYERS).
FILLERS = {'fc6': (0.005, 0.1), 'fc7': (0.005, 0.1), 'fc8': (0.01, 0.0)}
DEFAULT_FILLER = (0.01, 0.0)


def crop_windows(ten_crop):
    """The `crops` of --ten-crop (TEN_CROPS) or of the centre crop alone (CENTRE_CROP)."""
    return TEN_CROPS if ten_crop else CENTRE_CROP


# --- preprocessing -------------------------------------------------------------------------------

def mean_window(mean, top=CROP_OFFSET, left=CROP_OFFSET):
    """The mean to subtract from a crop at (top, left), float32: a per-channel BGR mean (3,) as it
    is, or a 256x256 BGR mean image (256, 256, 3) cut to the crop's window, as Caffe's data layer
    does. A ValueError for anything else (weights_file.mean_array)."""
    mean = weights_file.mean_array(mean)
    if mean.ndim == 1:
        return mean
    return np.ascontiguousarray(mean[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE])


def preprocess_tensor(image_bgr, mean, crops=CENTRE_CROP):
    """Caffe's recipe: uint8 [..., H, W, 3] BGR tensor (one image or a batch) -> float32
    [..., 227, 227, 3], or [..., len(crops), 227, 227, 3] for several `crops`.

    Bilinear resize to 256x256 with half-pixel centres, as cv2.INTER_LINEAR (to within rounding:
    OpenCV interpolates uint8 in fixed point); an image already 256x256 passes through unchanged.
    Then each crop window minus `mean` at that window (mean_window), mirrored if asked (Caffe
    mirrors after subtracting the mean).
    """
    image = tf.cast(image_bgr, tf.float32)
    image = tf.image.resize(image, (RESIZE_SIZE, RESIZE_SIZE), method='bilinear', antialias=False)
    windows = []
    for top, left, mirror in crops:
        window = (image[..., top:top + IMAGE_SIZE, left:left + IMAGE_SIZE, :]
                  - tf.constant(mean_window(mean, top, left)))
        windows.append(tf.reverse(window, axis=[-2]) if mirror else window)
    if len(crops) == 1:
        return tf.ensure_shape(windows[0], image.shape[:-3] + (IMAGE_SIZE, IMAGE_SIZE, 3))
    return tf.ensure_shape(tf.stack(windows, axis=-4),
                           image.shape[:-3] + (len(crops), IMAGE_SIZE, IMAGE_SIZE, 3))


def preprocess(image_bgr, mean, crops=CENTRE_CROP):
    """preprocess_tensor on a numpy HxWx3 uint8 BGR image -> numpy float32, run eagerly (call it
    outside a tf.compat.v1 graph's block): the same code, so the same numbers, as the records'
    pipelines and the export compute in their graphs."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError('expected an HxWx3 BGR image, got shape %s' % (image_bgr.shape,))
    return preprocess_tensor(tf.constant(image_bgr), mean, crops).numpy()


def load_image(path, mean, crops=CENTRE_CROP):
    """An image file read by the one reader (images.read_bgr8), preprocessed (preprocess): the
    network's input for it."""
    return preprocess(images.read_bgr8(path), mean, crops)


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


def build(inputs, num_classes=None, keep_prob=1.0, start=None, stop=None, structure=None,
          weights=None):
    """The network of `structure` from layer `start` (default: the first) to its last layer
    -> (logits, end_points).

    With `stop` (a layer name), build only the layers before it and return (the tensor that
    feeds `stop`, end_points) instead: the frozen part whose output the feature cache stores.

    `inputs` is any tensor (a placeholder, an iterator's batch): the preprocessed images
    [N, 227, 227, 3] for the first layer, else the batch of the blob `structure.boundary(start)`
    (e.g. pool5 [N, 6, 6, 256] for start='fc6'). `num_classes`, if given, replaces the last
    layer's size. `keep_prob` is a float or a scalar tensor (1.0 at evaluation); dropout applies
    where the structure has it, to the next layer's input. Variables live in scopes named like the
    Caffe layers ('conv1/weights', ..., 'fc8/biases') in the current variable scope; with
    `weights` ({layer: {'weights': tensor, 'biases': tensor}}, e.g. a SavedModel's variables) the
    layers use those instead and no variable is created.
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
            if weights is None:
                kernel, biases = _variables(layer.name, weights_shape, biases_shape)
            else:
                kernel, biases = weights[layer.name]['weights'], weights[layer.name]['biases']
            if layer.kind == 'conv':
                x = tf.nn.bias_add(_conv(x, kernel, layer), biases)
            else:
                dropped = index > 0 and any(op.kind == 'dropout'
                                            for op in structure.layers[index - 1].ops)
                if dropped and training:
                    x = tf.nn.dropout(x, rate=1.0 - keep_prob,
                                      seed=op_seed(layer.name, 'dropout'))
                if x.shape.ndims != 2:
                    # NHWC flattens H, W, C; the converter reordered fc6's rows to match
                    x = tf.reshape(x, [-1, weights_shape[0]])
                x = tf.nn.bias_add(tf.matmul(x, kernel), biases)
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
    """The deploy graph of `weights` (a path, or read_weights' Weights, or a plain dict of layers:
    weights_file.undescribed) loaded, for inference: (session, images placeholder
    [N, side, side, 3], end_points). The caller closes the session.
    """
    weights = as_weights(weights, allow_pickle)
    side = weights.structure.input_size
    graph = tf1.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, side, side, 3], name='images')
        _, end_points = build(images, structure=weights.structure)
    graph.finalize()
    session = tf1.Session(graph=graph)
    try:
        load_weights(session, weights)
    except BaseException:
        session.close()
        raise
    return session, images, end_points


def as_weights(weights, allow_pickle=False):
    """Weights from a path (read_weights), Weights as they are, or a plain dict of layers
    (weights_file.undescribed: bvlc_alexnet with the ImageNet mean)."""
    if isinstance(weights, str):
        return read_weights(weights, allow_pickle=allow_pickle)
    if isinstance(weights, Weights):
        return weights
    return weights_file.undescribed(weights)


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
        raise WeightsError('%s: %s; if the file is damaged, convert the Caffe model again with `%s`'
                           % (source, '; '.join(problems), weights_file.CONVERT_COMMAND % source))
    session.run(ops, feed_dict=feeds)
    return [layer for layer in loaded if layer not in skip_layers]
