"""docs/USAGE.md's flag tables and the commands' parsers say the same thing, so they can't drift.

A flag table is a Markdown table with the header `| flag | default | meaning |`; it belongs to the
command whose section it is in: under a heading that names the command in backticks
(`python fineturn.py`, or `python fineturn.py --splits ...`), up to the next heading of that level
or higher. A row is `` `--flag VALUE` `` (then its aliases, its
`--no-` form) | the default its --help shows, in backticks, with the defaults modes or other flags
give it as `` `VALUE` with `--flag` ``, or — for none | what it does.

For every command: every flag of its parser has a row and help, every row is a flag of the parser
(as argparse writes it: `--epochs N`, `--ratios TRAIN VALIDATION TEST`), and the row's default is
the one --help shows. And the shown default is the truth: giving it explicitly parses to what not
giving the flag does.
"""
import argparse
import os
import re

import pytest

import conftest
import convert_tfrecord
import fineturn
import knobs
import synthetic_dataset
import validate_alexnet_on_imagenet as validate
from caffe_to_npy import __main__ as caffe_to_npy_main
from caffe_to_npy import synthetic
from cli import show_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = os.path.join(ROOT, 'docs', 'USAGE.md')
HEADER = ['flag', 'default', 'meaning']
NONE = '—'

# command -> (its parser, its parse_args, the arguments every call needs)
COMMANDS = {
    'python fineturn.py': (fineturn.parser, fineturn.parse_args, []),
    'python convert_tfrecord.py': (convert_tfrecord.parser, convert_tfrecord.parse_args, []),
    'python validate_alexnet_on_imagenet.py': (validate.parser, validate.parse_args, []),
    'python -m caffe_to_npy': (caffe_to_npy_main.parser, caffe_to_npy_main.parse_args,
                               ['deploy.prototxt', 'model.caffemodel', 'out.npz']),
    'python -m caffe_to_npy.synthetic': (synthetic.parser,
                                         lambda argv: synthetic.parser().parse_args(argv),
                                         ['out']),
    'python synthetic_dataset.py': (synthetic_dataset.parser,
                                    lambda argv: synthetic_dataset.parser().parse_args(argv),
                                    ['root']),
}


def cells(line):
    return [cell.strip() for cell in line.strip().strip('|').split('|')]


def spans(text):
    return re.findall(r'`([^`]+)`', text)


