"""Training speed of this checkout against another git revision, measured side by side.

    python benchmarks/bench_revisions.py --base REV [--head REV] [--per-class 40] [--rounds 3]

For a restructuring that must not change speed: both revisions run `python fineturn.py` for one
epoch on the same generated data (21 classes, 0.8/0.1/0.1, generated V1 Caffe AlexNet), once
with the feature cache (its training images/s is the head step's speed: batch 32 / step time)
and once through the full graph, alternating base and current run by run so that the machine's
load falls on both alike. It prints each run, the medians and the ratios current / base.
Not run by pytest.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import environment  # noqa: E402

environment.load_tensorflow()   # the import boundary (the inputs are made in this process)

import numpy as np  # noqa: E402

import record_writer  # noqa: E402
import setting  # noqa: E402
import synthetic_dataset  # noqa: E402
import weights_file  # noqa: E402
from caffe_to_npy import convert_file, synthetic  # noqa: E402

EPOCH_LINE = re.compile(r'epoch 1/1 .*\| ([\d.]+) img/s \| ([\d.]+) s')


def make_inputs(work, per_class):
    folder = synthetic_dataset.make_dataset_folder(os.path.join(work, 'images'), num_classes=21,
                                                   per_class=per_class, quirks=False)
    records_dir = os.path.join(work, 'records')
    record_writer.convert(folder.root, records_dir, setting.SPLIT_RATIOS, setting.SPLIT_SEED,
                          setting.CONVERT_WORKERS, progress=False)
    prototxt, caffemodel = synthetic.write_alexnet(work, seed=0, fmt='v1')
    converted = os.path.join(work, 'converted.npz')
    convert_file(prototxt, caffemodel, converted, mean=weights_file.IMAGENET_MEAN_BGR)
    os.remove(caffemodel)
    # arrays only, without the model's description (meta/...), which revisions from before it
    # existed refuse; every revision reads such a file as bvlc_alexnet
    weights = os.path.join(work, 'weights.npz')
    with np.load(converted) as data:
        np.savez(weights, **{key: data[key] for key in data.files if not key.startswith('meta/')})
    os.remove(converted)
    return records_dir, weights


def one_epoch(code, records_dir, weights, run_dir, cache):
    """(training images/s, epoch seconds) of `python fineturn.py --epochs 1` in checkout `code`."""
    # --data-dir: every revision knows it (later ones as an alias of --records-dir)
    command = [sys.executable, os.path.join(code, 'fineturn.py'), '--data-dir', records_dir,
               '--weights', weights, '--run-dir', run_dir, '--epochs', '1']
    if not cache:
        command.append('--no-cache')
    result = subprocess.run(command, cwd=code, capture_output=True, text=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    found = EPOCH_LINE.search(result.stdout)
    if result.returncode or not found:
        raise SystemExit('%s failed:\n%s' % (' '.join(command), result.stdout + result.stderr))
    return float(found.group(1)), float(found.group(2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='git revision to compare against')
    parser.add_argument('--head', help='git revision to measure (default: this checkout as it is)')
    parser.add_argument('--per-class', type=int, default=40)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix='bench_revisions-')
    base = os.path.join(work, 'base')
    head = os.path.join(work, 'head') if args.head else ROOT
    checkouts = [(base, args.base)] + ([(head, args.head)] if args.head else [])
    try:
        for path, revision in checkouts:
            subprocess.run(['git', '-C', ROOT, 'worktree', 'add', '--detach', path, revision],
                           check=True, capture_output=True)
        records_dir, weights = make_inputs(work, args.per_class)
        print('base %s vs %s; %d images per class; load %s'
              % (args.base, args.head or 'this checkout', args.per_class,
                 ' '.join('%.2f' % x for x in os.getloadavg())))
        runs = {(name, mode): [] for name in ('base', 'current') for mode in ('cache', 'full')}
        for round_ in range(1, args.rounds + 1):
            for name, code in (('base', base), ('current', head)):
                for mode in ('cache', 'full'):
                    speed, seconds = one_epoch(code, records_dir, weights,
                                               os.path.join(work, 'run'), mode == 'cache')
                    runs[name, mode].append((speed, seconds))
                    print('round %d %-7s %-5s %7.1f img/s  epoch %6.1f s'
                          % (round_, name, mode, speed, seconds), flush=True)
        for mode, what in (('cache', 'head step (cached epoch)'), ('full', 'full-graph epoch')):
            medians = {name: (statistics.median(s for s, _ in runs[name, mode]),
                              statistics.median(t for _, t in runs[name, mode]))
                       for name in ('base', 'current')}
            print('%-25s base %7.1f img/s (%5.1f ms/step of 32), %5.1f s; current %7.1f img/s '
                  '(%5.1f ms/step), %5.1f s; speed current/base %.3f'
                  % (what, medians['base'][0], 32e3 / medians['base'][0], medians['base'][1],
                     medians['current'][0], 32e3 / medians['current'][0], medians['current'][1],
                     medians['current'][0] / medians['base'][0]))
    finally:
        for path, _ in checkouts:
            subprocess.run(['git', '-C', ROOT, 'worktree', 'remove', '--force', path],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
