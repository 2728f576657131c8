"""python -m caffe_to_npy DEPLOY.prototxt MODEL.caffemodel OUT.npz [--mean MEAN.binaryproto |
    --mean-values B G R] [--labels FILE] [--legacy-npy] [--verify IMAGE ...]"""
import os
import sys

import class_names
import cli
import environment
import weights_file
from atomicfile import remove_orphans
from errors import UserError

from . import TOLERANCE
from .converter import Net, convert_file, describe_structure, read_mean, structure_of
from .errors import ConversionError

# The exit statuses of every command: 0 done, 1 an error (the user's or the machine's, a
# --verify mismatch included), 2 a usage error (argparse's), 130 interrupted (Ctrl-C).
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def parser():
    parser = cli.Parser(
        prog='python -m caffe_to_npy',
        description='Convert a Caffe model (deploy .prototxt + .caffemodel, V1 or new format) to '
                    'float32 weights in TensorFlow layouts: conv HWIO, fc (in, out), fc6 rows '
                    'reordered from C,H,W to H,W,C. Writes an .npz with keys <layer>/weights and '
                    '<layer>/biases (np.load(path, allow_pickle=False)). Any network\'s '
                    'convolutions (grouped and depthwise too) and inner products convert. For a '
                    'network of the AlexNet family (bvlc_alexnet, bvlc_reference_caffenet, the '
                    'Places AlexNets and their fine-tuned descendants) the file also records '
                    'the model\'s description: its structure (the order of ReLU, LRN and '
                    'pooling, their parameters, the sizes), its mean and optionally its class '
                    'names; fineturn.py and validate_alexnet_on_imagenet.py use only such '
                    'files. --mean, --mean-values, --labels and --verify are for the family.',
        epilog='example: python -m caffe_to_npy bvlc_alexnet/deploy.prototxt '
               'bvlc_alexnet.caffemodel weights/bvlc_alexnet.npz --verify photo.jpg')
    parser.add_argument('prototxt', metavar='DEPLOY.prototxt',
                        help='the deploy .prototxt (network structure)')
    parser.add_argument('caffemodel', metavar='MODEL.caffemodel',
                        help='the binary .caffemodel (weights)')
    parser.add_argument('out', metavar='OUT.npz', help='output file: .npz, or .npy with --legacy-npy')
    means = parser.add_mutually_exclusive_group()
    means.add_argument('--mean', metavar='MEAN.binaryproto',
                       help='the mean image the model was trained with (Caffe BlobProto, '
                            '3 x 256 x 256 BGR, e.g. imagenet_mean.binaryproto); subtracted at '
                            'the same 227 window as the crop')
    means.add_argument('--mean-values', nargs=3, type=float, metavar=('B', 'G', 'R'),
                       help=cli.with_default('a per-channel BGR mean; the default is ImageNet\'s',
                                             cli.show_list(weights_file.IMAGENET_MEAN_BGR)))
    parser.add_argument('--labels', metavar='FILE',
                        help='class names, one per line and per output of the last layer '
                             '(e.g. synset_words.txt, or Places\' categories_places365.txt: '
                             '/a/airfield 0 names class 0 airfield), stored in the weights file')
    parser.add_argument('--legacy-npy', action='store_true',
                        help='write the pickled dict-of-dicts .npy older ports read '
                             "({'conv1': {'weights': W, 'biases': b}, ...}; loading it needs "
                             'allow_pickle=True)')
    parser.add_argument('--verify', nargs='+', metavar='IMAGE',
                        help='run OpenCV\'s Caffe runtime and our alexnet graph on these images '
                             'and compare fc8 and prob; relative difference = max|ours - caffe| / '
                             'max|caffe|; fails (exit %d, nothing written) above %g'
                             % (EXIT_ERROR, TOLERANCE))
    return parser


