"""Weights files: float32 arrays in TensorFlow layouts and the description of their model.

An `.npz` (written by `python -m caffe_to_npy`, read without pickle) holds
  <layer>/weights, <layer>/biases   conv HWIO per group, fc (in, out), for conv1 .. fc8
  meta/structure.json               the network's structure (netspec.Structure as JSON)
  meta/mean                         the mean its images get: 3 BGR values or a 256x256x3 BGR image
  meta/labels                       optional: the class names, one per fc8 output
A network outside the AlexNet family converts too: its layers keep the prototxt's names, and its
only meta/ entry is
  meta/outside_family               why it is not of the family (netspec.check_family's answer)
so that everything here that builds a network refuses the file in one line (require_family).
A file without meta/ entries (written before they existed, or a legacy pickled `.npy` of older
ports, dict of dicts or dict of [W, b] lists) means bvlc_alexnet with the ImageNet mean
(undescribed).

The mean is at home here: IMAGENET_MEAN_BGR, the one place its values are written (the default of
the converter's --mean-values and what a file without a description means), mean_array, its one
check, and describe_mean, its one description. Everything else takes the model's mean as a
required argument, so a mean image (CaffeNet, Places) is never silently replaced by ImageNet's.

No TensorFlow here: the converter writes these files and alexnet.py feeds them into a graph.
"""
import itertools
import os
import pickle
import zipfile

import numpy as np

import netspec
from errors import UserError

STRUCTURE_KEY = 'meta/structure.json'
MEAN_KEY = 'meta/mean'
LABELS_KEY = 'meta/labels'
OUTSIDE_FAMILY_KEY = 'meta/outside_family'
META_PREFIX = 'meta/'

# The ImageNet mean per channel, in BGR order like the weights: what bvlc_alexnet's images get
# (the per-channel values of its 256x256 mean image, 104.01 116.67 122.68, rounded).
IMAGENET_MEAN_BGR = (104.0, 117.0, 123.0)

_NPY_MAGIC, _ZIP_MAGIC, _PICKLE_MAGIC = b'\x93NUMPY', b'PK\x03\x04', b'\x80'
CONVERT_COMMAND = 'python -m caffe_to_npy deploy.prototxt model.caffemodel %s'


class WeightsError(UserError):
    """A weights file that can't be loaded; the message says what to do."""


class Weights(dict):
    """{layer: {'weights': array, 'biases': array}} of a weights file, with its model's
    description: `structure` (netspec.Structure), `mean` (3 BGR values or a 256x256x3 BGR
    image) and `labels` (the class names, or None)."""

    def __init__(self, layers, structure, mean, labels):
        super().__init__(layers)
        self.structure, self.mean, self.labels = structure, mean, labels


def undescribed(layers):
    """The Weights of arrays without a description (a file from before descriptions, a pickled
    .npy, a plain dict of layers): bvlc_alexnet with fc8's class count and the ImageNet mean."""
    fc8 = layers.get('fc8', {}).get('biases')
    classes = int(fc8.shape[0]) if fc8 is not None and fc8.ndim else None
    return Weights(layers, netspec.BVLC_ALEXNET.with_classes(classes or 1000), IMAGENET_MEAN_BGR,
                   None)


# --- the mean ------------------------------------------------------------------------------------

def mean_array(mean):
    """A mean as float32: (3,) BGR values or a (256, 256, 3) BGR image; ValueError otherwise."""
    mean = np.asarray(mean, np.float32)
    side = netspec.RESIZE_SIZE
    if mean.shape not in ((3,), (side, side, 3)) or not np.isfinite(mean).all():
        raise ValueError('a mean is 3 BGR values or a 256x256x3 BGR image of finite numbers, '
                         'got shape %s' % (mean.shape,))
    return mean


def describe_mean(mean):
    """One line for the logs: 'mean values B 104 G 117 R 123', or for a mean image its size and
    per-channel average."""
    mean = mean_array(mean)
    if mean.ndim == 1:
        return 'mean values B %g G %g R %g' % tuple(mean)
    return 'mean image %dx%d (per channel on average B %.2f G %.2f R %.2f)' % (
        (mean.shape[0], mean.shape[1]) + tuple(mean.reshape(-1, 3).mean(0)))


# --- reading -------------------------------------------------------------------------------------

def read(path, allow_pickle=False):
    """The Weights of a `.npz` (never unpickled) or, only with allow_pickle=True, of a legacy
    pickled `.npy` dict (dict of dicts or dict of [W, b] lists, Python-2 pickles included).
    A file of a network outside the AlexNet family is a WeightsError (require_family)."""
    require_file(path)
    magic = _magic(path)
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
    return undescribed(_read_pickled(path))


def require_file(path):
    """A WeightsError that names the converter unless `path` is a file."""
    if not os.path.isfile(path):
        raise WeightsError('no weights file %s: convert the Caffe model with `%s`'
                           % (path, CONVERT_COMMAND % path))


def _magic(path):
    with open(path, 'rb') as f:
        return f.read(6)


def is_weights_file(path):
    """Whether `path` is a file that looks like a weights file (.npz or a pickled .npy) by its
    first bytes, whatever its name."""
    return os.path.isfile(path) and _magic(path).startswith((_ZIP_MAGIC, _NPY_MAGIC,
                                                              _PICKLE_MAGIC))


