"""Staged fine-tuning: `fineturn.py --init-from CHECKPOINT|RUN_DIR` starts a new run from another
run's weights. Stage 1 is conftest's `trained` run (fc6-fc8); stage 2 trains conv5-fc8 at a tenth
of the rate, as docs/USAGE.md's recipe does."""
import csv
import json
import os
import re

import numpy as np
import pytest

import alexnet
import checkpoints
import feature_store
import fineturn
import frozen_features
import netspec
import rundir
import training

STAGE2 = ('--train-layers', 'conv5,fc6,fc7,fc8', '--learning-rate', '1e-5', '--batch-size', '16',
          '--seed', '3')


def stage2_args(records, weights, run_dir, init_from, epochs=1, *extra):
    return [str(a) for a in ('--records-dir', records, '--weights', weights, '--run-dir', run_dir,
                             '--init-from', init_from, '--epochs', epochs) + STAGE2 + extra]


def checkpoint(prefix):
    """The files of a checkpoint that hold its values."""
    return [prefix + suffix for suffix in checkpoints.SUFFIXES[:2]]


def settings_of(args):
    settings = fineturn.settings_from(fineturn.parse_args(args))
    settings.check()
    return settings


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def linked_copy(run_dir, to, model=None):
    """A run dir whose checkpoint files are links to `run_dir`'s (they are 244 MB each), with its
    metrics.csv, best.json and model.json, or `model` (a rundir.Model) instead."""
    os.makedirs(to)
    for name in os.listdir(run_dir):
        if name.startswith(checkpoints.PREFIX + '-'):
            os.symlink(os.path.join(run_dir, name), os.path.join(to, name))
    for name in (rundir.METRICS_FILE, checkpoints.BEST_FILE):
        with open(os.path.join(run_dir, name)) as f, open(os.path.join(to, name), 'w') as g:
            g.write(f.read())
    rundir.write_model(str(to), model or rundir.read_model(run_dir))
    return str(to)


@pytest.mark.parametrize('cache', ['--cache', '--no-cache'])
def test_stage_2_starts_exactly_from_stage_1s_weights(trained, tiny_records, alexnet_npz,
                                                      tmp_path, cache):
    """Before its first step, stage 2 holds every layer of the checkpoint it starts from and
    scores stage 1's validation accuracy and loss at that epoch (epoch 1's are far from
    saturated: a layer from elsewhere shows), and stage 1's test predictions; a run dir starts
    from its best epoch."""
    rows = read_csv(os.path.join(trained, rundir.METRICS_FILE))
    best = checkpoints.best_epoch(rows)
    with open(os.path.join(trained, 'predictions.csv'), newline='') as f:
        confidence = [float(row['confidence']) for row in csv.DictReader(f)]
    keys = {}
    for init_from, row in [(checkpoints.path(trained, 1), rows[0]), (trained, best)]:
        run_dir = tmp_path / os.path.basename(init_from)
        settings = settings_of(stage2_args(tiny_records, alexnet_npz, run_dir, init_from,
                                           1, cache))
        with training.start(settings) as run:
            assert (run.features is not None) == (cache == '--cache')
            held = checkpoints.arrays(checkpoints.find(init_from), netspec.BVLC_ALEXNET)
            for name, variables in alexnet.graph_layers(run.model.graph).items():
                for kind, variable in variables.items():
                    assert np.array_equal(run.session.run(variable), held[name][kind]), name
            validated = run.validate(0)
            assert validated.accuracy == float(row['val_accuracy'])
            assert validated.loss == pytest.approx(float(row['val_loss']), rel=1e-4, abs=2e-6)
            if row is best:
                tested = run.evaluate('test').probabilities.max(axis=1)
                assert tested == pytest.approx(confidence, abs=1e-5)
        with open(run_dir / rundir.INIT_FILE) as f:
            record = json.load(f)
        assert record['checkpoint'] == os.path.abspath(checkpoints.path(trained, int(row['epoch'])))
        assert record['epoch'] == int(row['epoch']) and record['layers'] == list(netspec.LAYER_NAMES)
        if cache == '--cache':
            assert run.store.key.description['weights'] == record['weights_digest']
            keys[init_from] = run.store.folder
    if cache == '--cache':    # the frozen layers' values came from another checkpoint
        assert keys[trained] != keys[checkpoints.path(trained, 1)]


