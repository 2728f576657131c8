"""The network's structure, described once: what alexnet.py builds, what caffe_to_npy.synthetic
writes as a deploy.prototxt, and the shape rules the converter applies to any prototxt.

A Structure is an input size and eight layers, conv1-conv5 then fc6-fc8. Each layer carries its
Caffe parameters (outputs, kernel, stride, pad, group) and what follows it, in order: ReLU, LRN,
max pooling and dropout, with Caffe's own parameters (an LRN's alpha is the prototxt's, before
Caffe divides it by local_size). bvlc_alexnet normalises, then pools; CaffeNet and the Places
AlexNets pool, then normalise. The structure is plain data and round-trips through JSON.

No TensorFlow and no numpy here: the converter, the run dir's checks and the command lines read it
before TensorFlow loads.
"""
import dataclasses
import json

# --- Caffe's shape rules ------------------------------------------------------------------------

def conv_output(size, kernel, stride=1, pad=0, dilation=1):
    """Caffe's convolution output side (rounds down)."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def pool_output(size, kernel, stride=1, pad=0, ceil_mode=True):
    """Caffe's pooling output side: rounds up by default, and with padding the last window must
    start inside the image."""
    span = size + 2 * pad - kernel
    count = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (count - 1) * stride >= size + pad:
        count -= 1
    return count


# --- what follows a layer -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReLU:
    kind = 'relu'


@dataclasses.dataclass(frozen=True)
class LRN:
    """Caffe's LRN across channels, with the prototxt's parameters."""
    local_size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0
    kind = 'lrn'


@dataclasses.dataclass(frozen=True)
class MaxPool:
    kernel: int = 3
    stride: int = 2
    kind = 'pool'


@dataclasses.dataclass(frozen=True)
class Dropout:
    """Dropout of the layer's output while training (`ratio` = 1 - keep probability in Caffe;
    the training run's keep probability is its own setting)."""
    ratio: float = 0.5
    kind = 'dropout'


OPS = {op.kind: op for op in (ReLU, LRN, MaxPool, Dropout)}
BLOB_PREFIX = {'lrn': 'norm', 'pool': 'pool'}   # Caffe's top names: norm1, pool1, ..., pool5


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    kind: str                 # 'conv' or 'fc'
    outputs: int              # filters or units; fc8's is the number of classes
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    group: int = 1
    ops: tuple = ()           # what follows the layer, in order

    def blobs(self):
        """Names of the blobs this layer ends with: its own (ReLU works in place), then one per
        LRN or pooling op, numbered like the layer (conv1 -> norm1, pool1)."""
        number = self.name[len(self.name.rstrip('0123456789')):]
        return [self.name] + [BLOB_PREFIX[op.kind] + number for op in self.ops
                              if op.kind in BLOB_PREFIX]


class StructureError(ValueError):
    """A structure that is not a network of the AlexNet family, or a malformed description."""


