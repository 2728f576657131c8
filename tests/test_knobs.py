"""knobs.py: a knob is declared once, and the parser, --help, the run's Settings, settings.json and
the recipe a resume compares follow from the declaration. No TensorFlow here."""
import dataclasses
import json

import pytest

import fineturn
import knobs
import rundir
import setting


def help_text():
    return ' '.join(knobs.parser('test').format_help().split())


def test_every_flag_has_help_and_its_default_once_in_the_flags_syntax():
    text = help_text()
    for knob in knobs.RUN + knobs.OPTIONS:
        assert knob.flag in text, knob.name
    assert '(default: fc6,fc7,fc8)' in text and '(default: fc8; none with --init-from)' in text
    assert '(default: 0.0001)' in text and '(default: none)' in text      # --lr-mult
    assert '(default: --flip)' in text and '(default: --cache)' in text
    assert '(default: 20; 6 with --demo)' in text
    assert "['fc6'" not in text and 'True' not in text and '{}' not in text
    for knob in knobs.RUN + knobs.OPTIONS:
        shown = knobs.help_text(knob, knobs.MODES).count('(default:')
        has_default = knob.kind != 'flag' and (knob.default is not None or '(default' in knob.help)
        assert shown == (1 if has_default else 0), knob.name
    actions = knobs.parser('test')._actions
    assert all(action.help for action in actions), [a.dest for a in actions if not a.help]


def test_switches_and_aliases_keep_the_old_flags_working():
    assert fineturn.parse_args(['--no-flip', '--no-cache']).flip is False
    assert fineturn.parse_args(['--no-cache']).cache is False
    assert fineturn.parse_args(['--flip', '--cache']).flip is True
    args = fineturn.parse_args(['--data-dir', 'converted'])
    assert args.records_dir == 'converted'
    assert fineturn.parse_args(['--records-dir', 'converted']).records_dir == 'converted'
    assert '--data-dir: an alias, its old name' in help_text()


def test_defaults_come_from_setting_py_and_are_never_shared():
    first, second = (fineturn.settings_from(fineturn.parse_args([])) for _ in range(2))
    assert first.records_dir == setting.RECORDS_DIR and first.epochs == setting.EPOCHS
    assert first.train_layers == list(setting.TRAIN_LAYERS) and first.lr_mult == {}
    first.train_layers.append('conv5')
    assert second.train_layers == list(setting.TRAIN_LAYERS)
    assert knobs.RUN[[k.name for k in knobs.RUN].index('train_layers')].default == \
        list(setting.TRAIN_LAYERS)
    assert fineturn.parse_args(['--demo']).epochs == knobs.DEMO_EPOCHS
    assert fineturn.parse_args(['--demo', '--epochs', '2']).epochs == 2


def test_a_modes_option_without_its_mode_is_refused(capsys):
    with pytest.raises(SystemExit):
        fineturn.parse_args(['--top-k', '3'])
    assert '--top-k works only with --predict' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fineturn.parse_args(['--demo-dir', 'somewhere'])
    assert '--demo-dir works only with --demo' in capsys.readouterr().err
    assert fineturn.parse_args(['--predict', 'x.jpg', '--top-k', '3']).top_k == 3
    assert fineturn.parse_args(['--evaluate', 'ckpt', '--ten-crop']).mode == 'evaluate'


@pytest.mark.parametrize('flags, message', [
    (['--predict', 'x.jpg', '--weights', 'w.npz'], '--weights does nothing with --predict'),
    (['--export', 'out', '--epochs', '3'], '--epochs does nothing with --export'),
    (['--evaluate', 'ckpt', '--run-dir', 'r'], '--run-dir does nothing with --evaluate'),
    (['--evaluate', 'ckpt', '--allow-pickle'], '--allow-pickle does nothing with --evaluate'),
    (['--demo', '--records-dir', 'd'], '--records-dir does nothing with --demo'),
    (['--demo', '--init-from', 'r'], '--init-from does nothing with --demo'),
    (['--predict', 'x.jpg', '--run-dir', 'r', '--checkpoint', 'c'],
     '--run-dir does nothing with --checkpoint'),
    (['--predict', 'x.jpg', '--top-k', '0'], '--top-k must be at least 1, got 0'),
])
def test_a_flag_that_would_do_nothing_is_refused_in_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit:
        fineturn.parse_args(flags)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith('fineturn.py: error: ' + message)
    assert len(err.strip().splitlines()) == 1 and err.strip().endswith('(see --help)')


