"""Builders of the tf.compat.v1 graph: the classifier on any input tensor, its scores, SGD, and
the frozen layers' extraction that fills the feature store.

Each mode builds only what it uses: training (training.py) the input pipelines, the classifier,
the scores and the SGD step; --evaluate (evaluation.py) the test pipeline, the classifier and the
scores; the SVM baseline (svm_run.py) the extraction alone. The classifier takes the network's
structure (a netspec.Structure, a small dataclass), never the command line's settings, and any
tensor as input: an iterator's batch, a placeholder.
"""
import collections
import math

import numpy as np
import tensorflow as tf

import alexnet
import netspec
import records

tf1 = tf.compat.v1

EVAL_BATCH = 64      # images per evaluation batch; a multiple of records.FLIP_VARIANTS


Scores = collections.namedtuple('Scores', 'loss_sum correct count mean_loss')
Evaluation = collections.namedtuple('Evaluation', 'loss accuracy probabilities labels paths')


def classifier(inputs, structure=netspec.BVLC_ALEXNET, keep_prob=1.0, start=None,
               crops=alexnet.CENTRE_CROP, weights=None):
    """The network from layer `start` (default: its first) on `inputs` -> (logits, probabilities).

    With several `crops` (alexnet.TEN_CROPS: ten-crop testing), `inputs` holds that many views of
    each image, [N, views, ...], and the image's probabilities are the average of its views'
    softmax vectors, as Caffe's oversample; its logits are then their log, log(mean(softmax)), so
    that scores() gives the cross-entropy and the accuracy of the averaged prediction. `weights`:
    see alexnet.build.
    """
    views = len(crops)
    if views > 1:
        inputs = tf.reshape(inputs, [-1] + inputs.shape[2:].as_list())   # views as images
    logits, end_points = alexnet.build(inputs, keep_prob=keep_prob, start=start,
                                       structure=structure, weights=weights)
    if views == 1:
        return logits, end_points['prob']
    per_image = [-1, views, structure.num_classes]
    probabilities = tf.reduce_mean(tf.reshape(end_points['prob'], per_image), axis=1)
    # log of the mean of the softmax vectors, without underflow: logsumexp of the log-softmaxes
    log_mean = (tf.reduce_logsumexp(tf.reshape(tf.nn.log_softmax(logits), per_image), axis=1)
                - math.log(views))
    return log_mean, probabilities


def features(images, structure, stop):
    """The layers below `stop` on preprocessed `images`: what the feature store holds."""
    return alexnet.build(images, stop=stop, structure=structure)[0]


class FeatureExtractor:
    """The layers below `stop` on the images of a records folder's pool (records.index), chosen
    by position per pass, each image in every flip variant of `variants` (a tuple): what fills the
    feature store. Built in the current graph, whose frozen layers' variables it creates, as
    alexnet.build names them (so a training graph's classifier above shares them)."""

    def __init__(self, records_dir, pool_size, mean, structure, stop, variants):
        self.records_dir, self.pool_size = records_dir, pool_size
        self.shape = (len(variants),) + structure.boundary_shape(stop)
        self.mask = tf1.placeholder(tf.bool, [pool_size], 'extract_positions')
        dataset = records.variants_dataset(records.pool_records(records_dir, self.mask),
                                           len(variants), mean)
        iterator = tf1.data.make_initializable_iterator(
            records.without_autotune(dataset.batch(EVAL_BATCH).prefetch(2)))
        self.initializer = iterator.initializer
        self.features = features(iterator.get_next()[0], structure, stop)

    def batches(self, session, positions):
        """Yield the features [n, variants, *shape] of the pool's images at `positions`, in
        ascending order of position (feature_store.FeatureStore.fill's `extract`)."""
        mask = np.zeros(self.pool_size, bool)
        mask[positions] = True
        session.run(self.initializer, {self.mask: mask})
        with records.reading(self.records_dir):
            while True:
                try:
                    found = session.run(self.features)
                except tf.errors.OutOfRangeError:
                    return
                yield found.reshape((-1,) + self.shape)


def scores(logits, labels):
    """Summed cross-entropy, correct predictions and count of a batch, and the mean loss."""
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.int64))
    return Scores(tf.reduce_sum(xent), correct, tf.size(labels), tf.reduce_mean(xent))


