"""The converter's one error class."""


class ConversionError(Exception):
    """Bad or inconsistent input: the message names the problem and the fix, in one line."""
