"""fineturn.py's command line, declared once: the knobs of a training run, the modes, their options.

A knob is one Knob entry: its name (the Settings field, the settings.json key and the flag
--name-with-dashes), its default (from setting.py), one line of help, how its text parses and how
a value shows in the flag's own syntax, and its role:
  - recipe=True: it changes what an epoch computes, so a run dir resumes only with the same value
    (`before`: its value in runs from before the knob existed);
  - saved=False: a permission rather than a setting (--allow-pickle), left out of settings.json;
  - check: what is wrong with a value no run can use, as the error line says it.
From the declaration follow the parser's flags and their --help (the default shown once, in the
flag's syntax), the Settings of a run (settings_class: a dataclass with one field per knob, in
declaration order), settings.json (Settings.saved) and the recipe keys a resume compares
(Settings.recipe_changes). Adding a training setting is a constant in setting.py and one Knob in
RUN, and then the code that uses the value, which gets it as an argument.

A mode (--evaluate, --demo, --predict, --export) is one Mode entry; an option of some modes only
(--top-k, --ten-crop ...) is a Knob with `modes`, refused without one of them. A mode names the
knobs of a training run it uses (`uses`): the others would do nothing in it, so they are refused.
A mode, or a given knob, may change another knob's default (--demo trains 6 epochs; --init-from
loads every layer, so --skip-layers defaults to none). New modes add their Mode and Knobs here,
their code in a module named for them, and one line of dispatch in fineturn.py.


No TensorFlow here: the flags are parsed and checked before it loads.
"""
import argparse
import copy
import dataclasses
import os

import netspec
import setting
from cli import Parser, show_list, show_number, show_path, with_default
from errors import UserError


class SettingsError(UserError):
    """Settings no run can use; the message names the flag and what to give it."""


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str                 # Settings field, settings.json key; flag --name-with-dashes
    default: object           # the value when the flag is not given
    help: str                 # one line; --help adds the default, in the flag's syntax
    parse: object = str       # flag text -> value (a ValueError's message is the error)
    show: object = str        # value -> text in the flag's syntax (the default in --help)
    metavar: object = None    # a name, or a tuple of names for a flag of several values
    nargs: int = None         # values the flag takes (None: one)
    kind: str = 'value'       # 'value': --x VALUE; 'switch': --x/--no-x; 'flag': --x alone
    aliases: tuple = ()       # older flags that still work (--help says they are aliases)
    recipe: bool = False      # changes what an epoch computes: resume needs the same value
    before: object = None     # a recipe knob's value in runs from before the knob existed
    saved: bool = True        # recorded in settings.json
    check: object = None      # value -> None, or what is wrong with it (the error line)
    modes: tuple = ()         # an option of these modes only (none: of every run)
    defaults: dict = dataclasses.field(default_factory=dict)  # other knobs' defaults it changes
    excludes: tuple = ()      # knobs that do nothing when this one is given

    @property
    def flag(self):
        return '--' + self.name.replace('_', '-')

    def shown(self, value):
        if self.kind == 'switch':
            return self.flag if value else '--no-' + self.flag[2:]
        return self.show(value)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str                 # the flag --name, and args.<name>
    help: str
    metavar: str = None       # the flag's value (None: a flag alone)
    nargs: str = None
    parse: object = str       # the value's text -> value
    defaults: dict = dataclasses.field(default_factory=dict)   # knob defaults it changes
    uses: tuple = None        # the RUN knobs it reads (None: all); the others are refused
    why: str = ''             # what it uses instead of the refused ones, for the error line


# --- parsing and showing values ------------------------------------------------------------------

def layer_list(text):
    """'fc6,fc7,fc8' -> ['fc6', 'fc7', 'fc8']; '' or 'none' -> []."""
    names = [name.strip() for name in text.split(',') if name.strip()]
    return [] if names in ([], ['none']) else names


def show_layers(layers):
    return ','.join(layers) or 'none'


def lr_multipliers(spec):
    """Learning-rate multipliers as {layer: [weights, biases]} from `spec`: a dict like setting.py's
    LR_MULT ({'fc8': (10, 20)} or {'fc8': 10}) or --lr-mult's text ('fc8=10,fc7=2/4'; '' or
    'none' for none). A layer given one number gets twice it for its biases, as in Caffe's zoo
    recipes. ValueError for anything else."""
    if isinstance(spec, str):
        spec = {} if spec.strip() == 'none' else spec
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


