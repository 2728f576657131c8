"""fineturn.py end to end on a tiny generated dataset and generated AlexNet weights."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import alexnet
import checkpoints
import fineturn
import netspec
import records
import report
import rundir
import training
import weights_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')


def run(args, capsys=None):
    code = fineturn.main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return code, out


def base_args(data, weights, run_dir, epochs=3, *extra):
    """The recipe of conftest's `trained` run (TRAINED_RECIPE), for `epochs`."""
    return ['--records-dir', data, '--weights', weights, '--run-dir', run_dir, '--epochs', epochs,
            '--batch-size', 16, '--learning-rate', 1e-4, '--seed', 3] + list(extra)


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_run_outputs_and_accuracy(trained, tiny_records):
    for name in ('metrics.csv', 'best.json', 'test_report.json', 'test_report.md',
                 'predictions.csv', 'confusion_matrix.png', 'curves.png', 'settings.json'):
        assert os.path.getsize(os.path.join(trained, name)) > 0, name
    rows = read_csv(os.path.join(trained, 'metrics.csv'))
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert list(rows[0]) == list(rundir.METRICS_HEADER)
    for epoch in (1, 2, 3):
        assert checkpoints.exists(trained, epoch)
        assert os.path.getsize(checkpoints.path(trained, epoch) + '.meta') < 1 << 20
    # lr decays once per epoch
    rates = [float(r['learning_rate']) for r in rows]
    assert rates[1] == pytest.approx(rates[0] * 0.99, rel=1e-4)
    result = json.load(open(os.path.join(trained, 'test_report.json')))
    chance = 1 / len(result['classes'])
    assert result['accuracy'] >= 0.6 > 2 * chance
    best = json.load(open(os.path.join(trained, 'best.json')))
    assert best['checkpoint'] == 'model.ckpt-%d' % best['epoch']
    # the choice itself is tested on hand-written rows (test_checkpoints); here, that the run
    # recorded an epoch of the highest validation accuracy
    assert float(rows[best['epoch'] - 1]['val_accuracy']) == \
        max(float(r['val_accuracy']) for r in rows) == best['val_accuracy']


def test_run_records_its_model_for_later_use(trained, tiny_records):
    """model.json: the class names of labels.txt, in order, and the network the run trained."""
    model = rundir.read_model(trained)
    with open(os.path.join(tiny_records, 'labels.txt')) as f:
        assert model.classes == f.read().split()
    assert model.structure.num_classes == len(model.classes) == 5
    assert model.structure.names == alexnet.LAYER_NAMES
    assert tuple(model.mean) == weights_file.IMAGENET_MEAN_BGR
    os.remove(os.path.join(trained, 'model.json'))
    try:
        with pytest.raises(rundir.RunError, match='Rerun the training command'):
            rundir.read_model(trained)
    finally:
        rundir.write_model(trained, model)


def test_report_agrees_with_predictions(trained, tiny_records):
    result = json.load(open(os.path.join(trained, 'test_report.json')))
    predictions = read_csv(os.path.join(trained, 'predictions.csv'))
    split = [r for r in read_csv(os.path.join(tiny_records, 'split.csv')) if r['split'] == 'test']
    # every test image once, with its label
    assert sorted((p['path'], p['label']) for p in predictions) == \
        sorted((s['path'], s['label']) for s in split)
    labels = [int(p['label']) for p in predictions]
    predicted = [int(p['predicted']) for p in predictions]
    matrix = report.confusion_matrix(labels, predicted, len(result['classes']))
    assert matrix.tolist() == result['confusion_matrix']
    assert result['accuracy'] == pytest.approx(np.mean(np.equal(labels, predicted)))
    for c in range(len(result['classes'])):
        said = [p for p, l in zip(predicted, labels) if p == c]
        true = [l for p, l in zip(predicted, labels) if p == c]
        if said:
            assert result['precision'][c] == pytest.approx(np.mean(np.equal(true, c)), abs=1e-6)
        assert result['support'][c] == labels.count(c)
    assert all(0 < float(p['confidence']) <= 1 for p in predictions)


