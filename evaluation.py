"""`python fineturn.py --evaluate CHECKPOINT [--ten-crop]`: the test report of any checkpoint.

Builds only what evaluating needs: the test images' input pipeline and the classifier, through
the full graph. The test images are those of the records' test split, or, for a checkpoint of a
protocol's split (a run dir with a split.csv), that split's test part of the same records. The
report goes next to the checkpoint, in evaluate-<checkpoint>/ (centre crop) or
evaluate-<checkpoint>-10crop/ (--ten-crop: Caffe's oversample, the softmax of ten views of each
image averaged): report.evaluation_dir.
"""
import os

import tensorflow as tf

import alexnet
import checkpoints
import graph
import records
import report
import rundir
import splits
from atomicfile import remove_orphans, writing
from console import log
from rundir import RunError

tf1 = tf.compat.v1


def write_test_report(out_dir, classes, result, checkpoint, views=1):
    """report.write_report for a graph.Evaluation of the test split of `checkpoint`."""
    return report.write_report(out_dir, classes, result.paths, result.labels,
                               result.probabilities, checkpoint, views)


def test_positions(records_dir, run_dir):
    """The positions in the pool of `records_dir` of the test images of the run in `run_dir`: its
    split.csv's test part for a protocol's split, else the records' test split."""
    assigned = os.path.join(run_dir, splits.SPLIT_FILE)
    if not os.path.exists(assigned):
        return records.split_positions(records_dir, 'test')
    fix = 'evaluate it with the --records-dir its protocol split'
    pool = [path for path, _ in splits.read_pool(records_dir)]
    rows = splits.read_split(assigned, fix)
    present = set(pool)
    absent = [path for path, _, _ in rows if path not in present]
    if absent:
        raise RunError('%s is a split of other records than %s (%s is not there): %s'
                       % (run_dir, records_dir, absent[0], fix))
    return splits.positions(rows, pool)['test']


def evaluate_checkpoint(records_dir, checkpoint, ten_crop=False):
    """Write the test report of `checkpoint` (a prefix, one of its files, or a run dir) on the
    test split of `records_dir`; return the report."""
    prefix = checkpoints.find(checkpoint)
    classes = records.read_labels(records_dir)
    checkpoints.check_classes(prefix, classes, 'labels.txt in %s' % records_dir,
                              'evaluate it on the records it was trained on (--records-dir)')
    crops = alexnet.crop_windows(ten_crop)
    out_dir = report.evaluation_dir(prefix, len(crops))
    model = rundir.recorded_model(os.path.dirname(prefix), classes)
    test_graph = tf1.Graph()
    with test_graph.as_default():
        dataset = records.without_autotune(
            records.part_dataset(records_dir, test_positions(records_dir, os.path.dirname(prefix)),
                                 model.mean, crops)
            .batch(max(1, graph.EVAL_BATCH // len(crops))).prefetch(2))
        iterator = tf1.data.make_initializable_iterator(dataset)
        images, labels, paths = iterator.get_next()
        logits, probabilities = graph.classifier(images, model.structure, crops=crops)
        scores = graph.scores(logits, labels)
        saver = tf1.train.Saver()
        test_graph.finalize()
        with tf1.Session() as session:
            checkpoints.restore(session, saver, prefix)
            session.run(iterator.initializer)
            with records.reading(records_dir):
                result = graph.summarize(graph.batches(
                    session, [scores.loss_sum, scores.correct, probabilities, labels, paths]))
    if result is None:
        raise RunError('no test images in %s' % records_dir)
    with writing(out_dir, 'the folder'):
        os.makedirs(out_dir, exist_ok=True)
    # no lock here (a read-only use of the run), so only what dead processes left goes
    remove_orphans(out_dir, log=log)
    written = write_test_report(out_dir, classes, result, prefix, len(crops))
    log(' * %s%s  test Acc@1 %.4f (%d/%d)  report: %s'
        % (prefix, ' ten-crop' if ten_crop else '', written['accuracy'], written['correct'],
           written['total'], os.path.join(out_dir, 'test_report.md')))
    return written