def sgd_step(loss, layers, learning_rate, weight_decay, global_step, largest_rate):
    """Plain SGD on loss + weight_decay * sum(w**2)/2 over the weights of `layers`, a list of
    (weights, biases, weights multiplier, biases multiplier): each variable moves by its
    multiplier times the learning rate (Caffe's lr_mult); biases are not decayed.

    The head step is bound by memory traffic over the 218 MB of fc6/fc7 weights, so the L2 term
    is folded into the update instead of differentiated: TF would otherwise add a pass for its
    gradient (wd * w) and three for adding it to the data gradient. SGD's w - lr (g + wd w) is
    (1 - lr wd) w - lr g, which TF's proximal step (w - a g) / (1 + a l2) computes in place with
    a = lr / (1 - lr wd) and l2 = wd: the same number, to float rounding. That needs
    lr wd < 1 (`largest_rate`: the learning rate's largest value, times the multiplier);
    otherwise, a setting no one trains with, the L2 gradient is added explicitly."""
    variables = [w for w, _, _, _ in layers] + [b for _, b, _, _ in layers]
    gradients = tf.gradients(loss, variables)
    weight_groups, bias_groups = {}, {}
    for (weights, biases, weights_mult, biases_mult), g_w, g_b in zip(
            layers, gradients[:len(layers)], gradients[len(layers):]):
        weight_groups.setdefault(weights_mult, []).append((g_w, weights))
        bias_groups.setdefault(biases_mult, []).append((g_b, biases))
    updates = []
    for mult, pairs in weight_groups.items():
        rate = learning_rate if mult == 1 else learning_rate * mult
        if weight_decay and largest_rate * mult * weight_decay < 1:
            updates.append(tf1.train.ProximalGradientDescentOptimizer(
                rate / (1 - rate * weight_decay),
                l2_regularization_strength=weight_decay).apply_gradients(pairs))
        else:
            updates.append(tf1.train.GradientDescentOptimizer(rate).apply_gradients(
                [(g + weight_decay * w, w) if weight_decay else (g, w) for g, w in pairs]))
    for mult, pairs in bias_groups.items():
        rate = learning_rate if mult == 1 else learning_rate * mult
        updates.append(tf1.train.GradientDescentOptimizer(rate).apply_gradients(pairs))
    with tf.control_dependencies(updates):   # learning_rate reads the step: count it after
        return tf1.assign_add(global_step, 1).op


def train_op(mean_loss, graph, steps_per_epoch, train_layers, learning_rate, lr_decay,
             weight_decay, lr_mult):
    """(train op, learning rate tensor) of SGD on the `train_layers` of `graph`, from
    `learning_rate`, multiplied by `lr_decay` once per epoch of `steps_per_epoch` steps, with L2
    `weight_decay` and the per-layer multipliers `lr_mult` ({layer: (weights, biases)}, Caffe's
    lr_mult; 1 and 1 for a layer it doesn't name)."""
    global_step = tf1.train.get_or_create_global_step()
    rate = tf1.train.exponential_decay(learning_rate, global_step, steps_per_epoch, lr_decay,
                                       staircase=True)
    variables = alexnet.graph_layers(graph)
    layers = [(variables[layer]['weights'], variables[layer]['biases'])
              + tuple(lr_mult.get(layer, (1.0, 1.0))) for layer in train_layers]
    step = sgd_step(mean_loss, layers, rate, weight_decay, global_step,
                    largest_rate=learning_rate if lr_decay <= 1 else math.inf)
    return step, rate


def batches(session, fetches, feed=None):
    """Run `fetches` until the initialised iterator behind them runs out; the list of results."""
    results = []
    while True:
        try:
            results.append(session.run(fetches, feed))
        except tf.errors.OutOfRangeError:
            return results


def summarize(results):
    """Evaluation of (loss sum, correct, probabilities, labels, paths) batches, or None if there
    were no images."""
    total = sum(len(r[3]) for r in results)
    if total == 0:
        return None
    paths = [p.decode() if isinstance(p, bytes) else str(p) for r in results for p in r[4]]
    return Evaluation(sum(r[0] for r in results) / total, sum(r[1] for r in results) / total,
                      np.concatenate([r[2] for r in results]),
                      np.concatenate([r[3] for r in results]), paths)
