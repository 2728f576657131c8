"""fineturn.py --predict and --ten-crop (--predict and --evaluate) on a tiny fine-tuned run.

`trained` (conftest) is a real run: its test predictions are saturated (confidence 1.0), so the
probabilities are compared on `tempered`, the same checkpoint with fc8 scaled down.
"""
import csv
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import fineturn
import predict
import rundir

# Caffe's oversample, written out by hand: the corners and the centre of the 256x256 image, each
# also mirrored left-right (caffe/python/caffe/io.py).
TEN_WINDOWS = [(top, left, mirror) for mirror in (False, True)
               for top, left in ((0, 0), (0, 29), (29, 0), (29, 29), (14, 14))]


def run(capsys, *args):
    code = fineturn.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def assert_one_line_error(code, err, *expected):
    assert code == 1 and 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fineturn.py: error: '), err
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture(scope='module')
def test_images(tiny_test_images):
    return tiny_test_images


@pytest.fixture(scope='module')
def odd_sized(test_images, tmp_path_factory):
    """Two test images resized to other sizes (up and down), as PNG."""
    folder = tmp_path_factory.mktemp('odd')
    paths = []
    for path, size in zip(test_images[:2], ((300, 241), (229, 250))):
        paths.append(str(folder / (os.path.basename(path)[:-4] + '_%dx%d.png' % size)))
        assert cv2.imwrite(paths[-1], cv2.resize(cv2.imread(path), size,
                                                 interpolation=cv2.INTER_AREA))
    return paths


def predicted(capsys, tmp_path, run_dir, paths, *extra):
    """--predict over `paths` -> (probs, paths, classes) from --save-probs, and the CSV rows."""
    probs_out, csv_out = tmp_path / 'probs.npz', tmp_path / 'predictions.csv'
    code, out, err = run(capsys, '--predict', *paths, '--run-dir', run_dir, '--save-probs',
                         probs_out, '--save-csv', csv_out, *extra)
    assert code == 0, err
    with np.load(probs_out, allow_pickle=False) as data:
        result = data['probs'], data['paths'].tolist(), data['classes'].tolist()
    return result, read_csv(csv_out), out


# --- consistency with the run's own report -------------------------------------------------------

def test_predict_reproduces_the_runs_predictions_csv(trained, test_images, tiny_images, tmp_path,
                                                     capsys):
    (probs, paths, classes), rows, out = predicted(capsys, tmp_path, trained, test_images,
                                                   '--top-k', 2)
    assert classes == rundir.read_model(trained).classes and paths == test_images
    report = read_csv(os.path.join(trained, 'predictions.csv'))
    by_path = {os.path.join(tiny_images, row['path']): row for row in report}
    assert sorted(by_path) == sorted(test_images)
    for path, row, line in zip(paths, probs, rows):
        expected = by_path[path]
        assert line['path'] == path
        assert line['predicted'] == classes[int(expected['predicted'])] == classes[row.argmax()]
        assert abs(float(line['confidence']) - float(expected['confidence'])) <= 1e-5
        assert abs(row.max() - float(expected['confidence'])) <= 1e-5
    # stdout: each image, then its top-2 classes
    lines = out.splitlines()
    for path, row in zip(paths, probs):
        at = lines.index(path)
        assert lines[at + 1].startswith('  1. %.4f  %s' % (row.max(), classes[row.argmax()]))
        assert lines[at + 2].startswith('  2. ')
    assert ' * %d image(s) classified, 0 unreadable skipped' % len(paths) in out


