"""A generated, learnable, UC-Merced-like folder of images: `<root>/<class>/<class>NN.tif`.

Used by the tests, the benchmarks and `fineturn.py --demo`, so the whole chain runs without the
real download. Each class is a procedural texture with its own colour, stripe orientation, stripe
frequency and blob density; every image jitters those (angle, frequency, phase, colour, blob
positions) and adds noise. Colour and orientation survive AlexNet's convolutions, so a linear-ish
head on its features separates the classes, even with random conv weights.

With quirks=True the folder also carries the mess real downloads have (docs/ARCHITECTURE.md,
"UC Merced"), placed deterministically on the last images of the classes in turn:
  - odd sizes (sides 242..257, all >= 227, like UC Merced's 44 non-256 images),
  - an 8-bit grayscale .tif, a 16-bit .tif, an RGBA .png, an upper-case `.TIF` extension,
  - a truncated (unreadable) .tif,
  - `Thumbs.db`, `.DS_Store` (in the root and a class folder), a macOS `._<image>.tif` AppleDouble
    file, and a `notes.txt`.
`too_small_class=True` gives the last class only 2 images (the converter must reject it).

`make_dataset_folder` returns a `SyntheticFolder` manifest: what was written, which files are
readable images (with their label and quirk), which are corrupt and which are not images. Tests
check the converter against it.
"""
import dataclasses
import math
import os
import sys

import cv2
import numpy as np

import cli
import images
from errors import UserError

# UC Merced Land Use's 21 classes (Yang & Newsam, ACM SIGSPATIAL GIS 2010), in sorted order.
CLASS_NAMES = (
    'agricultural', 'airplane', 'baseballdiamond', 'beach', 'buildings', 'chaparral',
    'denseresidential', 'forest', 'freeway', 'golfcourse', 'harbor', 'intersection',
    'mediumresidential', 'mobilehomepark', 'overpass', 'parkinglot', 'river', 'runway',
    'sparseresidential', 'storagetanks', 'tenniscourt')

# Image quirks in the order they are handed out (one image each), and the odd sizes (h, w).
IMAGE_QUIRKS = ('odd_size', 'grayscale', 'uint16', 'odd_size', 'rgba', 'uppercase_ext', 'corrupt',
                'odd_size')
ODD_SIZES = ((242, 250), (257, 256), (247, 253))
NOISE_TILES = 8           # per-image noise comes from a few pre-drawn tiles, flipped: fast enough
TIFF_UNCOMPRESSED = [cv2.IMWRITE_TIFF_COMPRESSION, 1]   # UC Merced's .tif files are uncompressed


@dataclasses.dataclass
class SyntheticFolder:
    """What make_dataset_folder wrote. Paths are relative to `root`, with '/' separators."""
    root: str
    classes: list                 # class names, sorted (= label order)
    images: dict                  # readable image path -> {'label': int, 'quirk': str or None}
    corrupt: list                 # image-named files no decoder can read
    ignored: list                 # hidden files and non-images

    def count(self, label):
        return sum(1 for info in self.images.values() if info['label'] == label)


def class_names(num_classes):
    """UC Merced's names first, then `class21`, `class22`, ... if more are asked for."""
    return [CLASS_NAMES[i] if i < len(CLASS_NAMES) else 'class%02d' % i for i in range(num_classes)]


def _class_styles(num_classes, seed):
    """Per-class texture parameters, spread so that classes differ in several ways at once."""
    rng = np.random.default_rng([seed, 7919])
    styles = []
    for c in range(num_classes):
        hue = 180.0 * c / num_classes                            # OpenCV hue range is 0..180
        saturation = (90, 170, 240)[c % 3]
        value = (200, 150, 110, 230)[c % 4]
        base = cv2.cvtColor(np.uint8([[[hue, saturation, value]]]), cv2.COLOR_HSV2BGR)[0, 0]
        styles.append(dict(
            base=base.astype(np.float32),
            stripe_colour=rng.uniform(-1, 1, 3).astype(np.float32),
            angle=math.pi * ((c * 0.381966) % 1.0),              # golden-ratio spread of angles
            frequency=4.0 + 22.0 * ((c * 0.618034) % 1.0),       # stripe cycles per 256 px
            contrast=35.0 + 25.0 * (c % 3),
            blobs=int(6 + 9 * ((c * 5) % 7)),                    # mean blob count per image
            blob_colour=rng.uniform(20, 235, 3),
            blob_radius=3 + (c % 4) * 3,
        ))
    return styles


