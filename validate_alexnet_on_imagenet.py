"""Classify images with 1000-class ImageNet AlexNet weights: the check that a conversion worked.

    python validate_alexnet_on_imagenet.py [IMAGE_OR_DIR ...] [--weights PATH] [--labels FILE]
        [--top-k 5] [--save-probs OUT.npz] [--figure OUT.png] [--allow-pickle] [--batch-size N]

Prints each image's top-k ImageNet classes with their probabilities. Directories are expanded to
the image files below them (sorted); with no images given, matplotlib's sample photo
grace_hopper.jpg is classified. This file is the command line; classifying, its inputs and its
outputs live in classify.py, shared with `fineturn.py --predict` (and usable from Python, see
there). Images go through alexnet.load_image, the one reader and preprocessing shared with
`fineturn.py --predict`, the records and `caffe_to_npy --verify`.

Class names: those of --labels FILE, else those stored in the weights file (python -m caffe_to_npy
... --labels FILE), else, for a 1000-class model, data/imagenet_classes.txt (each read by
class_names.read, as every class-name file), one line per class in Caffe's order (the sorted
WNIDs of
ILSVRC-2012, i.e. the order of Caffe's synset_words.txt). Each line is the comma-separated WordNet
lemma list, i.e. synset_words.txt without the WNID ("tench, Tinca tinca"); the figure shows the
first lemma. Two classes share the name "crane" (the bird, line 135, and the machine, line 518),
as in Caffe. The file was made once from the timm 1.0.31 wheel (timm is not a dependency):
timm/data/_info/imagenet_synsets.txt gives the 1000 WNIDs in order and
timm/data/_info/imagenet_synset_to_lemma.txt maps each WNID to its lemma list.
"""
import argparse
import sys

import class_names
import cli
import environment
import setting
import weights_file
from errors import UserError

PROG = 'validate_alexnet_on_imagenet.py'


class ValidateError(UserError):
    """A user mistake (wrong weights, unreadable class names); the message says what to do."""


def model_class_names(weights_path, weights, labels_path=None):
    """The names of the classes of `weights` (read from `weights_path`): those of the file
    `labels_path`, else the weights file's own, else ImageNet's for a 1000-class model; a
    ValidateError that says how to name them otherwise."""
    classes = weights.structure.num_classes
    if labels_path:
        names = class_names.read(labels_path)
        if len(names) != classes:
            raise ValidateError('%s names %d classes but %s has %d outputs in fc8: give one class '
                                'name per output' % (labels_path, len(names), weights_path,
                                                     classes))
        return names
    if weights.labels:
        return weights.labels
    names = class_names.read(setting.IMAGENET_CLASSES)
    if len(names) != classes:
        raise ValidateError(
            '%s has %d classes in fc8 and no class names (%s names the %d ImageNet classes): '
            'pass --labels FILE, one name per line, or store them in the weights file: %s '
            '--labels FILE' % (weights_path, classes, setting.IMAGENET_CLASSES, len(names),
                               weights_file.CONVERT_COMMAND % weights_path))
    return names


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('expected a positive integer, got %r' % text)
    return value


def parser():
    parser = cli.Parser(prog=PROG, description=__doc__.split('\n\n')[0].strip().rstrip('.') + '.')
    parser.add_argument('inputs', nargs='*', metavar='IMAGE_OR_DIR',
                        help='image files and directories (their image files, sorted); none: '
                             "matplotlib's sample photo grace_hopper.jpg")
    parser.add_argument('--weights', default=setting.WEIGHTS_PATH, metavar='WEIGHTS',
                        help=cli.with_default('weights file from python -m caffe_to_npy',
                                              cli.show_path(setting.WEIGHTS_PATH)))
    parser.add_argument('--labels', metavar='FILE',
                        help='class names, one per line and per output of fc8; without it, those '
                             'stored in the weights file, else ImageNet\'s %s for 1000 classes'
                        % cli.show_path(setting.IMAGENET_CLASSES))
    parser.add_argument('--top-k', type=_positive_int, default=setting.TOP_K, metavar='K',
                        help=cli.with_default('classes printed per image', setting.TOP_K))
    parser.add_argument('--save-probs', metavar='OUT.npz',
                        help='write probs (N x classes float32), paths and classes, in input order')
    parser.add_argument('--figure', metavar='OUT.png',
                        help='draw the images with their top-k labels (the first 36 images)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='accept a legacy pickled .npy weights file: this runs code stored in '
                             'the file, so only for files you trust')
    parser.add_argument('--batch-size', type=_positive_int, default=setting.BATCH_SIZE,
                        metavar='N',
                        help=cli.with_default('images per forward pass', setting.BATCH_SIZE))
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return cli.run(PROG, lambda: validate(args))


def validate(args):
    """Classify the images of the parsed flags `args` and print their top-k classes."""
    # The import boundary: TensorFlow loads here, once the flags are parsed, its start-up
    # chatter filtered (environment.py).
    environment.load_tensorflow()
    import alexnet
    import classify
    if args.inputs:
        paths = classify.input_paths(args.inputs)
    else:
        paths = [classify.sample_photo()]
        print("no images given: classifying matplotlib's sample photo %s" % paths[0])
    weights = alexnet.read_weights(args.weights, allow_pickle=args.allow_pickle)
    classes = weights.structure.num_classes
    names = model_class_names(args.weights, weights, args.labels)
    print('weights %s (%d classes), %d image(s), top-%d, batch size %d'
          % (args.weights, classes, len(paths), args.top_k, args.batch_size))
    with classify.from_weights(weights) as classifier:
        classify.run(paths, classifier, names, args.top_k, args.batch_size,
                     probs_out=args.save_probs, figure_out=args.figure)


if __name__ == '__main__':
    sys.exit(main())
