"""Write files and folders so that they are either complete or absent, and say why a write failed.

Every output of the project (weights, records, reports, metrics, caches, exports) goes through
here: it is written under a temporary name next to its target and renamed when complete, so an
interrupted run or a failed check never leaves a half-written file under the real name.

Temporary names are `.<name>.tmp-<pid>-<random><ext>`: hidden, and naming the writer's process,
so remove_orphans can tell the leftovers of a killed writer from the work of a live one. The
extension stays last because some writers (matplotlib) choose the format from it.

A write the machine refuses (full disk, quota, I/O error, read-only folder) becomes a WriteError:
one line saying what was being written, where, how much space it needs and how much is free.
"""
import contextlib
import errno
import os
import re
import shutil
import tempfile

from errors import UserError

TEMP_TAG = '.tmp-'
# Temporary names, and the group holding the writer's PID where the name has one:
TEMPORARY_NAMES = (
    re.compile(r'^\..+\.tmp-(?P<pid>\d+)-[a-z0-9_]+(\.[^.]*)?$'),   # ours (atomic_path, ...)
    re.compile(r'^.+\.tempstate\d+$'),                  # TensorFlow's checkpoint writer
    re.compile(r'^.+\.tmp[0-9a-f]{32}$'),               # TensorFlow's atomic_write_string_to_file
    re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$'),  # ours before the PID was in the name
    re.compile(r'^\..+\.(?P<pid>\d+)\.partial$'),        # convert_tfrecord.py's, likewise
)


class WriteError(UserError):
    """A write the machine refused: full disk, quota, I/O error, read-only or forbidden folder."""


# --- temporary names -----------------------------------------------------------------------------

def _temporary_prefix(path):
    return '.%s%s%d-' % (os.path.splitext(os.path.basename(path))[0], TEMP_TAG, os.getpid())


def temporary_path(path, directory=None):
    """A new, empty temporary file next to `path` (or in `directory`), for a writer that renames
    it itself."""
    directory = directory or os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(path),
                                         suffix=os.path.splitext(path)[1])
    os.close(handle)
    return temporary


def _give_usual_permissions(path, mode):
    umask = os.umask(0)        # mkstemp and mkdtemp make private files: give the usual ones
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(path, check=None, directory=None, place=None):
    """Yield a temporary path next to `path` (or in `directory`, on the same file system); when
    the block ends without error, run `check(temporary)` if given, then rename the temporary
    file over `path` (or call `place(temporary, path)`, which may rename it or leave it). On any
    error (or KeyboardInterrupt) the temporary file is removed and `path` is left as it was."""
    temporary = temporary_path(path, directory)
    try:
        yield temporary
        if check is not None:
            check(temporary)
        _give_usual_permissions(temporary, 0o666)
        (place or os.replace)(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write(path, write, mode='w', what='file', needed=None, directory=None):
    """Open a temporary file next to `path` (or in `directory`) in `mode`, call write(file), then
    rename it. A write the machine refuses is a WriteError about `what` (e.g. 'metrics') needing
    `needed` bytes."""
    with writing(path, what, needed), atomic_path(path, directory=directory) as temporary:
        with open(temporary, mode, **({} if 'b' in mode else {'newline': ''})) as f:
            write(f)


@contextlib.contextmanager
def atomic_dir(path, replace=False):
    """Yield a temporary folder next to `path` to fill; when the block ends without error, rename
    it to `path`. An existing `path` is an error unless `replace`: then it is renamed aside under a
    temporary name, the new folder renamed in, and the old one deleted. On any error the temporary
    folder is removed and `path` is left as it was."""
    parent = os.path.dirname(os.path.abspath(path))
    temporary = tempfile.mkdtemp(dir=parent, prefix=_temporary_prefix(path))
    old = None
    try:
        yield temporary
        _give_usual_permissions(temporary, 0o777)
        if os.path.lexists(path):
            if not replace:
                raise FileExistsError(errno.EEXIST, 'already exists', path)
            old = tempfile.mkdtemp(dir=parent, prefix=_temporary_prefix(path))
            os.rmdir(old)
            os.rename(path, old)
            try:
                os.rename(temporary, path)
            except BaseException:
                os.rename(old, path)            # the previous one back in place
                old = None
                raise
        else:
            os.rename(temporary, path)
    finally:
        for leftover in (temporary, old):
            if leftover is not None and os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)


# --- leftovers of killed writers -----------------------------------------------------------------

def temporary_writer(name):
    """(is `name` a temporary name?, the PID of its writer or None if the name has none)."""
    for pattern in TEMPORARY_NAMES:
        match = pattern.match(name)
        if match:
            pid = match.groupdict().get('pid')
            return True, int(pid) if pid else None
    return False, None


