"""A run's checkpoints: their names, finding one, checking that it restores, choosing the best,
restoring it, what one holds, and starting a new run from one (--init-from). Training, --evaluate,
--predict and --export all go through here.

    runs/<name>/model.ckpt-<epoch>.{index,data-00000-of-00001,meta}   one per kept epoch
    runs/<name>/best.json     the epoch with the best validation accuracy, and its checkpoint

A checkpoint's files are checked against the checksums TensorFlow stored with each tensor: a
damaged one is a RunError naming it (reading), or, while resuming, a one-line warning and an
earlier epoch (resume). Each epoch saves its checkpoint, then its metrics row, then prunes old
checkpoints (prune), so after a kill at any moment the newest metrics row has its checkpoint.
"""
import contextlib
import json
import os
import re

import numpy as np
import tensorflow as tf

import netspec
import rundir
import weights_file
from atomicfile import free_space, human_size, same_file_system
from rundir import RunError

PREFIX = 'model.ckpt'
SUFFIXES = ('.index', '.data-00000-of-00001', '.meta')
BEST_FILE = 'best.json'


# --- names and files -----------------------------------------------------------------------------

def path(run_dir, epoch):
    """The prefix of the checkpoint of `epoch` in `run_dir`."""
    return os.path.join(run_dir, '%s-%d' % (PREFIX, epoch))


def missing_files(run_dir, epoch):
    """The names of the files a restore needs that epoch's checkpoint lacks (.index, .data)."""
    prefix = path(run_dir, epoch)
    return [os.path.basename(prefix + suffix) for suffix in SUFFIXES[:2]
            if not os.path.exists(prefix + suffix)]


def epoch_of(prefix):
    """The epoch of a checkpoint prefix (model.ckpt-7 -> 7), or None for another name."""
    found = re.fullmatch(re.escape(PREFIX) + r'-(\d+)', os.path.basename(prefix))
    return int(found.group(1)) if found else None


def exists(run_dir, epoch):
    return not missing_files(run_dir, epoch)


def remove(run_dir, epoch):
    prefix = path(run_dir, epoch)
    for suffix in SUFFIXES:
        if os.path.exists(prefix + suffix):
            os.remove(prefix + suffix)


def size(num_classes):
    """About the size of one epoch's checkpoint: every layer's float32 parameters, and 1 MB for
    the .meta graph and the .index."""
    shapes = netspec.BVLC_ALEXNET.with_classes(num_classes).weight_shapes().values()
    parameters = sum(_product(weights) + _product(biases) for weights, biases in shapes)
    return 4 * parameters + (1 << 20)


def _product(shape):
    result = 1
    for side in shape:
        result *= side
    return result


def find(where):
    """The checkpoint prefix `where` names: a prefix (model.ckpt-5), one of its files
    (model.ckpt-5.index), or a run dir (the checkpoint of its best.json)."""
    if os.path.isdir(where):
        if os.path.exists(os.path.join(where, rundir.SVM_FILE)):
            raise RunError('%s holds a linear SVM on frozen features (--classifier svm), not a '
                           'TensorFlow checkpoint: --evaluate, --predict and --export take '
                           'fine-tuned runs; its test report is %s'
                           % (where, os.path.join(where, 'test_report.md')))
        if not os.path.exists(os.path.join(where, BEST_FILE)):
            raise RunError('%s has no %s: name a checkpoint such as %s'
                           % (where, BEST_FILE, path(where, 1)))
        return os.path.join(where, read_best(where)['checkpoint'])
    given = where
    for suffix in SUFFIXES:
        if where.endswith(suffix):
            where = where[:-len(suffix)]
    if not os.path.exists(where + '.index'):
        if weights_file.is_weights_file(given):    # the pretrained weights, given by mistake
            weights_file.require_family(given)
            raise RunError('%s is a weights file, not a checkpoint: fine-tune it with python '
                           'fineturn.py --weights %s, then use that run dir' % (given, given))
        raise RunError('no checkpoint %s (expected %s.index)' % (where, where))
    return where


# --- choosing the best ---------------------------------------------------------------------------

def validated(rows):
    """Whether the epochs of metrics rows were validated (a run without a validation part, a
    protocol's VAL = 0, leaves those columns empty)."""
    return all(row['val_accuracy'] != '' for row in rows)


def best_epoch(rows):
    """The best of metrics rows: highest validation accuracy; ties: lower validation loss, then
    the earlier epoch. Without validation, the last epoch."""
    if not validated(rows):
        return rows[-1]
    return min(rows, key=lambda r: (-float(r['val_accuracy']), float(r['val_loss']),
                                    int(r['epoch'])))


def write_best(run_dir, rows):
    """best.json for the best of `rows` (the epoch tested, and how it was chosen); returns that
    row."""
    best, chosen = best_epoch(rows), validated(rows)
    rundir.save_json(os.path.join(run_dir, BEST_FILE),
                     {'epoch': int(best['epoch']),
                      'val_accuracy': float(best['val_accuracy']) if chosen else None,
                      'val_loss': float(best['val_loss']) if chosen else None,
                      'checkpoint': os.path.basename(path(run_dir, int(best['epoch']))),
                      'selection': 'the best validation accuracy' if chosen else
                      'the last epoch (no validation part)'},
                     'the best epoch')
    return best