class _Painter:
    def __init__(self, seed):
        rng = np.random.default_rng([seed, 104729])
        self.tiles = rng.normal(0, 9, (NOISE_TILES, 257, 257, 3)).astype(np.float32)

    def paint(self, style, rng, height, width):
        """One uint8 BGR image of a class's texture with per-image jitter (OpenCV ops: fast)."""
        angle = style['angle'] + rng.normal(0, math.radians(6))
        frequency = style['frequency'] * (1 + rng.normal(0, 0.06))
        phase = rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi * frequency / 256.0
        # sin(ax + by + phase) as a sum of two outer products: no per-pixel sin
        ax = (k * math.cos(angle)) * np.arange(width, dtype=np.float32)
        by = (k * math.sin(angle)) * np.arange(height, dtype=np.float32) + np.float32(phase)
        stripes = np.outer(np.cos(by), np.sin(ax))
        stripes += np.outer(np.sin(by), np.cos(ax))
        colour = style['contrast'] * style['stripe_colour']
        base = style['base'] + rng.normal(0, 6, 3)
        image = cv2.multiply(cv2.merge([stripes] * 3), _scalar(colour))
        image = cv2.add(image, _scalar(base))
        tile = self.tiles[rng.integers(NOISE_TILES)][:height, :width]
        image = cv2.add(image, cv2.flip(tile, int(rng.integers(-1, 2))))
        image = np.clip(image, 0, 255, out=image).astype(np.uint8)
        for _ in range(rng.poisson(style['blobs'])):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            radius = max(1, int(style['blob_radius'] + rng.integers(-2, 3)))
            colour = _scalar(style['blob_colour'] + rng.normal(0, 10, 3))
            cv2.circle(image, centre, radius, colour, -1, lineType=cv2.LINE_AA)
        return image


def _scalar(values):
    """A per-channel cv2 Scalar from a length-3 array."""
    return tuple(float(v) for v in values) + (0.0,)


