"""checkpoints.py: resuming past damaged checkpoints, the disk-space warning, finding a checkpoint
and the test report read back through report.py. (Damaged checkpoint files under a real run:
tests/test_faults.py.)"""
import json
import os

import pytest

import checkpoints
import fineturn
import report
import rundir


def rows(run_dir, n):
    """Metrics rows of epochs 1 .. n, validated, as training records them."""
    return [rundir.metrics_row(e, 1.0, 0.5, 1.0, 0.1 * e, 1e-4, 1.0, checkpoints.path(run_dir, e))
            for e in range(1, n + 1)]


def test_resume_takes_the_newest_checkpoint_that_restores(tmp_path):
    run_dir = str(tmp_path)
    metrics_rows = rows(run_dir, 5)
    rundir.write_metrics(run_dir, metrics_rows)
    for epoch in (2, 4, 5):                # 1 and 3 pruned
        for suffix in checkpoints.SUFFIXES:
            open(checkpoints.path(run_dir, epoch) + suffix, 'w').close()
    os.remove(checkpoints.path(run_dir, 5) + '.index')
    tried, warned = [], []

    def restore(prefix):
        tried.append(os.path.basename(prefix))
        return 'checksum mismatch' if prefix.endswith('-4') else None
    resumed = checkpoints.resume(run_dir, metrics_rows, restore, warned.append)
    assert [r['epoch'] for r in resumed] == [1, 2] and tried == ['model.ckpt-4', 'model.ckpt-2']
    assert len(warned) == 2 and 'missing model.ckpt-5.index' in warned[0]
    assert 'model.ckpt-4 of epoch 4 does not restore (checksum mismatch)' in warned[1]
    assert [r['epoch'] for r in rundir.completed_epochs(run_dir)] == ['1', '2']
    assert [r['checkpoint'] for r in rundir.completed_epochs(run_dir)] == ['model.ckpt-1',
                                                                          'model.ckpt-2']
    warned.clear()
    assert checkpoints.resume(run_dir, rundir.completed_epochs(run_dir), lambda p: 'damaged',
                              warned.append) == []
    assert 'starting again from the pretrained weights' in warned[-1]
    assert rundir.completed_epochs(run_dir) == []


def test_space_warning_counts_what_is_kept(tmp_path, monkeypatch):
    settings = fineturn.settings_from(fineturn.parse_args(['--run-dir', str(tmp_path)]))
    assert settings.keep_checkpoints == 5 and settings.epochs == 20      # the defaults
    store = str(tmp_path / 'store')                 # not made yet: its parent's file system
    monkeypatch.setattr(checkpoints, 'free_space', lambda path: 10e9)
    assert checkpoints.space_warning(str(tmp_path), 20, 5, 0, 200e6, (store, 260e6)) is None
    monkeypatch.setattr(checkpoints, 'free_space', lambda path: 1.1e9)
    warning = checkpoints.space_warning(str(tmp_path), 20, 5, 0, 200e6, (store, 260e6))
    # the last 5, the best and the one being written: 7 x 200 MB, and the new store entries
    assert 'about 1.7 GB more' in warning and 'up to 7 checkpoints of 200.0 MB' in warning
    assert '260.0 MB of new features in the feature store %s' % store in warning
    assert '1.1 GB is free' in warning and '--keep-checkpoints N (now 5' in warning
    assert 'up to 20 checkpoints' in checkpoints.space_warning(str(tmp_path), 20, 0, 0, 200e6)
    # a store on another file system is counted there, and named with its own fix
    monkeypatch.setattr(checkpoints, 'same_file_system', lambda path, other: False)
    warning = checkpoints.space_warning(str(tmp_path), 2, 5, 0, 200e6, (store, 1.2e9))
    assert warning.startswith('the feature store %s may need about 1.2 GB more' % store)
    assert 'pass another --feature-store' in warning and 'checkpoints' not in warning


def test_find_takes_a_prefix_a_file_or_a_run_dir(tmp_path):
    run_dir = str(tmp_path)
    for suffix in checkpoints.SUFFIXES:
        open(checkpoints.path(run_dir, 3) + suffix, 'w').close()
    prefix = checkpoints.path(run_dir, 3)
    assert checkpoints.find(prefix) == checkpoints.find(prefix + '.index') == prefix
    assert checkpoints.find(prefix + '.data-00000-of-00001') == prefix
    with pytest.raises(rundir.RunError, match='has no best.json'):
        checkpoints.find(run_dir)
    checkpoints.write_best(run_dir, rows(run_dir, 3))
    assert checkpoints.find(run_dir) == prefix             # the best: the highest val accuracy
    with pytest.raises(rundir.RunError, match='no checkpoint .*model.ckpt-4.index'):
        checkpoints.find(checkpoints.path(run_dir, 4))


