"""One owner per output folder: a lock the kernel holds, and the owner's cleanup of dead writers.

A run dir (fineturn.py), a records folder (convert_tfrecord.py) and an export folder are each
written by one process at a time:

    with outputdir.own(folder, '--run-dir', log) as lock:
        ...                                # write into folder; a second own() of it fails

own() takes an exclusive fcntl.flock on FOLDER/.lock and writes its PID there. The kernel releases
the lock when the holder exits, however it exits (kill -9 included), so a stale lock can't exist;
the PID in the file only names the holder in the error a second process gets. A release deletes
the file; a lock taken on a file that was deleted or replaced meanwhile is taken again on the
file now in place, so two processes never both hold the folder. Holding the lock, the owner
then deletes the temporary files that killed writers left in the folder (atomicfile's and
TensorFlow's) and logs the space that freed. Read-only uses of a folder take no lock.

On a system without fcntl (Windows) folders are not locked.

An export (export.py) is a folder replaced whole, so its lock file lies next to it:
FolderLock(out_dir, '--export', path=<parent>/.<name>.lock); under the lock it removes what dead
exporters left next to it (remove_orphans(parent, target=name)) and writes through
atomicfile.atomic_dir inside atomicfile.writing.

(atomic_dir goes inside writing: its temporary folder is gone before the error counts the free
space.)

A short critical section that processes share and wait for (a feature store's shard while an
entry is put in place, a protocol's folder while its identity or table is checked and written)
takes held(path): a blocking flock on that file, released at the block's end or its holder's death.
"""
import contextlib
import errno
import os

from atomicfile import remove_orphans, writing
from errors import UserError

try:
    import fcntl
except ImportError:                       # Windows: no flock, so no lock
    fcntl = None

LOCK_FILE = '.lock'


class FolderBusyError(UserError):
    """Another process holds the folder."""


class FolderLock:
    """An exclusive lock on `folder` for this process (FolderBusyError if another holds it);
    release() or the end of a with block gives it back, and so does the process's death."""

    def __init__(self, folder, flag, path=None):
        """`path`: the lock file, FOLDER/.lock unless given (an export, which is replaced whole,
        keeps its lock next to it)."""
        self.folder, self.handle = folder, None
        self.path = path or os.path.join(folder, LOCK_FILE)
        if fcntl is None:
            return
        with writing(self.path, 'the lock file'):
            while self.handle is None:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    holder = os.pread(handle, 32, 0).decode('ascii', 'replace').strip()
                    os.close(handle)
                    if error.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    raise FolderBusyError(
                        '%s is in use by another process (PID %s): wait for it to finish or stop '
                        'it, or pass another %s' % (folder, holder or 'unknown', flag)) from None
                if not self._current(handle):
                    os.close(handle)                # deleted or replaced meanwhile: lock anew
                    continue
                os.ftruncate(handle, 0)
                os.pwrite(handle, b'%d\n' % os.getpid(), 0)
                self.handle = handle

    def _current(self, handle):
        """Is the open file `handle` the one at self.path?"""
        try:
            return os.fstat(handle).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self):
        if self.handle is not None:
            if self._current(self.handle):
                try:
                    os.remove(self.path)
                except OSError:                 # a read-only folder by now: the file can stay
                    pass
            os.close(self.handle)               # closing the file gives the lock back
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def held(path):
    """Inside the block, this process holds an exclusive lock on the file `path` (created if need
    be), waiting for another holder to let go: for critical sections of a few file operations."""
    with writing(path, 'the lock file'):
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)              # gives the lock back


def own(folder, flag, log=print):
    """Create `folder` if needed, lock it (FolderLock; `flag` names the option that chooses it,
    for the error), delete the temporary files killed writers left in it, log what that freed.
    Returns the FolderLock."""
    with writing(folder, 'the folder'):
        os.makedirs(folder, exist_ok=True)
    lock = FolderLock(folder, flag)
    try:
        remove_orphans(folder, held=True, log=log)
    except BaseException:
        lock.release()
        raise
    return lock
