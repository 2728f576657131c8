"""Storage for the exact frozen-feature cache of fineturn.py.

With every layer below the lowest trained one frozen and flips as the only augmentation, the input
of the lowest trained layer (pool5 for fc6-fc8) is a pure function of the image and its flip. The
training loop computes it once per image and flip variant and stores it here: one file per split,
named by a key of everything the features depend on, so changed weights, records, boundary layer or
variants never reuse a stale file. A cache that fits in `ram_gb` is read into memory, a larger one
is memory-mapped.

A cache file is derived data, checked before every use. Its layout:

    HEADER_SIZE bytes   MAGIC, a JSON line {split, key, shape, dtype, paths_bytes, crc32}, the
                        JSON's own crc32 in hex, padding
    features            float32, C order, `shape` = (images, variants, *boundary shape)
    labels              int64, one per image
    paths               the images' paths as a UTF-8 JSON list of `paths_bytes` bytes

`crc32` (zlib's) covers everything after the header; it is computed while the file is written,
under a temporary name renamed when complete. load() checks the magic, the header's checksum, the
split, key and shape, the file size and the data's checksum: a file that fails any of them is
deleted (it is derived, and its rebuild needs the space) and reported as DamagedCacheError. The
header, its reader and the checksum are feature_store.py's: this per-run cache is to become a
view of that shared store.
"""
import hashlib
import json
import os
import zlib

import numpy as np

from atomicfile import atomic_path, writing
from errors import UserError
from feature_store import DTYPE, checksum, file_digest, header, header_problem, read_header

MAGIC = b'fineturn feature cache v1\n'
HEADER_SIZE = 4096                  # the features start on a page: a memory map needs no copy
SUFFIX = '.cache'
LABEL_DTYPE = np.dtype('<i8')


class DamagedCacheError(UserError):
    """A cache file that fails its checks; it has been deleted and must be computed again."""


def cache_key(files, **facts):
    """Hex key over the contents of `files` and the JSON of `facts` (boundary, variants, ...)."""
    digest = hashlib.blake2b(json.dumps(facts, sort_keys=True).encode(), digest_size=16)
    for path in files:
        digest.update(os.path.basename(path).encode())
        file_digest(path, digest)
    return digest.hexdigest()


def path(cache_dir, split, key):
    return os.path.join(cache_dir, '%s-%s%s' % (split, key, SUFFIX))


def file_size(shape, paths_bytes=0):
    """Bytes of a cache file of features `shape` (paths_bytes: the paths' JSON, when known)."""
    return (HEADER_SIZE + int(np.prod(shape)) * DTYPE.itemsize + shape[0] * LABEL_DTYPE.itemsize
            + paths_bytes)


def _header(split, key, shape, paths_bytes, crc):
    return header(MAGIC, {'split': split, 'key': key, 'shape': list(shape), 'dtype': DTYPE.str,
                          'paths_bytes': paths_bytes, 'crc32': crc}, HEADER_SIZE)


def load(cache_dir, split, key, shape, ram_gb):
    """(features, labels, paths) of the cache of `split` and `key` with features `shape`, or None
    if there is none; DamagedCacheError (the file deleted) if it fails a check."""
    file = path(cache_dir, split, key)
    if not os.path.exists(file):
        return None
    problem, found = _read(file, split, key, tuple(shape), ram_gb)
    if problem is not None:
        os.remove(file)
        raise DamagedCacheError('feature cache %s is damaged (%s)' % (file, problem))
    return found


def _read(file, split, key, shape, ram_gb):
    """(None, (features, labels, paths)) or (the reason the file is damaged, None)."""
    size = os.path.getsize(file)
    with open(file, 'rb') as f:
        fields = read_header(f, MAGIC, HEADER_SIZE, 'feature cache file')
        paths_bytes = fields.get('paths_bytes', 0) if isinstance(fields, dict) else 0
        problem = header_problem(fields, {'split': split, 'key': key}, shape, size,
                                 file_size(shape, paths_bytes))
        if problem is not None:
            return problem, None
        # a cache too big for RAM is checked as it streams by, then memory-mapped
        features = np.empty(shape, DTYPE) if size <= ram_gb * (1 << 30) else None
        labels = np.empty(shape[0], LABEL_DTYPE)
        try:
            crc = checksum(f, int(np.prod(shape)) * DTYPE.itemsize, 0, features)
            crc = checksum(f, labels.nbytes, crc, labels)
            paths_text = f.read(fields['paths_bytes'])
        except EOFError:
            return 'truncated while reading', None
        crc = zlib.crc32(paths_text, crc)
        if crc != fields['crc32']:
            return 'checksum mismatch: %08x, expected %08x' % (crc, fields['crc32']), None
    try:
        paths = np.array(json.loads(paths_text.decode('utf-8')), dtype=str)
    except ValueError as error:
        return 'unreadable paths (%s)' % error, None
    if features is None:
        features = np.memmap(file, DTYPE, 'r', offset=HEADER_SIZE, shape=shape)
    return None, (features, labels, paths)


def write(cache_dir, split, key, shape, batches, ram_gb):
    """Fill a new cache from `batches` (an iterator of (features, labels, paths) arrays whose
    features have shape[1:]) and return it as load() does. Nothing is left behind on error; a
    write the machine refuses is a WriteError."""
    file = path(cache_dir, split, key)
    with writing(file, 'the feature cache', needed=file_size(shape)):
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_path(file) as temporary, open(temporary, 'wb') as f:
            f.write(bytes(HEADER_SIZE))              # the header goes last, with the checksum
            crc, labels, names, row = 0, [], [], 0
            for batch, batch_labels, batch_paths in batches:
                batch = np.ascontiguousarray(batch, DTYPE)
                if batch.shape[1:] != tuple(shape[1:]):
                    raise ValueError('feature batch of shape %s for a cache of %s'
                                     % (batch.shape, tuple(shape)))
                f.write(batch)
                crc = zlib.crc32(batch, crc)
                row += len(batch)
                labels.append(batch_labels)
                names.extend(str(name, 'utf-8') if isinstance(name, bytes) else str(name)
                             for name in batch_paths)
            if row != shape[0]:
                raise RuntimeError('feature cache for %s: expected %d images, got %d'
                                   % (split, shape[0], row))
            labels = np.ascontiguousarray(np.concatenate(labels), LABEL_DTYPE)
            paths_text = json.dumps(names).encode('utf-8')
            f.write(labels)
            f.write(paths_text)
            crc = zlib.crc32(paths_text, zlib.crc32(labels, crc))
            f.seek(0)
            f.write(_header(split, key, shape, len(paths_text), crc))
    return load(cache_dir, split, key, shape, ram_gb)


def remove_stale(cache_dir, keep):
    """Delete the files in cache_dir other than the cache files `keep` (older weights, records or
    settings, or an older format)."""
    if not os.path.isdir(cache_dir):
        return
    keep = {os.path.basename(name) for name in keep}
    for name in os.listdir(cache_dir):
        if name not in keep:
            os.remove(os.path.join(cache_dir, name))
