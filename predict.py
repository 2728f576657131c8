"""`python fineturn.py --predict PATH [PATH ...]`: classify image files with a fine-tuned run.

The model is a run's best checkpoint (best.json in --run-dir) or --checkpoint; its class names,
network structure and mean come from the run dir's model.json, which training writes, so
predicting needs neither the TFRecords nor the pretrained weights. Inputs, preprocessing
(alexnet.load_image) and outputs are classify.py's, shared with validate_alexnet_on_imagenet.py.
"""
import os

import tensorflow as tf

import alexnet
import classify
import evaluation
import graph
import rundir
import setting
from rundir import RunError

tf1 = tf.compat.v1


def open_model(run_dir, checkpoint=None):
    """(checkpoint prefix, rundir.Model) of `checkpoint` (a prefix, one of its files or a run dir)
    or else of the best epoch of `run_dir`; the model is the one recorded in the checkpoint's run
    dir, and it must have as many class names as the checkpoint has outputs."""
    if checkpoint is None and not os.path.isdir(run_dir):
        raise RunError('no run dir %s: train one with python fineturn.py --run-dir %s, or name a '
                       'checkpoint with --checkpoint' % (run_dir, run_dir))
    prefix = rundir.checkpoint_prefix(checkpoint or run_dir)
    model = rundir.read_model(os.path.dirname(prefix))
    with evaluation.reading_checkpoint(prefix):
        found = evaluation.checkpoint_classes(prefix)
    if found != len(model.classes):
        raise RunError('%s has %s classes in fc8 but %s names %d: that file was written for '
                       'another dataset; rerun the training command that made the checkpoint to '
                       'record it again, or use a checkpoint trained with it'
                       % (prefix, found or 'no',
                          os.path.join(os.path.dirname(prefix), rundir.MODEL_FILE),
                          len(model.classes)))
    return prefix, model


def checkpoint_classifier(prefix, model, crops=None):
    """A classify.Classifier of checkpoint `prefix` with `model`'s structure and mean; with
    `crops` (alexnet.TEN_CROPS) it averages the softmax of each image's crops."""
    views = len(crops) if crops else 1
    side = model.structure.input_size
    inference = tf1.Graph()
    with inference.as_default():
        images = tf1.placeholder(tf.float32, [None] + ([views] if crops else []) + [side, side, 3],
                                 name='images')
        _, probabilities = graph.classifier(images, model.structure, crops=views)
        saver = tf1.train.Saver()
    inference.finalize()
    session = tf1.Session(graph=inference)
    try:
        with inference.as_default(), evaluation.reading_checkpoint(prefix):
            saver.restore(session, prefix)   # (a Saver outside its graph tries to work eagerly)
    except BaseException:
        session.close()
        raise
    return classify.Classifier(session, images, probabilities, model.mean, crops)


def predict(paths, run_dir, checkpoint=None, top_k=None, ten_crop=False, probs_out=None,
            csv_out=None, figure_out=None):
    """The --predict command: classify `paths` (files and folders), print and write the outputs
    (top_k classes per image; default setting.TOP_K or all classes if fewer). Returns the exit
    status: 1 if an unreadable image was skipped, else 0."""
    prefix, model = open_model(run_dir, checkpoint)
    if top_k is None:
        top_k = min(setting.TOP_K, len(model.classes))
    paths = classify.input_paths(paths)
    crops = alexnet.TEN_CROPS if ten_crop else None
    print('model %s (%d classes: %s), %d image(s), %s'
          % (prefix, len(model.classes), ', '.join(model.classes[:5])
             + (', ...' if len(model.classes) > 5 else ''), len(paths),
             'ten crops averaged' if ten_crop else 'centre crop'), flush=True)
    with checkpoint_classifier(prefix, model, crops) as classifier:
        result = classify.run(paths, classifier, model.classes, top_k,
                              max(1, graph.EVAL_BATCH // (len(crops) if crops else 1)),
                              probs_out=probs_out, csv_out=csv_out, figure_out=figure_out)
    return 1 if result.unreadable else 0
