"""Fine-tune Caffe's pretrained AlexNet on a folder-per-class dataset (the seed's recipe).

    python fineturn.py                      # the recipe in setting.py
    python fineturn.py --demo               # the whole chain on synthetic weights and images
    python fineturn.py --evaluate runs/alexnet-ucmerced/model.ckpt-12 [--ten-crop]
    python fineturn.py --predict photo.jpg photos/ [--top-k 3] [--ten-crop]
    python fineturn.py --export exported/alexnet-ucmerced/1

Reads TFRecords made by convert_tfrecord.py and a weights file made by `python -m caffe_to_npy`,
trains TRAIN_LAYERS with plain SGD, saves model.ckpt-<epoch> and a metrics.csv row per epoch,
picks the best epoch on validation accuracy and writes a test report for it. Rerunning the same
command on the same run dir resumes after the last completed epoch.

When every layer below the lowest trained layer is frozen and flips are the only augmentation
(always, in this recipe), the input of that layer is computed once per image and flip variant and
the head is trained from that cache: exact, and several times faster (--no-cache turns it off).

This file parses the command line and dispatches. The flags are declared in knobs.py; the work
lives in modules named for it (docs/ARCHITECTURE.md has the map): training.py a training run,
evaluation.py --evaluate, predict.py --predict, export.py --export, demo.py --demo.
"""
import sys
import time

import environment
import knobs
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
        # The import boundary: TensorFlow loads here, after the flags and settings are checked (so
        # --help and their errors answer at once), with its environment set and its start-up
        # chatter filtered (environment.py). Each module imported here imports its own
        # dependencies at its top.
        environment.load_tensorflow()
        import demo
        import evaluation
        import export
        import predict
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
        if args.mode == 'demo':
            started = time.time()
            settings = demo.prepare(settings, args.demo_dir, setting.SPLIT_RATIOS,
                                    setting.CONVERT_WORKERS)
            code = training.train(settings)
            if code == 0:
                demo.finish(settings, time.time() - started)
            return code
        return training.train(settings)
    except UserError as error:
        print('fineturn.py: error: %s' % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('fineturn.py: stopped; rerun the same command to resume after the last saved epoch',
              file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
