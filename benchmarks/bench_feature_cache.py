"""The feature cache's checksum: what crc32 costs on a UC-Merced-sized cache.

    python benchmarks/bench_feature_cache.py [--train 1680] [--eval 210] [--repeat 3]

The cache of the seed's recipe holds pool5 (6x6x256 float32) of 1,680 training images x 4 flip
variants and of 210 validation and 210 test images: 263 MB. For each split this writes the cache
file as fineturn.py does (the crc32 computed while writing) and loads it back in RAM (the crc32
checked); then the same with a crc32 that does nothing, so the difference is the checksum's
cost; and, for reference, zlib.crc32 alone and a plain np.save / np.load, which check nothing.
Reads come from the page cache (the file was just written), as they do when a run resumes right
after another; from a cold disk every load waits on the disk alike. Writes of new files wait on
the disk's write-back, whatever their format. Medians of --repeat runs; the load average is
printed because other processes slow every figure down.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import feature_cache  # noqa: E402
import netspec  # noqa: E402
import records  # noqa: E402  (imports TensorFlow for FLIP_VARIANTS; outside the clock)

BATCH = 64


def batches(features):
    labels = np.arange(len(features)) % 21
    paths = np.array(['class%02d/image%04d.tif' % (label, i) for i, label in enumerate(labels)])
    for i in range(0, len(features), BATCH):
        yield features[i:i + BATCH], labels[i:i + BATCH], paths[i:i + BATCH]


class NoChecksum:
    """Stands in for zlib in feature_cache: the same file, with every crc32 0."""
    @staticmethod
    def crc32(data, value=0):
        return 0


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--train', type=int, default=1680)
    parser.add_argument('--eval', type=int, default=210, help='validation and test images each')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    shape = netspec.BVLC_ALEXNET.boundary_shape('fc6')
    rng = np.random.default_rng(0)
    splits = {'train': (args.train, records.FLIP_VARIANTS), 'validation': (args.eval, 1),
              'test': (args.eval, 1)}
    arrays = {split: rng.standard_normal((count, variants) + shape, np.float32)
              for split, (count, variants) in splits.items()}
    total = sum(a.nbytes for a in arrays.values())
    print('machine: load average %.2f %.2f %.2f' % os.getloadavg())
    print('cache: %s, %.0f MB of float32 features'
          % (', '.join('%s %s' % (s, a.shape) for s, a in arrays.items()), total / 1e6))
    work = tempfile.mkdtemp(prefix='bench_feature_cache-', dir=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))
    times = {name: [] for name in ('crc32', 'write', 'load', 'write0', 'load0', 'np.save',
                                   'np.load')}
    try:
        for _ in range(args.repeat):
            figures = dict.fromkeys(times, 0.0)
            for split, features in arrays.items():
                plain = os.path.join(work, split + '.npy')
                figures['crc32'] += timed(lambda: zlib.crc32(features))
                for checked, suffix in ((zlib, ''), (NoChecksum, '0')):
                    feature_cache.zlib = checked
                    # write() ends with a load(), as a run uses the cache it just wrote
                    figures['write' + suffix] += timed(lambda: feature_cache.write(
                        work, split, 'key', features.shape, batches(features), ram_gb=64))
                    figures['load' + suffix] += timed(lambda: feature_cache.load(
                        work, split, 'key', features.shape, ram_gb=64))
                feature_cache.zlib = zlib
                figures['np.save'] += timed(lambda: np.save(plain, features))
                figures['np.load'] += timed(lambda: np.load(plain))
            for name, seconds in figures.items():
                times[name].append(seconds)
        median = {name: statistics.median(values) for name, values in times.items()}
        print('zlib.crc32 alone over the same bytes: %.3f s (%.1f GB/s)'
              % (median['crc32'], total / median['crc32'] / 1e9))
        for name in ('write', 'load'):
            print('feature_cache.%-5s with crc32 %.3f s, without %.3f s: the checksum costs '
                  '%.3f s (%+.0f %%)' % (name, median[name], median[name + '0'],
                                         median[name] - median[name + '0'],
                                         100 * (median[name] / median[name + '0'] - 1)))
        print('for reference, plain np.save %.3f s, np.load %.3f s (no check)'
              % (median['np.save'], median['np.load']))
        print('medians of %d runs; load average at the end %.2f %.2f %.2f'
              % ((args.repeat,) + os.getloadavg()))
    finally:
        shutil.rmtree(work)


if __name__ == '__main__':
    main()
