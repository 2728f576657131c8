"""fineturn.py --splits N end to end on a tiny generated pool: each split an ordinary run dir,
features computed once, resume, three --split jobs at once, the SVM baseline, bad input.

The pool: 3 classes x 10 images (converted 0.8/0.1/0.1, and split again here 0.6/0.2/0.2: 6/2/2
per class). The fine-tuning recipe is deterministic (no flips, no dropout) so that a resumed or
concurrent protocol can be compared with a sequential one.
"""
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

import alexnet
import checkpoints
import feature_store
import fineturn
import frozen_features
import graph
import outputdir
import protocol
import protocol_table
import records
import report
import rundir
import splits
import svm
from fault_injection import temporary_files
from test_faults import assert_close, one_line_error, store_entries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, PER_CLASS = 3, 10
RECIPE = ('--epochs', 2, '--batch-size', 8, '--no-flip', '--keep-prob', 1, '--seed', 5)
FINETUNE = ('--splits', 3, '--split-ratios', 0.6, 0.2, 0.2) + RECIPE
SVM = ('--splits', 2, '--split-ratios', 0.6, 0, 0.4, '--classifier', 'svm')


@pytest.fixture(scope='module')
def pool(tmp_path_factory):
    """A records folder of 30 generated images."""
    import record_writer
    import synthetic_dataset
    images = str(tmp_path_factory.mktemp('pool_images'))
    synthetic_dataset.make_dataset_folder(images, num_classes=CLASSES, per_class=PER_CLASS,
                                          size=96, seed=4, quirks=False, workers=1)
    records_dir = str(tmp_path_factory.mktemp('pool_records'))
    record_writer.convert(images, records_dir, (0.8, 0.1, 0.1), 42, 1, overwrite=True,
                          progress=False)
    return records_dir, images


def args_of(records_dir, weights, run_dir, store, *extra):
    return [str(a) for a in ('--records-dir', records_dir, '--weights', weights, '--run-dir',
                             run_dir, '--feature-store', store) + tuple(extra)]


