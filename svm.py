"""The frozen-feature baseline (fineturn.py --classifier svm): the protocol of the AID table.

No fine-tuning: each image's features (fc7 after its ReLU, or fc6, for the centre crop) are
L2-normalised per image and classified by scikit-learn's LinearSVC: liblinear, one-vs-rest,
squared hinge loss, L2 penalty, C (--svm-c, 1.0 by default, as in the papers that use
liblinear's defaults). liblinear's dual solver visits the samples in a random order, so the
generator is seeded (SEED): the same features give the same classifier, every time.

No TensorFlow here: it works on arrays of features from the feature store.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

SEED = 0


def l2_normalise(features):
    """Each image's features (a row, flattened) divided by their L2 norm, as float64 (what
    liblinear computes in); a row of zeros stays zeros."""
    return normalize(np.asarray(features, np.float64).reshape(len(features), -1), 'l2', axis=1)


def fit(features, labels, num_classes, c=1.0):
    """A LinearSVC fit on the normalised `features` of images with `labels` (0 .. num_classes-1,
    each present) -> (the model, None or a note that liblinear stopped before converging)."""
    labels = np.asarray(labels)
    absent = sorted(set(range(num_classes)) - set(labels.tolist()))
    if absent:
        raise ValueError('no training image of class(es) %s' % absent)
    model = LinearSVC(C=c, random_state=SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', ConvergenceWarning)
        model.fit(l2_normalise(features), labels)
    unconverged = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    note = ('liblinear stopped after %d iterations before converging (C=%g)'
            % (model.max_iter, c) if unconverged else None)
    return model, note


def scores(model, features):
    """Decision values [images, classes] of the normalised `features`: column i is class i's
    one-vs-rest score, and the argmax is the prediction."""
    values = model.decision_function(l2_normalise(features))
    if values.ndim == 1:                       # two classes: one score, for class 1
        values = np.stack([-values, values], axis=1)
    return values


def predict(model, features):
    """The class of each image (an index into the classes)."""
    return scores(model, features).argmax(1)
