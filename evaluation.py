"""`python fineturn.py --evaluate CHECKPOINT [--ten-crop]`: the test report of any checkpoint.

Builds only what evaluating needs: the test split's input pipeline and the classifier, through
the full graph. The report goes next to the checkpoint, in evaluate-<checkpoint>/ (centre crop)
or evaluate-<checkpoint>-10crop/ (--ten-crop: Caffe's oversample, the softmax of ten views of each
image averaged).
"""
import contextlib
import os

import tensorflow as tf

import alexnet
import graph
import records
import report
import rundir
from atomicfile import remove_orphans, writing
from rundir import RunError

tf1 = tf.compat.v1


def write_test_report(out_dir, classes, result, checkpoint, crops=1):
    """report.write_report for a graph.Evaluation of the test split of `checkpoint`."""
    return report.write_report(out_dir, classes, result.paths, result.labels,
                               result.probabilities, os.path.relpath(checkpoint, out_dir), crops)


def checkpoint_classes(prefix):
    """The number of classes of a checkpoint's last layer (None if it has none)."""
    shape = tf.train.load_checkpoint(prefix).get_variable_to_shape_map().get('fc8/biases')
    return shape[0] if shape else None


def checkpoint_damage(checkpoint):
    """Why the files of `checkpoint` are damaged (each tensor is read and checked against the
    checksum TensorFlow stored with it), or None if they read whole."""
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as error:
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    return None


@contextlib.contextmanager
def reading_checkpoint(checkpoint):
    """Inside the block, a checkpoint whose files can't be read (a truncated .data, a damaged
    .index) becomes a RunError that says what is damaged; --evaluate, --predict and --export read
    checkpoints through this."""
    try:
        yield
    except (tf.errors.OpError, IndexError, ValueError):   # IndexError: TF's "Read less bytes"
        damage = checkpoint_damage(checkpoint)
        if damage is None:
            raise                            # readable files: the error is about something else
        raise RunError('checkpoint %s is damaged (%s): use another epoch\'s checkpoint'
                       % (checkpoint, damage)) from None


def evaluate_checkpoint(data_dir, checkpoint, ten_crop=False):
    """Write the test report of `checkpoint` (a prefix, one of its files, or a run dir); return
    the report."""
    prefix = rundir.checkpoint_prefix(checkpoint)
    classes = records.read_labels(data_dir)
    with reading_checkpoint(prefix):
        found = checkpoint_classes(prefix)
    if found != len(classes):
        raise RunError('%s has %s classes in fc8 but labels.txt in %s has %d'
                       % (prefix, found or 'no', data_dir, len(classes)))
    crops = alexnet.TEN_CROPS if ten_crop else None
    views = len(crops) if crops else 1
    out_dir = os.path.join(os.path.dirname(prefix), 'evaluate-' + os.path.basename(prefix)
                           + ('-10crop' if ten_crop else ''))
    model = rundir.recorded_model(os.path.dirname(prefix), classes)
    test_graph = tf1.Graph()
    with test_graph.as_default():
        dataset = records.without_autotune(
            records.make_dataset(data_dir, 'test', model.mean, crops)
            .batch(max(1, graph.EVAL_BATCH // views)).prefetch(2))
        iterator = tf1.data.make_initializable_iterator(dataset)
        images, labels, paths = iterator.get_next()
        logits, probabilities = graph.classifier(images, model.structure, crops=views)
        scores = graph.scores(logits, labels)
        saver = tf1.train.Saver()
        test_graph.finalize()
        with tf1.Session() as session:
            with reading_checkpoint(prefix):
                saver.restore(session, prefix)
            session.run(iterator.initializer)
            with records.reading(data_dir, 'test'):
                result = graph.summarize(graph.batches(
                    session, [scores.loss_sum, scores.correct, probabilities, labels, paths]))
    if result is None:
        raise RunError('no test images in %s' % data_dir)
    with writing(out_dir, 'the folder'):
        os.makedirs(out_dir, exist_ok=True)
    # no lock here (a read-only use of the run), so only what dead processes left goes
    remove_orphans(out_dir, log=lambda line: print(line, flush=True))
    written = write_test_report(out_dir, classes, result, prefix, views)
    print(' * %s%s  test Acc@1 %.4f (%d/%d)  report: %s'
          % (prefix, ' ten-crop' if ten_crop else '', written['accuracy'], written['correct'],
             written['total'], os.path.join(out_dir, 'test_report.md')), flush=True)
    return written
