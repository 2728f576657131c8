"""`python fineturn.py --classifier svm`: the frozen-feature baseline of the AID table, as a run.

No fine-tuning. Each image's features at --svm-layer (fc7 after its ReLU, or fc6; the centre crop,
no flip) come from the feature store (frozen_features.py: computed once per image for every run
and split on the same weights), and svm.py fits scikit-learn's LinearSVC (L2-normalised features,
C = --svm-c) on the training part and predicts the test part. The validation part, if there is
one, is not used: there is nothing to select.

The run dir holds what a fine-tuning run's holds but checkpoints: settings.json, model.json,
svm.npz (the classifier: coef, intercept, classes, layer, C; no pickle), test_report.* and
predictions.csv, whose confidence column holds the LinearSVC decision value of the predicted class
(not a probability). --evaluate, --predict and --export need a TensorFlow checkpoint, so they
refuse an SVM run dir in one line (checkpoints.find). A run whose features are all in the store
builds no graph and reads no weights into TensorFlow: seconds.
"""
import os
import time

import numpy as np
import tensorflow as tf

import alexnet
import checkpoints
import frozen_features
import graph
import records
import report
import rundir
import svm
import training
from atomicfile import atomic_write
from console import log, warn

tf1 = tf.compat.v1

STOP = {'fc7': 'fc8', 'fc6': 'fc7'}     # --svm-layer -> the layer it feeds (alexnet.build's stop)
CONFIDENCE = 'the LinearSVC decision value of the predicted class (not a probability)'


class Extraction:
    """FeatureStore.fill's `extract` for the SVM: the frozen layers up to --svm-layer in a graph
    and session of their own, built (and the weights loaded) only when the store lacks an
    image."""

    def __init__(self, settings, weights, structure, mean, pool_size):
        self.settings, self.weights, self.structure, self.mean = settings, weights, structure, mean
        self.pool_size, self.session = pool_size, None

    def __call__(self, positions):
        if self.session is None:
            stop = STOP[self.settings.svm_layer]
            with tf1.Graph().as_default() as extraction:
                self.extractor = graph.FeatureExtractor(self.settings.records_dir,
                                                        self.pool_size, self.mean,
                                                        self.structure, stop, (0,))
            extraction.finalize()
            self.session = tf1.Session(graph=extraction)
            alexnet.load_weights(self.session, self.weights, source=self.settings.weights)
        return self.extractor.batches(self.session, positions)

    def close(self):
        if self.session is not None:
            self.session.close()


def run(settings, parts=None, index=None, split_rows=None):
    """The SVM run of `settings` (`parts`, `index` and `split_rows` as training.start's). Returns
    the exit status."""
    ready = training.prepare(settings, parts, split_rows)
    try:
        return _run(settings, ready, index)
    finally:
        ready.lock.release()


def _run(settings, ready, index):
    started = time.time()
    classes, structure, mean = (ready.description.classes, ready.description.structure,
                                ready.description.mean)
    index = index if index is not None else records.index(settings.records_dir)
    store = frozen_features.open_store(settings, structure, mean, STOP[settings.svm_layer], (0,),
                                       log, warn)
    warning = checkpoints.space_warning(settings.run_dir, 0, 0, 0, 0, (
        settings.feature_store, frozen_features.missing_bytes(store, index.digests)))
    if warning:
        warn(warning)
    log('linear SVM (LinearSVC, C=%g) on %s after its ReLU for the centre crop, L2-normalised, '
        'from the feature store %s; no fine-tuning%s'
        % (settings.svm_c, settings.svm_layer, settings.feature_store,
           '; the %d validation images are not used' % len(ready.parts['validation'])
           if len(ready.parts['validation']) else ''))
    extraction = Extraction(settings, ready.weights, structure, mean, len(index.digests))
    try:
        features = training.read_features(store, index.digests, extraction, settings)
    finally:
        extraction.close()
    train, test = ready.parts['train'], ready.parts['test']
    model, note = svm.fit(features[train, 0], index.labels[train], len(classes), settings.svm_c)
    if note:
        warn(note)
    path = os.path.join(settings.run_dir, rundir.SVM_FILE)
    atomic_write(path, lambda f: np.savez(
        f, coef=model.coef_, intercept=model.intercept_, classes=np.array(classes),
        layer=np.array(settings.svm_layer), c=np.array(settings.svm_c)), 'wb', 'the SVM')
    result = report.write_report(settings.run_dir, classes, np.array(index.paths)[test],
                                 index.labels[test], svm.scores(model, features[test, 0]), path,
                                 confidence=CONFIDENCE)
    log(' * linear SVM on %s (%d training images, %.1f s)  test Acc@1 %.4f (%d/%d)  report: %s'
        % (settings.svm_layer, len(train), time.time() - started, result['accuracy'],
           result['correct'], result['total'],
           os.path.join(settings.run_dir, 'test_report.md')))
    return 0
