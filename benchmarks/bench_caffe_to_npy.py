"""Benchmark: convert a full-size (244 MB) AlexNet caffemodel, against a plain file copy.

    python benchmarks/bench_caffe_to_npy.py [--format v1|new] [--repeat 3] [--keep DIR]

Writes an AlexNet-shaped V1 caffemodel with random weights (like the model zoo's
bvlc_alexnet.caffemodel) to a temporary directory, then, each in a fresh subprocess with the file
in the page cache: `python -m caffe_to_npy` (whole command: interpreter start, imports, convert,
write the .npz) and shutil.copyfile of the same file. Reports the median wall time, the ratio to
the copy, and the converter's peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss) over the file size,
against the targets: <= 2 s and <= 2.5x the file size. Not run by pytest.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caffe_to_npy import synthetic  # noqa: E402

TARGET_SECONDS = 2.0
TARGET_RSS_RATIO = 2.5


def _timed(command):
    """Run `command` in a fresh subprocess; return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--format', choices=('v1', 'new'), default='v1',
                        help='caffemodel format (default v1, as the model zoo file)')
    parser.add_argument('--repeat', type=int, default=3, help='runs of each (median reported)')
    parser.add_argument('--keep', metavar='DIR', help='work in DIR and keep the files')
    args = parser.parse_args()

    directory = args.keep or tempfile.mkdtemp(prefix='bench_caffe_to_npy.')
    os.makedirs(directory, exist_ok=True)
    try:
        start = time.perf_counter()
        prototxt, caffemodel = synthetic.write_alexnet(directory, fmt=args.format)
        size = os.path.getsize(caffemodel)
        print('wrote %s (%.1f MB, %s format) in %.1f s' % (caffemodel, size / 1e6, args.format,
                                                          time.perf_counter() - start))
        out = os.path.join(directory, 'weights.npz')
        copy = os.path.join(directory, 'copy.caffemodel')
        convert_cmd = [sys.executable, '-m', 'caffe_to_npy', prototxt, caffemodel, out]
        copy_cmd = [sys.executable, '-c', 'import shutil, sys; shutil.copyfile(*sys.argv[1:])',
                    caffemodel, copy]
        with open(caffemodel, 'rb') as f:  # warm the page cache, as a second run would find it
            while f.read(1 << 24):
                pass
        convert_times, copy_times = [], []
        for _ in range(args.repeat):
            for path in (out, copy):
                if os.path.exists(path):
                    os.remove(path)
            convert_times.append(_timed(convert_cmd))
            # RUSAGE_CHILDREN keeps the maximum over finished children: read it before the copy
            peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
            copy_times.append(_timed(copy_cmd))
        seconds, copy_seconds = statistics.median(convert_times), statistics.median(copy_times)
        rss_ratio = peak_rss / size
        print('convert (python -m caffe_to_npy, whole command): %.2f s median of %d  '
              '[%s]' % (seconds, args.repeat, ', '.join('%.2f' % t for t in convert_times)))
        print('plain copy (shutil.copyfile in a subprocess):    %.2f s median of %d  '
              '[%s]' % (copy_seconds, args.repeat, ', '.join('%.2f' % t for t in copy_times)))
        print('ratio convert / copy: %.2fx' % (seconds / copy_seconds))
        print('converter peak RSS: %.0f MB = %.2fx the file size' % (peak_rss / 1e6, rss_ratio))
        ok_time, ok_rss = seconds <= TARGET_SECONDS, rss_ratio <= TARGET_RSS_RATIO
        print('targets: time <= %.1f s: %s; peak RSS <= %.1fx file: %s' % (
            TARGET_SECONDS, 'PASS' if ok_time else 'FAIL', TARGET_RSS_RATIO,
            'PASS' if ok_rss else 'FAIL'))
        return 0 if ok_time and ok_rss else 1
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
