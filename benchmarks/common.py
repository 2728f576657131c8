"""What the benchmark scripts share: the load line, disk sizes, the feature store's entries, and
the work folder. Imported as `common` (a script's own folder is on sys.path). No TensorFlow."""
import contextlib
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import feature_store  # noqa: E402


def load():
    """The load average, printed next to figures that other processes slow down."""
    return 'load %s' % ' '.join('%.2f' % x for x in os.getloadavg())


def disk_bytes(path):
    """Bytes `path` and everything under it occupy on disk, folders included (what du counts: a
    feature store key has up to 256 shard folders)."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for folder, _, files in os.walk(path):
        for name in [os.curdir] + files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:     # a temporary file renamed or pruned meanwhile
                pass
    return total


def store_entries(store):
    """How many entries the feature store `store` holds: its entry files, outside the folder
    where entries are being written."""
    count = 0
    for folder, subfolders, files in os.walk(store):
        if folder == store and feature_store.TEMP_DIR in subfolders:
            subfolders.remove(feature_store.TEMP_DIR)
        count += sum(name.endswith(feature_store.SUFFIX) for name in files)
    return count


@contextlib.contextmanager
def work_dir(prefix, keep, path=None):
    """A work folder (`path`, or a new temporary one) for the block; deleted after it unless
    `keep`, in which case its name is printed."""
    work = path or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    try:
        yield work
    finally:
        if keep:
            print('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
