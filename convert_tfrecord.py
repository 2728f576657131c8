"""Convert a folder-per-class image set into stratified, reproducible TFRecord splits.

    python convert_tfrecord.py --image-dir UCMerced_LandUse/Images --output-dir data

Input: IMAGE_DIR/<class>/<image>, e.g. UC Merced's 21 folders of 100 .tif each. Output in OUT: the
train, validation and test records, labels.txt and split.csv (records.py describes them). The
rules for the folder and the split are in dataset_folder.py, those for writing in
record_writer.py. Unreadable images are listed and skipped (--strict makes them an error); the
same input and seed give byte-identical files.
"""
import argparse
import sys

import dataset_folder
import environment
import images
import setting
from errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert IMAGE_DIR/<class>/<image> into stratified train/validation/test '
                    'TFRecords, labels.txt and split.csv.')
    parser.add_argument('--image-dir', '--data-dir', dest='image_dir', default=setting.IMAGE_DIR,
                        metavar='IMAGE_DIR',
                        help='one sub folder of images per class (default %(default)s); '
                             '--data-dir is an alias, its old name')
    parser.add_argument('--output-dir', default=setting.RECORDS_DIR,
                        help='where the records, labels.txt and split.csv go (default %(default)s)')
    parser.add_argument('--ratios', type=float, nargs='+', default=list(setting.SPLIT_RATIOS),
                        metavar='R', help='train validation test fractions, positive, summing to '
                                          '1 (default %(default)s)')
    parser.add_argument('--seed', type=int, default=setting.SPLIT_SEED,
                        help='seed of the per-class shuffle (default %(default)s)')
    parser.add_argument('--workers', type=int, default=setting.CONVERT_WORKERS,
                        help='decode/encode processes, 0 = one per CPU core (default %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the outputs of an earlier conversion in the output dir')
    parser.add_argument('--strict', action='store_true',
                        help='fail if any image is unreadable instead of skipping it')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar (it shows only on a terminal anyway)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    print('convert_tfrecord: image dir %s -> %s, ratios %s, seed %d, workers %s%s%s'
          % (args.image_dir, args.output_dir, ' '.join('%g' % r for r in args.ratios), args.seed,
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
