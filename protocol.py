"""A repeated-split protocol (fineturn.py --splits N): its plan, what it started with, the state of
its splits. Its table is protocol_table.py's.

    RUN_DIR/protocol_identity.json   the records (folder and a digest of its image list), the
                                     seed, the ratios and the recipe the protocol started with
    RUN_DIR/split-01 ... split-N     each split an ordinary run dir with its split.csv, and
                                     split.json once finished (what the table needs besides
                                     its test report: seed, counts, best epoch, time)
    RUN_DIR/protocol.md              the table: one row per split, OA and Cohen's kappa as mean
                                     ± std, per-class accuracy, time, the exact command
    RUN_DIR/protocol.json            the same figures, for programs
    RUN_DIR/protocol.png             the mean row-normalised confusion matrix

plan() answers before TensorFlow loads: it checks --splits, --split and --split-ratios, draws
every split (so a class too small for the ratios is named at once) and checks the identity.
protocol_run.py then runs the splits, and protocol_table.finish writes the table.

A protocol's folder holds one protocol: check_identity refuses, in one line, records or a recipe
other than the ones it started with. The number of splits is not part of it: split k depends on
the seed and k alone, so rerunning with a larger --splits N extends a protocol.

Several processes may share a protocol's folder (--split K jobs of an array job): each owns the
run dir of its split (outputdir), and the identity's check and the table's writing happen under
a short lock on RUN_DIR/.protocol.lock (outputdir.held). The job that finishes the last split
finds every split finished and writes the table; the others say what it waits for.

A split has finished when its split.json exists (record_split writes it after the test report).
The time it records is that of the run that finished it (a resumed split counts its last run).

No TensorFlow here, nor anything slow to import: fineturn.py calls plan() before --help's answer
could wait for it.
"""
import dataclasses
import json
import os
import shlex

import class_names
import frozen_features
import splits
from atomicfile import writing
from dataset_folder import LABELS_FILE
from errors import UserError
from outputdir import held
from rundir import save_json

IDENTITY_FILE = 'protocol_identity.json'
SPLIT_INFO = 'split.json'
LOCK_FILE = '.protocol.lock'


class ProtocolError(UserError):
    """A protocol that cannot go on as asked; the message names the fix."""


# --- what a protocol started with ----------------------------------------------------------------

@dataclasses.dataclass
class Identity:
    """What a protocol's results depend on besides the number of splits: the records folder and
    splits.pool_digest of its images (names, labels and the records' bytes), the seed, the
    ratios, and the recipe (a dict: the classifier and everything a split's result depends on
    beyond its images, e.g. the weights file's digest, the layers, the optimiser's knobs, the
    epochs)."""
    records_dir: str
    pool_digest: str
    seed: int
    ratios: tuple
    recipe: dict

    def saved(self):
        return dict(dataclasses.asdict(self), ratios=list(self.ratios))


def check_identity(run_dir, identity):
    """Record `identity` in a new protocol folder; in one that has one, a ProtocolError unless
    it is the same (the records may have moved: their digest decides)."""
    path = os.path.join(run_dir, IDENTITY_FILE)
    if not os.path.exists(path):
        save_json(path, identity.saved(), 'the protocol\'s identity')
        return
    try:
        with open(path, encoding='utf-8') as f:
            started = json.load(f)
        then = Identity(**dict(started, ratios=tuple(started['ratios'])))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ProtocolError('%s is damaged (%s): use a new --run-dir, or delete the file if you '
                            'are sure this command is the one the protocol started with'
                            % (path, error)) from None
    changes = []
    if then.pool_digest != identity.pool_digest:
        changes.append('records (%s then, %s now)' % (then.records_dir, identity.records_dir))
    for name, flag in (('seed', '--seed'), ('ratios', '--split-ratios')):
        if getattr(then, name) != getattr(identity, name):
            changes.append('%s (%s then)' % (flag, _shown(getattr(then, name))))
    changed = sorted(name for name in set(then.recipe) | set(identity.recipe)
                     if then.recipe.get(name) != identity.recipe.get(name))
    if changed:
        changes.append('recipe: %s' % ', '.join('%s=%s then' % (name, _shown(then.recipe.get(
            name))) for name in changed))
    if changes:
        raise ProtocolError('%s holds a protocol started with other %s: use a new --run-dir, or '
                            'the records and settings it started with'
                            % (run_dir, '; '.join(changes)))


def _shown(value):
    return ' '.join('%g' % v for v in value) if isinstance(value, tuple) else json.dumps(value)