def main_logged(args):
    """fineturn.main(args) in this process -> (exit status, what it logged)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fineturn.main(args)
    return code, out.getvalue()


@pytest.fixture(scope='module')
def finetuned(pool, alexnet_npz, tmp_path_factory):
    """`--splits 3` fine-tuning in this process, in a store of its own -> (run dir, store, args,
    log, the pool positions whose features were extracted, in the order asked)."""
    work = tmp_path_factory.mktemp('finetuned')
    run_dir, store = str(work / 'protocol'), str(work / 'store')
    args = args_of(pool[0], alexnet_npz, run_dir, store, *FINETUNE)
    extracted, original = [], graph.FeatureExtractor.batches

    def counting(self, session, positions):
        extracted.extend(positions)
        yield from original(self, session, positions)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graph.FeatureExtractor, 'batches', counting)
        code, log = main_logged(args)
    assert code == 0, log
    return run_dir, store, args, log, extracted


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def read_json(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def split_dirs(run_dir, count=3):
    return [os.path.join(run_dir, splits.folder_name(k, count)) for k in range(1, count + 1)]


def without_times(figures):
    """protocol.json without what differs between runs of one protocol: times, the command."""
    kept = {key: value for key, value in figures.items() if key not in ('seconds', 'command')}
    kept['splits'] = [{key: value for key, value in row.items() if key != 'seconds'}
                      for row in figures['splits']]
    return kept


def test_three_fine_tuned_splits_agree_with_their_reports(finetuned, pool):
    run_dir, _, args, log, extracted = finetuned
    figures = read_json(os.path.join(run_dir, protocol_table.JSON_FILE))
    reports = [report.read_report(folder) for folder in split_dirs(run_dir)]
    accuracy = [found['accuracy'] for found in reports]
    kappa = [report.cohen_kappa(found['confusion_matrix']) for found in reports]
    assert [row['oa'] for row in figures['splits']] == accuracy
    assert figures['oa']['mean'] == pytest.approx(np.mean(accuracy), abs=1e-12)
    assert figures['oa']['std'] == pytest.approx(np.std(accuracy, ddof=1), abs=1e-12)
    assert figures['kappa']['mean'] == pytest.approx(np.mean(kappa), abs=1e-12)
    assert figures['kappa']['std'] == pytest.approx(np.std(kappa, ddof=1), abs=1e-12)
    assert [row['seed'] for row in figures['splits']] == [5001, 5002, 5003]
    assert figures['command'] == 'python fineturn.py ' + ' '.join(args)
    line = 'OA %.2f ± %.2f %% over 3 splits (60/20/20, fc6-fc8 fine-tuned)  %s' % (
        100 * np.mean(accuracy), 100 * np.std(accuracy, ddof=1),
        os.path.join(run_dir, protocol_table.TABLE_FILE))
    assert log.rstrip().splitlines()[-1] == line

    pool_rows = read_csv(os.path.join(pool[0], 'split.csv'))
    drawn = []
    for k, folder in enumerate(split_dirs(run_dir), start=1):
        # an ordinary run dir, trained with the split's seed on the split's parts
        rows = [(row['path'], int(row['label']), row['split'])
                for row in read_csv(os.path.join(folder, 'split.csv'))]
        assert read_json(os.path.join(folder, 'settings.json'))['seed'] == 5000 + k
        assert [int(row['epoch']) for row in read_csv(os.path.join(folder, 'metrics.csv'))] == \
            [1, 2]
        best = read_json(os.path.join(folder, checkpoints.BEST_FILE))
        assert checkpoints.exists(folder, best['epoch'])
        assert figures['splits'][k - 1]['best_epoch'] == best['epoch']
        # stratified (6/2/2 of each class), disjoint parts that cover the pool
        for label in range(CLASSES):
            assert [sum(1 for _, l, part in rows if l == label and part == name)
                    for name in splits.SPLITS] == [6, 2, 2]
        assert sorted((path, label) for path, label, _ in rows) == \
            sorted((row['path'], int(row['label'])) for row in pool_rows)
        # the test report is of the split's test part, every image once
        tested = [(row['path'], int(row['label'])) for row in
                  read_csv(os.path.join(folder, 'predictions.csv'))]
        assert sorted(tested) == sorted((p, l) for p, l, part in rows if part == 'test')
        drawn.append(frozenset(p for p, _, part in rows if part == 'train'))
    assert len(set(drawn)) == 3                                # the splits differ

    # features extracted once: each of the 30 images by split 1, none by splits 2 and 3
    assert sorted(extracted) == list(range(CLASSES * PER_CLASS))
    said = [line for line in log.splitlines() if line.startswith('features of 30 images')]
    assert len(said) == 3 and ', 30 computed; ' in said[0]
    assert all(': 30 reused from ' in line and ', 0 computed; ' in line for line in said[1:])


def test_a_split_works_with_evaluate_predict_and_export(finetuned, pool, tmp_path, capsys):
    run_dir = finetuned[0]
    folder = split_dirs(run_dir)[1]
    own = read_csv(os.path.join(folder, 'predictions.csv'))
    assert fineturn.main(['--records-dir', pool[0], '--evaluate', folder]) == 0
    evaluated = read_csv(os.path.join(report.evaluation_dir(checkpoints.find(folder), 1),
                                      'predictions.csv'))
    assert [(r['path'], r['label'], r['predicted']) for r in evaluated] == \
        [(r['path'], r['label'], r['predicted']) for r in own]
    assert [float(r['confidence']) for r in evaluated] == \
        pytest.approx([float(r['confidence']) for r in own], rel=1e-4, abs=1e-6)
    image = os.path.join(pool[1], own[0]['path'])
    capsys.readouterr()
    assert fineturn.main(['--predict', image, '--run-dir', folder, '--top-k', '1']) == 0
    assert own[0]['path'].split('/')[-1] in capsys.readouterr().out
    out_dir = str(tmp_path / 'export')
    assert fineturn.main(['--export', out_dir, '--run-dir', folder]) == 0
    info = read_json(os.path.join(out_dir, 'assets.extra', 'export.json'))
    assert info['test_accuracy'] == report.read_report(folder)['accuracy']


def test_a_rerun_skips_finished_splits_and_resumes_a_half_done_one(finetuned, pool,
                                                                   alexnet_npz, tmp_path):
    run_dir, store, args = finetuned[:3]
    copy = str(tmp_path / 'protocol')
    shutil.copytree(run_dir, copy, copy_function=os.link)   # every file is replaced, not written
    half = split_dirs(copy)[2]
    for name in os.listdir(half):          # split 3 killed after its first epoch
        if name.startswith(('test_report', 'predictions', 'best.json', 'split.json',
                            'model.ckpt-2')) or name == 'metrics.csv':
            os.remove(os.path.join(half, name))
    rundir.write_metrics(half, read_csv(os.path.join(split_dirs(run_dir)[2], 'metrics.csv'))[:1])
    os.remove(os.path.join(copy, protocol_table.JSON_FILE))
    code, log = main_logged([copy if a == run_dir else a for a in args])
    assert code == 0, log
    assert 'split-01: finished earlier' in log and 'split-02: finished earlier' in log
    assert 'resuming %s after epoch 1 of 2' % half in log
    assert log.count('features of 30 images: 30 reused') == 1
    assert without_times(read_json(os.path.join(copy, protocol_table.JSON_FILE)))['splits'] == \
        without_times(read_json(os.path.join(run_dir, protocol_table.JSON_FILE)))['splits']
    assert [int(r['epoch']) for r in read_csv(os.path.join(half, 'metrics.csv'))] == [1, 2]


def test_three_split_jobs_at_once_end_with_the_sequential_table(finetuned, pool, alexnet_npz,
                                                                tmp_path):
    """Three `--split K` processes started together, sharing a new store and RUN_DIR: the same
    table as the sequential run's, each entry written once, nothing torn or left behind."""
    run_dir = finetuned[0]
    together, store = str(tmp_path / 'protocol'), str(tmp_path / 'store')
    args = args_of(pool[0], alexnet_npz, together, store, *FINETUNE)
    jobs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'fineturn.py')] + args
                             + ['--split', str(k)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for k in (1, 2, 3)]
    outputs = [job.communicate(timeout=600) for job in jobs]
    for job, (out, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-3000:]
    tables = [out for out, _ in outputs if 'OA ' in out]
    waited = [out for out, _ in outputs if 'the table waits for' in out]
    assert tables and len(tables) + len(waited) == 3
    # the same figures as one sequential run: the features of one image may have been computed
    # in a batch of another size, which TensorFlow's kernels round otherwise (1e-6 relative)
    got = without_times(read_json(os.path.join(together, protocol_table.JSON_FILE)))
    want = without_times(read_json(os.path.join(run_dir, protocol_table.JSON_FILE)))
    got['identity'].pop('records_dir'), want['identity'].pop('records_dir')
    assert_close(got, want, 'protocol.json', rel=1e-4, abs=1e-6)
    for mine, theirs in zip(split_dirs(together), split_dirs(run_dir)):
        assert [(r['path'], r['predicted']) for r in read_csv(os.path.join(mine,
                                                                             'predictions.csv'))] \
            == [(r['path'], r['predicted']) for r in read_csv(os.path.join(theirs,
                                                                             'predictions.csv'))]
    assert len(store_entries(store)) == CLASSES * PER_CLASS
    assert temporary_files(store) == temporary_files(together) == []


