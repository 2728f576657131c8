"""Fine-tuning speed: the frozen-feature cache vs the full graph, and where the time goes.

    python benchmarks/bench_fineturn.py [--epochs 20] [--quick] [--keep] [--work-dir DIR]

Issue 5's benchmark, on a generated UC-Merced-sized set (2,100 images of 256x256, 21 classes,
0.8/0.1/0.1) and AlexNet-shaped weights converted from a generated V1 Caffe model, with the seed's
recipe (batch 32, 20 epochs, fc6-fc8 trained, lr 1e-4). It prints, all measured in this run:

  1. the machine: numpy sgemm GFLOP/s and copy bandwidth GB/s;
  2. the graph's forward images/s (batch 32 and 64, images held in a tf.Variable), the conv part
     alone (what feature extraction costs), and the head's training images/s: fineturn's own
     train_op at batch 32 fed cached-size features;
  3. the head step against its roofline bound: max(FLOPs at the sgemm rate, weight traffic at the
     copy bandwidth), and the TF ops the step runs;
  4. the full-graph path's training images/s through tf.data vs the same train_op fed one
     in-memory batch (does the input pipeline starve the model?), and the pipeline alone;
  5. time from start to test report of `python fineturn.py`, full graph vs cache, with flips and
     without, and the ratios.

Other processes on a shared machine slow every figure down: the load average is printed next to
each measurement; compare ratios measured in one run, not bare seconds. Not run by pytest.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import environment  # noqa: E402
from common import load, work_dir  # noqa: E402

# The import boundary: TensorFlow loads as `python fineturn.py` loads it.
tf = environment.load_tensorflow()

import numpy as np  # noqa: E402

import alexnet  # noqa: E402
import fineturn  # noqa: E402
import netspec  # noqa: E402
import record_writer  # noqa: E402
import records  # noqa: E402
import setting  # noqa: E402
import synthetic_dataset  # noqa: E402
import training  # noqa: E402
import weights_file  # noqa: E402
from caffe_to_npy import convert_file, synthetic  # noqa: E402

tf1 = tf.compat.v1

BATCH = 32
CLASSES = 21
GOALS = {'flip': 2.5, 'no-flip': 3.5}   # cached >= this many times faster than the full graph
ROOFLINE_GOAL = 1.5                     # head step within this factor of its bound
PIPELINE_GOAL = 0.90                    # tf.data-fed training >= this share of in-memory-fed


def best_seconds(function, repeats, warmup=1):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


# --- 1. the machine ------------------------------------------------------------------------------

def sgemm_gflops(n=2048, repeats=5):
    a = np.random.default_rng(0).random((n, n), np.float32)
    b = np.random.default_rng(1).random((n, n), np.float32)
    return 2 * n ** 3 / best_seconds(lambda: a @ b, repeats) / 1e9


def copy_gbps(megabytes=512, threads=2, repeats=5):
    """Bytes read + written per second by `threads` numpy copies of equal slices (numpy releases
    the GIL in copyto, so the slices are copied in parallel, like TF's multi-threaded kernels)."""
    source = np.ones(megabytes << 18, np.float32)
    target = np.zeros_like(source)            # touched: no page faults in the timing
    slices = np.array_split(np.arange(len(source)), threads)
    bounds = [(s[0], s[-1] + 1) for s in slices]

    def copy():
        workers = [threading.Thread(target=np.copyto, args=(target[a:b], source[a:b]))
                   for a, b in bounds]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return 2 * source.nbytes / best_seconds(copy, repeats) / 1e9


# --- 2. graph forward and the head's training step -------------------------------------------------

def forward_speeds(repeats):
    """images/s of alexnet.build's forward pass on images held in a tf.Variable."""
    graph = tf1.Graph()
    with graph.as_default():
        images = tf1.get_variable('images', [64, alexnet.IMAGE_SIZE, alexnet.IMAGE_SIZE, 3],
                                  initializer=tf1.random_normal_initializer(stddev=50.0))
        runs = {}
        for batch in (32, 64):
            with tf1.variable_scope('b%d' % batch):
                logits, _ = alexnet.build(images[:batch], CLASSES)
            runs['forward, batch %d' % batch] = (tf.reduce_sum(logits), batch)
        with tf1.variable_scope('conv'):
            pool5, _ = alexnet.build(images, CLASSES, stop='fc6')
        runs['conv1-pool5 (feature extraction), batch 64'] = (tf.reduce_sum(pool5), 64)
        init = tf1.global_variables_initializer()
    speeds = {}
    with tf1.Session(graph=graph) as session:
        session.run(init)
        for name, (fetch, batch) in runs.items():
            speeds[name] = batch / best_seconds(lambda: session.run(fetch), repeats)
    return speeds


def fineturn_settings(records_dir, weights, run_dir, *extra):
    return fineturn.settings_from(fineturn.parse_args(
        ['--records-dir', records_dir, '--weights', weights, '--run-dir', run_dir,
         '--batch-size', str(BATCH)] + list(extra)))


def loaded_model(settings, cached):
    """training.TrainingGraph for `settings` in a session, weights loaded as a run loads them."""
    classes, counts = records.read_inputs(settings.records_dir)
    model = training.TrainingGraph(settings, netspec.BVLC_ALEXNET.with_classes(len(classes)),
                                   weights_file.IMAGENET_MEAN_BGR,
                                   records.own_parts(settings.records_dir, counts), cached)
    session = tf1.Session(graph=model.graph)
    weights, _ = training.read_pretrained(settings, classes)
    alexnet.load_weights(session, weights, skip_layers=settings.skip_layers)
    session.run(model.others_init)
    return model, session, counts['train']


def step_fetches(model):
    """What Run.train_epoch runs per step."""
    return [model.train_op, model.scores.loss_sum, model.scores.correct, model.scores.count]


def head_step(settings, steps):
    """(seconds per step of the cached-path train_op at BATCH, the ops it runs)."""
    model, session, _ = loaded_model(settings, cached=True)
    rng = np.random.default_rng(0)
    shape = (BATCH,) + netspec.BVLC_ALEXNET.boundary_shape(model.boundary_layer)
    feed = {model.inputs: np.maximum(rng.normal(size=shape), 0).astype(np.float32),
            model.labels: rng.integers(0, CLASSES, BATCH), model.keep_prob: settings.keep_prob}
    fetches = step_fetches(model)
    seconds = best_seconds(lambda: session.run(fetches, feed), steps, warmup=3)
    metadata = tf1.RunMetadata()
    session.run(fetches, feed, options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
                run_metadata=metadata)
    session.close()
    ops = [(node.all_end_rel_micros / 1e3, node.timeline_label.split('(')[0])
           for device in metadata.step_stats.dev_stats for node in device.node_stats]
    return seconds, sorted(ops, reverse=True)


def head_roofline(num_classes):
    """(FLOPs, bytes) of one fc6-fc8 training step at BATCH, and the byte model in words."""
    shapes = netspec.BVLC_ALEXNET.with_classes(num_classes).weight_shapes()
    layers = ('fc6', 'fc7', 'fc8')
    macs = sum(np.prod(shapes[layer][0]) for layer in layers)
    input_gradient_macs = sum(np.prod(shapes[layer][0]) for layer in ('fc7', 'fc8'))
    # forward + weight gradients, + input gradients of fc7/fc8 (fc6's input is not trained)
    flops = 2 * BATCH * (2 * macs + input_gradient_macs)
    parameter_bytes = 4 * sum(np.prod(shapes[layer][0]) + np.prod(shapes[layer][1])
                              for layer in layers)
    model = ('5 passes over the %.0f MB of fc6-fc8 parameters: read in forward, gradient written, '
             'update reads weight + gradient and writes weight (the fc7/fc8 input-gradient '
             'reads, %.0f MB, and the activations, < 2 MB, not counted)'
             % (parameter_bytes / 1e6, 4 * input_gradient_macs / 1e6))
    return flops, 5 * parameter_bytes, model


def head_products_numpy(num_classes, repeats=5):
    """Seconds numpy's BLAS takes for the step's matrix products at their own (skinny) shapes:
    forward and weight gradient of fc6-fc8, input gradient of fc7-fc8. What the same FLOPs cost
    at batch 32 with the best kernels at hand, next to the square-sgemm rate of the bound."""
    shapes = netspec.BVLC_ALEXNET.with_classes(num_classes).weight_shapes()
    rng = np.random.default_rng(2)
    total = 0.0
    for layer in ('fc6', 'fc7', 'fc8'):
        fan_in, fan_out = shapes[layer][0]
        w = rng.random((fan_in, fan_out), np.float32)
        x = rng.random((BATCH, fan_in), np.float32)
        dy = rng.random((BATCH, fan_out), np.float32)
        products = [lambda: x @ w, lambda: x.T @ dy]
        if layer != 'fc6':                         # fc6's input gradient is not needed
            products.append(lambda: dy @ w.T)
        total += sum(best_seconds(product, repeats) for product in products)
    return total


# --- 4. the full graph: tf.data vs in-memory input -------------------------------------------------

def full_graph_input(settings, epochs=1):
    """images/s of the full graph's train_op fed by its tf.data pipeline (whole epochs, as
    train_epoch runs them), fed one in-memory batch (same steps), and of the pipeline alone."""
    model, session, train_count = loaded_model(settings, cached=False)
    get_next = model.labels.op      # full graph: the iterator's (images, labels, paths) op
    fetches = step_fetches(model)
    session.run(model.train_init, {model.epoch_seed: 0})
    batch = session.run(list(get_next.outputs))
    # feeding every output of the iterator's op: the same train_op, no input pipeline run
    feed = dict(zip(get_next.outputs, batch))
    feed[model.keep_prob] = settings.keep_prob
    for _ in range(3):     # warm-up (kernel set-up) outside both timings
        session.run(fetches, feed)
    steps = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        session.run(model.train_init,
                    {model.epoch_seed: training.epoch_seed(settings.seed, epoch)})
        while True:
            try:
                session.run(fetches, {model.keep_prob: settings.keep_prob})
            except tf.errors.OutOfRangeError:
                break
            steps += 1
    piped = epochs * train_count / (time.perf_counter() - start)
    in_memory = BATCH * steps / (best_seconds(
        lambda: [session.run(fetches, feed) for _ in range(steps)], 1, warmup=0))
    session.run(model.train_init, {model.epoch_seed: 1})
    start = time.perf_counter()
    count = 0
    while True:
        try:
            count += len(session.run(model.labels))
        except tf.errors.OutOfRangeError:
            break
    alone = count / (time.perf_counter() - start)
    session.close()
    return piped, in_memory, alone


# --- 5. fineturn.py end to end ---------------------------------------------------------------------

def run_fineturn(work, records_dir, weights, name, epochs, flip, cache):
    run_dir = os.path.join(work, 'runs', name)
    # a feature store of the run's own: each cached run computes its features, as a first run does
    command = [sys.executable, os.path.join(ROOT, 'fineturn.py'), '--records-dir', records_dir,
               '--weights', weights, '--run-dir', run_dir, '--epochs', str(epochs),
               '--batch-size', str(BATCH), '--feature-store', run_dir + '-store']
    command += [] if flip else ['--no-flip']
    command += [] if cache else ['--no-cache']
    before = load()
    start = time.time()
    with open(os.path.join(work, name + '.log'), 'w') as log:
        code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit('fineturn.py failed (%d): see %s' % (code, log.name))
    to_report = os.path.getmtime(os.path.join(run_dir, 'test_report.json')) - start
    with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
        epoch_seconds = sum(float(row['seconds']) for row in csv.DictReader(f))
    with open(os.path.join(run_dir, 'test_report.json')) as f:
        accuracy = json.load(f)['accuracy']
    return dict(seconds=to_report, epochs=epoch_seconds, accuracy=accuracy, load=before)


# --- setup -----------------------------------------------------------------------------------------

def make_inputs(work, per_class):
    """Generated images -> TFRecords; a generated V1 Caffe AlexNet -> weights .npz."""
    folder = synthetic_dataset.make_dataset_folder(
        os.path.join(work, 'images'), num_classes=CLASSES, per_class=per_class, size=256,
        quirks=False)
    records_dir = os.path.join(work, 'records')
    record_writer.convert(folder.root, records_dir, setting.SPLIT_RATIOS, setting.SPLIT_SEED,
                          setting.CONVERT_WORKERS, overwrite=True, progress=False)
    shutil.rmtree(folder.root)
    caffe_dir = os.path.join(work, 'caffe')
    os.makedirs(caffe_dir)
    prototxt, caffemodel = synthetic.write_alexnet(caffe_dir, seed=0, fmt='v1')
    weights = os.path.join(work, 'bvlc_alexnet.npz')
    convert_file(prototxt, caffemodel, weights, mean=weights_file.IMAGENET_MEAN_BGR)
    shutil.rmtree(caffe_dir)
    return records_dir, weights


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--epochs', type=int, default=20, help='epochs of each fineturn.py run')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 10 images per class, 2 epochs, few repeats '
                             '(figures not meaningful)')
    parser.add_argument('--keep', action='store_true', help='keep the work dir')
    parser.add_argument('--work-dir', help='where to generate data and runs (default: a temp dir)')
    args = parser.parse_args(argv)
    per_class, epochs, repeats = (10, 2, 2) if args.quick else (100, args.epochs, 10)
    out = []

    def say(line=''):
        print(line, flush=True)
        out.append(line)
    with work_dir('bench_fineturn-', args.keep, args.work_dir) as work:
        try:
            run(args, work, per_class, epochs, repeats, say)
        finally:
            if args.keep:
                with open(os.path.join(work, 'bench_fineturn.txt'), 'w') as f:
                    f.write('\n'.join(out) + '\n')
    return 0


