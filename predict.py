"""`python fineturn.py --predict PATH [PATH ...]`: classify image files with a fine-tuned run.

The model is a run's best checkpoint (best.json in --run-dir) or --checkpoint
(checkpoints.open_model); its class names, network structure and mean come from the run dir's
model.json, which training writes, so predicting needs neither the TFRecords nor the pretrained
weights. Inputs, pixels and preprocessing (images.read_bgr8, alexnet.load_image: the same code as
the records and --evaluate) and outputs are classify.py's, shared with
validate_alexnet_on_imagenet.py.
"""
import tensorflow as tf

import alexnet
import checkpoints
import classify
import graph
from console import log

tf1 = tf.compat.v1


def checkpoint_classifier(prefix, model, crops=alexnet.CENTRE_CROP):
    """A classify.Classifier of checkpoint `prefix` with `model`'s structure and mean; with
    several `crops` (alexnet.TEN_CROPS) it averages the softmax of each image's crops."""
    side = model.structure.input_size
    inference = tf1.Graph()
    with inference.as_default():
        views = [len(crops)] if len(crops) > 1 else []
        images = tf1.placeholder(tf.float32, [None] + views + [side, side, 3], name='images')
        _, probabilities = graph.classifier(images, model.structure, crops=crops)
        saver = tf1.train.Saver()
    inference.finalize()
    session = tf1.Session(graph=inference)
    try:
        checkpoints.restore(session, saver, prefix)
    except BaseException:
        session.close()
        raise
    return classify.Classifier(session, images, probabilities, model.mean, crops)


def predict(paths, run_dir, checkpoint, top_k, ten_crop=False, probs_out=None, csv_out=None,
            figure_out=None):
    """The --predict command: classify `paths` (files and folders), print and write the outputs:
    `top_k` classes per image (every class if there are fewer).
    Returns the exit status: 1 if an unreadable image was skipped, else 0."""
    prefix, model = checkpoints.open_model(run_dir, checkpoint)
    top_k = min(top_k, len(model.classes))
    paths = classify.input_paths(paths)
    crops = alexnet.crop_windows(ten_crop)
    log('model %s (%d classes: %s), %d image(s), %s'
        % (prefix, len(model.classes), ', '.join(model.classes[:5])
           + (', ...' if len(model.classes) > 5 else ''), len(paths),
           'ten crops averaged' if ten_crop else 'centre crop'))
    with checkpoint_classifier(prefix, model, crops) as classifier:
        result = classify.run(paths, classifier, model.classes, top_k,
                              max(1, graph.EVAL_BATCH // len(crops)),
                              probs_out=probs_out, csv_out=csv_out, figure_out=figure_out)
    return 1 if result.unreadable else 0
