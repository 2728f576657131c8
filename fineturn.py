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

This file is the command line and the epoch loop. The work lives in modules named for it
(docs/ARCHITECTURE.md has the map): training.py the run's graph and session, evaluation.py
--evaluate, predict.py --predict, export.py --export, demo.py --demo, rundir.py the run dir's
files.
"""
import argparse
import dataclasses
import os
import signal
import sys
import time

import environment
import rundir
import setting
from errors import UserError

DEMO_EPOCHS = 6          # --demo: enough for the synthetic textures, a minute or two on 2 cores


def layer_list(text):
    names = [name.strip() for name in text.split(',') if name.strip()]
    return [] if names in ([], ['none']) else names


def lr_mult(text):
    try:
        return rundir.lr_multipliers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# Options of one mode only: {option: the modes it works with}
MODE_OPTIONS = {'checkpoint': ('predict', 'export'), 'top_k': ('predict',),
                'save_probs': ('predict',), 'save_csv': ('predict',), 'figure': ('predict',),
                'overwrite': ('export',), 'ten_crop': ('predict', 'evaluate')}


def add_model_use_args(parser, modes):
    """The flags of --predict and --export (predict.py, export.py): using a trained run's model."""
    use = parser.add_argument_group('using a trained model')
    modes.add_argument('--predict', nargs='+', metavar='PATH',
                       help='classify image files and folders with the model of --run-dir (its '
                            'best.json) or --checkpoint')
    modes.add_argument('--export', metavar='OUT_DIR',
                       help='write that model as a TF2 SavedModel (preprocessing inside)')
    use.add_argument('--checkpoint',
                     help='the model to use instead: a checkpoint prefix, any of its files, or a '
                          'run dir (its best.json)')
    use.add_argument('--top-k', type=int,
                     help='classes printed per image by --predict (default: %d, or the number of '
                          'classes if fewer)' % setting.TOP_K)
    use.add_argument('--save-probs', metavar='OUT.npz',
                     help='--predict: write probs (N x classes float32), paths and classes')
    use.add_argument('--save-csv', metavar='OUT.csv',
                     help='--predict: write path,predicted,confidence per image')
    use.add_argument('--figure', metavar='OUT.png',
                     help='--predict: draw the images with their top-k classes (first 36)')
    use.add_argument('--ten-crop', action='store_true',
                     help='--predict, --evaluate: average the softmax of the four corner and the '
                          'centre crops and their mirrors (Caffe\'s oversample)')
    use.add_argument('--overwrite', action='store_true',
                     help='--export: replace an earlier export in OUT_DIR')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fine-tune bvlc_alexnet on TFRecords made by convert_tfrecord.py. '
                    'Defaults come from setting.py.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default=setting.DATA_DIR,
                        help='folder with {train,validation,test}*.tfrecord and labels.txt')
    parser.add_argument('--weights', default=setting.WEIGHTS_PATH,
                        help='pretrained weights (.npz from python -m caffe_to_npy)')
    parser.add_argument('--run-dir', default=setting.RUN_DIR,
                        help='checkpoints, metrics.csv, reports; rerun to resume')
    parser.add_argument('--epochs', type=int, default=None,
                        help='epochs to train (default: %d from setting.py; %d with --demo)'
                        % (setting.EPOCHS, DEMO_EPOCHS))
    parser.add_argument('--batch-size', type=int, default=setting.BATCH_SIZE)
    parser.add_argument('--learning-rate', type=float, default=setting.LEARNING_RATE,
                        help='initial SGD learning rate')
    parser.add_argument('--lr-decay', type=float, default=setting.LR_DECAY,
                        help='learning rate factor applied once per epoch')
    parser.add_argument('--weight-decay', type=float, default=setting.WEIGHT_DECAY,
                        help='L2 factor on the trained layers\' weights')
    parser.add_argument('--lr-mult', type=lr_mult, default=rundir.lr_multipliers(setting.LR_MULT),
                        metavar='LAYER=W[/B],...',
                        help='per-layer learning-rate multipliers, Caffe\'s lr_mult (fc8=10: '
                             'weights x10, biases x20); other trained layers x1')
    parser.add_argument('--keep-prob', type=float, default=setting.KEEP_PROB,
                        help='dropout keep probability before fc7 and fc8 while training')
    parser.add_argument('--train-layers', type=layer_list, default=list(setting.TRAIN_LAYERS),
                        help='comma-separated layers to train (the optimiser\'s var_list)')
    parser.add_argument('--skip-layers', type=layer_list, default=list(setting.SKIP_LAYERS),
                        help='comma-separated layers not loaded from --weights ("none" for none)')
    parser.add_argument('--no-flip', dest='flip', action='store_false', default=setting.FLIP,
                        help='no random up/down and left/right flips of training images')
    parser.add_argument('--seed', type=int, default=setting.SEED)
    parser.add_argument('--keep-checkpoints', type=int, default=setting.KEEP_CHECKPOINTS,
                        help='keep the last N epoch checkpoints (and the best); 0 keeps all')
    parser.add_argument('--no-cache', dest='cache', action='store_false',
                        default=setting.USE_FEATURE_CACHE,
                        help='run the full graph every step instead of the frozen-feature cache')
    parser.add_argument('--cache-ram-gb', type=float, default=setting.CACHE_RAM_GB,
                        help='a feature cache larger than this is memory-mapped from disk')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='allow a legacy pickled .npy weights file (runs code from the file)')
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument('--evaluate', metavar='CHECKPOINT',
                       help='only write the test report for this checkpoint')
    modes.add_argument('--demo', action='store_true',
                       help='run the whole chain on synthetic weights and images under --demo-dir')
    parser.add_argument('--demo-dir', default=os.path.join(setting.RUNS_DIR, 'demo'),
                        help='where --demo writes everything')
    add_model_use_args(parser, modes)
    args = parser.parse_args(argv)
    for option, allowed in MODE_OPTIONS.items():
        given = getattr(args, option) is not None and getattr(args, option) is not False
        if given and not any(getattr(args, mode) for mode in allowed):
            parser.error('--%s works only with %s' % (option.replace('_', '-'), ' or '.join(
                '--' + mode for mode in allowed)))
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS if args.demo else setting.EPOCHS
    return args