def run(args, work, per_class, epochs, repeats, say):
    """The benchmark's measurements, said through `say`, in `work`."""
    say('bench_fineturn: %d cores, %s, TF_ENABLE_ONEDNN_OPTS=%s%s'
        % (os.cpu_count(), load(), os.environ.get('TF_ENABLE_ONEDNN_OPTS'),
           '  (QUICK: figures not meaningful)' if args.quick else ''))
    started = time.perf_counter()
    records_dir, weights = make_inputs(work, per_class)
    say('inputs: %d classes x %d images 256x256 -> TFRecords, generated V1 Caffe AlexNet -> '
        '.npz (%.0f s)' % (CLASSES, per_class, time.perf_counter() - started))

    say('\n== 1. machine (%s)' % load())
    gflops, gbps = sgemm_gflops(), copy_gbps()
    say('numpy sgemm 2048^3 float32: %.0f GFLOP/s;  copy 512 MB on 2 threads: %.1f GB/s '
        '(bytes read + written)' % (gflops, gbps))

    say('\n== 2. graph speeds, in-memory inputs (%s)' % load())
    for name, speed in forward_speeds(repeats).items():
        say('%-45s %6.1f img/s' % (name, speed))
    recipe = fineturn_settings(records_dir, weights, os.path.join(work, 'scratch'))
    step, ops = head_step(recipe, repeats * 2)
    say('%-45s %6.1f img/s  (%.1f ms/step; fineturn train_op, keep_prob %.1f)'
        % ('head fc6-fc8 training step, batch %d' % BATCH, BATCH / step, step * 1e3,
           recipe.keep_prob))

    say('\n== 3. head step roofline (batch %d)' % BATCH)
    flops, traffic, model = head_roofline(CLASSES)
    bound = max(flops / (gflops * 1e9), traffic / (gbps * 1e9))
    say('FLOPs %.2f G -> %.1f ms at %.0f GFLOP/s;  traffic %.2f GB -> %.1f ms at %.1f GB/s'
        % (flops / 1e9, flops / gflops / 1e6, gflops, traffic / 1e9, traffic / gbps / 1e6,
           gbps))
    say('byte model: ' + model)
    say('bound %.1f ms (%s-bound); measured %.1f ms = %.2fx the bound  [goal <= %.1fx: %s]'
        % (bound * 1e3, 'memory' if traffic / gbps > flops / gflops else 'FLOP',
           step * 1e3, step / bound, ROOFLINE_GOAL,
           'PASS' if step / bound <= ROOFLINE_GOAL else 'FAIL'))
    products = head_products_numpy(CLASSES)
    say('the same products in numpy at their batch-%d shapes: %.1f ms (%.0f GFLOP/s); '
        'measured step = %.2fx that' % (BATCH, products * 1e3, flops / products / 1e9,
                                         step / products))
    say('ops of one step, by duration (traced; ops overlap on 2 inter-op threads):')
    for millis, label in ops[:9]:
        say('  %6.1f ms  %s' % (millis, label))

    say('\n== 4. full graph: tf.data input vs in-memory input (%s)' % load())
    piped, in_memory, alone = full_graph_input(recipe)
    say('train_op fed by tf.data (one epoch, flips):  %6.1f img/s' % piped)
    say('same train_op fed one in-memory batch:       %6.1f img/s' % in_memory)
    say('tf.data pipeline alone (decode, flip):       %6.1f img/s' % alone)
    say('tf.data / in-memory = %.2f  [goal >= %.2f: %s]'
        % (piped / in_memory, PIPELINE_GOAL,
           'PASS' if piped / in_memory >= PIPELINE_GOAL else 'FAIL'))

    say('\n== 5. python fineturn.py, %d epochs, start to test report' % epochs)
    results = {}
    for flip in (True, False):
        for cache in (False, True):
            name = '%s-%s' % ('flip' if flip else 'no-flip', 'cache' if cache else 'full')
            results[name] = result = run_fineturn(work, records_dir, weights, name, epochs,
                                                  flip, cache)
            say('%-14s %7.1f s  (epochs %6.1f s, setup + features + test %5.1f s)  '
                'test acc %.3f  [%s before]'
                % (name, result['seconds'], result['epochs'],
                   result['seconds'] - result['epochs'], result['accuracy'], result['load']))
    for flip, goal in GOALS.items():
        ratio = results[flip + '-full']['seconds'] / results[flip + '-cache']['seconds']
        say('%-8s cached is %.2fx faster than the full graph  [goal >= %.1fx: %s]'
            % (flip, ratio, goal, 'PASS' if ratio >= goal else 'FAIL'))
    say('\nend: %s; total %.0f s' % (load(), time.perf_counter() - started))


if __name__ == '__main__':
    sys.exit(main())