def require_family(path, meta=None):
    """A WeightsError if the weights file `path` (or its meta/ entries `meta`, {key: array}) holds
    the parameters of a network outside the AlexNet family: the converter writes such files, but
    nothing here builds their network. Without `meta`, only the file's meta/ entries are read."""
    if meta is None:
        if not _magic(path).startswith(_ZIP_MAGIC):
            return                       # a pickled .npy records nothing: bvlc_alexnet's
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = {key: data[key] for key in data.files if key == OUTSIDE_FAMILY_KEY}
        except Exception:                # a damaged file: read() says so
            return
    if OUTSIDE_FAMILY_KEY in meta:
        raise WeightsError(
            '%s holds the parameters of a network outside the AlexNet family (%s), which '
            'fineturn.py and validate_alexnet_on_imagenet.py cannot build: use weights converted '
            'from bvlc_alexnet, CaffeNet or a Places AlexNet (`%s`)'
            % (path, str(meta[OUTSIDE_FAMILY_KEY]), CONVERT_COMMAND % 'OUT.npz'))


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = {key: data[key] for key in data.files if key.startswith(META_PREFIX)}
            require_family(path, meta)       # before reading the arrays of a file it refuses
            layers = {}
            for key in data.files:
                if key.startswith(META_PREFIX):
                    continue
                layer, _, kind = key.rpartition('/')
                if kind not in ('weights', 'biases') or not layer:
                    raise WeightsError('%s: unexpected key %r (expected <layer>/weights and '
                                       '<layer>/biases)' % (path, key))
                layers.setdefault(layer, {})[kind] = data[key]
    except WeightsError:
        raise
    except Exception as error:   # zipfile.BadZipFile, truncated members, object arrays ...
        raise WeightsError('%s: not a readable .npz weights file, damaged or cut short (%s): '
                           'convert the Caffe model again with `%s`'
                           % (path, error, CONVERT_COMMAND % path)) from None
    return _described(path, layers, meta)


def _described(path, layers, meta):
    """Weights with the description in `meta` ({key: array}), checked."""
    unknown = sorted(set(meta) - {STRUCTURE_KEY, MEAN_KEY, LABELS_KEY, OUTSIDE_FAMILY_KEY})
    if unknown:
        raise WeightsError('%s: unexpected key(s) %s' % (path, ', '.join(unknown)))
    if not meta:
        return undescribed(layers)
    try:
        structure = netspec.check_family(netspec.Structure.from_json(str(meta[STRUCTURE_KEY])))
        mean = mean_array(meta[MEAN_KEY])
        labels = [str(name) for name in meta[LABELS_KEY]] if LABELS_KEY in meta else None
        if labels is not None and len(labels) != structure.num_classes:
            raise ValueError('%d labels for %d classes' % (len(labels), structure.num_classes))
    except (KeyError, ValueError) as error:
        raise WeightsError('%s: the model description is damaged (%s): convert the Caffe model '
                           'again with `%s`' % (path, error, CONVERT_COMMAND % path)) from None
    return Weights(layers, structure, mean, labels)


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
            value = {(k.decode('latin1') if isinstance(k, bytes) else k): v
                     for k, v in value.items()}
            entry = {k: value[k] for k in ('weights', 'biases') if k in value}
            extra = set(value) - {'weights', 'biases'}
            if extra:
                raise WeightsError('%s: layer %s has unexpected keys %s'
                                   % (path, layer, sorted(extra)))
        elif isinstance(value, (list, tuple)) and 1 <= len(value) <= 2:
            entry = dict(zip(('weights', 'biases'), value))
        else:
            raise WeightsError('%s: layer %s is neither a dict nor a [weights, biases] list'
                               % (path, layer))
        weights[layer] = {k: np.asarray(v) for k, v in entry.items()}
    return weights


# --- writing -------------------------------------------------------------------------------------

def description(structure, mean, labels=None):
    """{key: array} of the meta/ entries for a model."""
    meta = {STRUCTURE_KEY: np.array(structure.to_json()), MEAN_KEY: mean_array(mean)}
    if labels is not None:
        meta[LABELS_KEY] = np.array([str(name) for name in labels])
    return meta


def outside_family(why):
    """The meta/ entries of a network outside the AlexNet family: `why` it is not of the family."""
    return {OUTSIDE_FAMILY_KEY: np.array(str(why))}


def write_npz(f, items, meta):
    """What np.savez does, one array at a time so that only one converted layer is alive at once:
    `items` yields (layer, 'weights' or 'biases', array); `meta` is description()'s entries, or
    outside_family()'s."""
    arrays = (('%s/%s' % (name, key), array) for name, key, array in items)
    with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in itertools.chain(arrays, meta.items()):
            with zf.open(key + '.npy', 'w', force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def write_legacy_npy(f, items):
    """The pickled dict of dicts other ports read: np.load(path, allow_pickle=True).item()."""
    weights = {}
    for name, key, array in items:
        weights.setdefault(name, {})[key] = np.array(array, dtype=np.float32, order='K')
    holder = np.empty((), dtype=object)
    holder[()] = weights
    np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': ()})
    pickler = pickle.Pickler(f, protocol=4)  # protocol 4: readable by Python >= 3.4
    pickler.fast = True  # no memo: each array's pickled bytes are freed once written
    pickler.dump(holder)
