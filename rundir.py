"""A training run's folder and its state on disk: settings, metrics rows, checkpoints, best epoch.

    runs/<name>/settings.json       the run's settings (a rerun must keep the recipe's)
    runs/<name>/metrics.csv         one row per completed epoch
    runs/<name>/model.ckpt-<epoch>  TensorFlow checkpoints (.index, .data-*, .meta)
    runs/<name>/best.json           the epoch with the best validation accuracy
    runs/<name>/model.json          what using its checkpoints needs: class names, network
                                    structure, mean (a mean image in mean.npy next to it)

Every file is written whole through a rename (atomicfile), and each epoch saves its checkpoint
first, then metrics.csv, then prunes old checkpoints: after a kill at any moment, the newest
metrics row has its checkpoint. One process owns the folder at a time (outputdir: a lock, and the
removal of the temporary files killed writers left). A resumed run restores the newest checkpoint
that restores (resume) and cuts metrics.csv back to it if a newer one is damaged. Before a run
starts, space_warning compares the space it will need with the free space.

No TensorFlow here: the checks and the state answer before TensorFlow loads, and their tests run
without it.
"""
import csv
import dataclasses
import json
import os

import numpy as np

import netspec
import outputdir
import weights_file
from atomicfile import atomic_write, free_space, human_size
from errors import UserError

METRICS_FILE = 'metrics.csv'
CACHE_DIR = 'feature_cache'
SETTINGS_FILE = 'settings.json'
BEST_FILE = 'best.json'
MODEL_FILE = 'model.json'
MEAN_IMAGE_FILE = 'mean.npy'
CHECKPOINT_PREFIX = 'model.ckpt'
CHECKPOINT_SUFFIXES = ('.index', '.data-00000-of-00001', '.meta')
METRICS_HEADER = ('epoch', 'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy',
                  'learning_rate', 'seconds', 'checkpoint')


class RunError(UserError):
    """A problem with the run's inputs or settings; the message says how to fix it."""


@dataclasses.dataclass
class Settings:
    """Everything a training run depends on: fineturn.py's flags over setting.py's defaults."""
    data_dir: str
    weights: str
    run_dir: str
    epochs: int
    batch_size: int
    learning_rate: float
    lr_decay: float
    weight_decay: float
    lr_mult: dict             # {layer: [weights multiplier, biases multiplier]}
    keep_prob: float
    train_layers: list
    skip_layers: list
    flip: bool
    seed: int
    keep_checkpoints: int
    cache: bool
    cache_ram_gb: float
    allow_pickle: bool = dataclasses.field(default=False, metadata={'saved': False})

    def saved(self):
        """The settings as settings.json records them (all but allow_pickle), in field order."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.metadata.get('saved', True)}

    def check(self):
        """RunError for settings no run can use."""
        names = netspec.LAYER_NAMES
        for flag, layers in (('--train-layers', self.train_layers),
                             ('--skip-layers', self.skip_layers)):
            unknown = [name for name in layers if name not in names]
            if unknown:
                raise RunError('%s: unknown layer(s) %s; AlexNet has %s'
                               % (flag, ', '.join(unknown), ', '.join(names)))
        if not self.train_layers:
            raise RunError('--train-layers is empty: name at least one layer to train, e.g. fc8')
        frozen_random = [name for name in self.skip_layers if name not in self.train_layers]
        if frozen_random:
            raise RunError('layer(s) %s would be neither loaded nor trained (random forever): add '
                           'them to --train-layers or remove them from --skip-layers'
                           % ', '.join(frozen_random))
        if self.epochs < 1 or self.batch_size < 1:
            raise RunError('--epochs and --batch-size must be at least 1')
        if not 0 < self.keep_prob <= 1:
            raise RunError('--keep-prob must be in (0, 1], got %g' % self.keep_prob)
        if not (self.learning_rate > 0 and self.lr_decay > 0 and self.weight_decay >= 0):
            raise RunError('--learning-rate and --lr-decay must be positive, --weight-decay >= 0')
        untrained = sorted(set(self.lr_mult) - set(self.train_layers))
        if untrained:
            raise RunError('--lr-mult names %s but --train-layers does not: train the layer or '
                           'drop its multiplier' % ', '.join(untrained))


def lr_multipliers(spec):
    """Learning-rate multipliers as {layer: [weights, biases]} from `spec`: a dict like setting.py's
    LR_MULT ({'fc8': (10, 20)} or {'fc8': 10}) or --lr-mult's text ('fc8=10,fc7=2/4'). A layer
    given one number gets twice it for its biases, as in Caffe's zoo recipes. ValueError for
    anything else."""
    if isinstance(spec, str):
        spec = dict(item.split('=', 1) if '=' in item else (item, '')
                    for item in (part.strip() for part in spec.split(',')) if item)
        spec = {layer: value.split('/') for layer, value in spec.items()}
    result = {}
    for layer, value in spec.items():
        values = [value] if isinstance(value, (int, float, str)) else list(value)
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            numbers = []
        if layer not in netspec.LAYER_NAMES or len(numbers) not in (1, 2) or \
                not all(0 < n < float('inf') for n in numbers):
            raise ValueError('%s=%s: expected LAYER=WEIGHTS or LAYER=WEIGHTS/BIASES with positive '
                             'numbers and a layer of %s (e.g. fc8=10)'
                             % (layer, '/'.join(map(str, values)), ', '.join(netspec.LAYER_NAMES)))
        result[layer] = numbers if len(numbers) == 2 else [numbers[0], 2 * numbers[0]]
    return result


# Settings that change what an epoch computes: a run dir can only be resumed with the same ones.
RECIPE_KEYS = ('batch_size', 'learning_rate', 'lr_decay', 'weight_decay', 'lr_mult', 'keep_prob',
               'train_layers', 'skip_layers', 'flip', 'seed')
# ... and their values in runs from before they existed
RECIPE_DEFAULTS = {'lr_mult': {}}


# --- checkpoints ---------------------------------------------------------------------------------

def checkpoint_path(run_dir, epoch):
    return os.path.join(run_dir, '%s-%d' % (CHECKPOINT_PREFIX, epoch))


def has_checkpoint(run_dir, epoch):
    prefix = checkpoint_path(run_dir, epoch)
    return os.path.exists(prefix + '.index') and os.path.exists(prefix + '.data-00000-of-00001')


def checkpoint_prefix(path):
    """Accept model.ckpt-5, model.ckpt-5.index or a run dir (its best.json checkpoint)."""
    if os.path.isdir(path):
        best = os.path.join(path, BEST_FILE)
        if not os.path.exists(best):
            raise RunError('%s has no %s: name a checkpoint such as %s'
                           % (path, BEST_FILE, checkpoint_path(path, 1)))
        with open(best) as f:
            return os.path.join(path, json.load(f)['checkpoint'])
    given = path
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    if not os.path.exists(path + '.index'):
        if weights_file.is_weights_file(given):    # the pretrained weights, given by mistake
            weights_file.require_family(given)
            raise RunError('%s is a weights file, not a checkpoint: fine-tune it with python '
                           'fineturn.py --weights %s, then use that run dir' % (given, given))
        raise RunError('no checkpoint %s (expected %s.index)' % (path, path))
    return path


def missing_checkpoint_files(run_dir, epoch):
    """The names of the files a restore needs that epoch's checkpoint lacks (.index, .data)."""
    prefix = checkpoint_path(run_dir, epoch)
    return [os.path.basename(prefix + suffix) for suffix in CHECKPOINT_SUFFIXES[:2]
            if not os.path.exists(prefix + suffix)]


