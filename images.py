"""Image files as 8-bit BGR pixels, and worker processes that read them in parallel.

The one reader: every path that turns a file into pixels goes through read_bgr8 (the records,
`fineturn.py --predict`, validate_alexnet_on_imagenet.py, `caffe_to_npy --verify`), with one list
of file extensions (IMAGE_EXTENSIONS) and one error (ImageReadError), so an image the converter
skips is skipped by --predict too, and every command sees the same pixels of a file.

Pixels (to_bgr8): every image becomes 8-bit, 3-channel BGR, OpenCV's and Caffe's order.
  - grayscale -> B = G = R; an alpha channel is dropped (not composited); a palette image (GIF,
    palette PNG) is expanded to its colours;
  - 16-bit -> 8-bit by rounding v * 255 / 65535, i.e. (v + 128) // 257: the exact inverse of the
    usual 8 -> 16-bit scaling v * 257, whatever the format (OpenCV's own IMREAD_COLOR truncates
    a 16-bit PNG, v >> 8);
  - other pixel types (float, 32-bit) are refused as unsupported.
EXIF orientation: applied. A photo whose EXIF tag says "rotated" is turned upright, as image
viewers show it (OpenCV's default); the records hold the upright pixels, so training and --predict
agree. (The export's `encoded` signature decodes with TensorFlow, which ignores EXIF: send it
upright images, or pixels to serving_default.)
A file the decoder can only read in part (a JPEG cut short by an interrupted download) is refused,
never padded with grey.

No TensorFlow here: worker processes import this module and nothing heavier, so they start in a
fraction of a second and print nothing.
"""
import collections
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback

import cv2
import numpy as np

from errors import UserError

# Fast lossless PNG: Huffman-only deflate after the Sub filter compresses aerial textures about as
# well as zlib's levels in a fraction of their time; no compression at all makes the records
# much larger (figures in the commit that introduced it).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
# The file names taken as images from a folder (any letter case): what OpenCV's decoders read. A
# file named on a command line is tried whatever its name. (.exr, .hdr and .pic hold float pixels,
# which to_bgr8 refuses: listed, they are reported as unreadable rather than passed over.)
IMAGE_EXTENSIONS = ('.bmp', '.dib', '.gif', '.jpeg', '.jpg', '.jpe', '.jp2', '.png', '.webp',
                    '.avif', '.pbm', '.pgm', '.ppm', '.pnm', '.pxm', '.sr', '.ras', '.tiff', '.tif',
                    '.exr', '.hdr', '.pic')
# Keep 16-bit depth (we round it ourselves) and drop alpha; EXIF orientation applies.
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageReadError(UserError):
    """One image that can't be read; the message is the reason."""


def to_bgr8(image):
    """Any decoded OpenCV image -> uint8 HxWx3 BGR (rules in the module docstring)."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError('unsupported pixel type %s (8- or 16-bit integers only)' % image.dtype)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels in (1, 2):                    # gray, gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image if image.ndim == 2 else image[..., 0]),
                            cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return image
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ImageReadError('unsupported number of channels: %d' % channels)


@contextlib.contextmanager
def quiet():
    """Inside the block, OpenCV's decoders print nothing of their own (libtiff's and libjpeg's
    complaints about a damaged file): the caller reports an unreadable file, in one line."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def is_image_name(name):
    """True for a file name with one of IMAGE_EXTENSIONS, in any letter case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def skip_reason(name):
    """Why a file or folder found in a folder is not read as an image -> 'hidden', 'not an image'
    or None (an image). Hidden, a name that starts with a dot: macOS's AppleDouble files (._x.tif,
    next to every image of a folder zipped on a Mac, have an image's extension but hold none),
    .DS_Store, .git. The one rule of the converter's class folders and --predict's folders."""
    if name.startswith('.'):
        return 'hidden'
    return None if is_image_name(name) else 'not an image'


def read_bgr8(path):
    """An image file -> uint8 HxWx3 BGR, or ImageReadError with the reason (rules in the module
    docstring)."""
    try:
        data = np.fromfile(path, np.uint8)    # works for any path, unlike cv2.imread on Windows
    except OSError as error:
        raise ImageReadError('cannot read file (%s)' % (error.strerror or error)) from None
    if data.size == 0:
        raise ImageReadError('empty file')
    try:
        image = cv2.imdecode(data, DECODE_FLAGS)
    except cv2.error as error:       # some decoders raise on a damaged file instead of failing
        raise ImageReadError('not decodable (%s)' % str(error).strip().splitlines()[-1]) from None
    if image is None:
        raise ImageReadError('not decodable (corrupt, truncated or unsupported format)')
    return to_bgr8(image)


def encode_png(image_bgr8):
    ok, encoded = cv2.imencode('.png', image_bgr8, PNG_PARAMS)
    if not ok:
        raise ImageReadError('PNG encoding failed')
    return encoded.tobytes()


def check_image(path):
    """Worker: None if the image reads, else the reason it doesn't."""
    try:
        read_bgr8(path)
    except ImageReadError as error:
        return str(error)
    return None


