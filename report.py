"""The test report of a fine-tuning run: confusion matrix, per-class figures, tables and plots.

Everything here is computed from (labels, predictions) alone, so the report can always be checked
against `predictions.csv`. A report goes in the run dir (the best epoch's, after training) or in
the folder of an --evaluate (evaluation_dir); read_report reads one back.
"""
import csv
import json
import os

import numpy as np
from matplotlib.figure import Figure   # no pyplot: no global backend, renders with Agg

from atomicfile import atomic_write
from errors import UserError

PREDICTIONS_HEADER = ('path', 'label', 'predicted', 'confidence')
REPORT_FILE = 'test_report.json'
SOFTMAX = 'the softmax probability of the predicted class'   # predictions.csv's confidence


class ReportError(UserError):
    """A test report that cannot be read; the message names the fix."""


def evaluation_dir(checkpoint, views):
    """Where --evaluate writes the report of `checkpoint` (a prefix) averaged over `views` crops:
    evaluate-<checkpoint>/ (the centre crop) or evaluate-<checkpoint>-10crop/, next to it."""
    return os.path.join(os.path.dirname(checkpoint), 'evaluate-' + os.path.basename(checkpoint)
                        + ('-%dcrop' % views if views > 1 else ''))


def confusion_matrix(labels, predicted, num_classes):
    """Rows are true labels, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def per_class(matrix):
    """precision, recall, f1, support per class; 0 where a ratio has no denominator."""
    matrix = np.asarray(matrix, np.float64)
    correct = np.diag(matrix)
    predicted, support = matrix.sum(0), matrix.sum(1)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(correct), where=total > 0)
    return precision, recall, f1, support.astype(np.int64)


def cohen_kappa(matrix):
    """Cohen's kappa of a confusion matrix: (p_o - p_e) / (1 - p_e), with p_o the accuracy and
    p_e the agreement expected by chance, sum_i rows_i * columns_i / total^2. NaN when p_e is 1
    (a single class, where kappa is undefined)."""
    matrix = np.asarray(matrix, np.float64)
    total = matrix.sum()
    observed = np.trace(matrix) / total
    chance = float(matrix.sum(1) @ matrix.sum(0)) / total ** 2
    return float((observed - chance) / (1 - chance)) if chance < 1 else float('nan')


def build_report(classes, labels, predicted, checkpoint, views=1, confidence=SOFTMAX):
    matrix = confusion_matrix(labels, predicted, len(classes))
    precision, recall, f1, support = per_class(matrix)
    return {
        'classes': list(classes),
        'accuracy': float(np.trace(matrix) / max(matrix.sum(), 1)),
        'correct': int(np.trace(matrix)),
        'total': int(matrix.sum()),
        'confusion_matrix': matrix.tolist(),
        'precision': precision.round(6).tolist(),
        'recall': recall.round(6).tolist(),
        'f1': f1.round(6).tolist(),
        'support': support.tolist(),
        'checkpoint': checkpoint,
        'crops': views,   # views averaged per image: 1 (centre crop) or 10 (ten-crop)
        'confidence': confidence,     # what predictions.csv's confidence column holds
    }


def markdown_table(report):
    """The seed's table: confusion matrix with a recall column, a precision row, the accuracy."""
    classes, matrix = report['classes'], report['confusion_matrix']
    lines = ['# Test report', '',
             'checkpoint: `%s`  ' % report['checkpoint'],
             'crops: %d per image, softmax averaged  ' % report['crops'] if report['crops'] > 1
             else 'crops: the centre crop  ',
             'accuracy: **%.4f** (%d / %d)  ' % (report['accuracy'], report['correct'],
                                                 report['total']),
             'confidence in predictions.csv: %s' % report['confidence'],
             '', 'Rows: true class; columns: predicted class (numbered as in the first column).', '',
             '| # | class | ' + ' | '.join(str(i) for i in range(len(classes))) + ' | recall |',
             '|---|---|' + '---:|' * len(classes) + '---:|']
    for i, name in enumerate(classes):
        cells = ' | '.join(str(v) for v in matrix[i])
        lines.append('| %d | %s | %s | %.3f |' % (i, name, cells, report['recall'][i]))
    lines.append('| | **precision** | ' + ' | '.join('%.3f' % p for p in report['precision'])
                 + ' | **%.3f** |' % report['accuracy'])
    return '\n'.join(lines) + '\n'


