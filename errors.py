"""The one base of the project's user-facing errors.

A UserError is a problem the user can fix: a missing or damaged input, a bad setting, a full disk.
Its message is one line that names the problem and the fix. Every command catches UserError once
in its `main`, prints `<command>: error: <message>` on stderr and exits non-zero, without a
traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's inputs, settings or machine; the message says how to fix it."""
