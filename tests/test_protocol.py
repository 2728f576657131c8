"""The protocol's table: aggregates equal numpy's over the per-split reports; identity checks."""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix, recall_score

import protocol
import protocol_table
import report
from fault_injection import temporary_files
from protocol import Identity, ProtocolError, SplitResult

CLASSES = ['airplane', 'beach', 'forest']
RECIPE = {'classifier': 'finetune', 'train_layers': ['fc6', 'fc7', 'fc8'], 'epochs': 20,
          'learning_rate': 1e-4, 'weights': 'abc123'}


def identity(**changes):
    return Identity(**dict(dict(records_dir='/data/ucm', pool_digest='d1', seed=42,
                                ratios=(0.7, 0.1, 0.2), recipe=dict(RECIPE)), **changes))


@pytest.fixture(autouse=True)
def no_split_figures(monkeypatch):
    """The splits' own confusion figures are not looked at here: don't spend seconds drawing."""
    monkeypatch.setattr(report, 'plot_confusion', lambda path, found: None)


def make_splits(root, count=4, seed=0, missing=()):
    """Run dirs split-01 .. with test reports as report.py writes them, from random predictions
    of different quality; returns (SplitResults, [(labels, predicted)])."""
    rng = np.random.default_rng(seed)
    results, truth = [], []
    for k in range(1, count + 1):
        run_dir = os.path.join(str(root), 'split-%02d' % k)
        os.makedirs(run_dir)
        labels = np.repeat(np.arange(3), [30, 20, 10])      # unbalanced, as real test parts are
        predicted = np.where(rng.random(60) < 0.6 + 0.08 * k, labels, rng.integers(0, 3, 60))
        if k not in missing:
            report.write_report(run_dir, CLASSES, ['x%d.tif' % i for i in range(60)], labels,
                                np.eye(3)[predicted], 'model.ckpt-%d' % (10 + k))
        truth.append((labels, predicted))
        results.append(SplitResult(k, 42000 + k, run_dir,
                                   {'train': 140, 'validation': 20, 'test': 60}, 10 + k,
                                   0.8 + 0.01 * k, 100.0 + k))
    return results, truth


def test_the_aggregate_equals_numpy_over_the_split_reports(tmp_path):
    results, truth = make_splits(tmp_path)
    figures, line = protocol_table.write(str(tmp_path), identity(), results,
                                   'python fineturn.py --splits 4', 420.0)
    with open(tmp_path / protocol_table.JSON_FILE, encoding='utf-8') as f:
        assert json.load(f) == json.loads(json.dumps(figures))
    accuracy = [np.mean(labels == predicted) for labels, predicted in truth]
    kappa = [cohen_kappa_score(labels, predicted) for labels, predicted in truth]
    recall = [recall_score(labels, predicted, average=None) for labels, predicted in truth]
    mean_confusion = np.mean([confusion_matrix(labels, predicted, normalize='true')
                              for labels, predicted in truth], axis=0)
    assert len(set(accuracy)) > 1                     # the splits differ, so std means something
    assert figures['oa']['mean'] == pytest.approx(np.mean(accuracy), abs=1e-12)
    assert figures['oa']['std'] == pytest.approx(np.std(accuracy, ddof=1), abs=1e-12)
    assert figures['kappa']['mean'] == pytest.approx(np.mean(kappa), abs=1e-12)
    assert figures['kappa']['std'] == pytest.approx(np.std(kappa, ddof=1), abs=1e-12)
    np.testing.assert_allclose(figures['per_class_accuracy']['mean'], np.mean(recall, 0))
    np.testing.assert_allclose(figures['per_class_accuracy']['std'], np.std(recall, 0, ddof=1))
    np.testing.assert_allclose(figures['mean_confusion'], mean_confusion, atol=1e-6)
    assert [row['oa'] for row in figures['splits']] == pytest.approx(accuracy)
    assert [row['seed'] for row in figures['splits']] == [42001, 42002, 42003, 42004]
    assert figures['seconds'] == {'total': 420.0, 'per_split': 102.5}

    shown = '%.2f ± %.2f %%' % (100 * np.mean(accuracy), 100 * np.std(accuracy, ddof=1))
    assert line == 'OA %s over 4 splits (70/10/20, fc6-fc8 fine-tuned)  %s' % (
        shown, os.path.join(str(tmp_path), 'protocol.md'))
    table = (tmp_path / protocol_table.TABLE_FILE).read_text(encoding='utf-8')
    assert 'OA **%s** over 4 split(s)' % shown in table
    assert 'sample standard deviation over the splits (ddof = 1)' in table
    assert '- command: `python fineturn.py --splits 4`' in table
    assert '| split-02 | 42002 | 140 | 20 | 60 | 12 | 0.8200 | %.2f %% |' % (100 * accuracy[1]) \
        in table
    assert 'each split tested its epoch of best validation accuracy' in table
    assert (tmp_path / protocol_table.FIGURE_FILE).read_bytes()[:4] == b'\x89PNG'
    assert temporary_files(str(tmp_path)) == []