def remove_checkpoint(run_dir, epoch):
    prefix = checkpoint_path(run_dir, epoch)
    for suffix in CHECKPOINT_SUFFIXES:
        if os.path.exists(prefix + suffix):
            os.remove(prefix + suffix)


def prune_checkpoints(run_dir, rows, keep):
    """Delete the checkpoints of all but the last `keep` epochs and the best one (keep 0: none)."""
    if keep <= 0:
        return
    protected = {int(best_epoch(rows)['epoch'])} | {int(r['epoch']) for r in rows[-keep:]}
    for row in rows:
        if int(row['epoch']) not in protected:
            remove_checkpoint(run_dir, int(row['epoch']))


def checkpoint_bytes(num_classes):
    """About the size of one epoch's checkpoint: every layer's float32 parameters, and 1 MB for
    the .meta graph and the .index."""
    shapes = netspec.BVLC_ALEXNET.with_classes(num_classes).weight_shapes().values()
    parameters = sum(_product(weights) + _product(biases) for weights, biases in shapes)
    return 4 * parameters + (1 << 20)


def _product(shape):
    result = 1
    for size in shape:
        result *= size
    return result


def resume(run_dir, rows, restore, warn):
    """Restore the newest completed epoch whose checkpoint restores; return the rows up to it.

    `restore(prefix)` restores a checkpoint and returns None, or returns why it can't (the file
    is damaged). Epochs whose checkpoints were pruned (--keep-checkpoints) are passed over; the
    newest epoch, or any kept one, that lacks a file or doesn't restore is reported by
    warn(one line). If an older checkpoint is used, metrics.csv is cut back to it, so the rows
    match the checkpoints again and the later epochs are trained again."""
    for epoch in range(len(rows), 0, -1):
        missing = missing_checkpoint_files(run_dir, epoch)
        if len(missing) == 2 and epoch < len(rows):
            continue                                  # pruned
        problem = 'missing %s' % ', '.join(missing) if missing else restore(
            checkpoint_path(run_dir, epoch))
        if problem is None:
            if epoch < len(rows):
                write_metrics(run_dir, rows[:epoch])
            return rows[:epoch]
        warn('checkpoint %s of epoch %d does not restore (%s): using an earlier one and training '
             'the epochs after it again' % (checkpoint_path(run_dir, epoch), epoch, problem))
    if rows:
        write_metrics(run_dir, [])
        warn('no checkpoint in %s restores: starting again from the pretrained weights' % run_dir)
    return []


