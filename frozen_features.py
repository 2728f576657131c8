"""A run's frozen features, as runs use the feature store: its key, and its images' features read
into one array.

A run whose layers below a boundary are frozen reads each image's output there from the feature
store (feature_store.py) instead of computing it every epoch: fine-tuning with the cache (the input
of the lowest trained layer, pool5 for fc6-fc8, in every flip variant the run trains on) and the
linear-SVM baseline (fc7 or fc6 after its ReLU, the centre crop). The store keys them by
everything they depend on besides the image:
  - the frozen layers' values: frozen_source_digest(settings), the one function that says where
    they come from (the weights file, and the checkpoint of a run started --init-from);
  - the mean, the structure of the layers below the boundary (so a model with other classes in
    fc8 shares them), the boundary blob and the flip variants.
A fine-tuning run stores every variant it trains on for every image (4 with --flip), validation
and test images included: across a protocol's splits every image is a training image somewhere,
and one entry per image is one write (feature_store.py says why).

The run's images are its records folder's pool (records.index: every record by position); their
features go into one array, in memory or memory-mapped above --cache-ram-gb, that the run's parts
index by position. Computing what is missing is a callback: graph.FeatureExtractor.batches in a
session holding the frozen layers.

No TensorFlow here.
"""
import functools
import os
import time

import numpy as np

import feature_store
import rundir
import weights_file


@functools.lru_cache(maxsize=8)
def _file_digest(path, size, modified):
    return feature_store.file_digest(path).hexdigest()


def source_digest(weights_path, init_files=()):
    """The hex digest of the weights a run's frozen layers come from: the contents of the weights
    file and, for a run started --init-from a checkpoint, of that checkpoint's `init_files` (its
    .index and .data, in that order). Without them it is the weights file's digest, as
    frozen_source_digest gives it. A file is read once per process while its size and
    modification time stay the same."""
    weights_file.require_file(weights_path)
    if not init_files:
        status = os.stat(weights_path)
        return _file_digest(os.path.abspath(weights_path), status.st_size, status.st_mtime_ns)
    digest = feature_store.file_digest(weights_path)
    for path in init_files:
        digest.update(os.path.splitext(path)[1].encode())
        feature_store.file_digest(path, digest)
    return digest.hexdigest()


def frozen_source_digest(settings):
    """A hex digest of where the frozen layers' values come from: the weights file (--weights),
    by content; for a run started --init-from, the digest its run dir recorded when it started
    (source_digest of the weights and that checkpoint: a resume keeps it with the first run gone).
    It is the feature store key's weights part and the weights part of a protocol's identity: a
    source with other values gets other entries."""
    if settings.init_from:
        return rundir.read_start(settings.run_dir)['weights_digest']
    return source_digest(settings.weights)


def frozen_structure(structure, stop):
    """The JSON of `structure` below layer `stop`: the part that computes the features."""
    data = structure.to_dict()
    return dict(data, layers=data['layers'][:structure.index(stop)])


def open_store(settings, structure, mean, stop, variants, log, warn):
    """The FeatureStore (in --feature-store) of the input of layer `stop` of `structure` with the
    model's `mean`, for the flip `variants` (a tuple of variant numbers)."""
    key = feature_store.FeatureKey(
        frozen_source_digest(settings), np.asarray(mean, np.float32),
        frozen_structure(structure, stop), structure.boundary(stop), variants,
        structure.boundary_shape(stop))
    return feature_store.FeatureStore(settings.feature_store, key, log, warn)


def missing_bytes(store, digests):
    """The bytes of the entries `store` lacks among the images of `digests`."""
    return len(store.missing(digests)) * store.key.entry_bytes


def load(store, digests, extract, progress, ram_gb, scratch_dir, log):
    """The features of the images of `digests` (a pool, by position) as one array [images,
    variants, *shape]: read from `store`, what is missing or damaged computed by `extract`
    (feature_store.FeatureStore.fill's callback, `progress` its progress). Held in memory up to
    `ram_gb`, else memory-mapped from a scratch file in `scratch_dir`. Logs what was reused and
    computed, and how long that took."""
    started = time.time()
    out = feature_store.pool_array(len(digests), store.key.shape, ram_gb, scratch_dir)
    features = store.load(digests, extract, progress, out=out)
    log('%s; %.1f s' % (store.summary(len(digests)), time.time() - started))
    return features
