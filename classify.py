"""Classifying image files with AlexNet: what validate_alexnet_on_imagenet.py (the 1000-class
ImageNet weights) and `fineturn.py --predict` (a fine-tuned run's checkpoint) share.

    import classify
    paths = classify.input_paths(['photo.jpg', 'photos/'])
    with classify.from_weights('weights/bvlc_alexnet.npz') as classifier:
        result = classify.classify(paths, classifier)
    result.probs   # (N, classes) float32, rows in the order of result.paths

Inputs: files as given (whatever their names), folders replaced by the image files below them
(sorted; images.IMAGE_EXTENSIONS, the converter's list). Every image goes through
alexnet.load_image: the one reader (images.read_bgr8) and the one preprocessing (resize to
256x256, crop 227x227, subtract the model's mean; with ten crops, Caffe's oversample), the code
the records and --evaluate use too. Unreadable images are skipped and listed. Outputs: top-k
lines, the probabilities (.npz), one CSV row per image, a figure.
"""
import collections
import concurrent.futures
import csv
import os

import cv2
import matplotlib.cbook
import numpy as np
from matplotlib.figure import Figure   # no pyplot: no global backend, renders with Agg

import alexnet
import images
from atomicfile import atomic_path, remove_orphans, writing
from console import log, warn
from errors import UserError
from images import ImageReadError

FIGURE_MAX_IMAGES = 36      # a 6x6 grid at most; more images make an unreadable figure
FIGURE_THUMBNAIL = 320      # longest side of each drawn image, in pixels
CSV_HEADER = ('path', 'predicted', 'confidence')


class ClassifyError(UserError):
    """A user mistake (bad path, nothing to classify, unwritable output); the message says what
    to do."""


Result = collections.namedtuple('Result', 'probs paths unreadable')
Result.__doc__ = """probs: (N, classes) float32 softmax rows; paths: the N classified images in
input order; unreadable: [(path, message)] for images that could not be read (skipped)."""


class Classifier:
    """An open session that maps preprocessed images to probabilities.

    `images` is the input placeholder: [N, 227, 227, 3], or [N, len(crops), 227, 227, 3] for
    several `crops` (alexnet.TEN_CROPS), whose views the graph averages; `probabilities` is
    [N, classes]; `mean` and `crops` are what alexnet.load_image gets. Closes the session on exit.
    """

    def __init__(self, session, images, probabilities, mean, crops=alexnet.CENTRE_CROP):
        self.session, self.images, self.probabilities = session, images, probabilities
        self.mean, self.crops = mean, crops

    @property
    def classes(self):
        return int(self.probabilities.shape[-1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()


def from_weights(weights, allow_pickle=False):
    """A Classifier of the network of a weights file (a path, alexnet.read_weights' Weights, or a
    plain dict of layers: alexnet.as_weights) with one centre crop and the file's mean."""
    weights = alexnet.as_weights(weights, allow_pickle)
    session, placeholder, end_points = alexnet.inference_session(weights)
    return Classifier(session, placeholder, end_points['prob'], weights.mean)


def sample_photo():
    """The path of a real photo that ships with a dependency: matplotlib's grace_hopper.jpg."""
    return os.fspath(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))


# --- inputs --------------------------------------------------------------------------------------

def expand_inputs(inputs):
    """Files as given, directories replaced by the sorted image files below them.

    Returns (paths, ignored): `ignored` lists what the directories hold besides images: hidden
    files and folders (images.skip_reason: macOS's ._x.tif hold no image) and other files. A path
    that does not exist is a ClassifyError (a typo, most likely).
    """
    paths, ignored = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = []
            for folder, subfolders, names in os.walk(item):
                hidden = sorted(name for name in subfolders if images.skip_reason(name) == 'hidden')
                subfolders[:] = [name for name in subfolders if name not in hidden]
                found += [os.path.join(folder, name) for name in hidden + names]
            for path in sorted(found):
                (paths if images.skip_reason(os.path.basename(path)) is None
                 else ignored).append(path)
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise ClassifyError('no such file or directory: %s' % item)
    return paths, ignored


def input_paths(inputs):
    """expand_inputs for a command line: warns about the ignored files, and a ClassifyError if
    there is no image at all."""
    paths, ignored = expand_inputs(inputs)
    if ignored:
        warn('ignored %d hidden or non-image file(s) in the directories: %s'
             % (len(ignored), ', '.join(ignored)))
    if not paths:
        raise ClassifyError('no image files in %s' % ', '.join(inputs))
    return paths


def _load(path, mean, crops):
    try:
        return alexnet.load_image(path, mean, crops), None
    except ImageReadError as error:
        return None, '%s: %s' % (path, error)


def _load_batches(paths, batch_size, mean, crops):
    """Yields [(path, image or None, error or None)] per batch, reading the next batch in a thread
    while the current one runs through the graph."""
    def load_chunk(chunk):
        return [(path,) + _load(path, mean, crops) for path in chunk]

    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    with images.quiet(), concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load_chunk, chunks[0]) if chunks else None
        for following in chunks[1:] + [None]:
            batch = pending.result()
            pending = pool.submit(load_chunk, following) if following else None
            yield batch


