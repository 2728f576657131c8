"""A training run's folder and its state on disk: settings, metrics rows, the recorded model.

    runs/<name>/settings.json       the run's settings (a rerun must keep the recipe's)
    runs/<name>/metrics.csv         one row per completed epoch
    runs/<name>/model.ckpt-<epoch>  TensorFlow checkpoints, and best.json: checkpoints.py's
    runs/<name>/model.json          what using its checkpoints needs: class names, network
                                    structure, mean (a mean image in mean.npy next to it)
    runs/<name>/init_from.json      where a run started --init-from began: the checkpoint, its
                                    epoch, the layers taken from it, the weights digest
    runs/<name>/svm.npz             --classifier svm: the linear SVM, instead of checkpoints
    runs/<name>/split.csv           a split of a protocol (--splits): the images of its parts

The frozen features a run computes go to the shared feature store (--feature-store), not to the
run dir. A run dir from before the store holds a per-run cache, feature_cache/: opening the run
deletes it (open_run) and says how much that freed.

Every file is written whole through a rename (atomicfile). One process owns the folder at a time
(outputdir: a lock, and the removal of the temporary files killed writers left).

No TensorFlow here: the state answers before TensorFlow loads, and its tests run without it.
"""
import csv
import dataclasses
import json
import os
import shutil

import numpy as np

import netspec
import outputdir
import weights_file
from atomicfile import atomic_write, human_size, size_of
from errors import UserError

METRICS_FILE = 'metrics.csv'
SETTINGS_FILE = 'settings.json'
SVM_FILE = 'svm.npz'
MODEL_FILE = 'model.json'
INIT_FILE = 'init_from.json'
MEAN_IMAGE_FILE = 'mean.npy'
METRICS_HEADER = ('epoch', 'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy',
                  'learning_rate', 'seconds', 'checkpoint')


class RunError(UserError):
    """A problem with the run's inputs or settings; the message says how to fix it."""


# --- metrics.csv ---------------------------------------------------------------------------------