def encode_image(path):
    """Worker: (PNG bytes, height, width) or the reason string."""
    try:
        image = read_bgr8(path)
        return encode_png(image), image.shape[0], image.shape[1]
    except ImageReadError as error:
        return str(error)


# --- worker processes ----------------------------------------------------------------------------

def default_workers():
    """One worker per CPU core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                 # macOS, Windows
        return os.cpu_count() or 1


def pool_context():
    """Worker processes that start clean: a fork server that has imported only this module.

    A plain fork copies the parent, and once TensorFlow is loaded there its thread pools may hold
    locks at the fork, so the children hang. The fork server is a fresh interpreter; each worker
    forks from it with OpenCV and numpy loaded and no TensorFlow. Where there is no fork server
    (Windows), spawn.

    The fork server preloads only installed packages, not this module: it imports them before it
    gets the parent's sys.path (Python 3.11), with the current directory first, where a folder
    named like this module (an `images/` data folder) would stand in for it and every worker
    would die at start, over and over. Each worker imports this module after it gets the path.
    """
    if 'forkserver' in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context('forkserver')
        context.set_forkserver_preload(['numpy', 'cv2'])
        return context
    return multiprocessing.get_context('spawn')


def init_worker():
    cv2.setNumThreads(1)                                   # one process per core is the parallelism
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)   # callers report bad files
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it (it stops
    # the workers), so no worker prints a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class WorkerError(UserError):
    """A worker process that stopped in the middle of its files (killed, out of memory ...)."""


CHUNKS_PER_WORKER = 2     # in flight at once: the one it reads and the next, so it never waits
STOP_SECONDS = 5          # close(): a worker's time to exit after SIGTERM, before SIGKILL


def _serve(connection):
    """A worker process: (function, paths) in, [function(path) for each path] out, until the
    parent closes its end. An exception goes back as (exception, its traceback as text)."""
    init_worker()
    while True:
        try:
            function, chunk = connection.recv()
        except (EOFError, OSError):                # the parent closed its end, or is gone
            return
        try:
            reply = True, [function(path) for path in chunk]
        except Exception as error:                 # a bug: the parent raises it, traceback shown
            reply = False, (error, traceback.format_exc())
        try:
            connection.send(reply)                 # pickles it whole before writing a byte
        except Exception as error:                 # an exception or result pickle can't take
            connection.send((False, (RuntimeError('%r cannot go back to the parent: %s'
                                                  % (reply[1], error)), traceback.format_exc())))


class Workers:
    """Ordered parallel map over files, in `workers` processes (or in this one for 1).

    Each worker has a pipe of its own to this process and shares nothing else with it or the
    other workers: no queue with a lock between processes, no helper thread. A worker holds at
    most CHUNKS_PER_WORKER chunks of the list at a time, so a map's memory is bounded whatever the
    consumer's pace, and close() can stop the workers at any moment, even in the middle of a
    message, without anything waiting for them afterwards. (multiprocessing.Pool.terminate() can
    hang forever there: it kills workers that may hold the lock of its shared result queue, or
    have written half a result into it, and then its own threads wait on that queue; CPython
    issue 96995.)
    """

    def __init__(self, workers):
        self.workers, self.processes = workers, []
        # per worker: the chunks given and not yet received, oldest first: [map, chunk index]
        self.given = {}
        if workers > 1:
            context = pool_context()
            try:
                for _ in range(workers):
                    ours, theirs = context.Pipe()
                    process = context.Process(target=_serve, args=(theirs,), daemon=True,
                                              name='images worker')
                    process.start()
                    theirs.close()         # the worker's end lives in the worker only: its death
                    self.processes.append((process, ours))  # is an EOF here
                    self.given[ours] = collections.deque()
            except BaseException:
                self.close()
                raise
        self.maps = 0

    def map(self, function, paths):
        """Yield function(path) for each of `paths`, in order."""
        if self.workers <= 1:
            with quiet():
                yield from map(function, paths)
            return
        if not self.processes:
            raise ValueError('the workers are closed')
        paths = list(paths)
        size = max(1, min(32, len(paths) // (self.workers * 8)))
        self.maps += 1
        state = Map(self.maps, [paths[i:i + size] for i in range(0, len(paths), size)])
        for index in range(len(state.chunks)):
            self._exchange(function, state, wait=False)   # keep every worker busy meanwhile
            while index not in state.received:
                self._exchange(function, state, wait=True)
            ok, value = state.received.pop(index)
            if not ok:
                error, text = value
                raise error from RemoteTraceback(text)
            yield from value

    def _exchange(self, function, state, wait):
        """Give every worker chunks up to CHUNKS_PER_WORKER, then receive the replies that are
        ready (with `wait`, one at least). Replies to an earlier map (one left before its end) are
        dropped."""
        try:
            for connection, given in self.given.items():
                while len(given) < CHUNKS_PER_WORKER and state.following < len(state.chunks):
                    self._send(connection, (function, state.chunks[state.following]), state)
                    given.append((state.number, state.following))
                    state.following += 1
            busy = [connection for connection, given in self.given.items() if given]
            for connection in multiprocessing.connection.wait(busy, None if wait else 0):
                reply = self._receive(connection, state)
                number, index = self.given[connection].popleft()
                if number == state.number:
                    state.received[index] = reply
        except BaseException:
            # stopped in the middle of a message, or a worker gone: these pipes can't be trusted
            self.close()
            raise

    def _send(self, connection, message, state):
        try:
            connection.send(message)
        except OSError:                               # the worker is gone (BrokenPipeError)
            raise self._stopped(connection, state) from None

    def _receive(self, connection, state):
        try:
            return connection.recv()
        except (EOFError, OSError):
            raise self._stopped(connection, state) from None

    def _stopped(self, connection, state):
        """The WorkerError of the worker at the end of `connection`, naming the files it had."""
        process = next(process for process, ours in self.processes if ours is connection)
        process.join(STOP_SECONDS)
        files = [path for number, index in self.given[connection] if number == state.number
                 for path in state.chunks[index]]
        named = ', '.join(map(str, files[:3])) + (' and %d more' % (len(files) - 3)
                                                  if len(files) > 3 else '')
        return WorkerError('an image worker process stopped (exit code %s) while reading %s: run '
                           'again; if it stops again, use fewer workers (it may have run out of '
                           'memory) or leave those files out'
                           % (process.exitcode, named or 'the files of an earlier pass'))

    def close(self):
        """Stop the workers now, whatever they are doing: SIGTERM, then SIGKILL after
        STOP_SECONDS."""
        processes, self.processes, self.given = self.processes, [], {}
        for process, _ in processes:
            if process.exitcode is None:
                process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process, connection in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(STOP_SECONDS)
            connection.close()


@dataclasses.dataclass
class Map:
    """One Workers.map in progress."""
    number: int                 # which map of its Workers (replies to an earlier one are dropped)
    chunks: list                # the paths, in chunks of consecutive ones
    following: int = 0          # the first chunk not yet given to a worker
    received: dict = dataclasses.field(default_factory=dict)   # chunk index -> (ok, value)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as its cause here."""

    def __str__(self):
        return '\n' + self.args[0]
