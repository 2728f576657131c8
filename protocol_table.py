"""The table of a repeated-split protocol (fineturn.py --splits N): mean ± std over its splits.

    RUN_DIR/protocol.md     one row per split (seed, counts, best epoch, validation accuracy, test
                            OA, Cohen's kappa, time), OA and kappa as mean ± std, per-class
                            accuracy as mean ± std, the total time and the exact command
    RUN_DIR/protocol.json   the same figures, for programs
    RUN_DIR/protocol.png    the mean row-normalised confusion matrix

The std is the sample standard deviation over the splits (ddof = 1), as the papers report, and
the table says so. Each split's figures come from its test report (report.read_report) and its
split.json (protocol.split_result). finish() writes the table only when every split has
finished, under the protocol's lock, else it names the splits left.

No TensorFlow here.
"""
import os

import numpy as np

import report
import splits
from atomicfile import atomic_write
from outputdir import held
from protocol import LOCK_FILE, ProtocolError, split_result
from rundir import save_json

TABLE_FILE, JSON_FILE, FIGURE_FILE = 'protocol.md', 'protocol.json', 'protocol.png'
STD = 'sample standard deviation over the splits (ddof = 1)'


def unfinished(names, total):
    """The refusal of a table while the splits `names` (of `total`) have not finished."""
    return ProtocolError('cannot write the table yet: %s of %d split(s) %s no test report: run '
                         '%s (the same command without --split runs what is missing)'
                         % (', '.join(names), total, 'has' if len(names) == 1 else 'have',
                            'it' if len(names) == 1 else 'them'))


def finish(plan, command_line):
    """Write the table if every split has finished -> (the console's line, []); else (None, the
    unfinished splits' folder names) when this command ran one split (--split K), and a
    ProtocolError naming them when it ran them all."""
    with held(os.path.join(plan.run_dir, LOCK_FILE)):
        results = [split_result(plan, k) for k in range(1, plan.count + 1)]
        left = [splits.folder_name(k, plan.count) for k, result in
                enumerate(results, start=1) if result is None]
        if left:
            if plan.only is None:
                raise unfinished(left, plan.count)
            return None, left
        _, line = write(plan.run_dir, plan.identity, results, command_line,
                        sum(result.seconds for result in results))
    return line, []


# --- the table -----------------------------------------------------------------------------------

def method(recipe):
    """How each split was trained, for the table and the console: 'fc6-fc8 fine-tuned',
    'fc7 + linear SVM (C=1)'."""
    if recipe.get('classifier') == 'svm':
        return '%s + linear SVM (C=%g)' % (recipe['svm_layer'], recipe['svm_c'])
    layers = recipe['train_layers']
    return '%s fine-tuned' % (layers[0] if len(layers) == 1 else
                              '%s-%s' % (layers[0], layers[-1]))


def selection(identity):
    """Which model each split tested, in words."""
    if identity.recipe.get('classifier') == 'svm':
        return 'the SVM fit on the training part (no epochs, no validation selection)'
    if identity.ratios[1] == 0:
        return ('no validation part (VAL = 0): each split tested its last epoch (no validation '
                'selection)')
    return 'each split tested its epoch of best validation accuracy'


def _mean_std(values):
    """(mean, sample std) over the splits' axis 0; std None for a single split."""
    values = np.asarray(values, np.float64)
    return values.mean(0), (values.std(0, ddof=1) if len(values) > 1 else None)


def _listed(value):
    return None if value is None else np.asarray(value).tolist()


def aggregate(identity, results):
    """The protocol's figures (protocol.json's dict) from `results`, the SplitResult of splits 1
    .. N; a ProtocolError naming the splits without a test report."""
    reports = [report.read_report(result.run_dir) for result in results]
    missing = [os.path.basename(result.run_dir) for result, found in zip(results, reports)
               if found is None]
    if missing:
        raise unfinished(missing, len(results))
    classes = reports[0]['classes']
    mixed = [os.path.basename(r.run_dir) for r, rep in zip(results, reports)
             if rep['classes'] != classes]
    if mixed:
        raise ProtocolError('%s tested other classes than %s: run them again on the records '
                            'the protocol started with'
                            % (', '.join(mixed), os.path.basename(results[0].run_dir)))
    matrices = np.array([rep['confusion_matrix'] for rep in reports], np.float64)
    accuracy = [rep['accuracy'] for rep in reports]
    kappa = [report.cohen_kappa(matrix) for matrix in matrices]
    recall = [report.per_class(matrix)[1] for matrix in matrices]
    support = matrices.sum(2, keepdims=True)
    normalised = np.divide(matrices, support, out=np.zeros_like(matrices), where=support > 0)
    rows = [{'split': os.path.basename(result.run_dir), 'k': result.k, 'seed': result.seed,
             'train': result.counts['train'], 'validation': result.counts['validation'],
             'test': result.counts['test'], 'best_epoch': result.best_epoch,
             'val_accuracy': result.val_accuracy, 'oa': oa, 'kappa': _finite(k),
             'seconds': round(result.seconds, 2)}
            for result, oa, k in zip(results, accuracy, kappa)]
    figures = {}
    for name, values in (('oa', accuracy), ('kappa', kappa), ('per_class_accuracy', recall)):
        mean, std = _mean_std(values)
        figures[name] = {'mean': _finite(_listed(mean)), 'std': _finite(_listed(std))}
    return dict({'splits': rows, 'std': STD, 'classes': classes,
                 'mean_confusion': _mean_std(normalised)[0].round(6).tolist(),
                 'identity': identity.saved(), 'method': method(identity.recipe),
                 'selection': selection(identity)}, **figures)