# --- classifying ---------------------------------------------------------------------------------

def classify(paths, classifier, batch_size=32, skip_unreadable=False):
    """Softmax probabilities of `classifier` for each image in `paths` -> Result.

    Images go through in batches of `batch_size` (the last one partial). An unreadable image
    raises images.ImageReadError, or with skip_unreadable=True is left out of probs/paths and
    listed in `unreadable`.
    """
    paths = [os.fspath(path) for path in paths]
    if batch_size < 1:
        raise ValueError('batch_size must be >= 1, got %r' % batch_size)
    probs, kept, unreadable = [], [], []
    for batch in _load_batches(paths, batch_size, classifier.mean, classifier.crops):
        for path, _, error in batch:
            if error is not None:
                if not skip_unreadable:
                    raise ImageReadError(error)
                unreadable.append((path, error))
        good = [(path, image) for path, image, error in batch if error is None]
        if good:
            feed = np.stack([image for _, image in good])
            probs.append(classifier.session.run(classifier.probabilities,
                                                {classifier.images: feed}))
            kept.extend(path for path, _ in good)
    probs = np.concatenate(probs) if probs else np.zeros((0, classifier.classes), np.float32)
    return Result(probs.astype(np.float32, copy=False), kept, unreadable)


def top_k(probs_row, k):
    """Indices of the k largest probabilities, largest first (ties: lower index first)."""
    return np.argsort(-probs_row, kind='stable')[:k]


def format_top_k(path, probs_row, names, k):
    """The lines printed for one image: its path, then `rank. probability  name` per class."""
    lines = [path]
    for rank, index in enumerate(top_k(probs_row, k), 1):
        lines.append('  %d. %.4f  %s' % (rank, probs_row[index], names[index]))
    return '\n'.join(lines)


# --- outputs -------------------------------------------------------------------------------------

def _write_atomically(out, write, what, needed=None):
    """Call write(temporary path) next to `out`, then rename it to `out`: no partial file is left
    (nor one that a killed earlier run left); a refused write is a WriteError about `what`."""
    folder = os.path.dirname(os.path.abspath(out))
    with writing(out, what, needed):
        os.makedirs(folder, exist_ok=True)
        remove_orphans(folder, target=os.path.basename(out), log=log)
        with atomic_path(out) as temporary:
            write(temporary)


def save_probs(out, probs, paths, names):
    """Write `probs` (N x classes float32), `paths` and the class names `classes` (unicode arrays)
    to the .npz `out`, atomically; np.load(out) reads it without pickle."""
    probs, paths = np.asarray(probs, np.float32), np.array(paths, dtype=str)

    def write(temporary):
        with open(temporary, 'wb') as f:   # a file object: np.savez would append .npz to a name
            np.savez(f, probs=probs, paths=paths, classes=np.array(names, dtype=str))
    _write_atomically(out, write, 'the probabilities', probs.nbytes + paths.nbytes)


