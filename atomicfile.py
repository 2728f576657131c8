"""Write a file so that it is either complete or absent: a temporary name, then a rename.

Every output of the project (weights, records' companions, reports, metrics, caches) goes through
here, so an interrupted run or a failed check never leaves a half-written file behind.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, check=None):
    """Yield a temporary path next to `path`; when the block ends without error, run
    `check(temporary)` if given, then rename the temporary file over `path`. On any error (or
    KeyboardInterrupt) the temporary file is removed and `path` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix='.%s.' % stem, suffix='.tmp' + ext)
    os.close(handle)
    try:
        yield temporary
        if check is not None:
            check(temporary)
        umask = os.umask(0)       # mkstemp makes 0600 files: give the usual permissions
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write(path, write, mode='w'):
    """Open a temporary file next to `path` in `mode`, call write(file), then rename it."""
    with atomic_path(path) as temporary:
        with open(temporary, mode, **({} if 'b' in mode else {'newline': ''})) as f:
            write(f)