def test_kappa_by_hand():
    # 50 images: p_o = (30 + 5)/50 = 0.7; rows 40, 10 and columns 35, 15 give
    # p_e = (40*35 + 10*15) / 50^2 = 0.62, so kappa = (0.7 - 0.62) / (1 - 0.62) = 4/19
    assert report.cohen_kappa([[30, 10], [5, 5]]) == pytest.approx(4 / 19, abs=1e-15)
    assert report.cohen_kappa([[10, 0, 0], [0, 7, 0], [0, 0, 3]]) == 1.0
    assert np.isnan(report.cohen_kappa([[5]]))
    labels = [0, 0, 1, 1, 2, 2, 2, 1, 0, 2]
    predicted = [0, 0, 0, 1, 2, 0, 2, 2, 0, 0]
    assert report.cohen_kappa(report.confusion_matrix(labels, predicted, 3)) == \
        pytest.approx(cohen_kappa_score(labels, predicted), abs=1e-15)


def test_unfinished_splits_are_named_and_nothing_is_written(tmp_path):
    results, _ = make_splits(tmp_path, count=5, missing=(2, 5))
    with pytest.raises(ProtocolError, match=r'^cannot write the table yet: split-02, split-05 of '
                                            r'5 split\(s\) have no test report: run them \(the '
                                            r'same command without --split runs what is '
                                            r'missing\)$'):
        protocol_table.write(str(tmp_path), identity(), results, 'cmd', 1.0)
    assert not any(name.startswith('protocol') for name in os.listdir(tmp_path))


def test_no_validation_part_and_one_split(tmp_path):
    results, truth = make_splits(tmp_path, count=1)
    results[0].val_accuracy = None
    figures, line = protocol_table.write(str(tmp_path), identity(ratios=(0.8, 0, 0.2)), results,
                                   'cmd', 9.0)
    assert figures['oa']['std'] is None and figures['kappa']['std'] is None
    oa = 100 * np.mean(truth[0][0] == truth[0][1])
    assert line.startswith('OA %.2f %% over 1 split (80/0/20, fc6-fc8 fine-tuned)  ' % oa)
    table = (tmp_path / protocol_table.TABLE_FILE).read_text(encoding='utf-8')
    assert 'each split tested its last epoch (no validation selection)' in table
    assert '| 11 | — |' in table


def test_svm_method_in_words(tmp_path):
    results, _ = make_splits(tmp_path, count=2)
    for result in results:
        result.best_epoch = result.val_accuracy = None
    recipe = {'classifier': 'svm', 'svm_layer': 'fc7', 'svm_c': 1.0, 'weights': 'abc123'}
    _, line = protocol_table.write(str(tmp_path), identity(recipe=recipe, ratios=(0.8, 0, 0.2)),
                             results, 'cmd', 5.0)
    assert '(80/0/20, fc7 + linear SVM (C=1))' in line
    assert 'no epochs, no validation selection' in (tmp_path / 'protocol.md').read_text('utf-8')


def test_a_damaged_report_is_one_line(tmp_path):
    results, _ = make_splits(tmp_path, count=2)
    path = os.path.join(results[1].run_dir, 'test_report.json')
    with open(path, 'w', encoding='utf-8') as f:
        f.write('{"classes": ["a"], "confusion')
    with pytest.raises(report.ReportError, match=r'^%s is damaged \(.*\): rerun the command '
                                                 r'that made it' % path):
        protocol_table.write(str(tmp_path), identity(), results, 'cmd', 1.0)
    assert report.read_report(str(tmp_path)) is None


def test_identity_is_recorded_then_checked(tmp_path):
    run_dir = str(tmp_path)
    protocol.check_identity(run_dir, identity())
    with open(tmp_path / protocol.IDENTITY_FILE, encoding='utf-8') as f:
        assert json.load(f)['pool_digest'] == 'd1'
    protocol.check_identity(run_dir, identity())
    protocol.check_identity(run_dir, identity(records_dir='/mnt/elsewhere/ucm'))   # moved
    with pytest.raises(ProtocolError, match=r'^%s holds a protocol started with other records '
                                            r'\(/data/ucm then, /data/aid now\): use a new '
                                            r'--run-dir, or the records and settings it started '
                                            r'with$' % run_dir):
        protocol.check_identity(run_dir, identity(records_dir='/data/aid', pool_digest='d2'))
    with pytest.raises(ProtocolError, match=r'other recipe: epochs=20 then, learning_rate=0.0001 '
                                            r'then: use a new --run-dir'):
        protocol.check_identity(run_dir, identity(recipe=dict(RECIPE, epochs=30,
                                                              learning_rate=1e-3)))
    with pytest.raises(ProtocolError, match=r'other --seed \(42 then\); --split-ratios '
                                            r'\(0.7 0.1 0.2 then\)'):
        protocol.check_identity(run_dir, identity(seed=1, ratios=(0.8, 0, 0.2)))
    with pytest.raises(ProtocolError, match=r'recipe: classifier="finetune" then, svm_c=null '
                                            r'then'):
        protocol.check_identity(run_dir, identity(recipe=dict(RECIPE, classifier='svm',
                                                              svm_c=1.0)))
    (tmp_path / protocol.IDENTITY_FILE).write_text('{"records_dir": ', encoding='utf-8')
    with pytest.raises(ProtocolError, match='is damaged .*: use a new --run-dir, or delete the '
                                            'file if you are sure'):
        protocol.check_identity(run_dir, identity())