def show_lr_multipliers(multipliers):
    return ','.join('%s=%g/%g' % (layer, *pair) for layer, pair in multipliers.items()) or 'none'


def one_of(*choices):
    """A parser that takes one of `choices` (a ValueError names them otherwise)."""
    def parse(text):
        if text not in choices:
            raise ValueError('%s: expected %s' % (text, ' or '.join(choices)))
        return text
    parse.__name__ = '|'.join(choices)
    return parse


# --- checks of one value -------------------------------------------------------------------------

def at_least_one(flag):
    return lambda value: None if value >= 1 else '%s must be at least 1, got %s' % (flag, value)


def positive(flag):
    return lambda value: None if value > 0 else '%s must be positive, got %g' % (flag, value)


def known_layers(flag):
    def check(layers):
        unknown = [name for name in layers if name not in netspec.LAYER_NAMES]
        if unknown:
            return '%s: unknown layer(s) %s; AlexNet has %s' % (
                flag, ', '.join(unknown), ', '.join(netspec.LAYER_NAMES))
        return None
    return check


# --- the declaration -----------------------------------------------------------------------------

DEMO_EPOCHS = 6          # --demo: enough for the synthetic textures, a minute or two on 2 cores

# The knobs of a training run, in settings.json's order.
RUN = (
    Knob('records_dir', setting.RECORDS_DIR, 'the converted folder: {train,validation,test}'
         '*.tfrecord and labels.txt from convert_tfrecord.py', show=show_path,
         metavar='RECORDS_DIR', aliases=('--data-dir',)),
    Knob('weights', setting.WEIGHTS_PATH, 'pretrained weights (.npz from python -m caffe_to_npy)',
         show=show_path, metavar='WEIGHTS'),
    Knob('init_from', None, 'start from another run\'s weights: a checkpoint (a prefix or one of '
         'its files) or a run dir (its best checkpoint); every layer it holds comes from it, the '
         'others from --weights', os.path.normpath, show_path, metavar='CHECKPOINT',
         recipe=True, defaults={'skip_layers': []}),
    Knob('run_dir', setting.RUN_DIR, 'checkpoints, metrics.csv, reports; rerun to resume',
         show=show_path, metavar='RUN_DIR'),
    Knob('epochs', setting.EPOCHS, 'epochs to train', int, metavar='N',
         check=at_least_one('--epochs')),
    Knob('batch_size', setting.BATCH_SIZE, 'training images per SGD step', int, metavar='N',
         recipe=True, check=at_least_one('--batch-size')),
    Knob('learning_rate', setting.LEARNING_RATE, 'initial SGD learning rate', float, show_number,
         metavar='RATE', recipe=True, check=positive('--learning-rate')),
    Knob('lr_decay', setting.LR_DECAY, 'learning rate factor applied once per epoch', float,
         show_number, metavar='FACTOR', recipe=True, check=positive('--lr-decay')),
    Knob('weight_decay', setting.WEIGHT_DECAY, 'L2 factor on the trained layers\' weights', float,
         show_number, metavar='FACTOR', recipe=True,
         check=lambda value: None if value >= 0 else '--weight-decay must be >= 0, got %g' % value),
    Knob('lr_mult', lr_multipliers(setting.LR_MULT), 'per-layer learning-rate multipliers, '
         'Caffe\'s lr_mult (fc8=10: weights x10, biases x20); other trained layers x1',
         lr_multipliers, show_lr_multipliers, metavar='LAYER=W[/B],...', recipe=True, before={}),
    Knob('keep_prob', setting.KEEP_PROB, 'dropout keep probability before fc7 and fc8 while '
         'training', float, show_number, metavar='P', recipe=True,
         check=lambda value: None if 0 < value <= 1 else
         '--keep-prob must be in (0, 1], got %g' % value),
    Knob('train_layers', list(setting.TRAIN_LAYERS), 'comma-separated layers to train (the '
         'optimiser\'s var_list)', layer_list, show_layers, metavar='LAYERS', recipe=True,
         check=known_layers('--train-layers')),
    Knob('skip_layers', list(setting.SKIP_LAYERS), 'comma-separated layers not loaded from '
         '--weights or --init-from but started from Caffe\'s fillers ("none" for none)',
         layer_list, show_layers, metavar='LAYERS', recipe=True,
         check=known_layers('--skip-layers')),
    Knob('flip', setting.FLIP, 'random up/down and left/right flips of training images',
         kind='switch', recipe=True),
    Knob('seed', setting.SEED, 'graph-level TF seed and the order of training batches', int,
         metavar='N', recipe=True),
    Knob('keep_checkpoints', setting.KEEP_CHECKPOINTS, 'keep the last N epoch checkpoints (and '
         'the best); 0 keeps all', int, metavar='N'),
    Knob('cache', setting.USE_FEATURE_CACHE, 'compute the frozen layers once per image (exact); '
         '--no-cache runs the full graph every step', kind='switch'),
    Knob('cache_ram_gb', setting.CACHE_RAM_GB, 'a run\'s frozen features larger than this many '
         'GB are memory-mapped from disk', float, show_number, metavar='GB'),
    Knob('feature_store', setting.FEATURE_STORE, 'frozen features, computed once per image and '
         'shared by every run, split and concurrent job on the same weights', show=show_path,
         metavar='DIR'),
    Knob('classifier', setting.CLASSIFIER, 'finetune: train --train-layers; svm: no '
         'fine-tuning, a linear SVM (scikit-learn\'s LinearSVC) on each image\'s frozen '
         '--svm-layer features', one_of('finetune', 'svm'), metavar='{finetune,svm}', recipe=True,
         before='finetune'),
    Knob('svm_layer', setting.SVM_LAYER, '--classifier svm: the features, this layer after its '
         'ReLU for the centre crop, L2-normalised', one_of('fc6', 'fc7'), metavar='{fc6,fc7}',
         recipe=True, before='fc7'),
    Knob('svm_c', setting.SVM_C, '--classifier svm: LinearSVC\'s C', float, show_number,
         metavar='C', recipe=True, before=1.0, check=positive('--svm-c')),
    Knob('allow_pickle', False, 'allow a legacy pickled .npy weights file (runs code from the '
         'file)', kind='flag', saved=False),
)


