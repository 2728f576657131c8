"""Classify images with 1000-class ImageNet AlexNet weights: the check that a conversion worked.

    python validate_alexnet_on_imagenet.py [IMAGE_OR_DIR ...] [--weights PATH] [--top-k 5]
        [--save-probs OUT.npz] [--figure OUT.png] [--allow-pickle] [--batch-size N]

Prints each image's top-k ImageNet classes with their probabilities. Directories are expanded to
the image files below them (sorted); with no images given, matplotlib's sample photo
grace_hopper.jpg is classified.
Images go through alexnet.load_image, the one preprocessing shared with `caffe_to_npy --verify`.

From Python:

    import validate_alexnet_on_imagenet as validate
    result = validate.classify(['photo.jpg'], 'weights/bvlc_alexnet.npz')
    result.probs   # (N, 1000) float32, rows in the order of result.paths

Class names: data/imagenet_classes.txt, one line per class in Caffe's order (the sorted WNIDs of
ILSVRC-2012, i.e. the order of Caffe's synset_words.txt). Each line is the comma-separated WordNet
lemma list, i.e. synset_words.txt without the WNID ("tench, Tinca tinca"); the figure shows the
first lemma. Two classes share the name "crane" (the bird, line 135, and the machine, line 518),
as in Caffe. The file was made once from the timm 1.0.31 wheel (timm is not a dependency):
timm/data/_info/imagenet_synsets.txt gives the 1000 WNIDs in order and
timm/data/_info/imagenet_synset_to_lemma.txt maps each WNID to its lemma list.
"""
import argparse
import collections
import concurrent.futures
import os
import sys

import cv2
import matplotlib.cbook
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure   # no pyplot: no global backend, renders with Agg

import alexnet
import setting
from atomicfile import atomic_path, remove_orphans, writing
from errors import UserError

tf1 = tf.compat.v1

# Extensions of the files taken from a directory (what cv2.imread decodes); a file named on the
# command line is tried whatever its extension.
IMAGE_EXTENSIONS = ('.bmp', '.dib', '.jpeg', '.jpg', '.jpe', '.jp2', '.png', '.webp', '.pbm',
                    '.pgm', '.ppm', '.pnm', '.pxm', '.sr', '.ras', '.tiff', '.tif', '.exr', '.hdr',
                    '.pic', '.avif')
PROG = 'validate_alexnet_on_imagenet.py'
FIGURE_MAX_IMAGES = 36      # a 6x6 grid at most; more images make an unreadable figure
FIGURE_THUMBNAIL = 320      # longest side of each drawn image, in pixels


class ValidateError(UserError):
    """A user mistake (bad path, wrong weights, nothing to classify); the message says what to do."""


Result = collections.namedtuple('Result', 'probs paths unreadable')
Result.__doc__ = """probs: (N, classes) float32 softmax rows; paths: the N classified images in input
order; unreadable: [(path, message)] for images that could not be read (skipped)."""


def read_class_names(path=setting.IMAGENET_CLASSES):
    """The class names, one per line, in the weights' fc8 order."""
    try:
        with open(path, encoding='utf-8') as f:
            names = f.read().splitlines()
    except OSError as error:
        raise ValidateError('cannot read the class names %s (%s)' % (path, error.strerror)) from None
    if not names or not all(name.strip() for name in names):
        raise ValidateError('%s: expected one non-empty class name per line' % path)
    return names


def sample_image():
    """Path of matplotlib's sample photo grace_hopper.jpg (a real photo that ships with a dependency)."""
    return os.fspath(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))


def expand_inputs(inputs):
    """Files as given, directories replaced by the sorted image files below them.

    Returns (paths, ignored): `ignored` lists the non-image files found in the directories.
    A path that does not exist is a ValidateError (a typo, most likely).
    """
    paths, ignored = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(folder, name)
                           for folder, _, names in os.walk(item) for name in names)
            for path in found:
                is_image = os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
                (paths if is_image else ignored).append(path)
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise ValidateError('no such file or directory: %s' % item)
    return paths, ignored


def _load(path):
    try:
        return alexnet.load_image(path), None
    except alexnet.ImageError as error:
        return None, str(error)


def _load_batches(paths, batch_size):
    """Yields [(path, image or None, error or None)] per batch, reading the next batch in a thread
    while the current one runs through the graph."""
    def load_chunk(chunk):
        return [(path,) + _load(path) for path in chunk]

    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load_chunk, chunks[0]) if chunks else None
        for following in chunks[1:] + [None]:
            batch = pending.result()
            pending = pool.submit(load_chunk, following) if following else None
            yield batch


def num_classes(weights):
    """Number of classes of a weights dict (fc8's output size; 1000 when fc8 is absent, which
    alexnet.load_weights then reports as missing)."""
    fc8 = weights.get('fc8', {}).get('weights')
    return int(fc8.shape[-1]) if fc8 is not None and fc8.ndim else alexnet.NUM_IMAGENET_CLASSES


def classify(paths, weights=setting.WEIGHTS_PATH, batch_size=setting.BATCH_SIZE,
             allow_pickle=False, skip_unreadable=False):
    """Softmax probabilities of AlexNet with `weights` (a path or an alexnet.read_weights dict)
    for each image in `paths` -> Result(probs, paths, unreadable).

    One graph, built once; images go through in batches of `batch_size` (the last one partial).
    An unreadable image raises alexnet.ImageError, or with skip_unreadable=True is left out of
    probs/paths and listed in `unreadable`. Weights problems raise alexnet.WeightsError.
    """
    paths = [os.fspath(path) for path in paths]
    if batch_size < 1:
        raise ValueError('batch_size must be >= 1, got %r' % batch_size)
    if not isinstance(weights, dict):
        weights = alexnet.read_weights(os.fspath(weights), allow_pickle=allow_pickle)
    classes = num_classes(weights)
    probs, kept, unreadable = [], [], []
    session, images, end_points = alexnet.inference_session(weights)
    with session:
        for batch in _load_batches(paths, batch_size):
            for path, _, error in batch:
                if error is not None:
                    if not skip_unreadable:
                        raise alexnet.ImageError(error)
                    unreadable.append((path, error))
            good = [(path, image) for path, image, error in batch if error is None]
            if good:
                feed = np.stack([image for _, image in good])
                probs.append(session.run(end_points['prob'], {images: feed}))
                kept.extend(path for path, _ in good)
    probs = np.concatenate(probs) if probs else np.zeros((0, classes), np.float32)
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