def settings_from(args):
    """The run's rundir.Settings from the parsed flags."""
    return rundir.Settings(**{field.name: getattr(args, field.name)
                              for field in dataclasses.fields(rundir.Settings)})


def log(message):
    print(message, flush=True)


class Interrupt:
    """First Ctrl-C: stop after the current step. Second: stop now."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print('\nstopping after this step (Ctrl-C again to stop now)', file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def train(settings, run):
    """The epoch loop on a training.Run: train an epoch, validate, save, record, log; then test the
    best epoch. Returns the exit status."""
    rows = run.rows
    with Interrupt() as interrupt:
        for epoch in range(len(rows) + 1, settings.epochs + 1):
            started = time.time()
            trained = run.train_epoch(epoch, interrupt)
            if trained is None:
                log('interrupted during epoch %d: nothing of it was saved. Rerun the same command '
                    'to resume after epoch %d.' % (epoch, epoch - 1))
                return 130
            validated = run.validate(epoch)
            run.save(epoch)
            rows.append(rundir.metrics_row(epoch, trained.loss, trained.accuracy, validated.loss,
                                           validated.accuracy, trained.learning_rate,
                                           time.time() - started))
            rundir.record_epoch(settings.run_dir, rows, settings.keep_checkpoints)
            run.log_scalars(epoch, {'loss/train': trained.loss, 'loss/validation': validated.loss,
                                    'accuracy/train': trained.accuracy,
                                    'accuracy/validation': validated.accuracy,
                                    'learning_rate': trained.learning_rate})
            log('epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | '
                '%.0f img/s | %.1f s' % (epoch, settings.epochs, trained.loss, trained.accuracy,
                                          validated.loss, validated.accuracy,
                                          trained.learning_rate, trained.images_per_second,
                                          time.time() - started))
            if interrupt.requested:
                log('stopped after epoch %d. Rerun the same command to resume.' % epoch)
                return 130
    best = rundir.write_best(settings.run_dir, rows)
    result = run.test(best)
    log(' * best epoch %d (val acc %.4f)  test Acc@1 %.4f (%d/%d)  report: %s'
        % (int(best['epoch']), float(best['val_accuracy']), result['accuracy'], result['correct'],
           result['total'], os.path.join(settings.run_dir, 'test_report.md')))
    return 0


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
        if args.predict:
            return predict.predict(args.predict, settings.run_dir, args.checkpoint, args.top_k,
                                   args.ten_crop, args.save_probs, args.save_csv, args.figure)
        if args.export:
            export.export(args.export, settings.run_dir, args.checkpoint, args.overwrite)
            return 0
        if args.evaluate:
            evaluation.evaluate_checkpoint(settings.data_dir, args.evaluate, args.ten_crop)
            return 0
        started = time.time()
        if args.demo:
            settings = demo.prepare(settings, args.demo_dir)
        with training.start(settings) as run:
            code = train(settings, run)
        if args.demo and code == 0:
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