def check_run(settings):
    """What is wrong with settings whose knobs are each fine but don't go together, or None."""
    if not settings.train_layers:
        return '--train-layers is empty: name at least one layer to train, e.g. fc8'
    frozen_random = [name for name in settings.skip_layers if name not in settings.train_layers]
    if frozen_random:
        return ('layer(s) %s would be neither loaded nor trained (random forever): add them to '
                '--train-layers or remove them from --skip-layers' % ', '.join(frozen_random))
    untrained = sorted(set(settings.lr_mult) - set(settings.train_layers))
    if untrained:
        return ('--lr-mult names %s but --train-layers does not: train the layer or drop its '
                'multiplier' % ', '.join(untrained))
    if settings.classifier == 'svm' and not settings.cache:
        return ('--no-cache is for fine-tuning: --classifier svm always reads its features from '
                'the feature store (--feature-store)')
    if settings.classifier == 'svm' and settings.init_from:
        return ('--init-from is for fine-tuning: --classifier svm reads the frozen features of '
                '--weights')
    return None


# The knobs of a training run that the demo takes; it makes its own weights, records and run dir.
DEMO_USES = tuple(knob.name for knob in RUN
                  if knob.name not in ('records_dir', 'weights', 'init_from', 'run_dir',
                                       'allow_pickle'))
A_RUNS_MODEL = 'it uses the model of --run-dir (its best checkpoint) or of --checkpoint'

