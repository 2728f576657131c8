"""Fine-tune Caffe's pretrained AlexNet on a folder-per-class dataset (the seed's recipe).

    python fineturn.py                      # the recipe in setting.py
    python fineturn.py --demo               # the whole chain on synthetic weights and images
    python fineturn.py --evaluate runs/alexnet-ucmerced/model.ckpt-12 [--ten-crop]
    python fineturn.py --predict photo.jpg photos/ [--top-k 3] [--ten-crop]
    python fineturn.py --export exported/alexnet-ucmerced/1
    python fineturn.py --splits 10 --split-ratios 0.8 0 0.2 [--split K] [--classifier svm]

Reads TFRecords made by convert_tfrecord.py and a weights file made by `python -m caffe_to_npy`,
trains TRAIN_LAYERS with plain SGD, saves model.ckpt-<epoch> and a metrics.csv row per epoch,
picks the best epoch on validation accuracy and writes a test report for it. Rerunning the same
command on the same run dir resumes after the last completed epoch.

When every layer below the lowest trained layer is frozen and flips are the only augmentation
(always, in this recipe), the input of that layer is computed once per image and flip variant,
kept in the feature store shared by every run on the same weights, and the head is trained from
it: exact, and several times faster (--no-cache turns it off). --classifier svm fits a linear SVM
on frozen fc7 (or fc6) features instead of fine-tuning. --splits N repeats the recipe on N random
splits and reports mean ± std.

This file parses the command line and dispatches. The flags are declared in knobs.py; the work
lives in modules named for it (docs/ARCHITECTURE.md has the map): training.py a training run,
svm_run.py --classifier svm, protocol.py and protocol_run.py --splits, evaluation.py --evaluate,
predict.py --predict, export.py --export, demo.py --demo.
"""
import sys
import time

import environment
import knobs
import protocol
import setting
from errors import UserError


DESCRIPTION = ('Fine-tune Caffe\'s AlexNet on TFRecords made by convert_tfrecord.py. Defaults '
               'come from setting.py.')


def parser():
    return knobs.parser(DESCRIPTION)


def parse_args(argv=None):
    return knobs.parse(argv, DESCRIPTION)


def settings_from(args):
    """The run's knobs.Settings from the parsed flags."""
    return knobs.settings(args)


def main(argv=None):
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        settings.check()
        if args.mode == 'splits':   # the protocol's checks answer before TensorFlow loads too
            plan = protocol.plan(settings, args.splits, args.split, args.split_ratios)
        # The import boundary: TensorFlow loads here, after the flags and settings are checked (so
        # --help and their errors answer at once), with its environment set and its start-up
        # chatter filtered (environment.py). Each module imported here imports its own
        # dependencies at its top.
        environment.load_tensorflow()
        import demo
        import evaluation
        import export
        import predict
        import protocol_run
        import svm_run
        import training
        if args.mode == 'predict':
            return predict.predict(args.predict, settings.run_dir, args.checkpoint, args.top_k,
                                   args.ten_crop, args.save_probs, args.save_csv, args.figure)
        if args.mode == 'export':
            export.export(args.export, settings.run_dir, args.checkpoint, args.overwrite)
            return 0
        if args.mode == 'evaluate':
            evaluation.evaluate_checkpoint(settings.records_dir, args.evaluate, args.ten_crop)
            return 0
        if args.mode == 'splits':
            return protocol_run.run(plan, settings, protocol.command(
                sys.argv[1:] if argv is None else argv))
        started = time.time()
        if args.mode == 'demo':
            settings = demo.prepare(settings, args.demo_dir, setting.SPLIT_RATIOS,
                                    setting.CONVERT_WORKERS)
        code = (svm_run.run if settings.classifier == 'svm' else training.train)(settings)
        if code == 0 and args.mode == 'demo':
            demo.finish(settings, time.time() - started)
        return code
    except UserError as error:
        print('fineturn.py: error: %s' % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('fineturn.py: stopped; rerun the same command to resume after the last saved epoch',
              file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