def test_each_mode_takes_the_training_flags_it_uses():
    assert fineturn.parse_args(['--demo', '--epochs', '2', '--no-cache', '--lr-mult',
                                'fc8=10']).epochs == 2
    assert fineturn.parse_args(['--evaluate', 'c', '--records-dir', 'd']).records_dir == 'd'
    assert fineturn.parse_args(['--predict', 'x', '--run-dir', 'r']).run_dir == 'r'
    assert fineturn.parse_args(['--export', 'o', '--checkpoint', 'c']).checkpoint == 'c'
    assert fineturn.parse_args(['--predict', 'x']).top_k == setting.TOP_K


@pytest.mark.parametrize('flags, message', [
    (['--epochs', '0'], '--epochs must be at least 1, got 0'),
    (['--batch-size', '0'], '--batch-size must be at least 1'),
    (['--keep-prob', '1.5'], '--keep-prob must be in (0, 1], got 1.5'),
    (['--learning-rate', '0'], '--learning-rate must be positive'),
    (['--weight-decay', '-1'], '--weight-decay must be >= 0'),
    (['--train-layers', 'fc9'], '--train-layers: unknown layer(s) fc9'),
    (['--train-layers', 'none'], '--train-layers is empty'),
    (['--lr-mult', 'fc7=2', '--train-layers', 'fc8'], '--lr-mult names fc7'),
])
def test_settings_no_run_can_use_are_refused(flags, message):
    settings = fineturn.settings_from(fineturn.parse_args(flags))
    with pytest.raises(knobs.SettingsError) as caught:
        settings.check()
    assert message in str(caught.value)


def test_a_new_knob_is_one_declaration(tmp_path):
    """What adding a training setting takes: one Knob. The flag with its help, the Settings field,
    settings.json and the resume's recipe check follow; a run from before the knob resumes when
    the knob has the value those runs had (`before`)."""
    momentum = knobs.Knob('momentum', 0.9, 'SGD momentum', float, knobs.show_number,
                          metavar='M', recipe=True, before=0.0,
                          check=knobs.positive('--momentum'))
    run = knobs.RUN + (momentum,)
    settings_type = knobs.settings_class('Settings', run, knobs.check_run)
    assert '--momentum M SGD momentum (default: 0.9)' in ' '.join(
        knobs.parser('test', run).format_help().split())

    def settings(*flags):
        return knobs.settings(knobs.parse(list(flags) + ['--run-dir', str(tmp_path)], 'test', run),
                              run, settings_type)
    assert settings().momentum == 0.9 and settings('--momentum', '0.5').momentum == 0.5
    with pytest.raises(knobs.SettingsError, match='--momentum must be positive'):
        settings('--momentum', '-1').check()
    assert settings().saved()['momentum'] == 0.9
    assert list(settings().saved()) == [knob.name for knob in run if knob.saved]

    # a run dir trained with momentum 0.9 resumes with 0.9 only; settings.json says why
    lock, rows = rundir.open_run(settings())
    lock.release()
    with open(tmp_path / rundir.SETTINGS_FILE) as f:
        assert json.load(f)['momentum'] == 0.9
    rundir.write_metrics(str(tmp_path), [{'epoch': 1}])
    with pytest.raises(rundir.RunError, match=r'other momentum \(momentum=0.9\)'):
        rundir.open_run(settings('--momentum', '0.5'))
    lock, rows = rundir.open_run(settings())
    lock.release()
    assert len(rows) == 1
    # a settings.json from before the knob: the runs then had `before`
    with open(tmp_path / rundir.SETTINGS_FILE) as f:
        old = {key: value for key, value in json.load(f).items() if key != 'momentum'}
    assert settings().recipe_changes(old) == ['momentum']
    assert dataclasses.replace(settings(), momentum=0.0).recipe_changes(old) == []


def test_the_recipe_keys_are_the_ones_that_change_an_epoch():
    recipe = [knob.name for knob in knobs.RUN if knob.recipe]
    assert recipe == ['init_from', 'batch_size', 'learning_rate', 'lr_decay', 'weight_decay',
                      'lr_mult', 'keep_prob', 'train_layers', 'skip_layers', 'flip', 'seed',
                      'classifier', 'svm_layer', 'svm_c']
    settings = fineturn.settings_from(fineturn.parse_args([]))
    saved = settings.saved()
    assert 'allow_pickle' not in saved
    assert settings.recipe_changes(dict(saved, epochs=3, cache=False)) == []
    assert settings.recipe_changes(dict(saved, seed=1, flip=False)) == ['flip', 'seed']
    del saved['lr_mult']                      # runs from before --lr-mult had none
    assert settings.recipe_changes(saved) == []
    for name in ('classifier', 'svm_layer', 'svm_c'):   # nor these: they fine-tuned
        del saved[name]
    assert settings.recipe_changes(saved) == []
    assert settings.recipe()['classifier'] == 'finetune' and 'epochs' not in settings.recipe()