def read_best(run_dir):
    """The best.json write_best wrote in `run_dir`."""
    with open(os.path.join(run_dir, BEST_FILE), encoding='utf-8') as f:
        return json.load(f)


def prune(run_dir, rows, keep):
    """Delete the checkpoints of all but the last `keep` epochs and the best one (keep 0: none)."""
    if keep <= 0:
        return
    protected = {int(best_epoch(rows)['epoch'])} | {int(r['epoch']) for r in rows[-keep:]}
    for row in rows:
        if int(row['epoch']) not in protected:
            remove(run_dir, int(row['epoch']))


def record_epoch(run_dir, rows, keep):
    """After an epoch's checkpoint is saved: write metrics.csv, then prune old checkpoints."""
    rundir.write_metrics(run_dir, rows)
    prune(run_dir, rows, keep)


# --- checking and restoring ----------------------------------------------------------------------

def damage(prefix):
    """Why the files of checkpoint `prefix` are damaged (each tensor is read and checked against
    the checksum TensorFlow stored with it), or None if they read whole."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as error:
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    return None


@contextlib.contextmanager
def reading(prefix):
    """Inside the block, a checkpoint whose files can't be read (a truncated .data, a damaged
    .index) becomes a RunError that says what is damaged."""
    try:
        yield
    except (tf.errors.OpError, IndexError, ValueError):   # IndexError: TF's "Read less bytes"
        problem = damage(prefix)
        if problem is None:
            raise                            # readable files: the error is about something else
        raise RunError('checkpoint %s is damaged (%s): use another epoch\'s checkpoint'
                       % (prefix, problem)) from None


def classes(prefix):
    """The number of classes of a checkpoint's last layer (None if it has none)."""
    with reading(prefix):
        shape = tf.train.load_checkpoint(prefix).get_variable_to_shape_map().get('fc8/biases')
    return shape[0] if shape else None


def check_classes(prefix, names, source, fix):
    """A RunError unless checkpoint `prefix` has one output per class name in `names` (read from
    `source`, e.g. 'labels.txt in data'); `fix` ends the message."""
    found = classes(prefix)
    if found != len(names):
        raise RunError('%s has %s classes in fc8 but %s names %d: %s'
                       % (prefix, found or 'no', source, len(names), fix))


def restore(session, saver, prefix):
    """Restore checkpoint `prefix` into `session` with `saver` (a RunError if it is damaged)."""
    with session.graph.as_default(), reading(prefix):   # a Saver outside its graph works eagerly
        saver.restore(session, prefix)


def restore_or_why(session, saver, prefix):
    """Restore `prefix` -> None, or why it can't: its files are damaged. A checkpoint that reads
    but doesn't fit the graph is a RunError."""
    try:
        with session.graph.as_default():
            saver.restore(session, prefix)
        return None
    except (tf.errors.OpError, ValueError) as error:
        problem = damage(prefix)
        if problem is not None:
            return problem
        raise RunError('%s does not fit this run (%s): was it made with other layers or '
                       'classes? Use a new --run-dir'
                       % (prefix, str(error).strip().splitlines()[0])) from None


def resume(run_dir, rows, try_restore, warn):
    """Restore the newest completed epoch whose checkpoint restores; return the rows up to it.

    `try_restore(prefix)` restores a checkpoint and returns None, or returns why it can't (the file
    is damaged). Epochs whose checkpoints were pruned (--keep-checkpoints) are passed over; the
    newest epoch, or any kept one, that lacks a file or doesn't restore is reported by
    warn(one line). If an older checkpoint is used, metrics.csv is cut back to it, so the rows
    match the checkpoints again and the later epochs are trained again."""
    for epoch in range(len(rows), 0, -1):
        missing = missing_files(run_dir, epoch)
        if len(missing) == 2 and epoch < len(rows):
            continue                                  # pruned
        problem = ('missing %s' % ', '.join(missing) if missing
                   else try_restore(path(run_dir, epoch)))
        if problem is None:
            if epoch < len(rows):
                rundir.write_metrics(run_dir, rows[:epoch])
            return rows[:epoch]
        warn('checkpoint %s of epoch %d does not restore (%s): using an earlier one and training '
             'the epochs after it again' % (path(run_dir, epoch), epoch, problem))
    if rows:
        rundir.write_metrics(run_dir, [])
        warn('no checkpoint in %s restores: starting again from the pretrained weights' % run_dir)
    return []


# --- using one -----------------------------------------------------------------------------------

