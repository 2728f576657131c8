"""--verify: OpenCV's Caffe runtime and our TensorFlow graph on the same preprocessed images.

relative difference = max|ours - caffe| / max|caffe| over all images and outputs of a blob;
the conversion passes when it is <= TOLERANCE for fc8 and for prob.
This module loads TensorFlow (through alexnet): the converter imports it only for --verify.
"""
import cv2
import numpy as np

import alexnet

from . import TOLERANCE
from .errors import ConversionError

OUTPUTS = ('fc8', 'prob')


def relative_difference(ours, reference):
    """max|ours - reference| / max|reference| (a scalar)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        raise ConversionError('output shapes differ: ours %s, Caffe %s' % (ours.shape,
                                                                          reference.shape))
    scale = np.abs(reference).max()
    return float(np.abs(ours - reference).max() / scale) if scale else float(
        np.abs(ours).max())


def caffe_forward(prototxt, caffemodel, images, outputs=OUTPUTS):
    """Run OpenCV's Caffe importer on preprocessed NHWC float32 BGR images; {blob: array}."""
    if not hasattr(cv2.dnn, 'readNetFromCaffe'):
        raise ConversionError('OpenCV %s has no Caffe reader (OpenCV 5 removed it): '
                              'pip install "opencv-python-headless<5"' % cv2.__version__)
    try:
        net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    except cv2.error as e:
        raise ConversionError('OpenCV cannot load %s + %s: %s' % (
            prototxt, caffemodel, str(e).strip().splitlines()[-1])) from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.setInput(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
    try:
        results = net.forward(list(outputs))
    except cv2.error as e:
        raise ConversionError('OpenCV cannot compute %s from %s (the check needs layers named %s):'
                              ' %s' % (', '.join(outputs), prototxt, ' and '.join(outputs),
                                       str(e).strip().splitlines()[-1])) from None
    return {name: np.asarray(r).reshape(len(images), -1) for name, r in zip(outputs, results)}


def tf_forward(weights, images, outputs=OUTPUTS, allow_pickle=False):
    """Run alexnet.build + alexnet.load_weights (tf.compat.v1) on NHWC images; {end point: array}.

    `weights` is a weights file path or an already read {layer: {'weights', 'biases'}} dict.
    """
    session, inputs, end_points = alexnet.inference_session(weights, allow_pickle=allow_pickle)
    with session:
        results = session.run({name: end_points[name] for name in outputs},
                              {inputs: np.asarray(images, np.float32)})
    return {name: results[name].reshape(len(images), -1) for name in outputs}


def load_images(image_paths, mean):
    """The network's input for each image with the model's `mean`: alexnet.load_image, the one
    reader and preprocessing that --predict, validation and the records share."""
    if not image_paths:
        raise ConversionError('--verify needs at least one image')
    return np.stack([alexnet.load_image(path, mean) for path in image_paths])


def verify(prototxt, caffemodel, weights_path, image_paths, allow_pickle=False):
    """Compare our graph on `weights_path` with OpenCV's Caffe forward of prototxt + caffemodel,
    on images preprocessed with the weights file's mean.

    Returns {'fc8': rel diff, 'prob': rel diff, 'top1_agreement': fraction, 'images': n,
    'tolerance': TOLERANCE, 'ok': bool}; relative diff = max|ours - caffe| / max|caffe|.
    """
    weights = alexnet.read_weights(weights_path, allow_pickle=allow_pickle)
    images = load_images(image_paths, weights.mean)
    reference = caffe_forward(prototxt, caffemodel, images)
    ours = tf_forward(weights, images)
    result = {name: relative_difference(ours[name], reference[name]) for name in OUTPUTS}
    result['top1_agreement'] = float(np.mean(ours['prob'].argmax(1) ==
                                             reference['prob'].argmax(1)))
    result.update(images=len(images), tolerance=TOLERANCE,
                  ok=all(result[name] <= TOLERANCE for name in OUTPUTS))
    return result
