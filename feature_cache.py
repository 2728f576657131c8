"""Storage for the exact frozen-feature cache of fineturn.py.

With every layer below the lowest trained one frozen and flips as the only augmentation, the input
of the lowest trained layer (pool5 for fc6-fc8) is a pure function of the image and its flip. The
training loop computes it once per image and flip variant and stores it here: one `.npy` per split,
named by a key of everything the features depend on, so changed weights, records, boundary layer or
variants never reuse a stale file. Files are written under a temporary name and renamed when
complete; a cache that fits in `ram_gb` is read into memory, a larger one is memory-mapped.
"""
import hashlib
import json
import os

import numpy as np

from atomicfile import atomic_path

CHUNK = 1 << 20


def file_digest(path, digest=None):
    digest = digest or hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK), b''):
            digest.update(block)
    return digest


def cache_key(files, **facts):
    """Hex key over the contents of `files` and the JSON of `facts` (boundary, variants, ...)."""
    digest = hashlib.blake2b(json.dumps(facts, sort_keys=True).encode(), digest_size=16)
    for path in files:
        digest.update(os.path.basename(path).encode())
        file_digest(path, digest)
    return digest.hexdigest()


def paths(cache_dir, split, key):
    stem = os.path.join(cache_dir, '%s-%s' % (split, key))
    return stem + '.npy', stem + '.labels.npz'


def load(cache_dir, split, key, ram_gb):
    """(features, labels, paths) if a complete cache exists, else None."""
    features_path, labels_path = paths(cache_dir, split, key)
    if not (os.path.exists(features_path) and os.path.exists(labels_path)):
        return None
    mmap = 'r' if os.path.getsize(features_path) > ram_gb * (1 << 30) else None
    features = np.load(features_path, mmap_mode=mmap, allow_pickle=False)
    with np.load(labels_path, allow_pickle=False) as data:
        return features, data['labels'], data['paths']


def write(cache_dir, split, key, shape, batches, ram_gb):
    """Fill a new cache from `batches` (an iterator of (features, labels, paths) arrays whose
    features have shape[1:]) and return it like load() does. Nothing is left behind on error."""
    os.makedirs(cache_dir, exist_ok=True)
    features_path, labels_path = paths(cache_dir, split, key)
    with atomic_path(features_path) as tmp, atomic_path(labels_path) as tmp_labels:
        features = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.float32, shape=tuple(shape))
        labels, names, row = [], [], 0
        for batch, batch_labels, batch_paths in batches:
            features[row:row + len(batch)] = batch
            row += len(batch)
            labels.append(batch_labels)
            names.append(batch_paths)
        if row != shape[0]:
            raise RuntimeError('feature cache for %s: expected %d images, got %d'
                               % (split, shape[0], row))
        features.flush()
        del features
        with open(tmp_labels, 'wb') as f:
            np.savez(f, labels=np.concatenate(labels).astype(np.int64),
                     paths=np.concatenate(names).astype(str))
    return load(cache_dir, split, key, ram_gb)


def remove_stale(cache_dir, keep_keys):
    """Delete cache files whose key is not in keep_keys (older weights, records or settings)."""
    if not os.path.isdir(cache_dir):
        return
    for name in os.listdir(cache_dir):
        if not any(key in name for key in keep_keys):
            os.remove(os.path.join(cache_dir, name))