def test_svm_predictions_equal_a_direct_scikit_learn_fit(finetuned, pool, alexnet_npz, tmp_path,
                                                         capsys):
    store = str(tmp_path / 'store')
    run_dir = str(tmp_path / 'svm')
    code, log = main_logged(args_of(pool[0], alexnet_npz, run_dir, store, *SVM))
    assert code == 0, log
    assert '(60/0/40, fc7 + linear SVM (C=1))' in log.splitlines()[-1]
    assert log.count('features of 30 images: 0 reused') == 1
    assert log.count('features of 30 images: 30 reused') == 1
    # the store's fc7 features (the input of fc8, centre crop), read back by the images' digests
    index = records.index(pool[0])
    weights = alexnet.read_weights(alexnet_npz)
    settings = fineturn.settings_from(fineturn.parse_args(args_of(pool[0], alexnet_npz, run_dir,
                                                                  store)))
    fc7 = frozen_features.open_store(settings, weights.structure, weights.mean, 'fc8', (0,),
                                     print, print)
    assert fc7.key.description['layer'] == 'fc7' and fc7.key.shape == (1, 4096)
    features, problems = fc7.read(index.digests)
    assert problems == {} and sorted(os.listdir(store)) == [feature_store.TEMP_DIR, fc7.key.hex]
    where = {path: i for i, path in enumerate(index.paths)}
    for folder in split_dirs(run_dir, 2):
        rows = read_csv(os.path.join(folder, 'split.csv'))
        train = sorted(where[r['path']] for r in rows if r['split'] == 'train')   # pool order
        test = sorted(where[r['path']] for r in rows if r['split'] == 'test')
        direct = LinearSVC(C=1.0, random_state=svm.SEED).fit(
            normalize(features[train, 0].astype(np.float64)), index.labels[train])
        predicted = read_csv(os.path.join(folder, 'predictions.csv'))
        assert [r['path'] for r in predicted] == [index.paths[i] for i in test]
        assert [int(r['predicted']) for r in predicted] == \
            direct.predict(normalize(features[test, 0].astype(np.float64))).tolist()
        saved = np.load(os.path.join(folder, 'svm.npz'))
        np.testing.assert_array_equal(saved['coef'], direct.coef_)
        assert 'decision value' in report.read_report(folder)['confidence']
    # an SVM split has no checkpoint: the modes that need one say so in one line
    for mode in (['--evaluate', folder, '--records-dir', pool[0]],
                 ['--predict', pool[1], '--run-dir', folder],
                 ['--export', str(tmp_path / 'export'), '--run-dir', folder]):
        capsys.readouterr()
        assert fineturn.main(mode) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and 'holds a linear SVM on frozen features' in err