def test_frozen_layers_bit_identical_and_trained_layers_moved(trained, alexnet_npz, tiny_records):
    weights = alexnet.read_weights(alexnet_npz)
    reader = tf.train.load_checkpoint(checkpoints.path(trained, 3))
    for layer in CONV:
        for kind in ('weights', 'biases'):
            assert np.array_equal(reader.get_tensor('%s/%s' % (layer, kind)),
                                  weights[layer][kind]), layer
    assert not np.array_equal(reader.get_tensor('fc6/weights'), weights['fc6']['weights'])
    classes = open(os.path.join(tiny_records, 'labels.txt')).read().split()
    assert reader.get_tensor('fc8/biases').shape == (len(classes),)


@pytest.mark.parametrize('weights, mean_shape, flips, epochs', [
    ('alexnet_npz', (3,), ['--no-flip'], 2),
    ('mean_image_npz', (256, 256, 3), [], 1),
], ids=['per_channel_mean', 'mean_image_and_flips'])
def test_cache_and_full_graph_agree_exactly(tiny_records, request, tmp_path, capsys, weights,
                                            mean_shape, flips, epochs):
    """Dropout off: the cached head and the full graph see identical batches and take the same
    steps. With a mean image and flips, each flipped image is flip(crop - mean) on both paths (a
    flipped mean image on one of them changes its first steps)."""
    weights = request.getfixturevalue(weights)
    metrics, trained_layers = {}, {}
    for mode, extra in (('cache', []), ('full', ['--no-cache'])):
        run_dir = tmp_path / mode
        code, out = run(base_args(tiny_records, weights, run_dir, epochs, '--keep-prob', 1,
                                  *flips, *extra), capsys)
        assert code == 0, out.err
        assert ('feature cache on' if mode == 'cache' else '--no-cache') in out.out
        assert np.shape(rundir.read_model(str(run_dir)).mean) == mean_shape
        metrics[mode] = read_csv(run_dir / 'metrics.csv')
        reader = tf.train.load_checkpoint(checkpoints.path(str(run_dir), 1))
        trained_layers[mode] = {name: reader.get_tensor(name) for name in (
            '%s/%s' % (layer, kind) for layer in ('fc6', 'fc7', 'fc8')
            for kind in ('weights', 'biases'))}
    assert len(metrics['cache']) == len(metrics['full']) == epochs
    for cached, full in zip(metrics['cache'], metrics['full']):
        for key in ('train_loss', 'train_accuracy', 'val_loss', 'val_accuracy'):
            assert float(cached[key]) == pytest.approx(float(full[key]), rel=1e-4, abs=1e-6), key
    # the first epoch's steps moved the trained layers the same way (bit-identical here; with a
    # flipped mean image on the cache path they end 3e-4 to 2e-3 apart)
    for name, full in trained_layers['full'].items():
        np.testing.assert_allclose(trained_layers['cache'][name], full, rtol=0, atol=1e-6,
                                   err_msg=name)


def test_cache_and_full_graph_comparable_with_flips_and_dropout(trained, tiny_records, alexnet_npz,
                                                               tmp_path, capsys):
    """The default recipe (flips, dropout 0.5) through the full graph: the same outputs as the
    cached run of the `trained` fixture, and comparable figures (only dropout masks differ)."""
    run_dir = tmp_path / 'full'
    code, out = run(base_args(tiny_records, alexnet_npz, run_dir, 3, '--no-cache'), capsys)
    assert code == 0, out.err
    def outputs(folder):   # all but the TensorBoard file's unique name and evaluations
        return sorted(n for n in os.listdir(folder) if not n.startswith(('events.', 'evaluate-')))
    assert outputs(run_dir) == outputs(trained)
    full = read_csv(run_dir / 'metrics.csv')
    cached = read_csv(os.path.join(trained, 'metrics.csv'))
    for a, b in zip(full, cached):
        assert float(a['train_loss']) == pytest.approx(float(b['train_loss']), rel=0.5)
    full_test = json.load(open(run_dir / 'test_report.json'))['accuracy']
    cached_test = json.load(open(os.path.join(trained, 'test_report.json')))['accuracy']
    assert abs(full_test - cached_test) <= 0.3