def _finite(value):
    """NaN (an undefined kappa) as None, for JSON."""
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def write(run_dir, identity, results, command, total_seconds):
    """Write protocol.md, protocol.json and protocol.png for splits 1 .. N (`results`), run by
    `command` in `total_seconds`; return (the figures, the console's last line)."""
    figures = aggregate(identity, results)
    figures['command'] = command
    figures['seconds'] = {'total': round(total_seconds, 2),
                          'per_split': round(float(np.mean([r.seconds for r in results])), 2)}
    save_json(os.path.join(run_dir, JSON_FILE), figures, 'the protocol\'s figures')
    atomic_write(os.path.join(run_dir, TABLE_FILE), lambda f: f.write(markdown(figures)),
                 what='the protocol\'s table')
    report.plot_matrix(os.path.join(run_dir, FIGURE_FILE), figures['classes'],
                       np.array(figures['mean_confusion']),
                       'mean row-normalised confusion over %d split(s)' % len(results),
                       lambda value: '%.2f' % value if value >= 0.005 else '')
    return figures, console_line(figures, os.path.join(run_dir, TABLE_FILE))


def _pm(figure, scale, digits, unit=''):
    """'95.02 ± 0.81 %' from {'mean', 'std'} (just the mean for one split)."""
    if figure['mean'] is None:
        return 'n/a'
    text = '%.*f' % (digits, figure['mean'] * scale)
    if figure['std'] is not None:
        text += ' ± %.*f' % (digits, figure['std'] * scale)
    return text + unit


def console_line(figures, table_path):
    """'OA 95.02 ± 0.81 % over 10 splits (70/10/20, fc6-fc8 fine-tuned)  RUN_DIR/protocol.md'."""
    count = len(figures['splits'])
    return 'OA %s over %d split%s (%s, %s)  %s' % (
        _pm(figures['oa'], 100, 2, ' %'), count, '' if count == 1 else 's',
        splits.ratios_text(figures['identity']['ratios']), figures['method'], table_path)


def markdown(figures):
    identity = figures['identity']
    count = len(figures['splits'])
    seconds = figures['seconds']
    lines = [
        '# %d random split%s: %s' % (count, '' if count == 1 else 's', figures['method']), '',
        'OA **%s** over %d split(s); Cohen\'s kappa %s. ± is the %s.'
        % (_pm(figures['oa'], 100, 2, ' %'), count, _pm(figures['kappa'], 1, 4), STD), '',
        '- records: `%s` (%d images, %d classes)'
        % (identity['records_dir'], sum(figures['splits'][0][part]
                                        for part in ('train', 'validation', 'test')),
           len(figures['classes'])),
        '- splits: class-stratified, train/validation/test %s of each class; split k\'s seed is '
        '1000 × %d + k' % (splits.ratios_text(identity['ratios']), identity['seed']),
        '- model: %s; %s' % (figures['method'], figures['selection']),
        '- time: %.0f s in all (the splits\' times added up), %.0f s per split on average'
        % (seconds['total'], seconds['per_split']),
        '- command: `%s`' % figures['command'], '',
        '| split | seed | train | val | test | best epoch | val accuracy | test OA | kappa | '
        'time |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for row in figures['splits']:
        lines.append('| %s | %d | %d | %d | %d | %s | %s | %.2f %% | %s | %.0f s |' % (
            row['split'], row['seed'], row['train'], row['validation'], row['test'],
            '—' if row['best_epoch'] is None else row['best_epoch'],
            '—' if row['val_accuracy'] is None else '%.4f' % row['val_accuracy'],
            100 * row['oa'], 'n/a' if row['kappa'] is None else '%.4f' % row['kappa'],
            row['seconds']))
    lines += ['| **mean ± std** | | | | | | | **%s** | %s | |'
              % (_pm(figures['oa'], 100, 2, ' %'), _pm(figures['kappa'], 1, 4)), '',
              '## Per-class accuracy (recall), mean ± std over the splits', '',
              '| # | class | accuracy |', '|---:|---|---:|']
    per_class = figures['per_class_accuracy']
    for i, name in enumerate(figures['classes']):
        lines.append('| %d | %s | %s |' % (i, name, _pm(
            {'mean': per_class['mean'][i],
             'std': None if per_class['std'] is None else per_class['std'][i]}, 100, 2, ' %')))
    lines += ['', 'The mean row-normalised confusion matrix (each split\'s rows divided by their '
              'totals, then averaged): `%s`.' % FIGURE_FILE]
    return '\n'.join(lines) + '\n'
