"""The feature store against one plain array file: what one checked entry per image costs.

    python benchmarks/bench_feature_store.py [--images 2100] [--repeat 3] [--dir /tmp]

A UC-Merced-sized pool (2,100 images x 4 flip variants of pool5, 6x6x256 float32: 310 MB) is
written into a feature store (one checked file per image, each put in place under its shard's
lock) and into one .npy file (np.save: no checksum, no lock, no rename), then read back whole
from each, the store checking every crc32. The features come from memory (no network runs), so
the figures are the storage's own cost, to set against the extraction it saves (minutes on 2
cores). Reads come from the page cache, as they do for the next split of a protocol. Medians of
--repeat runs, printed as ratios measured in this run; the load average is printed because other
processes slow every figure.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import feature_store  # noqa: E402

BATCH = 64


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def once(folder, count):
    key = feature_store.FeatureKey('weights', (104.0, 117.0, 123.0), {'net': 'alexnet'},
                                   'pool5', (0, 1, 2, 3), (6, 6, 256))
    names = [feature_store.image_digest(b'image %d' % i) for i in range(count)]
    features = np.random.default_rng(0).normal(size=(count,) + key.shape).astype(np.float32)

    def extract(positions):
        for i in range(0, len(positions), BATCH):
            yield features[positions[i:i + BATCH]]

    store = feature_store.FeatureStore(os.path.join(folder, 'store'), key, log=lambda line: None)
    plain = os.path.join(folder, 'pool.npy')
    figures = {
        'store write': timed(lambda: store.fill(names, extract)),
        'store read': timed(lambda: store.read(names)),
        'npy write': timed(lambda: np.save(plain, features)),
        'npy read': timed(lambda: np.load(plain))}
    got, problems = store.read(names)
    assert not problems and np.array_equal(got, features)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=2100)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--dir', default=None, help='where to write (default: the temp folder)')
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        folder = tempfile.mkdtemp(dir=args.dir)
        try:
            runs.append(once(folder, args.images))
        finally:
            shutil.rmtree(folder)
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    size = args.images * 4 * 6 * 6 * 256 * 4 / 1e6
    print('%d images, %.0f MB of features; load average %.2f' % (args.images, size,
                                                                  os.getloadavg()[0]))
    for name, seconds in median.items():
        print('  %-12s %6.2f s  %6.0f MB/s' % (name, seconds, size / seconds))
    print('store / one .npy file: write %.2fx, read %.2fx the time'
          % (median['store write'] / median['npy write'],
             median['store read'] / median['npy read']))


if __name__ == '__main__':
    main()
