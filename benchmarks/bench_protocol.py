"""The repeated-split protocol's speed: features computed once, SVM splits in seconds.

    python benchmarks/bench_protocol.py [--epochs 20] [--svm-splits 10] [--quick] [--keep]

On a generated UC-Merced-sized set (21 classes x 100 images of 256x256: 2,100) and AlexNet-shaped
weights converted from a generated V1 Caffe model, it runs, each `python fineturn.py` in a
subprocess with a feature store of its own (as a first run has):

  1. the protocol: one conversion, then `--splits 3` fine-tuning (0.7/0.1/0.2, the recipe in
     setting.py, --epochs), against what a user does without it: three independent runs, each
     converting the images with the split's seed (the converter's split with seed 1000 S + k is
     the protocol's split k) and fine-tuning them, each computing its own frozen features. It
     prints both totals and their ratio, and each split's test accuracy next to its run's;
  2. the time splits 2 and 3 spend on features (goal: no image computed, only the store read);
  3. `--splits 10 --classifier svm` (0.8/0/0.2, fc7): the extraction (once, in split 1) and the
     time of every later split (goal: under 10 s each on 2 cores).

Other processes on a shared machine slow every figure down: the load average is printed at each
step; compare ratios measured in one run. Not run by pytest.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import environment  # noqa: E402
from common import disk_bytes, load, work_dir  # noqa: E402

environment.load_tensorflow()   # the import boundary (the inputs are made in this process)

import record_writer  # noqa: E402
import report  # noqa: E402
import splits  # noqa: E402
import synthetic_dataset  # noqa: E402
import weights_file  # noqa: E402
from caffe_to_npy import convert_file, synthetic  # noqa: E402

CLASSES = 21
SEED = 42
RATIOS = (0.7, 0.1, 0.2)
SVM_RATIOS = (0.8, 0.0, 0.2)
SVM_GOAL = 10.0                  # seconds per SVM split once the features exist
FEATURES = re.compile(r'^features of (\d+) images: (\d+) reused from \S+, (\d+) computed.*; '
                      r'([\d.]+) s$', re.MULTILINE)


def make_inputs(work, per_class):
    """Generated images (kept: the independent runs convert them again) and weights."""
    images = os.path.join(work, 'images')
    synthetic_dataset.make_dataset_folder(images, num_classes=CLASSES, per_class=per_class,
                                          quirks=False)
    prototxt, caffemodel = synthetic.write_alexnet(work, seed=0, fmt='v1')
    weights = os.path.join(work, 'bvlc_alexnet.npz')
    convert_file(prototxt, caffemodel, weights, mean=weights_file.IMAGENET_MEAN_BGR)
    os.remove(caffemodel)
    return images, weights


def convert(images, records_dir, seed, ratios):
    """Seconds of converting `images` into `records_dir`, as convert_tfrecord.py does."""
    started = time.perf_counter()
    record_writer.convert(images, records_dir, ratios, seed, 0, overwrite=True, progress=False)
    return time.perf_counter() - started


def fineturn(work, name, *args):
    """(seconds, log) of `python fineturn.py ARGS` with a feature store of its own."""
    command = [sys.executable, os.path.join(ROOT, 'fineturn.py'), '--feature-store',
               os.path.join(work, name + '-store')] + [str(a) for a in args]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with open(os.path.join(work, name + '.log'), 'w') as f:
        f.write(result.stdout + result.stderr)
    if result.returncode:
        raise SystemExit('%s failed (%d): see %s' % (' '.join(command), result.returncode,
                                                     f.name))
    return seconds, result.stdout


def megabytes(path):
    return disk_bytes(path) / 1e6


def features_lines(log):
    """[(images computed, seconds)] of each 'features of ...' line of a log, in order."""
    return [(int(computed), float(seconds)) for _, _, computed, seconds in FEATURES.findall(log)]


def split_seconds(run_dir, count):
    """The seconds each split of a protocol took (its split.json)."""
    result = []
    for k in range(1, count + 1):
        with open(os.path.join(run_dir, splits.folder_name(k, count), 'split.json')) as f:
            result.append(json.load(f)['seconds'])
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=20, help='epochs of each fine-tuning run')
    parser.add_argument('--svm-splits', type=int, default=10)
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 10 images per class, 1 epoch (figures not meaningful)')
    parser.add_argument('--keep', action='store_true', help='keep the work dir')
    args = parser.parse_args(argv)
    per_class, epochs = (10, 1) if args.quick else (100, args.epochs)
    with work_dir('bench_protocol-', args.keep) as work:
        print('bench_protocol: %d cores, %s%s' % (os.cpu_count(), load(),
                                                  '  (QUICK: figures not meaningful)'
                                                  if args.quick else ''), flush=True)
        started = time.perf_counter()
        images, weights = make_inputs(work, per_class)
        print('inputs: %d classes x %d generated images 256x256, generated V1 Caffe AlexNet -> '
              '.npz (%.0f s)' % (CLASSES, per_class, time.perf_counter() - started), flush=True)
        recipe = ('--weights', weights, '--epochs', epochs, '--seed', SEED)

        print('\n== 1. --splits 3 fine-tuning vs three independent runs, %d epochs each (%s)'
              % (epochs, load()), flush=True)
        records_dir = os.path.join(work, 'records')
        converting = convert(images, records_dir, SEED, RATIOS)
        protocol_dir = os.path.join(work, 'protocol')
        seconds, protocol_log = fineturn(
            work, 'protocol', '--records-dir', records_dir, '--run-dir', protocol_dir,
            '--splits', 3, '--split-ratios', *RATIOS, *recipe)
        protocol_total = converting + seconds
        print('protocol: convert once %.1f s + fineturn.py --splits 3 %.1f s = %.1f s  (%s after)'
              % (converting, seconds, protocol_total, load()), flush=True)
        print('  disk: RUN_DIR %.0f MB (3 run dirs), its feature store %.0f MB'
              % (megabytes(protocol_dir), megabytes(os.path.join(work, 'protocol-store'))),
              flush=True)
        independent_total, accuracies = 0.0, []
        for k in range(1, 4):
            seed = splits.split_seed(SEED, k)
            run_records = os.path.join(work, 'records-%d' % k)
            converting = convert(images, run_records, seed, RATIOS)
            run_dir = os.path.join(work, 'run-%d' % k)
            seconds, _ = fineturn(work, 'run-%d' % k, '--records-dir', run_records, '--run-dir',
                                  run_dir, *recipe[:-1], seed)
            independent_total += converting + seconds
            accuracies.append((report.read_report(os.path.join(
                protocol_dir, splits.folder_name(k, 3)))['accuracy'],
                report.read_report(run_dir)['accuracy']))
            print('independent run %d (seed %d): convert %.1f s + fineturn.py %.1f s  (%s after)'
                  % (k, seed, converting, seconds, load()), flush=True)
            if k == 1:     # what one run leaves on disk
                print('  disk: records %.0f MB, run dir %.0f MB, its feature store %.0f MB; the '
                      'images %.0f MB' % (megabytes(run_records), megabytes(run_dir),
                                          megabytes(os.path.join(work, 'run-1-store')),
                                          megabytes(images)), flush=True)
        print('test accuracy, protocol split vs independent run: %s'
              % ', '.join('%.3f vs %.3f' % pair for pair in accuracies))
        print('three independent runs %.1f s, the protocol %.1f s: the protocol takes %.2fx their '
              'time (%.2fx faster)' % (independent_total, protocol_total,
                                       protocol_total / independent_total,
                                       independent_total / protocol_total), flush=True)

        print('\n== 2. features in each split of --splits 3')
        lines = features_lines(protocol_log)
        for k, (computed, seconds) in enumerate(lines, start=1):
            print('split %d: %d images computed, features ready in %.1f s' % (k, computed,
                                                                              seconds))
        later = lines[1:]
        print('splits 2 and 3: %d images computed, %.1f s reading the store  [goal: none '
              'computed: %s]' % (sum(c for c, _ in later), sum(s for _, s in later),
                                 'PASS' if all(c == 0 for c, _ in later) else 'FAIL'), flush=True)

        count = args.svm_splits
        print('\n== 3. --splits %d --classifier svm (%s, fc7) (%s)'
              % (count, splits.ratios_text(SVM_RATIOS), load()), flush=True)
        svm_dir = os.path.join(work, 'svm')
        seconds, svm_log = fineturn(work, 'svm', '--records-dir', records_dir, '--run-dir',
                                    svm_dir, '--weights', weights, '--seed', SEED, '--splits',
                                    count, '--split-ratios', *SVM_RATIOS, '--classifier', 'svm')
        lines = features_lines(svm_log)
        per_split = split_seconds(svm_dir, count)
        print('total %.1f s (one process); extraction in split 1: %d images computed in %.1f s; '
              'split 1 %.1f s in all' % (seconds, lines[0][0], lines[0][1], per_split[0]))
        print('splits 2-%d: %s s; images computed %d; mean %.1f s, max %.1f s  [goal < %.0f s '
              'each: %s]' % (count, ' '.join('%.1f' % s for s in per_split[1:]),
                             sum(c for c, _ in lines[1:]),
                             sum(per_split[1:]) / (count - 1), max(per_split[1:]), SVM_GOAL,
                             'PASS' if max(per_split[1:]) < SVM_GOAL and
                             all(c == 0 for c, _ in lines[1:]) else 'FAIL'))
        print([line for line in svm_log.splitlines() if line.startswith('OA ')][-1])
        print('\nend: %s; total %.0f s' % (load(), time.perf_counter() - started))
    return 0


if __name__ == '__main__':
    sys.exit(main())