def _running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # someone else's live process
        return True
    return True


def size_of(path):
    """Bytes of a file, or of the files below a folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def orphans(folder, held=False, target=None):
    """Temporary files and folders in `folder` and below whose writer is gone: those naming a
    process that no longer runs, and, when the caller holds the folder's lock (`held`, so no other
    process writes there), those that name none (TensorFlow's). With `target` (a file name),
    only the temporary files of that one file in `folder`."""
    if target is not None:
        stem, ext = os.path.splitext(target)
        mine = '.%s%s' % (stem, TEMP_TAG)
    found = []
    for root, folders, files in os.walk(folder):
        for name in sorted(folders) + sorted(files):
            temporary, pid = temporary_writer(name)
            if not temporary or (target is not None and not (name.startswith(mine)
                                                             and name.endswith(ext))):
                continue
            if name in folders:
                folders.remove(name)            # a temporary folder goes whole
            if (held and pid is None) or (pid is not None and not _running(pid)):
                found.append(os.path.join(root, name))
        if target is not None:
            break
    return found


def remove_orphans(folder, held=False, target=None, log=None):
    """Delete orphans(folder, held, target) -> (how many, bytes freed); with `log`, say so in
    one line through it when there were any."""
    count = freed = 0
    for path in orphans(folder, held, target):
        try:
            size = size_of(path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:               # its writer's own cleanup came first
            continue
        count, freed = count + 1, freed + size
    if count and log is not None:
        log('removed %d temporary file(s) that interrupted writes left in %s: %s freed'
            % (count, folder, human_size(freed)))
    return count, freed


# --- failed writes -------------------------------------------------------------------------------

def human_size(size):
    for unit, scale in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
        if size >= scale:
            return '%.1f %s' % (size / scale, unit)
    return '%d bytes' % size


def existing(path):
    """`path` if it exists, else its nearest existing parent: where a file system answers for a
    folder not made yet."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def same_file_system(path, other):
    """Whether `path` and `other` (or their nearest existing parents) are on one file system."""
    return os.stat(existing(path)).st_dev == os.stat(existing(other)).st_dev


def free_space(path):
    """Free bytes on the file system of `path` (or of its nearest existing parent); None if the
    system won't say."""
    try:
        return shutil.disk_usage(existing(path)).free
    except OSError:
        return None


# errno -> (what it means, what to do); a fault not listed is reported with its own text
REFUSALS = {
    errno.ENOSPC: ('no space left on the device', 'free some space there or write elsewhere'),
    errno.EDQUOT: ('disk quota exceeded', 'free some space within your quota or write elsewhere'),
    errno.EFBIG: ('file too large for the file system or the process limit (ulimit -f)',
                  'write elsewhere or raise the limit'),
    errno.EIO: ('input/output error: the disk or its connection failed',
                'check the disk (dmesg) or write elsewhere'),
    errno.EROFS: ('read-only file system', 'write elsewhere or remount it read-write'),
    errno.EACCES: ('permission denied', 'make the folder writable or write elsewhere'),
    errno.EPERM: ('operation not permitted', 'make the folder writable or write elsewhere'),
}


def errno_in(text):
    """The errno whose message (os.strerror) appears in `text`, e.g. in a TensorFlow error, which
    carries the system's text but no number; None if there is none."""
    for number in REFUSALS:
        if os.strerror(number) in text:
            return number
    return None


def write_error(number, detail, what, path, needed=None):
    """The WriteError for a write of `what` to `path` (about `needed` bytes) that failed with
    errno `number` (`detail`: the system's text, shown when the errno is not a known one)."""
    meaning, fix = REFUSALS.get(number, (detail, 'check the folder and the disk'))
    sizes = []
    if needed:
        sizes.append('it needs about %s' % human_size(needed))
    free = free_space(path) if number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else None
    if free is not None:
        sizes.append('%s free' % human_size(free))
    return WriteError('cannot write %s %s: %s%s: %s, then rerun the same command'
                      % (what, path, meaning, ' (%s)' % ', '.join(sizes) if sizes else '', fix))


@contextlib.contextmanager
def writing(path, what, needed=None, also=()):
    """Turn a refused write inside the block into a WriteError about `what` at `path`, needing
    about `needed` bytes: every OSError, and exceptions of the types in `also` (e.g. TensorFlow's
    errors) whose text names a system error; other exceptions pass unchanged."""
    try:
        yield
    except OSError as error:
        raise write_error(error.errno, error.strerror or str(error), what, path,
                          needed) from None
    except also as error:
        number = errno_in(str(error))
        if number is None:
            raise
        raise write_error(number, os.strerror(number), what, path, needed) from None