def write_report(out_dir, classes, paths, labels, probabilities, checkpoint, views=1,
                 confidence=SOFTMAX):
    """Write test_report.json, test_report.md, predictions.csv and confusion_matrix.png of the
    predictions of `checkpoint` (a prefix, or the file of another classifier; recorded relative to
    out_dir); `views` is the number of crops whose probabilities were averaged per image. The
    prediction is each row's argmax of `probabilities` (or other scores: `confidence` says what
    their maximum, the confidence column, is)."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(1)
    report = build_report(classes, labels, predicted, os.path.relpath(checkpoint, out_dir), views,
                          confidence)
    confidence = probabilities.max(1)

    def predictions(f):
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(PREDICTIONS_HEADER)
        for row in zip(paths, labels, predicted, confidence):
            writer.writerow((row[0], int(row[1]), int(row[2]), '%.6f' % row[3]))

    atomic_write(os.path.join(out_dir, 'predictions.csv'), predictions, what='the predictions')
    atomic_write(os.path.join(out_dir, REPORT_FILE),
                 lambda f: json.dump(report, f, indent=1), what='the test report')
    atomic_write(os.path.join(out_dir, 'test_report.md'), lambda f: f.write(markdown_table(report)),
                 what='the test report')
    plot_confusion(os.path.join(out_dir, 'confusion_matrix.png'), report)
    return report


def read_report(out_dir):
    """The test report in `out_dir` as build_report made it, with 'checkpoint' the normalised path
    of the checkpoint it tested; None if there is none, a ReportError if it is damaged."""
    path = os.path.join(out_dir, REPORT_FILE)
    try:
        with open(path, encoding='utf-8') as f:
            report = json.load(f)
        matrix = np.asarray(report['confusion_matrix'], np.int64)
        if matrix.shape != (len(report['classes']),) * 2 or not 0 <= report['accuracy'] <= 1:
            raise ValueError('its confusion matrix does not fit its classes')
        report['checkpoint'] = os.path.normpath(os.path.join(out_dir, report['checkpoint']))
        report.setdefault('crops', 1)                # reports from before ten-crop testing
        report.setdefault('confidence', SOFTMAX)     # and before the SVM's
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReportError('%s is damaged (%s): rerun the command that made it, which tests the '
                          'same checkpoint again' % (path, error)) from None
    return report


def _save_figure(figure, path):
    atomic_write(path, lambda f: figure.savefig(f, format='png', dpi=110), mode='wb',
                 what='the figure')


def plot_confusion(path, report):
    plot_matrix(path, report['classes'], report['confusion_matrix'],
                'test accuracy %.3f (%d / %d)' % (report['accuracy'], report['correct'],
                                                  report['total']),
                lambda value: str(value) if value else '')


def plot_matrix(path, classes, matrix, title, cell_text):
    """A confusion matrix as a figure (rows true, columns predicted), each cell labelled
    cell_text(value) ('' for none)."""
    matrix = np.asarray(matrix)
    size = max(5.0, 0.42 * len(classes) + 2.5)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.subplots()
    shown = axes.imshow(matrix, cmap='Blues')
    axes.set_xticks(range(len(classes)))
    axes.set_yticks(range(len(classes)))
    axes.set_xticklabels(classes, rotation=90, fontsize=8)
    axes.set_yticklabels(classes, fontsize=8)
    axes.set_xlabel('predicted')
    axes.set_ylabel('true')
    axes.set_title(title)
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        text = cell_text(value)
        if text:
            axes.text(j, i, text, ha='center', va='center', fontsize=7,
                      color='white' if value > top / 2 else 'black')
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    _save_figure(figure, path)


def plot_curves(path, rows):
    """Loss and accuracy per epoch, train and validation (when validated), from metrics.csv
    rows (dicts)."""
    epochs = [int(r['epoch']) for r in rows]
    figure = Figure(figsize=(10, 4))
    loss, accuracy = figure.subplots(1, 2)
    parts = (('train', 'o-'), ('val', 's-')) if all(r['val_loss'] != '' for r in rows) else \
        (('train', 'o-'),)
    for axes, key, title in ((loss, 'loss', 'loss (cross-entropy)'), (accuracy, 'accuracy', 'accuracy')):
        for split, style in parts:
            axes.plot(epochs, [float(r['%s_%s' % (split, key)]) for r in rows], style,
                      label='validation' if split == 'val' else split)
        axes.set_xlabel('epoch')
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)
