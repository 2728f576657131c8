"""Fault injection shared by the fault tests: a disk that fills up, flipped bytes, and finding
the temporary files a fault may leave. No TensorFlow here (test_rundir_faults runs without it).
"""
import errno
import os

import atomicfile

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def temporary_files(folder):
    return [os.path.join(root, name) for root, folders, names in os.walk(folder)
            for name in folders + names if atomicfile.temporary_writer(name)[0]]


def flip_byte(path, offset):
    with open(path, 'r+b') as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ 0xFF]))


class FullDisk:
    """open() whose files take `room` bytes, then raise ENOSPC, for paths containing `match`."""

    def __init__(self, match, room=4096):
        self.match, self.room = match, room

    def __call__(self, path, mode='r', *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if self.match not in os.path.basename(str(path)) or 'r' in mode:
            return handle
        return _Filling(handle, self.room)


class _Filling:
    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        size = len(data) if isinstance(data, (str, bytes)) else memoryview(data).nbytes
        if size > self.room:
            raise ENOSPC
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()