def test_without_validation_the_last_epoch_is_tested(pool, alexnet_npz, tmp_path):
    run_dir = str(tmp_path / 'protocol')
    code, log = main_logged(args_of(pool[0], alexnet_npz, run_dir, str(tmp_path / 'store'),
                                    '--splits', 1, '--split-ratios', 0.8, 0, 0.2, *RECIPE))
    assert code == 0, log
    folder = split_dirs(run_dir, 1)[0]
    rows = read_csv(os.path.join(folder, 'metrics.csv'))
    assert [(r['epoch'], r['val_accuracy']) for r in rows] == [('1', ''), ('2', '')]
    assert read_json(os.path.join(folder, checkpoints.BEST_FILE))['selection'] == \
        'the last epoch (no validation part)'
    assert 'last epoch 2 (no validation part)  test Acc@1' in log
    table = open(os.path.join(run_dir, protocol_table.TABLE_FILE), encoding='utf-8').read()
    assert 'each split tested its last epoch (no validation selection)' in table
    assert '| split-01 | 5001 | 24 | 0 | 6 | 2 | — |' in table


def one_line(capsys, code):
    """The single error line of a fineturn.main that returned `code` 1."""
    assert code == 1
    return one_line_error(capsys.readouterr().err, 'fineturn.py')