def read_metrics(run_dir):
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def write_metrics(run_dir, rows):
    """Rewrite metrics.csv whole through a rename: a kill never leaves half a row."""
    def write(f):
        writer = csv.DictWriter(f, METRICS_HEADER, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(os.path.join(run_dir, METRICS_FILE), write, what='the metrics')


def metrics_row(epoch, train_loss, train_accuracy, val_loss, val_accuracy, learning_rate,
                seconds, checkpoint):
    """The metrics.csv row of an epoch whose checkpoint (a prefix) is `checkpoint`; the
    validation columns are empty when val_loss and val_accuracy are None (no validation part)."""
    def shown(value):
        return '' if value is None else '%.6f' % value
    return {'epoch': epoch, 'train_loss': '%.6f' % train_loss,
            'train_accuracy': '%.6f' % train_accuracy, 'val_loss': shown(val_loss),
            'val_accuracy': shown(val_accuracy), 'learning_rate': '%.6g' % learning_rate,
            'seconds': '%.2f' % seconds,
            'checkpoint': os.path.basename(checkpoint)}


def completed_epochs(run_dir):
    """The metrics rows of epochs 1, 2, ... in order: the epochs a resume may continue after.

    Each epoch saves its checkpoint, then rewrites metrics.csv whole, then prunes old checkpoints
    (--keep-checkpoints), so after a kill at any moment the newest row has its checkpoint; a kill
    between the two writes leaves a checkpoint without a row, and that epoch runs again. A
    checkpoint damaged since is found by checkpoints.resume()."""
    rows = []
    for expected, row in enumerate(read_metrics(run_dir), start=1):
        try:
            epoch = int(row['epoch'])
        except (TypeError, ValueError):
            raise RunError('%s is damaged: row %d has epoch %r; correct or delete that row (the '
                           'epochs from it on are trained again)'
                           % (os.path.join(run_dir, METRICS_FILE), expected, row['epoch'])
                           ) from None
        if epoch != expected:
            break
        rows.append(row)
    return rows


# --- the folder ----------------------------------------------------------------------------------

def save_json(path, value, what):
    atomic_write(path, lambda f: json.dump(value, f, indent=1), what=what)


def open_run(settings, log=print):
    """Create or reopen the run dir and own it (outputdir.own: a FolderBusyError if another
    process has it) -> (its FolderLock, the metrics rows of its completed epochs).

    A run dir that holds completed epochs resumes only with the recipe it was trained with."""
    run_dir = settings.run_dir
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError('--run-dir %s is a file' % run_dir)
    lock = outputdir.own(run_dir, '--run-dir', log)
    try:
        _remove_old_cache(run_dir, log)
        return lock, _reopen(settings)
    except BaseException:
        lock.release()
        raise


def _remove_old_cache(run_dir, log):
    """Delete the per-run feature cache that runs kept before the feature store, and say so."""
    folder = os.path.join(run_dir, 'feature_cache')
    if not os.path.isdir(folder):
        return
    size = size_of(folder)
    shutil.rmtree(folder)
    log('removed %s, the per-run feature cache of earlier versions (%s): frozen features now '
        'live in the feature store (--feature-store)' % (folder, human_size(size)))


def _reopen(settings):
    run_dir = settings.run_dir
    rows = completed_epochs(run_dir)
    settings_path = os.path.join(run_dir, SETTINGS_FILE)
    current = settings.saved()
    if rows and os.path.exists(settings_path):
        with open(settings_path) as f:
            try:
                saved = json.load(f)
            except ValueError as error:
                raise RunError('%s is damaged (%s): delete it and rerun with the settings the '
                               'run was started with' % (settings_path, error)) from None
        changed = settings.recipe_changes(saved)
        if changed:
            raise RunError('%s was trained with other %s (%s): use a new --run-dir, or the same '
                           'settings to resume' % (run_dir, ', '.join(changed), ', '.join(
                               '%s=%s' % (key, saved.get(key)) for key in changed)))
    save_json(settings_path, current, 'the settings')
    return rows


# --- the model: what predicting and exporting need besides the checkpoint ------------------------

@dataclasses.dataclass
class Model:
    """The class names of a run, its network's structure and the mean its images get: a
    per-channel BGR mean (3 values) or a 256x256x3 BGR mean image."""
    classes: list
    structure: netspec.Structure
    mean: object


def write_model(run_dir, model):
    """Record `model` in the run dir (model.json, and mean.npy for a mean image)."""
    mean = weights_file.mean_array(model.mean)
    if mean.ndim == 1:
        recorded = [float(value) for value in mean]
    else:
        recorded = MEAN_IMAGE_FILE
        atomic_write(os.path.join(run_dir, MEAN_IMAGE_FILE),
                     lambda f: np.save(f, mean, allow_pickle=False), 'wb', 'the mean image',
                     mean.nbytes)
    save_json(os.path.join(run_dir, MODEL_FILE),
              {'classes': list(model.classes), 'structure': model.structure.to_dict(),
               'mean': recorded}, 'the model\'s description')


def read_model(run_dir):
    """The Model recorded in a run dir, or a RunError that says how to record it."""
    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise RunError('%s has no %s (its class names and network): it was trained before runs '
                       'recorded them, or is not a run dir. Rerun the training command with '
                       '--run-dir %s to record them' % (run_dir, MODEL_FILE, run_dir))
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        mean = data['mean']
        if isinstance(mean, str):
            mean = np.load(os.path.join(run_dir, mean), allow_pickle=False)
        checked = weights_file.mean_array(mean)
        return Model(list(data['classes']), netspec.Structure.from_dict(data['structure']),
                     tuple(mean) if isinstance(mean, list) else checked)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError('%s is damaged (%s): rerun the training command with --run-dir %s to '
                       'write it again' % (path, error, run_dir)) from None


def recorded_model(run_dir, classes):
    """The Model recorded in a run dir; for a run from before runs recorded it, bvlc_alexnet with
    `classes` and the ImageNet mean (the only model such runs could train)."""
    if os.path.exists(os.path.join(run_dir, MODEL_FILE)):
        return read_model(run_dir)
    return Model(list(classes), netspec.BVLC_ALEXNET.with_classes(len(classes)),
                 weights_file.IMAGENET_MEAN_BGR)


# --- where a run started --init-from began ---------------------------------------------------------

def write_start(run_dir, record):
    """Record where the run began (a dict: checkpoint, epoch, val_accuracy, layers, weights,
    weights_digest), once, before its first epoch: a resume restores its own checkpoints and
    keys its feature cache by the recorded digest, whatever became of the checkpoint since."""
    save_json(os.path.join(run_dir, INIT_FILE), record, 'where the run started')


def read_start(run_dir):
    """The record write_start wrote, or a RunError that says how to go on."""
    path = os.path.join(run_dir, INIT_FILE)
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
        missing = [key for key in ('checkpoint', 'weights_digest')
                   if not isinstance(record.get(key), str)]
        if missing:
            raise ValueError('no %s' % ', '.join(missing))
        return record
    except (OSError, ValueError, AttributeError) as error:
        raise RunError('%s is missing or damaged (%s): it records the checkpoint this run started '
                       'from; start again in a new --run-dir' % (path, error)) from None
