"""`python fineturn.py --splits N [--split K]`: the recipe on N random splits, then the table.

protocol.plan (before TensorFlow loads) has checked the flags, drawn the splits and the identity;
run() runs each split this command owns as an ordinary run dir, RUN_DIR/split-k: a fine-tuning
run (training.train) or the SVM baseline (svm_run.run), on the split's parts as positions in
the records' pool (no copy of the records per split) with the split's seed, its split.csv written
into it. The pool's records are indexed once (records.index) and every split reads its frozen
features from the feature store: the first split to need an image computes its features, the
others reuse them.

A finished split (split.json) is skipped; a half-done one resumes as any run does; one that
another process is running is passed over and named. Then protocol_table.finish writes the table
when every split has finished, or says what it waits for (--split K), or refuses (without
--split).
"""
import dataclasses
import os
import time

import checkpoints
import protocol
import protocol_table
import records
import splits
import svm_run
import training
from console import log
from outputdir import FolderBusyError


def uses_store(settings):
    """Whether the splits read frozen features from the feature store."""
    return settings.classifier == 'svm' or training.cache_decision(settings)[0]


def run(plan, settings, command):
    """Run the splits of `plan` (protocol.Plan) with `settings`, then write the table (its
    `command` line). Returns the exit status."""
    index = None
    if uses_store(settings):
        index = records.index(settings.records_dir)
        if index.paths != plan.pool_paths:
            raise records.RecordsError(
                'the records in %s hold other images than its %s lists: convert the images '
                'again with %s' % (settings.records_dir, splits.SPLIT_FILE,
                                   records.RECONVERT_COMMAND % settings.records_dir))
    busy = []
    for k in plan.chosen():
        name = splits.folder_name(k, plan.count)
        if protocol.split_result(plan, k) is not None:
            log('%s: finished earlier (%s)' % (name, os.path.join(plan.split_dir(k),
                                                                  'test_report.md')))
            continue
        counts = plan.splits[k].counts()
        log('--- %s of %d: seed %d; %d train, %d validation, %d test images'
            % (name, plan.count, plan.splits[k].seed, counts['train'], counts['validation'],
               counts['test']))
        try:
            code = run_split(plan, k, settings, index)
        except FolderBusyError as error:
            log('%s: passed over: %s' % (name, error))
            busy.append(name)
            continue
        if code:
            return code
    line, left = protocol_table.finish(plan, command)
    if line:
        log(line)
    else:
        log('the table waits for %s: the job that finishes the last split writes it (or run the '
            'same command without --split)%s'
            % (', '.join(left), '; %s is being run by another process' % ', '.join(busy)
               if busy else ''))
    return 0


def run_split(plan, k, settings, index):
    """Run split k as the run dir plan.split_dir(k); mark it finished. Returns the exit status."""
    split = plan.splits[k]
    run_dir = plan.split_dir(k)
    parts = split.positions(plan.pool_paths)
    split_settings = dataclasses.replace(settings, run_dir=run_dir, seed=split.seed)
    started = time.time()
    if settings.classifier == 'svm':
        code = svm_run.run(split_settings, parts, index, split.rows)
        best_epoch = val_accuracy = None
    else:
        code = training.train(split_settings, parts, index, split.rows)
        if code == 0:
            best = checkpoints.read_best(run_dir)
            best_epoch, val_accuracy = best['epoch'], best['val_accuracy']
    if code == 0:
        protocol.record_split(plan, k, best_epoch, val_accuracy, time.time() - started)
    return code