def test_predict_agrees_with_evaluate_on_unsaturated_probabilities(tempered, tiny_records,
                                                                   test_images, tiny_images,
                                                                   tmp_path, capsys):
    """The same check where it is sharp: --evaluate's test predictions (from the records) against
    --predict on the image files."""
    copy = str(tmp_path / 'run')          # --evaluate writes into the run dir: not the shared one
    shutil.copytree(tempered, copy)
    code, _, err = run(capsys, '--records-dir', tiny_records, '--evaluate', copy)
    assert code == 0, err
    report_dir = os.path.join(copy, 'evaluate-model.ckpt-1')
    with open(os.path.join(report_dir, 'test_report.json')) as f:
        assert json.load(f)['crops'] == 1
    report = {os.path.join(tiny_images, row['path']): row
              for row in read_csv(os.path.join(report_dir, 'predictions.csv'))}
    (probs, paths, classes), _, _ = predicted(capsys, tmp_path, tempered, test_images)
    confidences = probs.max(axis=1)
    assert 0.3 < confidences.min() and confidences.max() < 0.99   # far from saturated
    for path, row in zip(paths, probs):
        assert int(report[path]['predicted']) == row.argmax()
        assert abs(float(report[path]['confidence']) - row.max()) <= 1e-5


# --- ten crops -----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def hand_ten_crop(tempered, test_images, odd_sized):
    """{path: (centre-crop probabilities, ten-crop average)}, computed one crop at a time through
    the plain one-crop classifier, with the crops cut here (after a bilinear resize to 256x256
    with half-pixel centres, TensorFlow's)."""
    prefix, model = checkpoints.open_model(tempered)
    mean = np.float32(model.mean)
    results = {}
    with predict.checkpoint_classifier(prefix, model) as classifier:
        def probabilities(crop):
            return classifier.session.run(classifier.probabilities,
                                          {classifier.images: crop[None]})[0]
        for path in test_images + odd_sized:
            resized = tf.image.resize(cv2.imread(path).astype(np.float32), (256, 256),
                                      method='bilinear', antialias=False).numpy()
            views = []
            for top, left, mirror in TEN_WINDOWS:
                crop = resized[top:top + 227, left:left + 227] - mean
                views.append(probabilities(crop[:, ::-1] if mirror else crop))
            results[path] = (views[4], np.mean(views, axis=0))
    return results


def test_predict_ten_crop_is_the_average_of_ten_crops(tempered, test_images, odd_sized,
                                                      hand_ten_crop, tmp_path, capsys):
    paths = test_images[:4] + odd_sized
    (probs, kept, _), rows, out = predicted(capsys, tmp_path, tempered, paths, '--ten-crop')
    assert kept == paths and 'ten crops averaged' in out
    for path, row in zip(paths, probs):
        centre, ten = hand_ten_crop[path]
        np.testing.assert_allclose(row, ten, atol=1e-5, rtol=0)
        assert np.abs(ten - centre).max() > 1e-3     # ten crops are not the centre one
    (centre_probs, _, _), _, _ = predicted(capsys, tmp_path, tempered, paths)
    for path, row in zip(paths, centre_probs):
        np.testing.assert_allclose(row, hand_ten_crop[path][0], atol=1e-5, rtol=0)


def test_evaluate_ten_crop_writes_its_own_report(tempered, tiny_records, test_images,
                                                 tiny_images, hand_ten_crop, tmp_path, capsys):
    copy = str(tmp_path / 'run')          # --evaluate writes into the run dir: not the shared one
    shutil.copytree(tempered, copy)
    code, out, err = run(capsys, '--records-dir', tiny_records, '--evaluate', copy, '--ten-crop')
    assert code == 0, err
    report_dir = os.path.join(copy, 'evaluate-model.ckpt-1-10crop')
    assert 'ten-crop' in out and report_dir in out
    with open(os.path.join(report_dir, 'test_report.json')) as f:
        report = json.load(f)
    assert report['crops'] == 10 and report['total'] == len(test_images)
    rows = read_csv(os.path.join(report_dir, 'predictions.csv'))
    for row in rows:
        ten = hand_ten_crop[os.path.join(tiny_images, row['path'])][1]
        assert int(row['predicted']) == ten.argmax()
        assert abs(float(row['confidence']) - ten.max()) <= 1e-5
    correct = sum(int(row['predicted']) == int(row['label']) for row in rows)
    assert report['correct'] == correct