MODES = (
    Mode('evaluate', 'only write the test report of this checkpoint (a prefix, one of its files, '
         'or a run dir: its best) on the test split of --records-dir', metavar='CHECKPOINT',
         uses=('records_dir',),
         why='it reports the checkpoint it names on the test split of --records-dir'),
    Mode('demo', 'run the whole chain on synthetic weights and images under --demo-dir',
         defaults={'epochs': DEMO_EPOCHS}, uses=DEMO_USES,
         why='the demo makes its own weights, records and run dir under --demo-dir'),
    Mode('predict', 'classify image files and folders with the model of --run-dir (its best '
         'checkpoint) or --checkpoint', metavar='PATH', nargs='+', uses=('run_dir',),
         why=A_RUNS_MODEL),
    Mode('export', 'write that model as a TF2 SavedModel (preprocessing inside)',
         metavar='OUT_DIR', uses=('run_dir',), why=A_RUNS_MODEL),
    Mode('splits', 'run the recipe on N seeded, class-stratified random splits of all the images '
         'in --records-dir (train, validation and test records together): RUN_DIR/split-01 .. N, '
         'each a run dir, then the table RUN_DIR/protocol.md (OA mean ± std); rerun to resume',
         metavar='N', parse=int),
)

OPTIONS = (
    Knob('demo_dir', os.path.join(setting.RUNS_DIR, 'demo'), 'where --demo writes everything',
         show=show_path, metavar='DEMO_DIR', modes=('demo',)),
    Knob('checkpoint', None, 'the model to use instead of --run-dir\'s best: a checkpoint '
         'prefix, any of its files, or a run dir', metavar='CHECKPOINT',
         modes=('predict', 'export'), excludes=('run_dir',)),
    Knob('top_k', setting.TOP_K, 'classes printed per image (all of them if the model has '
         'fewer)', int, metavar='K', modes=('predict',), check=at_least_one('--top-k')),
    Knob('save_probs', None, 'write probs (N x classes float32), paths and classes',
         metavar='OUT.npz', modes=('predict',)),
    Knob('save_csv', None, 'write path,predicted,confidence per image', metavar='OUT.csv',
         modes=('predict',)),
    Knob('figure', None, 'draw the images with their top-k classes (the first 36)',
         metavar='OUT.png', modes=('predict',)),
    Knob('ten_crop', False, 'average the softmax of the four corner and the centre crops and '
         'their mirrors (Caffe\'s oversample)', kind='flag', modes=('predict', 'evaluate')),
    Knob('overwrite', False, 'replace an earlier export in OUT_DIR', kind='flag',
         modes=('export',)),
    Knob('split', None, 'run split K alone (one job of a cluster\'s array job, e.g. Slurm '
         '--array=1-N); the job that finishes the last split writes the table', int, metavar='K',
         modes=('splits',)),
    Knob('split_ratios', tuple(setting.PROTOCOL_SPLIT_RATIOS), 'each class\'s share of train, '
         'validation and test images; VAL 0 trains --epochs and tests the last epoch', float,
         show_list, metavar=('TRAIN', 'VAL', 'TEST'), nargs=3, modes=('splits',)),
)


# --- what follows from it ------------------------------------------------------------------------

def settings_class(name, knobs, check=None):
    """A dataclass with one field per knob, in order, and what a run needs of it: saved() (what
    settings.json records), recipe_changes(saved) (the recipe knobs whose values differ from an
    earlier run's settings.json) and check() (a SettingsError for settings no run can use; `check`
    adds the rules about several knobs)."""
    def saved(self):
        """The settings as settings.json records them, in declaration order."""
        return {knob.name: getattr(self, knob.name) for knob in knobs if knob.saved}

    def recipe(self):
        """{name: value} of the recipe knobs."""
        return {knob.name: getattr(self, knob.name) for knob in knobs if knob.recipe}

    def recipe_changes(self, earlier):
        """The recipe knobs whose value differs from `earlier` (an earlier settings.json)."""
        return [knob.name for knob in knobs if knob.recipe
                and earlier.get(knob.name, knob.before) != getattr(self, knob.name)]

    def check_settings(self):
        for knob in knobs:
            problem = knob.check(getattr(self, knob.name)) if knob.check else None
            if problem:
                raise SettingsError(problem)
        problem = check(self) if check else None
        if problem:
            raise SettingsError(problem)

    return dataclasses.make_dataclass(
        name, [(knob.name, object) for knob in knobs],
        namespace={'saved': saved, 'recipe': recipe, 'recipe_changes': recipe_changes,
                   'check': check_settings,
                   '__doc__': 'The values of %s.' % ', '.join(knob.flag for knob in knobs)})


Settings = settings_class('Settings', RUN, check_run)


