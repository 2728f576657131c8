"""What the commands print as they work: log lines to stdout, warnings to stderr.

Each line is flushed at once, so a log followed while a run trains (tail -f, a batch system's
output file) shows it when it happens. Errors are not printed here: a UserError propagates to the
command's main, which prints `<command>: error: <message>` once.
"""
import sys


def log(message):
    print(message, flush=True)


def warn(message):
    print('warning: %s' % message, file=sys.stderr, flush=True)