def test_shuffle_order_is_the_same_for_records_and_bare_indices():
    """The full graph shuffles (index, record) pairs, the cache path bare indices: same order."""
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(3)
        seed = tf.compat.v1.placeholder(tf.int64, [])
        bare = records.shuffle_with_variants(tf.data.Dataset.range(50), 50, seed, True)
        indexed = tf.data.Dataset.zip((tf.data.Dataset.range(50),
                                       tf.data.Dataset.range(50).map(tf.strings.as_string)))
        paired = records.shuffle_with_variants(indexed, 50, seed, True)
        iterators = [tf.compat.v1.data.make_initializable_iterator(d.batch(50))
                     for d in (bare, paired)]
        with tf.compat.v1.Session() as session:
            def draw(epoch_seed):
                session.run([i.initializer for i in iterators], {seed: epoch_seed})
                return session.run([i.get_next() for i in iterators])
            ((pos_a, var_a), idx_a), ((pos_b, var_b), (idx_b, rec_b)) = draw(10)
            ((_, var_c), idx_c), _ = draw(11)
    assert np.array_equal(idx_a, idx_b) and np.array_equal(var_a, var_b)
    assert [r.decode() for r in rec_b] == [str(i) for i in idx_b]
    assert sorted(idx_a) == list(range(50)) and list(idx_a) != list(range(50))
    assert set(var_a) == {0, 1, 2, 3}
    assert not np.array_equal(idx_a, idx_c)     # another epoch, another order


@pytest.mark.parametrize('flags, on, says', [
    ([], True, 'pool5 (the input of fc6)'),
    (['--train-layers', 'conv5,fc6,fc7,fc8'], True, 'conv4 (the input of conv5)'),
    (['--train-layers', 'fc8', '--skip-layers', 'fc8'], True, 'fc7 (the input of fc8)'),
    (['--train-layers', 'conv1,fc8'], False, 'conv1 is trained'),
    (['--no-cache'], False, '--no-cache'),
])
def test_cache_decision_follows_the_lowest_trained_layer(flags, on, says):
    used, why = training.cache_decision(fineturn.settings_from(fineturn.parse_args(flags)))
    assert used is on and says in why


@pytest.mark.parametrize('cached', [False, True])
def test_iterator_pipelines_run_without_autotune(tiny_records, alexnet_npz, tmp_path, cached):
    """Every dataset the shared iterator is initialised from has tf.data autotuning off (with it
    on, switching the iterator from training to validation stalls at random for tens of seconds)."""
    from tensorflow.core.framework import dataset_options_pb2
    settings = fineturn.settings_from(fineturn.parse_args(
        [str(a) for a in base_args(tiny_records, alexnet_npz, tmp_path)]))
    model = training.TrainingGraph(settings, netspec.BVLC_ALEXNET.with_classes(5),
                                   weights_file.IMAGENET_MEAN_BGR,
                                   records.own_parts(tiny_records), cached)
    makers = [op for op in model.graph.get_operations() if op.type == 'MakeIterator']
    assert len(makers) == (2 if cached else 3)     # train, validation, test; or extraction, order
    for op in makers:
        dataset = op.inputs[0].op
        while dataset.type != 'OptionsDataset':
            assert dataset.type in ('PrefetchDataset', 'ModelDataset'), (op.name, dataset.type)
            dataset = dataset.inputs[0].op
        options = dataset_options_pb2.Options.FromString(dataset.get_attr('serialized_options'))
        assert options.autotune_options.HasField('enabled'), op.name
        assert options.autotune_options.enabled is False, op.name