def make_dataset_folder(root, num_classes=21, per_class=100, size=256, seed=0, quirks=True,
                        too_small_class=False, workers=0):
    """Write `num_classes` folders of `per_class` images (size x size, .tif) under `root`.

    With quirks=True, 8 of the image files carry a quirk (one of them unreadable) and a few
    non-image files are added; with too_small_class=True the last class holds 2 images.
    `workers` processes paint the classes (0 = one per CPU core). Deterministic for a given seed
    whatever the number of workers. Returns a SyntheticFolder manifest.
    """
    if num_classes < 1 or per_class < 1:
        raise ValueError('need at least one class and one image per class, got %d x %d'
                         % (num_classes, per_class))
    if quirks and per_class < 4:
        raise ValueError('quirks need at least 4 images per class, got %d' % per_class)
    names = class_names(num_classes)
    counts = [per_class] * num_classes
    if too_small_class:
        counts[-1] = 2
    quirk_of = {}                   # (class index, image index) -> quirk
    if quirks:
        quirk_classes = [c for c in range(num_classes) if counts[c] == per_class]
        for k, quirk in enumerate(IMAGE_QUIRKS):
            c = quirk_classes[k % len(quirk_classes)]
            size_index = IMAGE_QUIRKS[:k].count('odd_size')
            quirk_of[c, counts[c] - 1 - k // len(quirk_classes)] = (quirk, size_index)
    jobs = [(root, seed, num_classes, c, name, counts[c], len(str(per_class - 1)), size,
             {i: q for (qc, i), q in quirk_of.items() if qc == c}) for c, name in enumerate(names)]
    os.makedirs(root, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, num_classes)
    if workers > 1:
        with images.pool_context().Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            written = pool.map(_write_class, jobs, chunksize=1)
    else:
        written = [_write_class(job) for job in jobs]
    folder = SyntheticFolder(root=root, classes=names, images={}, corrupt=[], ignored=[])
    for c, rows in enumerate(written):
        for rel, quirk in rows:
            if quirk == 'corrupt':
                folder.corrupt.append(rel)
            else:
                folder.images[rel] = {'label': c, 'quirk': quirk}
    if quirks:
        digits = max(2, len(str(per_class - 1)))
        junk = {'.DS_Store': b'\x00\x00\x00\x01Bud1',
                '%s/Thumbs.db' % names[0]: b'\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1' + bytes(56),
                '%s/.DS_Store' % names[1 % num_classes]: b'\x00\x00\x00\x01Bud1',
                '%s/._%s%0*d.tif' % (names[0], names[0], digits, 0):   # macOS AppleDouble
                    b'\x00\x05\x16\x07' + bytes(28),
                '%s/notes.txt' % names[2 % num_classes]: b'downloaded from the UC Merced site\n'}
        for rel, data in junk.items():
            with open(os.path.join(root, *rel.split('/')), 'wb') as f:
                f.write(data)
            folder.ignored.append(rel)
    return folder


def _write_class(job):
    """Paint and write one class folder -> [(relative path, quirk or None)]."""
    root, seed, num_classes, c, name, count, digits, size, quirks = job
    style = _class_styles(num_classes, seed)[c]
    painter = _Painter(seed)
    digits = max(2, digits)
    os.makedirs(os.path.join(root, name), exist_ok=True)
    rows = []
    for i in range(count):
        rng = np.random.default_rng([seed, c, i])
        quirk, size_index = quirks.get(i, (None, 0))
        height, width = (ODD_SIZES[size_index % len(ODD_SIZES)] if quirk == 'odd_size'
                         else (size, size))
        image = painter.paint(style, rng, height, width)
        ext, params = '.tif', TIFF_UNCOMPRESSED
        if quirk == 'grayscale':
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif quirk == 'uint16':
            # 16-bit values that round (v + 128) // 257 back to the 8-bit ones, but not by >> 8
            offset = rng.integers(-128, 129, image.shape)
            image = np.clip(image.astype(np.int64) * 257 + offset, 0, 65535).astype(np.uint16)
        elif quirk == 'rgba':
            alpha = rng.integers(0, 256, image.shape[:2], dtype=np.uint8)
            image, ext, params = np.dstack([image, alpha]), '.png', ()
        elif quirk == 'uppercase_ext':
            ext = '.TIF'
        rel = '%s/%s%0*d%s' % (name, name, digits, i, ext)
        path = os.path.join(root, name, rel.split('/')[1])
        if not cv2.imwrite(path, image, list(params)):
            raise OSError('could not write %s' % path)
        if quirk == 'corrupt':
            with open(path, 'r+b') as f:          # a download cut short
                f.truncate(os.path.getsize(path) // 3)
        rows.append((rel, quirk))
    return rows


def parser():
    parser = cli.Parser(prog='synthetic_dataset.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('root', metavar='ROOT',
                        help='folder to create the <class>/<image> tree in')
    parser.add_argument('--num-classes', type=int, default=len(CLASS_NAMES), metavar='N',
                        help=cli.with_default('classes, named after UC Merced\'s',
                                              len(CLASS_NAMES)))
    parser.add_argument('--per-class', type=int, default=100, metavar='N',
                        help=cli.with_default('images per class', 100))
    parser.add_argument('--size', type=int, default=256, metavar='PIXELS',
                        help=cli.with_default('image side', 256))
    parser.add_argument('--seed', type=int, default=0, metavar='N',
                        help=cli.with_default('random seed', 0))
    parser.add_argument('--no-quirks', action='store_true',
                        help='only clean 8-bit BGR .tif files (without it: odd sizes, grayscale, '
                             '16-bit, RGBA, .TIF, a corrupt file and non-images too)')
    parser.add_argument('--too-small-class', action='store_true',
                        help='the last class gets 2 images (the converter must refuse it)')
    parser.add_argument('--workers', type=int, default=0, metavar='N',
                        help=cli.with_default('processes, 0: one per CPU core', 0))
    return parser


def main(argv=None):
    args = parser().parse_args(argv)

    def work():
        folder = make_dataset_folder(args.root, args.num_classes, args.per_class, args.size,
                                     args.seed, quirks=not args.no_quirks,
                                     too_small_class=args.too_small_class, workers=args.workers)
        print('wrote %d readable images in %d classes to %s (%d corrupt, %d non-images)'
              % (len(folder.images), len(folder.classes), args.root, len(folder.corrupt),
                 len(folder.ignored)))
    # a value make_dataset_folder refuses, or a folder it can't write: the user's to fix
    return cli.run('synthetic_dataset.py', work, (UserError, ValueError, OSError))


if __name__ == '__main__':
    sys.exit(main())
