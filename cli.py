"""What every command line shares: its parser, and how a default shows in --help.

Every command (fineturn.py, convert_tfrecord.py, validate_alexnet_on_imagenet.py,
python -m caffe_to_npy and the generators of stand-in data) builds its flags on Parser, so that
  - a usage error (a flag it doesn't know, a value its type refuses, a flag that would do
    nothing) is one line, `<command>: error: <message> (see --help)`, and exit status 2;
  - a default is shown once, at the end of its flag's help, in the syntax the flag takes:
    with_default(help, shown), with show_path, show_number, show_list for the value.
docs/USAGE.md documents each flag with the default --help shows; tests/test_usage_doc.py holds
the two to each other and to what the parser does.

No TensorFlow here.
"""
import argparse
import os
import sys

import setting
from errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


def with_default(text, shown):
    """A flag's help with its default: `shown` is the default in the flag's own syntax."""
    return '%s (default: %s)' % (text, shown)


def show_number(value):
    return '%g' % value


def show_list(values, show=show_number):
    """A default of a flag that takes several values (nargs), as they are typed: '0.8 0.1 0.1'."""
    return ' '.join(show(value) for value in values)


def show_path(path):
    """A default path as the user would type it: relative to the repository it lies in."""
    relative = os.path.relpath(path, setting.ROOT)
    return path if relative.startswith(os.pardir) else relative


def run(prog, work, errors=(UserError,)):
    """The exit status of a command whose body is work(): 0 when it returns, 1 with one line
    `<prog>: error: <message>` for `errors`, 130 with one line on Ctrl-C. For commands with
    nothing else to say on an error (validate, the stand-in generators); the others, whose
    interrupted line says what was kept, handle theirs in main."""
    try:
        work()
    except errors as error:
        print('%s: error: %s' % (prog, error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('%s: interrupted' % prog, file=sys.stderr)
        return 130
    return 0