def _write_atomically(out, write, what, needed=None):
    """Call write(temporary path) next to `out`, then rename it to `out`: no partial file is left
    (nor one that a killed earlier run left); a refused write is a WriteError about `what`."""
    folder = os.path.dirname(os.path.abspath(out))
    with writing(out, what, needed):
        os.makedirs(folder, exist_ok=True)
        remove_orphans(folder, target=os.path.basename(out), log=print)
        with atomic_path(out) as temporary:
            write(temporary)


def save_probs(out, probs, paths):
    """Write `probs` (N x classes float32) and `paths` (unicode array) to the .npz `out`, atomically;
    np.load(out) reads it without pickle."""
    probs, paths = np.asarray(probs, np.float32), np.array(paths, dtype=str)

    def write(temporary):
        with open(temporary, 'wb') as f:   # a file object: np.savez would append .npz to a name
            np.savez(f, probs=probs, paths=paths)
    _write_atomically(out, write, 'the probabilities', probs.nbytes + paths.nbytes)


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
        image = alexnet.read_bgr(paths[i])
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
            raise ValidateError('cannot write the figure %s (%s)' % (out, error)) from None
    _write_atomically(out, write, 'the figure')
    return count


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % text)
    return value


def parse_args(argv=None):
    parser = _Parser(prog=PROG, description=__doc__.split('\n\n')[0].strip().rstrip('.') + '.',
                     epilog='Exits non-zero with one line on stderr for a user mistake.')
    parser.add_argument('inputs', nargs='*', metavar='IMAGE_OR_DIR',
                        help='image files and directories (their image files, sorted); '
                             "default: matplotlib's sample photo grace_hopper.jpg")
    parser.add_argument('--weights', default=setting.WEIGHTS_PATH,
                        help='1000-class weights file from python -m caffe_to_npy '
                             '(default: %(default)s)')
    parser.add_argument('--top-k', type=_positive_int, default=setting.TOP_K,
                        help='classes printed per image (default: %(default)s)')
    parser.add_argument('--save-probs', metavar='OUT.npz',
                        help='write probs (N x classes float32) and paths, in input order')
    parser.add_argument('--figure', metavar='OUT.png',
                        help='draw the images with their top-k labels (first %d images)'
                             % FIGURE_MAX_IMAGES)
    parser.add_argument('--allow-pickle', action='store_true',
                        help='accept a legacy pickled .npy weights file: this runs code stored in '
                             'the file, so only for files you trust')
    parser.add_argument('--batch-size', type=_positive_int, default=setting.BATCH_SIZE,
                        help='images per forward pass (default: %(default)s)')
    return parser.parse_args(argv)


def _warn(message):
    print('warning: %s' % message, file=sys.stderr)


def run(args):
    names = read_class_names()
    if args.inputs:
        paths, ignored = expand_inputs(args.inputs)
        if ignored:
            _warn('skipped %d non-image file(s) in the directories: %s'
                  % (len(ignored), ', '.join(ignored)))
        if not paths:
            raise ValidateError('no image files in %s' % ', '.join(args.inputs))
    else:
        paths = [sample_image()]
        print("no images given: classifying matplotlib's sample photo %s" % paths[0])

    if args.top_k > len(names):
        raise ValidateError('--top-k %d is more than the %d classes' % (args.top_k, len(names)))

    weights = alexnet.read_weights(args.weights, allow_pickle=args.allow_pickle)
    classes = num_classes(weights)
    if classes != len(names):
        raise ValidateError(
            '%s has %d classes in fc8, but %s names %d ImageNet classes: this script checks the '
            '1000-class ImageNet weights (python -m caffe_to_npy output), not a fine-tuned model'
            % (args.weights, classes, setting.IMAGENET_CLASSES, len(names)))
    print('weights %s (%d classes), %d image(s), top-%d, batch size %d'
          % (args.weights, classes, len(paths), args.top_k, args.batch_size))

    result = classify(paths, weights, batch_size=args.batch_size, skip_unreadable=True)
    for path, error in result.unreadable:
        _warn('skipped unreadable image: %s' % error)
    if not result.paths:
        raise ValidateError('none of the %d image(s) could be read (%s)'
                            % (len(paths), result.unreadable[0][1]))
    for path, row in zip(result.paths, result.probs):
        print(format_top_k(path, row, names, args.top_k))

    outputs = []
    if args.save_probs:
        save_probs(args.save_probs, result.probs, result.paths)
        outputs.append('probabilities in %s' % args.save_probs)
    if args.figure:
        drawn = draw_figure(args.figure, result.paths, result.probs, names, args.top_k)
        outputs.append('figure %s' % args.figure + (' (first %d images)' % drawn
                                                    if drawn < len(result.paths) else ''))
    print(' * %d image(s) classified, %d unreadable skipped%s'
          % (len(result.paths), len(result.unreadable),
             ''.join('; ' + text for text in outputs)))


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except UserError as error:
        print('%s: error: %s' % (PROG, error), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