@dataclasses.dataclass(frozen=True)
class Structure:
    layers: tuple
    input_size: int = 227
    input_channels: int = 3

    # -- names ---------------------------------------------------------------------------------
    @property
    def names(self):
        return tuple(layer.name for layer in self.layers)

    @property
    def num_classes(self):
        return self.layers[-1].outputs

    def layer(self, name):
        """The layer called `name`, or a ValueError that lists the layers."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError('unknown layer %r: the network has %s' % (name, ', '.join(self.names)))

    def index(self, name):
        return self.layers.index(self.layer(name))

    def with_classes(self, num_classes):
        """The same network with `num_classes` outputs in its last layer."""
        last = dataclasses.replace(self.layers[-1], outputs=int(num_classes))
        return dataclasses.replace(self, layers=self.layers[:-1] + (last,))

    # -- shapes --------------------------------------------------------------------------------
    def walk(self):
        """[(layer, input shape without batch, TF weights shape, TF biases shape)] in order.

        Spatial inputs are (side, side, channels), NHWC; an fc layer after a spatial one takes the
        flattened input. Conv weights are HWIO per group, fc weights (in, out).
        """
        side, channels, rows = self.input_size, self.input_channels, []
        for layer in self.layers:
            if layer.kind == 'conv':
                rows.append((layer, (side, side, channels),
                             (layer.kernel, layer.kernel, channels // layer.group, layer.outputs),
                             (layer.outputs,)))
                side = conv_output(side, layer.kernel, layer.stride, layer.pad)
            else:
                shape = (side, side, channels) if side > 1 else (channels,)
                rows.append((layer, shape, (side * side * channels, layer.outputs),
                             (layer.outputs,)))
                side = 1
            channels = layer.outputs
            for op in layer.ops:
                if op.kind == 'pool':
                    side = pool_output(side, op.kernel, op.stride)
        return rows

    def weight_shapes(self):
        """{layer: (weights shape, biases shape)} in TF layouts."""
        return {layer.name: (w, b) for layer, _, w, b in self.walk()}

    def boundary(self, name):
        """Name of the blob that feeds layer `name` ('data' for the first layer)."""
        index = self.index(name)
        return 'data' if index == 0 else self.layers[index - 1].blobs()[-1]

    def boundary_shape(self, name):
        """Shape (without batch) of the tensor that feeds layer `name`, e.g. (6, 6, 256) for fc6."""
        self.layer(name)
        return {layer.name: shape for layer, shape, _, _ in self.walk()}[name]

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self):
        """Plain JSON data: {'input_size', 'input_channels', 'layers': [{..., 'ops': [...]}]}."""
        return {'input_size': self.input_size, 'input_channels': self.input_channels,
                'layers': [dict({key: value for key, value in dataclasses.asdict(layer).items()
                                 if key != 'ops'},
                                ops=[dict(dataclasses.asdict(op), op=op.kind) for op in layer.ops])
                           for layer in self.layers]}

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as error:
            raise StructureError('not a network structure (%s)' % error) from None

    @classmethod
    def from_dict(cls, data):
        try:
            layers = []
            for entry in data['layers']:
                entry = dict(entry)
                ops = tuple(OPS[op.pop('op')](**op) for op in (dict(o) for o in entry.pop('ops')))
                layers.append(Layer(ops=ops, **entry))
            return cls(tuple(layers), int(data['input_size']), int(data['input_channels']))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise StructureError('not a network structure (%s: %s)'
                                 % (type(error).__name__, error)) from None


def _conv(name, outputs, kernel, stride=1, pad=0, group=1, ops=(ReLU(),)):
    return Layer(name, 'conv', outputs, kernel, stride, pad, group, tuple(ops))


def _fc(name, outputs, ops=(ReLU(), Dropout())):
    return Layer(name, 'fc', outputs, ops=tuple(ops))


FAMILY = ('conv',) * 5 + ('fc',) * 3
FAMILY_NAMES = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
FAMILY_OPS = {'conv': ('relu', 'lrn', 'pool'), 'fc': ('relu', 'dropout')}


def check_family(structure):
    """A StructureError that says what differs if `structure` is not a network of the AlexNet
    family: five convolutions, then three inner products named conv1..fc8; after a convolution
    only ReLU, LRN and max pooling, after an inner product only ReLU and dropout; a 227x227
    3-channel input; pooling windows that fit the input exactly (Caffe rounds up, TF here
    doesn't pad)."""
    kinds = tuple(layer.kind for layer in structure.layers)
    if kinds != FAMILY:
        raise StructureError('%d convolution and %d inner-product layers in this order: %s (the '
                             'AlexNet family has 5 convolutions, then 3 inner products)'
                             % (kinds.count('conv'), kinds.count('fc'), ' '.join(kinds)))
    if structure.names != FAMILY_NAMES:
        raise StructureError('layers named %s (the family names them %s)'
                             % (' '.join(structure.names), ' '.join(FAMILY_NAMES)))
    if structure.input_channels != 3:
        raise StructureError('a %d-channel input (the family takes BGR images, 3 channels)'
                             % structure.input_channels)
    if structure.input_size != BVLC_ALEXNET.input_size:
        raise StructureError('a %dx%d input (the family\'s is %dx%d, cropped from %dx%d)'
                             % ((structure.input_size,) * 2 + (BVLC_ALEXNET.input_size,) * 2
                                + (RESIZE_SIZE,) * 2))
    side = structure.input_size
    for layer in structure.layers:
        odd = [op.kind for op in layer.ops if op.kind not in FAMILY_OPS[layer.kind]]
        if odd:
            raise StructureError('%s is followed by %s (after a %s layer the family has only %s)'
                                 % (layer.name, ', '.join(odd), layer.kind,
                                    ', '.join(FAMILY_OPS[layer.kind])))
        if layer.kind == 'conv':
            if layer.outputs % layer.group:
                raise StructureError('%s: group %d does not divide its %d outputs'
                                     % (layer.name, layer.group, layer.outputs))
            side = conv_output(side, layer.kernel, layer.stride, layer.pad)
        for op in layer.ops:
            if op.kind == 'pool':
                if (side - op.kernel) % op.stride:
                    raise StructureError(
                        '%s\'s %dx%d/%d pooling does not tile its %dx%d input (Caffe would pad '
                        'the last window)' % (layer.name, op.kernel, op.kernel, op.stride, side,
                                              side))
                side = pool_output(side, op.kernel, op.stride)
            if op.kind == 'lrn' and op.local_size % 2 == 0:
                raise StructureError('%s: LRN local_size %d is even (Caffe needs it odd)'
                                     % (layer.name, op.local_size))
    return structure


# Caffe's recipe resizes every image to this square before the centre crop; a mean image is one
# of this size.
RESIZE_SIZE = 256

# bvlc_alexnet's deploy.prototxt (models/bvlc_alexnet in BVLC/caffe)
BVLC_ALEXNET = Structure((
    _conv('conv1', 96, 11, stride=4, ops=(ReLU(), LRN(), MaxPool())),
    _conv('conv2', 256, 5, pad=2, group=2, ops=(ReLU(), LRN(), MaxPool())),
    _conv('conv3', 384, 3, pad=1),
    _conv('conv4', 384, 3, pad=1, group=2),
    _conv('conv5', 256, 3, pad=1, group=2, ops=(ReLU(), MaxPool())),
    _fc('fc6', 4096),
    _fc('fc7', 4096),
    _fc('fc8', 1000, ops=()),
))
LAYER_NAMES = BVLC_ALEXNET.names

# bvlc_reference_caffenet's deploy.prototxt, and the MIT Places AlexNets': pooling before LRN.
CAFFENET = dataclasses.replace(BVLC_ALEXNET, layers=tuple(
    dataclasses.replace(layer, ops=(ReLU(), MaxPool(), LRN())) if layer.name in ('conv1', 'conv2')
    else layer for layer in BVLC_ALEXNET.layers))