def test_ctrl_c_then_kill_9_then_resume(tiny_records, alexnet_npz, tmp_path):
    """Ctrl-C stops cleanly after a step; kill -9 at any moment leaves the run resumable; the
    finished run has each epoch exactly once."""
    run_dir = tmp_path / 'run'
    command = [sys.executable, os.path.join(ROOT, 'fineturn.py')] + \
        [str(a) for a in base_args(tiny_records, alexnet_npz, run_dir, 4, '--no-cache')]

    def start_and_wait_for_epoch(epoch):
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 240
        while not checkpoints.exists(run_dir, epoch) and time.time() < deadline:
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.1)
        return process

    process = start_and_wait_for_epoch(1)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert 'Rerun the same command' in output and 'Traceback' not in output
    stopped = len(rundir.completed_epochs(str(run_dir)))
    assert 1 <= stopped < 4

    process = start_and_wait_for_epoch(stopped + 1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = rundir.completed_epochs(str(run_dir))
    assert stopped + 1 <= len(done) + 1     # the newest epoch may lack its row: it reruns

    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert 'resuming' in finished.stdout and 'after epoch %d' % len(done) in finished.stdout
    rows = read_csv(run_dir / 'metrics.csv')
    assert [int(r['epoch']) for r in rows] == [1, 2, 3, 4]
    assert os.path.exists(run_dir / 'test_report.json')


def test_resume_redoes_an_epoch_whose_row_was_not_written(trained, tiny_records, alexnet_npz,
                                                          tmp_path, capsys):
    """A kill between saving checkpoint 3 and its metrics row: epoch 3 runs again, once."""
    import shutil
    run_dir = tmp_path / 'copy'
    shutil.copytree(trained, run_dir)
    rows = read_csv(run_dir / 'metrics.csv')[:2]
    rundir.write_metrics(str(run_dir), rows)
    code, out = run(base_args(tiny_records, alexnet_npz, run_dir), capsys)
    assert code == 0, out.err
    assert 'resuming' in out.out and 'after epoch 2' in out.out
    assert [int(r['epoch']) for r in read_csv(run_dir / 'metrics.csv')] == [1, 2, 3]


def test_evaluate_any_checkpoint(trained, tiny_records, alexnet_npz, capsys):
    code, out = run(base_args(tiny_records, alexnet_npz, trained) +
                    ['--evaluate', checkpoints.path(trained, 1) + '.index'], capsys)
    assert code == 0, out.err
    out_dir = os.path.join(trained, 'evaluate-model.ckpt-1')
    result = json.load(open(os.path.join(out_dir, 'test_report.json')))
    predictions = read_csv(os.path.join(out_dir, 'predictions.csv'))
    assert result['total'] == len(predictions) and result['checkpoint'].endswith('model.ckpt-1')


@pytest.mark.parametrize('extra, message', [
    (['--train-layers', 'fc6,fc9'], 'unknown layer(s) fc9'),
    (['--skip-layers', 'none'], 'add fc8 to --skip-layers'),
    (['--skip-layers', 'fc7,fc8', '--train-layers', 'fc8'], 'neither loaded nor trained'),
    (['--learning-rate', '1e30', '--no-cache'], 'at epoch 1, step'),
])
def test_bad_settings_are_one_line_errors(tiny_records, alexnet_npz, tmp_path, capsys, extra,
                                          message):
    code, out = run(base_args(tiny_records, alexnet_npz, tmp_path / 'run', 1) + extra, capsys)
    assert code == 1
    assert message in out.err and 'Traceback' not in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_missing_inputs_name_the_command(tiny_records, alexnet_npz, tmp_path, capsys):
    code, out = run(base_args(tmp_path / 'nothing', alexnet_npz, tmp_path / 'a', 1), capsys)
    assert code == 1 and 'convert_tfrecord.py' in out.err
    code, out = run(base_args(tiny_records, tmp_path / 'absent.npz', tmp_path / 'b', 1), capsys)
    assert code == 1 and 'caffe_to_npy' in out.err


def test_resume_with_pruned_checkpoints(trained, tiny_records, alexnet_npz, tmp_path, capsys):
    """--keep-checkpoints deletes old epochs' checkpoints; the run still resumes from the last."""
    import shutil
    run_dir = tmp_path / 'pruned'
    shutil.copytree(trained, run_dir)
    rows = read_csv(run_dir / 'metrics.csv')
    checkpoints.prune(str(run_dir), rows, keep=1)
    kept = {epoch for epoch in (1, 2, 3) if checkpoints.exists(run_dir, epoch)}
    assert kept == {3, int(checkpoints.best_epoch(rows)['epoch'])}
    code, out = run(base_args(tiny_records, alexnet_npz, run_dir, 4, '--keep-checkpoints', 1),
                    capsys)
    assert code == 0, out.err
    assert 'resuming' in out.out and 'after epoch 3' in out.out
    assert [int(r['epoch']) for r in read_csv(run_dir / 'metrics.csv')] == [1, 2, 3, 4]
    assert checkpoints.exists(run_dir, 4)