def test_two_stages_record_where_they_started_and_resume_from_their_own(
        trained, tiny_records, alexnet_npz, tmp_path, capsys):
    stage1 = linked_copy(trained, tmp_path / 'stage1')
    best = checkpoints.find(stage1)
    stage2 = tmp_path / 'stage2'
    assert fineturn.main(stage2_args(tiny_records, alexnet_npz, stage2, stage1)) == 0
    out = capsys.readouterr().out
    assert 'loaded %s from %s (--init-from: epoch %d' % (
        ', '.join(netspec.LAYER_NAMES), best, checkpoints.epoch_of(best)) in out
    assert 'initialised nothing from Caffe\'s fillers; training conv5, fc6, fc7, fc8' in out
    assert 'feature cache on: conv1-conv4 frozen' in out
    with open(stage2 / rundir.SETTINGS_FILE) as f:
        saved = json.load(f)
    assert saved['init_from'] == stage1 and saved['skip_layers'] == []
    with open(stage2 / rundir.INIT_FILE) as f:
        started = json.load(f)
    assert started['checkpoint'] == os.path.abspath(best)
    assert started['weights_digest'] == frozen_features.source_digest(alexnet_npz, checkpoint(best))
    assert re.search(r'^features of \d+ images: ', out, re.MULTILINE)    # from the store

    # the frozen layers are stage 1's (here also the weights file's: stage 1 froze them too)
    first = checkpoints.arrays(checkpoints.path(str(stage2), 1), netspec.BVLC_ALEXNET)
    start = checkpoints.arrays(best, netspec.BVLC_ALEXNET)
    for name in ('conv1', 'conv2', 'conv3', 'conv4'):
        assert np.array_equal(first[name]['weights'], start[name]['weights']), name
    assert not np.array_equal(first['conv5']['weights'], start['conv5']['weights'])

    # a resume restores stage 2's own checkpoint, even with stage 1 gone, and keeps its cache
    for name in os.listdir(stage1):
        os.remove(os.path.join(stage1, name))
    os.rmdir(stage1)
    assert fineturn.main(stage2_args(tiny_records, alexnet_npz, stage2, stage1, 2)) == 0
    out = capsys.readouterr().out
    assert 'resuming %s after epoch 1 of 2' % stage2 in out and '--init-from' not in out
    # the same store entries: keyed by the recorded digest, not one of the files now
    assert re.search(r'^features of (\d+) images: \1 reused from .*, 0 computed', out, re.MULTILINE)
    with open(stage2 / rundir.INIT_FILE) as f:
        assert json.load(f) == started
    assert [row['epoch'] for row in read_csv(stage2 / rundir.METRICS_FILE)] == ['1', '2']

    # the run keeps where it started: a rerun without --init-from is another recipe
    args = stage2_args(tiny_records, alexnet_npz, stage2, stage1, 3)
    at = args.index('--init-from')
    assert fineturn.main(args[:at] + args[at + 2:]) == 1
    err = capsys.readouterr().err
    assert 'was trained with other init_from' in err and len(err.strip().splitlines()) == 1


def test_a_checkpoint_of_other_classes_or_another_network_is_refused(
        trained, tiny_records, alexnet_npz, tmp_path, capsys):
    model = rundir.read_model(trained)
    others = {
        'classes': rundir.Model(model.classes[::-1], model.structure, model.mean),
        'network': rundir.Model(model.classes,
                                netspec.CAFFENET.with_classes(len(model.classes)), model.mean),
        'mean': rundir.Model(model.classes, model.structure, (100.0, 110.0, 120.0)),
    }
    messages = {'classes': 'was trained on other classes than labels.txt in',
                'network': 'that run\'s network differs from the one of --weights',
                'mean': 'that run subtracted another mean than --weights does'}
    for name, other in others.items():
        source = linked_copy(trained, tmp_path / name, other)
        args = stage2_args(tiny_records, alexnet_npz, tmp_path / ('run-' + name), source)
        assert fineturn.main(args) == 1, name
        err = capsys.readouterr().err
        assert messages[name] in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / ('run-' + name) / rundir.INIT_FILE)
    # other classes: fc8 can start from the fillers instead; every other layer is the run's
    settings = settings_of(stage2_args(tiny_records, alexnet_npz, tmp_path / 'x',
                                       tmp_path / 'classes', 1, '--skip-layers', 'fc8'))
    weights, (prefix, held) = training.read_pretrained(settings, model.classes)
    assert held == list(netspec.LAYER_NAMES[:-1])
    start = checkpoints.arrays(prefix, netspec.BVLC_ALEXNET)
    assert np.array_equal(weights['fc7']['weights'], start['fc7']['weights'])


def test_the_weights_digest_covers_the_init_checkpoint(trained, alexnet_npz):
    """The one function feature_store's FeatureKey takes the frozen layers' source from: the
    weights file's digest alone without --init-from, and another one for each checkpoint started
    from."""
    alone = frozen_features.source_digest(alexnet_npz)
    assert alone == feature_store.file_digest(alexnet_npz).hexdigest()
    digests = {frozen_features.source_digest(alexnet_npz,
                                             checkpoint(checkpoints.path(trained, epoch)))
               for epoch in (1, 2, 3)}
    assert len(digests) == 3 and alone not in digests


def test_init_from_is_a_recipe_knob_that_loads_every_layer():
    args = fineturn.parse_args(['--init-from', 'runs/stage1/'])
    assert args.init_from == os.path.join('runs', 'stage1') and args.skip_layers == []
    assert fineturn.parse_args(['--init-from', 'x', '--skip-layers', 'fc8']).skip_layers == ['fc8']
    assert fineturn.parse_args([]).init_from is None
    assert fineturn.parse_args([]).skip_layers == ['fc8']
    settings = fineturn.settings_from(fineturn.parse_args(['--init-from', 'a']))
    assert settings.recipe_changes(dict(settings.saved(), init_from='b')) == ['init_from']
    plain = fineturn.settings_from(fineturn.parse_args([]))
    old = {key: value for key, value in plain.saved().items() if key != 'init_from'}
    assert plain.recipe_changes(old) == []        # runs from before --init-from had none