def test_a_test_report_is_read_back_through_report(tmp_path):
    """write_report records the checkpoint relative to the report; read_report gives it back as a
    path, None for a missing report and a ReportError for a damaged one."""
    run_dir = str(tmp_path / 'run')
    prefix = checkpoints.path(run_dir, 2)
    out_dir = report.evaluation_dir(prefix, 10)
    assert out_dir == os.path.join(run_dir, 'evaluate-model.ckpt-2-10crop')
    assert report.evaluation_dir(prefix, 1) == os.path.join(run_dir, 'evaluate-model.ckpt-2')
    assert report.read_report(out_dir) is None
    os.makedirs(out_dir)
    written = report.write_report(out_dir, ['a', 'b'], ['x.tif', 'y.tif'], [0, 1],
                                  [[0.9, 0.1], [0.8, 0.2]], prefix, views=10)
    assert written['checkpoint'] == os.path.join('..', 'model.ckpt-2')
    found = report.read_report(out_dir)
    assert found['checkpoint'] == os.path.normpath(prefix) and found['crops'] == 10
    assert (found['accuracy'], found['correct'], found['total']) == (0.5, 1, 2)
    with open(os.path.join(out_dir, report.REPORT_FILE), 'w') as f:
        f.write('{"accuracy": 0.5')
    with pytest.raises(report.ReportError, match='is damaged'):
        report.read_report(out_dir)


@pytest.mark.parametrize('val_accuracy_loss, best', [
    # the highest accuracy wins over lower losses, and a worse last epoch is not chosen
    ([('0.400000', '1.900000'), ('0.850000', '0.600000'), ('0.700000', '0.450000'),
      ('0.800000', '0.500000')], 2),
    # a tie on accuracy: the lower loss (as numbers: '10.25' sorts before '9.5' as text)
    ([('0.500000', '1.400000'), ('0.900000', '10.250000'), ('0.900000', '9.500000'),
      ('0.600000', '0.300000')], 3),
    # a tie on accuracy and loss: the earlier epoch
    ([('0.700000', '0.800000'), ('0.950000', '0.200000'), ('0.950000', '0.200000')], 2),
], ids=['highest_accuracy', 'tie_lower_loss', 'tie_earlier_epoch'])
def test_best_epoch_has_the_highest_validation_accuracy(tmp_path, val_accuracy_loss, best):
    """Hand-written metrics.csv rows, read back as training reads them: best_epoch and best.json
    name the documented choice (highest val_accuracy; ties: lower val_loss, then the earlier
    epoch)."""
    run_dir = str(tmp_path)
    with open(os.path.join(run_dir, rundir.METRICS_FILE), 'w') as f:
        f.write(','.join(rundir.METRICS_HEADER) + '\n')
        for epoch, (accuracy, loss) in enumerate(val_accuracy_loss, start=1):
            f.write('%d,1.000000,0.500000,%s,%s,0.0001,1.00,model.ckpt-%d\n'
                    % (epoch, loss, accuracy, epoch))
    rows = rundir.completed_epochs(run_dir)
    assert len(rows) == len(val_accuracy_loss)
    assert checkpoints.best_epoch(rows)['epoch'] == str(best)
    checkpoints.write_best(run_dir, rows)
    with open(os.path.join(run_dir, checkpoints.BEST_FILE)) as f:
        accuracy, loss = val_accuracy_loss[best - 1]
        assert json.load(f) == {'epoch': best, 'val_accuracy': float(accuracy),
                                'val_loss': float(loss), 'checkpoint': 'model.ckpt-%d' % best,
                                'selection': 'the best validation accuracy'}


def test_without_validation_the_last_epoch_is_tested(tmp_path):
    """A protocol's VAL = 0: the rows have empty validation columns, and the last epoch is the
    one tested (best.json says so), however the training accuracy went."""
    run_dir = str(tmp_path)
    written = [rundir.metrics_row(epoch, 1.0, accuracy, None, None, 1e-4, 1.0,
                                  checkpoints.path(run_dir, epoch))
               for epoch, accuracy in ((1, 0.9), (2, 0.95), (3, 0.5))]
    rundir.write_metrics(run_dir, written)
    read = rundir.completed_epochs(run_dir)
    assert read[0]['val_accuracy'] == read[0]['val_loss'] == ''
    assert not checkpoints.validated(read) and checkpoints.validated(rows(run_dir, 3))
    assert checkpoints.best_epoch(read)['epoch'] == '3'
    checkpoints.write_best(run_dir, read)
    with open(os.path.join(run_dir, checkpoints.BEST_FILE)) as f:
        assert json.load(f) == {'epoch': 3, 'val_accuracy': None, 'val_loss': None,
                                'checkpoint': 'model.ckpt-3',
                                'selection': 'the last epoch (no validation part)'}
    for epoch in (1, 2, 3):
        for suffix in checkpoints.SUFFIXES:
            open(checkpoints.path(run_dir, epoch) + suffix, 'w').close()
    checkpoints.prune(run_dir, read, keep=1)             # the last is also the "best": kept
    assert [checkpoints.exists(run_dir, epoch) for epoch in (1, 2, 3)] == [False, False, True]