def save_csv(out, probs, paths, names):
    """Write `path,predicted,confidence` (the top class's name and probability) per image."""
    def write(temporary):
        with open(temporary, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(CSV_HEADER)
            for path, row in zip(paths, probs):
                writer.writerow((path, names[int(row.argmax())], '%.6f' % row.max()))
    _write_atomically(out, write, 'the predictions')


def draw_figure(out, paths, probs, names, k):
    """Save a grid of the images (as read, RGB, not preprocessed) with their top-k labels; draws at
    most FIGURE_MAX_IMAGES images and returns how many it drew."""
    count = min(len(paths), FIGURE_MAX_IMAGES)
    columns = min(count, 4)
    rows = -(-count // columns)
    # one cell per image, in inches: title, image box, then k label lines
    cell_width, title, picture, labels = 3.2, 0.3, 2.6, 0.2 + 0.17 * k
    cell_height = title + picture + labels
    width, height = cell_width * columns, cell_height * rows
    figure = Figure(figsize=(width, height))
    for i in range(count):
        image = images.read_bgr8(paths[i])
        scale = FIGURE_THUMBNAIL / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        row, column = divmod(i, columns)
        axes = figure.add_axes([(column * cell_width + 0.1) / width,
                                (height - row * cell_height - title - picture) / height,
                                (cell_width - 0.2) / width, picture / height])
        axes.imshow(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        axes.set_anchor('N')   # a wide image sits under its title, its labels right below it
        axes.set_axis_off()
        axes.set_title(os.path.basename(paths[i]), fontsize=8)
        lines = ['%.3f %s' % (probs[i][j], names[j].split(',')[0]) for j in top_k(probs[i], k)]
        axes.text(0, -0.03, '\n'.join(lines), transform=axes.transAxes, va='top', fontsize=8)

    def write(temporary):
        try:
            figure.savefig(temporary, dpi=100)
        except ValueError as error:   # e.g. an extension matplotlib has no writer for
            raise ClassifyError('cannot write the figure %s (%s)' % (out, error)) from None
    _write_atomically(out, write, 'the figure')
    return count


# --- the command lines' flow ---------------------------------------------------------------------

def run(paths, classifier, names, k, batch_size, probs_out=None, csv_out=None, figure_out=None):
    """Classify `paths` (input_paths' output) and report as the command lines do: unreadable images
    on stderr, `path` then its top-`k` lines per image on stdout, the outputs asked for, a summary
    line. Returns the Result; a ClassifyError if no image could be read."""
    if not 1 <= k <= len(names):
        raise ClassifyError('--top-k %d: choose 1 to %d (the number of classes)' % (k, len(names)))
    if classifier.classes != len(names):
        raise ValueError('the classifier has %d classes, the names %d'
                         % (classifier.classes, len(names)))
    result = classify(paths, classifier, batch_size, skip_unreadable=True)
    for path, error in result.unreadable:
        warn('skipped unreadable image: %s' % error)
    if not result.paths:
        raise ClassifyError('none of the %d image(s) could be read (%s)'
                            % (len(paths), result.unreadable[0][1]))
    for path, row in zip(result.paths, result.probs):
        print(format_top_k(path, row, names, k))
    outputs = []
    if probs_out:
        save_probs(probs_out, result.probs, result.paths, names)
        outputs.append('probabilities in %s' % probs_out)
    if csv_out:
        save_csv(csv_out, result.probs, result.paths, names)
        outputs.append('predictions in %s' % csv_out)
    if figure_out:
        drawn = draw_figure(figure_out, result.paths, result.probs, names, k)
        outputs.append('figure %s' % figure_out + (' (first %d images)' % drawn
                                                   if drawn < len(result.paths) else ''))
    log(' * %d image(s) classified, %d unreadable skipped%s'
        % (len(result.paths), len(result.unreadable), ''.join('; ' + text for text in outputs)))
    return result