def _print_summary(summary):
    for name, arrays in summary.layers:
        print('  %-6s %s' % (name, '  '.join('%s %s' % (key, tuple(shape)) for key, shape in arrays)))
    if summary.ignored:
        print('  not in the prototxt, not converted: %s' % ', '.join(summary.ignored))
    for old, new in summary.renamed.items():
        print('  %s is stored as %s' % (old, new))
    if summary.outside_family:
        print('parameters converted, but the network is not of the AlexNet family (%s): '
              'fineturn.py and validate_alexnet_on_imagenet.py can\'t use %s'
              % (summary.outside_family, summary.path))
    else:
        print('structure: %s' % describe_structure(summary.structure))
        print('%s; %s' % (weights_file.describe_mean(summary.mean), '%d labels'
                          % len(summary.labels) if summary.labels else 'no labels'))
    print('%d layers, %s parameters (%.1f MB float32) -> %s (%s) in %.2f s' % (
        len(summary.layers), format(summary.parameters, ','), summary.parameters * 4 / 1e6,
        summary.path, summary.format, summary.seconds))


def parse_args(argv=None):
    """The parsed flags, --mean-values filled in (ImageNet's unless given or --mean is), and
    `family_flags`: the flags given that describe or check a model of the AlexNet family."""
    args = parser().parse_args(argv)
    args.family_flags = [flag for flag, value in (
        ('--mean', args.mean), ('--mean-values', args.mean_values), ('--labels', args.labels),
        ('--verify', args.verify)) if value]
    if args.mean is None and args.mean_values is None:
        args.mean_values = list(weights_file.IMAGENET_MEAN_BGR)
    return args


def _require_family(args):
    """The flags that describe or check a model of the AlexNet family are refused, before any
    work, for a network outside it."""
    given = args.family_flags
    if given:
        try:
            structure_of(Net(args.prototxt))
        except ConversionError as error:
            raise ConversionError('%s; %s %s for networks of the family only: convert '
                                  'without %s' % (error, ' and '.join(given),
                                                  'is' if len(given) == 1 else 'are',
                                                  'it' if len(given) == 1 else 'them')) from None


def main(argv=None):
    args = parse_args(argv)
    try:
        return _convert(args)
    except UserError as e:  # one line for bad input or a refused write, no traceback
        message = str(e).strip().replace('\n', ' ')
        print('caffe_to_npy: error: %s' % message, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print('caffe_to_npy: interrupted; nothing written', file=sys.stderr)
        return EXIT_INTERRUPTED


def _convert(args):
    _require_family(args)
    mean = read_mean(args.mean) if args.mean else args.mean_values
    labels = class_names.read(args.labels) if args.labels else None
    check = None
    if args.verify:
        missing = [p for p in args.verify if not os.path.isfile(p)]
        if missing:
            raise ConversionError('--verify image not found: %s' % missing[0])
        # The import boundary: --verify alone loads TensorFlow and OpenCV's Caffe runtime.
        environment.load_tensorflow()
        from .compare import verify
        results = {}

        def check(tmp_path):
            results.update(verify(args.prototxt, args.caffemodel, tmp_path, args.verify,
                                  allow_pickle=args.legacy_npy))
            if not results['ok']:
                raise _Mismatch()
    folder = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(folder):     # what a killed conversion to the same file left
        remove_orphans(folder, target=os.path.basename(args.out), log=print)
    try:
        summary = convert_file(args.prototxt, args.caffemodel, args.out,
                               legacy_npy=args.legacy_npy, check=check, mean=mean, labels=labels)
    except _Mismatch:
        summary = None
    if args.verify:
        print('verify on %d image(s): max relative difference (max|ours - caffe| / max|caffe|) '
              'fc8 %.2e, prob %.2e; top-1 agreement %.0f%%; tolerance %g: %s' % (
                  results['images'], results['fc8'], results['prob'],
                  100 * results['top1_agreement'], TOLERANCE,
                  'OK' if results['ok'] else 'MISMATCH'))
    if summary is None:
        print('caffe_to_npy: error: the converted weights do not reproduce Caffe\'s outputs '
              '(see above); nothing written to %s' % args.out, file=sys.stderr)
        return EXIT_ERROR
    _print_summary(summary)
    return 0


class _Mismatch(Exception):
    pass


if __name__ == '__main__':
    sys.exit(main())