def documented(path=USAGE):
    """{command: {first span of the flag cell: (the flag cell, the default cell, line number)}}."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    found = {command: {} for command in COMMANDS}
    command, level = None, 0
    for number, line in enumerate(lines, 1):
        if line.startswith('#'):
            named = [c for c in COMMANDS
                     if any(span == c or span.startswith(c + ' ') for span in spans(line))]
            depth = len(line) - len(line.lstrip('#'))
            if named:
                command, level = max(named, key=len), depth
            elif depth <= level:               # the command's section has ended
                command, level = None, 0
        elif line.startswith('|') and cells(line) == HEADER:
            assert command, 'USAGE.md:%d: a flag table under no heading naming a command' % number
            rows = lines[number + 1:]          # after the header's |---|---|---| line
            for row_number, row in enumerate(rows, number + 2):
                if not row.startswith('|'):
                    break
                flag, default, meaning = cells(row)
                first = spans(flag)[0]
                assert first not in found[command], 'USAGE.md:%d: %s twice' % (row_number, first)
                assert meaning, 'USAGE.md:%d: %s has no meaning' % (row_number, first)
                found[command][first] = (flag, default, row_number)
    return found


def syntax(parser, action):
    """The flag as argparse writes it in a usage line: `--epochs N`, `--flip`, `[PATH ...]`."""
    formatter = parser._get_formatter()
    if not action.option_strings:
        return formatter._format_args(action, action.dest)
    if action.nargs == 0:
        return action.option_strings[0]
    return '%s %s' % (action.option_strings[0],
                      formatter._format_args(action, action.dest.upper()))


def shown_default(parser, action):
    """(the default its --help shows, [(value, flag) of '; VALUE with FLAG']) or (None, [])."""
    text = ' '.join(parser._get_formatter()._expand_help(action).split())
    found = re.search(r'\(default: ([^()]*)\)$', text)
    if not found:
        return None, []
    default, *changed = found.group(1).split('; ')
    return default, [tuple(part.split(' with ')) for part in changed]


def actions(parser):
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


@pytest.fixture(scope='module')
def usage():
    return documented()


def check(command, usage):
    """AssertionError naming the first way docs/USAGE.md (read as `usage`) and the parser of
    `command` disagree."""
    parser = COMMANDS[command][0]()
    rows = dict(usage[command])
    for action in actions(parser):
        assert action.help, '%s: %s has no help' % (command, action.dest)
        first = syntax(parser, action)
        assert first in rows, '%s: %s is not in docs/USAGE.md (a row `%s`)' % (
            command, action.option_strings or action.dest, first)
        flag, default, number = rows.pop(first)
        assert set(re.findall(r'--[\w-]+', flag)) == set(action.option_strings), \
            'USAGE.md:%d: give every spelling of the flag: %s' % (number, action.option_strings)
        shown, changed = shown_default(parser, action)
        if shown == show_path(conftest.SESSION_STORE):      # the tests' own store, not users'
            shown = show_path(conftest.USER_STORE)
        if shown is None:
            assert default == NONE, 'USAGE.md:%d: --help shows no default for %s' % (number, first)
            continue
        assert spans(default) and spans(default)[0] == shown, \
            'USAGE.md:%d: %s: --help shows the default `%s`' % (number, first, shown)
        for value, other in changed:
            assert '`%s` with `%s`' % (value, other) in default, \
                'USAGE.md:%d: %s is %s with %s' % (number, first, value, other)
    assert not rows, '%s: documented but not in the parser: %s' % (command, sorted(rows))


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_every_flag_is_documented_with_the_default_its_help_shows(command, usage):
    check(command, usage)


@pytest.mark.parametrize('before, after, problem', [
    ('| `--epochs N` | `20` (`6` with `--demo`) |', '| `--epochs N` | `30` (`6` with `--demo`) |',
     'shows the default `20`'),
    ('| `--epochs N` | `20` (`6` with `--demo`) |', '| `--epochs N` | `20` |', '6 with --demo'),
    ('| `--epochs N` |', '| `--epoch-count N` |', 'not in docs/USAGE.md'),
    ('| `--seed N` | `42` | the graph-level', '| `--sed N` | `42` | a seed |\n| `--seed N` | `42` | '
     'the graph-level', 'not in the parser'),
    ('| `--flip`, `--no-flip` |', '| `--flip` |', 'every spelling'),
])
def test_the_check_finds_each_kind_of_drift(before, after, problem, tmp_path):
    with open(USAGE, encoding='utf-8') as f:
        text = f.read()
    assert before in text
    drifted = tmp_path / 'USAGE.md'
    drifted.write_text(text.replace(before, after, 1), encoding='utf-8')
    with pytest.raises(AssertionError, match=re.escape(problem)):
        check('python fineturn.py', documented(str(drifted)))


def context(command, action):
    """What a call giving `action` needs besides it: a mode for an option of some modes."""
    if command != 'python fineturn.py':
        return []
    for knob in knobs.OPTIONS:
        if knob.name == action.dest and knob.modes:
            mode = next(m for m in knobs.MODES if m.name == knob.modes[0])
            value = '3' if mode.parse is int else 'X'     # a value the mode's type takes
            return ['--' + mode.name] + ([value] if mode.metavar else [])
    return []


def comparable(value):
    """Paths typed relative to the repository root (as the docs run every command) compare with
    the absolute defaults of setting.py."""
    if isinstance(value, str):
        return os.path.normpath(os.path.join(ROOT, value))
    if isinstance(value, (list, tuple)):
        return [comparable(item) for item in value]
    return value


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_the_default_help_shows_is_what_the_flag_gets(command):
    """Giving the shown default, in the syntax shown, parses to what leaving the flag out does;
    and so for the defaults a mode or another flag gives."""
    parser, parse, needed = COMMANDS[command]
    parser = parser()
    for action in actions(parser):
        shown, changed = shown_default(parser, action)
        if shown is None or not action.option_strings:
            continue
        cases = [(shown, [])]
        for value, other in changed:
            taker = parser._option_string_actions[other]
            cases.append((value, [other] + (['X'] if taker.nargs != 0 else [])))
        for value, given in cases:
            before = needed + context(command, action) + given
            typed = [value] if action.nargs == 0 or isinstance(
                action, argparse.BooleanOptionalAction) else [action.option_strings[0]] + \
                value.split()
            left_out = getattr(parse(before), action.dest)
            assert comparable(getattr(parse(before + typed), action.dest)) == \
                comparable(left_out), '%s %s: --help says %s' % (command, action.dest, value)
