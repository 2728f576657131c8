"""Convert a folder-per-class image set into stratified, reproducible TFRecord splits.

    python convert_tfrecord.py --image-dir UCMerced_LandUse/Images --output-dir data

Input: IMAGE_DIR/<class>/<image>, e.g. UC Merced's 21 folders of 100 .tif each. Output in OUT: the
train, validation and test records, labels.txt and split.csv (records.py describes them). The
rules for the folder and the split are in dataset_folder.py, those for writing in
record_writer.py. Unreadable images are listed and skipped (--strict makes them an error); the
same input and seed give byte-identical files.
"""
import sys

import cli
import dataset_folder
import environment
import images
import setting
from errors import UserError


def parser():
    parser = cli.Parser(
        prog='convert_tfrecord.py',
        description='Convert IMAGE_DIR/<class>/<image> into stratified train/validation/test '
                    'TFRecords, labels.txt and split.csv.')
    parser.add_argument('--image-dir', '--data-dir', dest='image_dir', default=setting.IMAGE_DIR,
                        metavar='IMAGE_DIR',
                        help=cli.with_default('one sub folder of images per class; '
                                              '--data-dir: an alias, its old name',
                                              cli.show_path(setting.IMAGE_DIR)))
    parser.add_argument('--output-dir', default=setting.RECORDS_DIR, metavar='OUTPUT_DIR',
                        help=cli.with_default('where the records, labels.txt and split.csv go',
                                              cli.show_path(setting.RECORDS_DIR)))
    parser.add_argument('--ratios', type=float, nargs=3, default=list(setting.SPLIT_RATIOS),
                        metavar=('TRAIN', 'VALIDATION', 'TEST'),
                        help=cli.with_default('the fractions of each class for each split, '
                                              'positive, summing to 1',
                                              cli.show_list(setting.SPLIT_RATIOS)))
    parser.add_argument('--seed', type=int, default=setting.SPLIT_SEED, metavar='N',
                        help=cli.with_default('seed of the per-class shuffle', setting.SPLIT_SEED))
    parser.add_argument('--workers', type=int, default=setting.CONVERT_WORKERS, metavar='N',
                        help=cli.with_default('decode/encode processes, 0: one per CPU core',
                                              setting.CONVERT_WORKERS))
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the outputs of an earlier conversion in the output dir')
    parser.add_argument('--strict', action='store_true',
                        help='fail if any image is unreadable instead of skipping it')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar (it shows only on a terminal anyway); the other '
                             'lines stay')
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    print('convert_tfrecord: image dir %s -> %s, ratios %s, seed %d, workers %s%s%s'
          % (args.image_dir, args.output_dir, cli.show_list(args.ratios), args.seed,
             args.workers or '%d (one per core)' % images.default_workers(),
             ', overwrite' if args.overwrite else '', ', strict' if args.strict else ''))
    try:
        plan = dataset_folder.plan(args.image_dir, args.output_dir, args.ratios, args.workers,
                                   args.overwrite)   # a wrong folder or ratio: answered at once
        # The import boundary: TensorFlow loads here, once the inputs are checked
        # (environment.py). The image workers never load it.
        environment.load_tensorflow()
        import record_writer
        conversion = record_writer.write(plan, args.seed, args.strict, progress=not args.quiet)
    except UserError as error:
        print('convert_tfrecord.py: error: %s' % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('convert_tfrecord.py: interrupted, nothing written', file=sys.stderr)
        return 130
    print(dataset_folder.summary(conversion))
    return 0


if __name__ == '__main__':
    sys.exit(main())