def open_model(run_dir, checkpoint=None):
    """(checkpoint prefix, rundir.Model) of `checkpoint` (a prefix, one of its files or a run dir)
    or else of the best epoch of `run_dir`; the model is the one recorded in the checkpoint's run
    dir, and it must have as many class names as the checkpoint has outputs."""
    if checkpoint is None and not os.path.isdir(run_dir):
        raise RunError('no run dir %s: train one with python fineturn.py --run-dir %s, or name a '
                       'checkpoint with --checkpoint' % (run_dir, run_dir))
    prefix = find(checkpoint or run_dir)
    model = rundir.read_model(os.path.dirname(prefix))
    check_classes(prefix, model.classes, os.path.join(os.path.dirname(prefix), rundir.MODEL_FILE),
                  'that file was written for another dataset; rerun the training command that '
                  'made the checkpoint to record it again, or use a checkpoint trained with it')
    return prefix, model


def arrays(prefix, structure):
    """{layer: {'weights', 'biases'}} numpy arrays of the network's layers in a checkpoint."""
    with reading(prefix):
        return _layers(tf.train.load_checkpoint(prefix), structure.names)


def _layers(reader, names):
    """{layer: {'weights', 'biases'}} of the layers `names` from a checkpoint's reader."""
    return {name: {kind: reader.get_tensor('%s/%s' % (name, kind))
                   for kind in ('weights', 'biases')} for name in names}


def space_warning(run_dir, epochs, keep, done, checkpoint_size, features=None):
    """The warning line if the rest of a run may not fit in the free space, else None: the
    checkpoints of `epochs` (of size `checkpoint_size`, after epoch `done`, `keep` of them kept)
    in `run_dir`, and `features`, (feature store folder, bytes of the entries it lacks), on the
    store's file system (the run dir's, or another)."""
    remaining = epochs - done
    # at most: the last `keep`, the best, and the new one before pruning
    at_once = remaining if keep <= 0 else min(remaining, keep + 2)
    present = [os.path.join(run_dir, name) for name in os.listdir(run_dir)
               if name.startswith(PREFIX + '-')]
    needed = max(0, at_once * checkpoint_size - sum(map(os.path.getsize, present)))
    store, store_bytes = features or (run_dir, 0)
    shared = same_file_system(store, run_dir)
    parts = ['up to %d checkpoints of %s' % (at_once, human_size(checkpoint_size))] \
        if at_once else []
    if shared and store_bytes:
        needed += store_bytes
        parts.append('%s of new features in the feature store %s' % (human_size(store_bytes),
                                                                      store))
    lines = []
    free = free_space(run_dir)
    if free is not None and needed > free:
        lines.append('this run may need about %s more in %s (%s) but %s is free: free some space'
                     '%s' % (human_size(needed), run_dir, ' and '.join(parts), human_size(free),
                             ', or keep fewer checkpoints with --keep-checkpoints N (now %d: the '
                             'last N epochs and the best are kept; 0 keeps all)' % keep
                             if at_once else ''))
    free = None if shared else free_space(store)
    if free is not None and store_bytes > free:
        lines.append('the feature store %s may need about %s more (the frozen features this run '
                     'computes) but %s is free there: free some space, or pass another '
                     '--feature-store' % (store, human_size(store_bytes), human_size(free)))
    return '; '.join(lines) or None


# --- starting a new run from one (--init-from) ---------------------------------------------------

def init_weights(where, weights, names, skip_layers, records_dir):
    """The weights a new run started --init-from `where` (a checkpoint, one of its files or a run
    dir: its best) starts from -> (the checkpoint's prefix, Weights, the layers taken from it):
    every layer the checkpoint holds comes from it, the others from `weights` (the --weights
    file's Weights), whose description (network, mean) the run keeps. Layers of `skip_layers`
    come from neither: the run starts them from their fillers. A RunError, in one line, for a
    checkpoint of another network or mean, or (unless fc8 is skipped) of other classes than
    `names` (labels.txt in `records_dir`)."""
    prefix = find(where)
    model = rundir.recorded_model(os.path.dirname(prefix), names)
    size = len(names)
    fix = 'start from a run that was trained from the same --weights'
    if model.structure.with_classes(size) != weights.structure.with_classes(size):
        raise RunError('--init-from %s: that run\'s network differs from the one of --weights '
                       '(other layers, or another order of ReLU, LRN and pooling): %s'
                       % (prefix, fix))
    if not np.array_equal(weights_file.mean_array(model.mean),
                          weights_file.mean_array(weights.mean)):
        raise RunError('--init-from %s: that run subtracted another mean than --weights does: %s'
                       % (prefix, fix))
    if 'fc8' not in skip_layers and (model.classes != list(names) or classes(prefix) != size):
        raise RunError('--init-from %s was trained on other classes than labels.txt in %s '
                       'lists: start from a run on these classes, or add fc8 to --skip-layers '
                       'to start fc8 from Caffe\'s fillers' % (prefix, records_dir))
    with reading(prefix):
        reader = tf.train.load_checkpoint(prefix)
        held = [name for name in weights.structure.names
                if name not in skip_layers and reader.has_tensor(name + '/weights')]
        layers = _layers(reader, held)
    merged = weights_file.Weights(dict(weights, **layers), weights.structure, weights.mean,
                                  weights.labels)
    return prefix, merged, held