def space_warning(run_dir, settings, done, checkpoint_size, cache_size):
    """The warning line if the rest of the run (checkpoints of size `checkpoint_size` after epoch
    `done`, a feature cache of `cache_size` bytes) may not fit in the free space, else None."""
    remaining = settings.epochs - done
    keep = settings.keep_checkpoints
    # at most: the last `keep`, the best, and the new one before pruning
    at_once = remaining if keep <= 0 else min(remaining, keep + 2)
    cache_dir = os.path.join(run_dir, CACHE_DIR)
    present = [os.path.join(run_dir, name) for name in os.listdir(run_dir)
               if name.startswith(CHECKPOINT_PREFIX + '-')]
    if os.path.isdir(cache_dir):
        present += [os.path.join(cache_dir, name) for name in os.listdir(cache_dir)]
    needed = max(0, at_once * checkpoint_size + cache_size - sum(map(os.path.getsize, present)))
    free = free_space(run_dir)
    if free is None or needed <= free:
        return None
    return ('this run may need about %s more in %s (up to %d checkpoints of %s%s) but %s is free: '
            'free some space, or keep fewer checkpoints with --keep-checkpoints N (now %d: the '
            'last N epochs and the best are kept; 0 keeps all)'
            % (human_size(needed), run_dir, at_once, human_size(checkpoint_size),
               ' and a %s feature cache' % human_size(cache_size) if cache_size else '',
               human_size(free), keep))


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
                seconds):
    return {'epoch': epoch, 'train_loss': '%.6f' % train_loss,
            'train_accuracy': '%.6f' % train_accuracy, 'val_loss': '%.6f' % val_loss,
            'val_accuracy': '%.6f' % val_accuracy, 'learning_rate': '%.6g' % learning_rate,
            'seconds': '%.2f' % seconds,
            'checkpoint': os.path.basename(checkpoint_path('', epoch))}


def record_epoch(run_dir, rows, keep):
    """After an epoch's checkpoint is saved: write metrics.csv, then prune old checkpoints."""
    write_metrics(run_dir, rows)
    prune_checkpoints(run_dir, rows, keep)


def completed_epochs(run_dir):
    """The metrics rows of epochs 1, 2, ... in order: the epochs a resume may continue after.

    Each epoch saves its checkpoint, then rewrites metrics.csv whole, then prunes old checkpoints
    (--keep-checkpoints), so after a kill at any moment the newest row has its checkpoint; a kill
    between the two writes leaves a checkpoint without a row, and that epoch runs again. A
    checkpoint damaged since is found by resume()."""
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


def best_epoch(rows):
    """Highest validation accuracy; ties: lower validation loss, then the earlier epoch."""
    return min(rows, key=lambda r: (-float(r['val_accuracy']), float(r['val_loss']),
                                    int(r['epoch'])))


def write_best(run_dir, rows):
    """best.json for the best of `rows`; returns that row."""
    best = best_epoch(rows)
    save_json(os.path.join(run_dir, BEST_FILE),
              {'epoch': int(best['epoch']), 'val_accuracy': float(best['val_accuracy']),
               'val_loss': float(best['val_loss']),
               'checkpoint': os.path.basename(checkpoint_path(run_dir, int(best['epoch'])))},
              'the best epoch')
    return best


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
        return lock, _reopen(settings)
    except BaseException:
        lock.release()
        raise


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
        changed = [key for key in RECIPE_KEYS
                   if saved.get(key, RECIPE_DEFAULTS.get(key)) != current[key]]
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
    mean: object = netspec.MEAN_BGR


def write_model(run_dir, model):
    """Record `model` in the run dir (model.json, and mean.npy for a mean image)."""
    mean = np.asarray(model.mean, np.float32)
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
        return Model(list(data['classes']), netspec.Structure.from_dict(data['structure']),
                     tuple(mean) if isinstance(mean, list) else mean)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError('%s is damaged (%s): rerun the training command with --run-dir %s to '
                       'write it again' % (path, error, run_dir)) from None


def recorded_model(run_dir, classes):
    """The Model recorded in a run dir; for a run from before runs recorded it, bvlc_alexnet with
    `classes` (the only model such runs could train)."""
    if os.path.exists(os.path.join(run_dir, MODEL_FILE)):
        return read_model(run_dir)
    return Model(list(classes), netspec.BVLC_ALEXNET.with_classes(len(classes)))
