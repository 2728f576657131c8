"""The converter's one error class."""
from errors import UserError


class ConversionError(UserError):
    """Bad or inconsistent input: the message names the problem and the fix, in one line."""