def help_text(knob, modes, declared=()):
    """The knob's help, its aliases, and its default once, in the flag's syntax (with the
    defaults that modes and other `declared` knobs give it)."""
    text = knob.help
    if knob.aliases:
        text += '; %s: an alias, its old name' % ', '.join(knob.aliases)
    if knob.default is not None and knob.kind != 'flag':
        changers = [(mode.defaults, '--' + mode.name) for mode in modes] + \
            [(other.defaults, other.flag) for other in declared]
        changed = ''.join('; %s with %s' % (knob.shown(defaults[knob.name]), flag)
                          for defaults, flag in changers if knob.name in defaults)
        text = with_default(text, knob.shown(knob.default) + changed)
    return text.replace('%', '%%')


def _parser_of(parse):
    """argparse's type for `parse`: a ValueError's message becomes the error line."""
    if parse in (int, float, str):
        return parse

    def parsed(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parsed.__name__ = parse.__name__
    return parsed


def add_knobs(group, knobs, modes, declared=()):
    """A flag per knob; each defaults to None, so that parse() tells what was given."""
    for knob in knobs:
        options = dict(dest=knob.name, default=None, help=help_text(knob, modes, declared))
        if knob.kind == 'switch':
            options.update(action=argparse.BooleanOptionalAction)
        elif knob.kind == 'flag':
            options.update(action='store_const', const=True)
        else:
            options.update(type=_parser_of(knob.parse), metavar=knob.metavar, nargs=knob.nargs)
        group.add_argument(knob.flag, *knob.aliases, **options)


def parser(description, run=RUN, modes=MODES, options=OPTIONS):
    """The argparse parser of the declaration."""
    result = Parser(prog='fineturn.py', description=description)
    declared = run + options
    add_knobs(result.add_argument_group('a training run (settings.json records them; a run '
                                        'resumes only with the same recipe)'), run, modes,
              declared)
    chosen = result.add_argument_group('modes (one at a time; none: train)') \
        .add_mutually_exclusive_group()
    for mode in modes:
        if mode.metavar:
            chosen.add_argument('--' + mode.name, metavar=mode.metavar, nargs=mode.nargs,
                                type=_parser_of(mode.parse), help=mode.help)
        else:
            chosen.add_argument('--' + mode.name, action='store_true', help=mode.help)
    add_knobs(result.add_argument_group('options of some modes'), options, modes, declared)
    return result


def parse(argv, description, run=RUN, modes=MODES, options=OPTIONS):
    """The parsed flags, every knob's value filled in (given, else the default the mode or a
    given knob sets, else the knob's), and `args.mode`: the mode given, or None (train). A flag
    that would do nothing is refused as argparse refuses a bad flag: a mode's option without the
    mode, a training knob the mode doesn't use, a knob another given one excludes."""
    flags = parser(description, run, modes, options)
    args = flags.parse_args(argv)
    mode = next((m for m in modes if getattr(args, m.name) not in (None, False)), None)
    args.mode = mode.name if mode else None
    given = [knob for knob in run + options if getattr(args, knob.name) is not None]
    for knob in given:
        if knob in options and args.mode not in knob.modes:
            flags.error('%s works only with %s' % (knob.flag, ' or '.join(
                '--' + name for name in knob.modes)))
        if knob in run and mode and mode.uses is not None and knob.name not in mode.uses:
            flags.error('%s does nothing with --%s: %s' % (knob.flag, mode.name, mode.why))
        excluded = [other.flag for other in given if other.name in knob.excludes]
        if excluded:
            flags.error('%s does nothing with %s: give one of them'
                        % (' and '.join(excluded), knob.flag))
        problem = knob.check(getattr(args, knob.name)) if knob in options and knob.check else None
        if problem:
            flags.error(problem)
    changes = ([mode.defaults] if mode else []) + [knob.defaults for knob in given]
    for knob in run + options:
        if getattr(args, knob.name) is None:
            default = next((c[knob.name] for c in changes if knob.name in c), knob.default)
            setattr(args, knob.name, copy.deepcopy(default))   # never shared between runs
    return args


def settings(args, run=RUN, settings_type=Settings):
    """The run's Settings from parse()'s flags."""
    return settings_type(**{knob.name: getattr(args, knob.name) for knob in run})
