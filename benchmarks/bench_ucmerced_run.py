"""What a UC-Merced-sized run costs: the README's real path, command by command, time and disk.

    python benchmarks/bench_ucmerced_run.py [--per-class 100] [--epochs 20] [--keep] [--work-dir DIR]

The user's commands, each run as a subprocess exactly as the README gives them, on generated
stand-ins for the two downloads: a random AlexNet-shaped V1 Caffe model (python -m
caffe_to_npy.synthetic, 1000 classes, like bvlc_alexnet.caffemodel) and 21 classes x 100 clean
256x256 .tif images (python synthetic_dataset.py --no-quirks: UC Merced's size). Then
`python -m caffe_to_npy`, `python convert_tfrecord.py` and `python fineturn.py` with every
default of setting.py but the paths (fc6-fc8 trained, 20 epochs, the frozen features from the
feature store). The feature store is the work dir's own (--feature-store), empty at the start, so
the run computes every image's pool5 features, as a user's first run does.

For each command: wall seconds, peak memory (the child's max RSS) and the disk it leaves; for the
training run the run dir and the feature store apart, the peak disk of the run dir while it
trains (sampled every 0.5 s: checkpoints are kept for the last 5 epochs and the best, and the next
one is written before the oldest goes), and its log's lines on the features (their time) and the
epochs, with the epochs' seconds summed from metrics.csv. Wall times move with the machine's
load, which is printed. Not run by pytest.
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from common import disk_bytes, load, store_entries  # noqa: E402


def mb(size):
    return '%.1f MB' % (size / 1e6)


def run(command, log_path, watch=None):
    """Runs `command` (a list) from the repository root; (seconds, peak RSS bytes, peak bytes of
    `watch` while it ran)."""
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            peak[0] = max(peak[0], disk_bytes(watch))
    sampler = threading.Thread(target=sample, daemon=True) if watch else None
    started = time.perf_counter()
    with open(log_path, 'w') as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    if sampler:
        sampler.join()
        peak[0] = max(peak[0], disk_bytes(watch))
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    if code != 0:
        raise SystemExit('%s failed (exit %d): see %s' % (' '.join(command[1:3]), code, log_path))
    return seconds, usage.ru_maxrss * 1024, peak[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--per-class', type=int, default=100,
                        help='images per class, 21 classes (default: 100)')
    parser.add_argument('--epochs', type=int, default=20, help='epochs to train (default: 20)')
    parser.add_argument('--keep', action='store_true', help='keep the work dir')
    parser.add_argument('--work-dir', help='where everything is written (default: a temp dir)')
    args = parser.parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix='bench_ucmerced_run-')
    os.makedirs(work, exist_ok=True)
    python = sys.executable
    paths = {name: os.path.join(work, name)
             for name in ('caffe', 'images', 'data', 'run', 'feature_store')}
    npz = os.path.join(work, 'bvlc_alexnet.npz')
    steps = [
        ('generate the Caffe model', [python, '-m', 'caffe_to_npy.synthetic', paths['caffe']],
         paths['caffe']),
        ('python -m caffe_to_npy', [python, '-m', 'caffe_to_npy',
                                    os.path.join(paths['caffe'], 'alexnet_v1.prototxt'),
                                    os.path.join(paths['caffe'], 'alexnet_v1.caffemodel'), npz],
         npz),
        ('generate the images', [python, 'synthetic_dataset.py', paths['images'], '--per-class',
                                 str(args.per_class), '--no-quirks'], paths['images']),
        ('python convert_tfrecord.py', [python, 'convert_tfrecord.py', '--image-dir',
                                        paths['images'], '--output-dir', paths['data'],
                                        '--quiet'], paths['data']),
        ('python fineturn.py', [python, 'fineturn.py', '--records-dir', paths['data'], '--weights',
                                npz, '--run-dir', paths['run'], '--feature-store',
                                paths['feature_store'], '--epochs', str(args.epochs)],
         paths['run']),
    ]
    print('bench_ucmerced_run: %d cores, %s; 21 classes x %d images, %d epochs; work dir %s'
          % (os.cpu_count(), load(), args.per_class, args.epochs, work), flush=True)
    total, timings = 0, {}
    try:
        for name, command, output in steps:
            before = load()
            seconds, rss, peak = run(command, os.path.join(work, name.split()[-1] + '.log'),
                                     watch=output if name == 'python fineturn.py' else None)
            timings[name] = seconds
            size = disk_bytes(output)
            if name == 'python fineturn.py':
                size += disk_bytes(paths['feature_store'])
            total += size
            line = '%-28s %7.1f s  peak RSS %8s  on disk after %9s' % (
                name, seconds, mb(rss), mb(size))
            if peak:
                line += '  (run dir at its peak %s)' % mb(peak)
            print(line + '  [%s before]' % before, flush=True)
        with open(os.path.join(work, 'fineturn.py.log')) as log:
            lines = log.read().splitlines()
        for line in lines:
            if line.startswith((' * ', 'feature cache ', 'features of ', 'epoch ')):
                print('  ' + line)
        with open(os.path.join(paths['run'], 'metrics.csv'), newline='') as f:
            epochs = [float(row['seconds']) for row in csv.DictReader(f)]
        print('epochs: %d, %.1f s in all (metrics.csv); the rest of the run %.1f s: start-up, the '
              'features, the test'
              % (len(epochs), sum(epochs), timings['python fineturn.py'] - sum(epochs)))
        print('run dir: %s checkpoints, %s; feature store: %d entries, %s'
              % (len([n for n in os.listdir(paths['run']) if n.endswith('.index')]),
                 mb(disk_bytes(paths['run'])), store_entries(paths['feature_store']),
                 mb(disk_bytes(paths['feature_store']))))
        print('on disk in all (Caffe files, weights, images, records, run dir, feature store): %s'
              % mb(total))
        print('end: %s' % load())
    finally:
        if not args.keep:         # the first line names the work dir, which --keep keeps
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
