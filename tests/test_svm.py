"""The frozen-feature baseline: L2 per image, then scikit-learn's LinearSVC, deterministic."""
import numpy as np
import pytest
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

import svm


def data(seed, n=200, classes=4, dims=(6, 5)):
    """Features with a direction per class, noise, and a scale that differs wildly per image
    (so that a classifier on unnormalised features predicts differently)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes,) + dims)
    features = centres[labels] + 1.2 * rng.normal(size=(n,) + dims)
    scale = np.exp(rng.uniform(-3, 3, size=(n, 1, 1)))
    return (features * scale).astype(np.float32), labels


def test_predictions_equal_a_direct_scikit_learn_fit():
    train, train_labels = data(1)
    test, _ = data(2, n=120)
    model, note = svm.fit(train, train_labels, 4, c=0.5)
    assert note is None
    direct = LinearSVC(C=0.5, random_state=svm.SEED).fit(
        normalize(train.reshape(len(train), -1).astype(np.float64)), train_labels)
    expected = direct.predict(normalize(test.reshape(len(test), -1).astype(np.float64)))
    np.testing.assert_array_equal(svm.predict(model, test), expected)
    np.testing.assert_array_equal(model.coef_, direct.coef_)
    # the normalisation matters on these features: without it the predictions differ
    raw = LinearSVC(C=0.5, random_state=svm.SEED, max_iter=20000).fit(
        train.reshape(len(train), -1), train_labels)
    assert (raw.predict(test.reshape(len(test), -1)) != expected).sum() > 5


def test_deterministic_and_c_is_used():
    train, labels = data(3, n=100, dims=(10, 12))     # more features than images, like fc7's
    first, _ = svm.fit(train, labels, 4)
    second, _ = svm.fit(train, labels, 4)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    assert first.C == 1.0 and first.multi_class == 'ovr'
    other, _ = svm.fit(train, labels, 4, c=0.01)
    assert not np.allclose(other.coef_, first.coef_)


def test_l2_per_row():
    features = np.array([[[3.0, 4.0]], [[0.0, 0.0]], [[1.0, 0.0]], [[-6.0, 8.0]]], np.float32)
    got = svm.l2_normalise(features)
    np.testing.assert_allclose(got, [[0.6, 0.8], [0, 0], [1, 0], [-0.6, 0.8]])
    assert got.dtype == np.float64
    rows, _ = data(4, n=30)
    norms = np.linalg.norm(svm.l2_normalise(rows), axis=1)
    np.testing.assert_allclose(norms, 1, rtol=1e-12)


def test_two_classes_and_scores():
    train, labels = data(5, classes=2)
    model, _ = svm.fit(train, labels, 2)
    values = svm.scores(model, train)
    assert values.shape == (len(train), 2)
    np.testing.assert_array_equal(values.argmax(1), model.predict(svm.l2_normalise(train)))
    with pytest.raises(ValueError, match=r'no training image of class\(es\) \[2\]'):
        svm.fit(train, labels, 3)


def test_a_fit_that_does_not_converge_says_so():
    train, labels = data(6)
    original = svm.LinearSVC
    try:
        svm.LinearSVC = lambda **kwargs: original(max_iter=1, **kwargs)
        _, note = svm.fit(train, labels, 4)
    finally:
        svm.LinearSVC = original
    assert note == 'liblinear stopped after 1 iterations before converging (C=1)'