def recipe(settings, weights_digest):
    """What a split's result depends on besides its images and seed (the identity's recipe): the
    classifier, `weights_digest` (frozen_features.frozen_source_digest) and the knobs its
    classifier uses, with the epochs for fine-tuning."""
    if settings.classifier == 'svm':
        return {'classifier': 'svm', 'svm_layer': settings.svm_layer, 'svm_c': settings.svm_c,
                'weights': weights_digest}
    used = {name: value for name, value in settings.recipe().items()
            if name not in ('seed', 'svm_layer', 'svm_c')}
    return dict(used, epochs=settings.epochs, weights=weights_digest)


@dataclasses.dataclass
class Plan:
    """A protocol as fineturn.py --splits N [--split K] runs it: its folder, N, K (or None),
    identity, its drawn splits {k: splits.Split} and the pool's paths in the records' order."""
    run_dir: str
    count: int
    only: object
    identity: Identity
    splits: dict
    pool_paths: list

    def chosen(self):
        """The splits this command runs: K, or all."""
        return [self.only] if self.only is not None else list(range(1, self.count + 1))

    def split_dir(self, k):
        return os.path.join(self.run_dir, splits.folder_name(k, self.count))


def plan(settings, count, only, ratios):
    """The Plan of `--splits count [--split only] --split-ratios ratios` with `settings`, checked:
    a SplitError for bad numbers or a class too small for the ratios, a ProtocolError for a
    RUN_DIR that holds another protocol or for --init-from. Records the identity in a new
    protocol's folder."""
    splits.check_split(only, count)
    ratios = splits.check_ratios(ratios)
    if settings.init_from:
        # a run trained on another draw has seen test images of these splits
        raise ProtocolError('--init-from with --splits: the run it names was trained on images '
                            'that are test images of some of these splits; run the protocol from '
                            '--weights without --init-from')
    records_dir, run_dir = settings.records_dir, settings.run_dir
    items = splits.read_pool(records_dir)
    classes = class_names.read(os.path.join(records_dir, LABELS_FILE))
    drawn = {k: splits.draw(items, classes, ratios, settings.seed, k)
             for k in range(1, count + 1)}
    identity = Identity(os.path.abspath(records_dir), splits.pool_digest(items, records_dir),
                        settings.seed, ratios,
                        recipe(settings, frozen_features.frozen_source_digest(settings)))
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ProtocolError('--run-dir %s is a file: name a folder for the protocol' % run_dir)
    with writing(run_dir, 'the folder'):
        os.makedirs(run_dir, exist_ok=True)
    with held(os.path.join(run_dir, LOCK_FILE)):
        check_identity(run_dir, identity)
    return Plan(run_dir, count, only, identity, drawn, [path for path, _ in items])


def command(argv):
    """The command of the table: this one, without --split K (it names the whole protocol)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == '--split':
            skip = True
        elif not arg.startswith('--split='):
            kept.append(arg)
    return shlex.join(['python', 'fineturn.py'] + kept)


# --- the splits' results -------------------------------------------------------------------------

@dataclasses.dataclass
class SplitResult:
    """What the table needs of split k besides its test report (in `run_dir`)."""
    k: int
    seed: int
    run_dir: str
    counts: dict                 # {'train': n, 'validation': n, 'test': n}
    best_epoch: object = None    # the epoch tested; None without epochs (the SVM)
    val_accuracy: object = None  # None without a validation part
    seconds: float = 0.0


def record_split(plan, k, best_epoch, val_accuracy, seconds):
    """Mark split k finished: its split.json, written after its test report."""
    split = plan.splits[k]
    save_json(os.path.join(plan.split_dir(k), SPLIT_INFO),
              {'k': k, 'seed': split.seed, 'counts': split.counts(), 'best_epoch': best_epoch,
               'val_accuracy': val_accuracy, 'seconds': round(seconds, 2)}, 'the split\'s summary')


def split_result(plan, k):
    """The SplitResult of split k, or None if it has not finished."""
    path = os.path.join(plan.split_dir(k), SPLIT_INFO)
    try:
        with open(path, encoding='utf-8') as f:
            info = json.load(f)
        return SplitResult(k, plan.splits[k].seed, plan.split_dir(k), plan.splits[k].counts(),
                           info['best_epoch'], info['val_accuracy'], float(info['seconds']))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ProtocolError('%s is damaged (%s): delete it and rerun the same command (the split '
                            'is tested again)' % (path, error)) from None