@pytest.mark.parametrize('extra, says', [
    (('--split-ratios', 0.7, 0.2, 0.2), '--split-ratios 0.7 0.2 0.2: they sum to 1.1, not 1'),
    (('--split-ratios', 0.9, -0.1, 0.2), 'a ratio cannot be negative'),
    (('--split', 4), '--split 4 is outside 1..3: pass a K from 1 to --splits 3'),
    (('--learning-rate', 0.01), 'holds a protocol started with other recipe: learning_rate='),
    (('--seed', 6), 'holds a protocol started with other --seed (5 then)'),
])
def test_bad_input_is_one_line_before_anything_runs(finetuned, pool, capsys, extra, says):
    run_dir, store, args = finetuned[:3]
    before = sorted(os.listdir(run_dir))
    line = one_line(capsys, fineturn.main(args + [str(a) for a in extra]))
    assert line.startswith('fineturn.py: error: ') and says in line, line
    assert sorted(os.listdir(run_dir)) == before


def test_other_records_or_a_class_too_small_are_refused(finetuned, pool, tmp_path, capsys):
    run_dir, store, args = finetuned[:3]
    other = str(tmp_path / 'other')
    shutil.copytree(pool[0], other)
    rows = read_csv(os.path.join(other, 'split.csv'))
    splits.write_split(os.path.join(other, 'split.csv'),
                       [(r['path'], int(r['label']), r['split']) for r in rows[:-1]])
    line = one_line(capsys, fineturn.main([other if a == pool[0] else a for a in args]))
    assert 'holds a protocol started with other records (%s then, %s now)' % (
        os.path.abspath(pool[0]), os.path.abspath(other)) in line
    # the same names and labels, other pixels: the images generated again with another seed
    import record_writer
    import synthetic_dataset
    images, repainted = str(tmp_path / 'images'), str(tmp_path / 'repainted')
    synthetic_dataset.make_dataset_folder(images, num_classes=CLASSES, per_class=PER_CLASS,
                                          size=96, seed=5, quirks=False, workers=1)
    record_writer.convert(images, repainted, (0.8, 0.1, 0.1), 42, 1, overwrite=True,
                          progress=False)
    assert read_csv(os.path.join(repainted, 'split.csv')) == \
        read_csv(os.path.join(pool[0], 'split.csv'))
    line = one_line(capsys, fineturn.main([repainted if a == pool[0] else a for a in args]))
    assert 'holds a protocol started with other records (%s then, %s now)' % (
        os.path.abspath(pool[0]), os.path.abspath(repainted)) in line
    # class 2 down to 2 images: too few for three parts
    kept = [r['path'] for r in rows if r['label'] == '2'][:2]
    small = [(r['path'], int(r['label']), r['split']) for r in rows
             if r['label'] != '2' or r['path'] in kept]
    splits.write_split(os.path.join(other, 'split.csv'), small)
    line = one_line(capsys, fineturn.main(args_of(other, 'w.npz', tmp_path / 'new', store,
                                                  *FINETUNE)))
    name = open(os.path.join(pool[0], 'labels.txt')).read().split()[2]
    assert 'class %s has 2 image(s), too few for --split-ratios 0.6 0.2 0.2: each class needs ' \
           'at least 3' % name in line
    assert not os.path.exists(tmp_path / 'new')


def test_a_table_with_a_split_in_another_process_is_refused(finetuned, tmp_path, capsys):
    run_dir, store, args = finetuned[:3]
    copy = str(tmp_path / 'protocol')
    shutil.copytree(run_dir, copy, copy_function=os.link)
    busy = split_dirs(copy)[1]
    os.remove(os.path.join(busy, protocol.SPLIT_INFO))
    with outputdir.FolderLock(busy, '--run-dir'):          # another job runs split 2
        code = fineturn.main([copy if a == run_dir else a for a in args])
    line = one_line(capsys, code)
    assert line == ('fineturn.py: error: cannot write the table yet: split-02 of 3 split(s) has '
                    'no test report: run it (the same command without --split runs what is '
                    'missing)')