def test_ten_crop_needs_predict_or_evaluate(capsys):
    with pytest.raises(SystemExit):
        fineturn.main(['--ten-crop'])
    assert '--ten-crop works only with --predict or --evaluate' in capsys.readouterr().err


# --- inputs, outputs and mistakes ----------------------------------------------------------------

def test_unreadable_files_are_listed_and_skipped(tempered, test_images, tmp_path, capsys):
    folder = tmp_path / 'mixed'
    folder.mkdir()
    (folder / 'broken.png').write_bytes(b'\x89PNG truncated')
    (folder / 'notes.txt').write_text('not an image')
    figure = tmp_path / 'figure.png'
    csv_out = tmp_path / 'out.csv'
    code, out, err = run(capsys, '--predict', test_images[0], folder, test_images[1],
                         '--run-dir', tempered, '--save-csv', csv_out, '--figure', figure)
    assert code == 1, err   # something was skipped
    assert 'broken.png' in err and 'notes.txt' in err and 'Traceback' not in err
    assert ' * 2 image(s) classified, 1 unreadable skipped' in out
    assert [row['path'] for row in read_csv(csv_out)] == [test_images[0], test_images[1]]
    assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('case', ['empty folder', 'no such path', 'missing run dir',
                                  'no best.json', 'no model.json', 'class count'])
def test_predict_mistakes_are_one_line_errors(case, tempered, test_images, tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    copy = tmp_path / 'copy'
    if case in ('no best.json', 'no model.json', 'class count'):
        shutil.copytree(tempered, copy)
    if case == 'no best.json':
        os.remove(copy / checkpoints.BEST_FILE)
    if case == 'no model.json':
        os.remove(copy / rundir.MODEL_FILE)
    if case == 'class count':
        model = rundir.read_model(str(copy))
        rundir.write_model(str(copy), rundir.Model(model.classes[:3], model.structure.with_classes(
            3), model.mean))
    args, expected = {
        'empty folder': ([empty, '--run-dir', tempered], ['no image files', str(empty)]),
        'no such path': ([tmp_path / 'typo.png', '--run-dir', tempered], ['typo.png']),
        'missing run dir': ([test_images[0], '--run-dir', tmp_path / 'nowhere'],
                            ['no run dir', 'nowhere', '--checkpoint']),
        'no best.json': ([test_images[0], '--run-dir', copy], ['best.json']),
        'no model.json': ([test_images[0], '--run-dir', copy], ['model.json']),
        'class count': ([test_images[0], '--checkpoint', copy],
                        ['5 classes in fc8', 'names 3']),
    }[case]
    code, out, err = run(capsys, '--predict', *args)
    assert_one_line_error(code, err, *expected)
    assert ' * ' not in out


def test_a_top_k_above_the_class_count_prints_every_class(tempered, test_images, capsys):
    classes = rundir.read_model(tempered).classes
    code, out, err = run(capsys, '--predict', test_images[0], '--run-dir', tempered,
                         '--top-k', len(classes) + 4)
    assert code == 0, err
    lines = out.splitlines()
    ranked = lines[lines.index(test_images[0]) + 1:][:len(classes) + 1]
    assert [line.split()[0] for line in ranked[:len(classes)]] == \
        ['%d.' % rank for rank in range(1, len(classes) + 1)]
    assert sorted(line.split()[-1] for line in ranked[:len(classes)]) == sorted(classes)
    assert not ranked[len(classes)].startswith('  %d. ' % (len(classes) + 1))


def test_checkpoint_flag_picks_any_epoch(trained, test_images, tmp_path, capsys):
    """--checkpoint names another epoch than best.json's; the class names are still the run's."""
    best = checkpoints.find(trained)
    other = next(checkpoints.path(trained, epoch) for epoch in (1, 2, 3)
                 if checkpoints.path(trained, epoch) != best)
    code, out, err = run(capsys, '--predict', test_images[0], '--checkpoint', other + '.index')
    assert code == 0, err
    assert 'model %s ' % other in out
    assert tf.train.load_checkpoint(other).get_tensor('fc8/biases').shape == (5,)
