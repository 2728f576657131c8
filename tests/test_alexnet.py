"""The graph's structure and the weights loader (the OpenCV comparison is in test_alexnet_vs_caffe)."""
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

import alexnet
import netspec

tf1 = tf.compat.v1


def random_weights(num_classes=1000, seed=0):
    rng = np.random.default_rng(seed)
    shapes = netspec.BVLC_ALEXNET.with_classes(num_classes).weight_shapes()
    return {layer: {'weights': rng.normal(0, 0.01, w).astype(np.float32),
                    'biases': rng.normal(0, 0.01, b).astype(np.float32)}
            for layer, (w, b) in shapes.items()}


def save_npz(path, weights):
    np.savez(path, **{'%s/%s' % (layer, kind): value
                      for layer, entry in weights.items() for kind, value in entry.items()})
    return str(path)


@pytest.fixture(scope='module')
def weights():
    return random_weights()


def test_shapes_names_and_parameter_count():
    graph = tf1.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, alexnet.IMAGE_SIZE, alexnet.IMAGE_SIZE, 3])
        logits, end_points = alexnet.build(images, num_classes=21)
    assert logits.shape.as_list() == [None, 21]
    expected = {'conv1': 55, 'pool1': 27, 'conv2': 27, 'pool2': 13, 'conv5': 13, 'pool5': 6}
    for name, side in expected.items():
        assert end_points[name].shape.as_list()[1:3] == [side, side], name
    variables = {v.op.name: v.shape.as_list() for v in graph.get_collection('variables')}
    assert variables['conv2/weights'] == [5, 5, 48, 256]      # group 2 halves the input depth
    assert variables['fc6/weights'] == [9216, 4096]
    assert variables['fc8/biases'] == [21]
    total = sum(np.prod(s) for s in netspec.BVLC_ALEXNET.weight_shapes().values() for s in s)
    assert total == 60965224                                   # bvlc_alexnet's published count
    net = netspec.BVLC_ALEXNET
    assert net.boundary('fc6') == 'pool5' and net.boundary_shape('fc6') == (6, 6, 256)
    assert net.boundary('fc7') == 'fc6' and net.boundary('conv1') == 'data'


def test_split_graph_equals_whole_graph(weights):
    """build(stop=L) followed by build(start=L) computes the same logits as one build."""
    rng = np.random.default_rng(1)
    batch = rng.normal(0, 40, (2, 227, 227, 3)).astype(np.float32)
    graph = tf1.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, 227, 227, 3])
        logits, _ = alexnet.build(images)
        with tf1.variable_scope(tf1.get_variable_scope(), reuse=True):
            pool5, _ = alexnet.build(images, stop='fc6')
            feed = tf1.placeholder(tf.float32, [None, 6, 6, 256])
            head, _ = alexnet.build(feed, start='fc6')
        with tf1.Session() as session:
            alexnet.load_weights(session, weights)
            whole, features = session.run([logits, pool5], {images: batch})
            split = session.run(head, {feed: features})
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())


def test_load_weights_feeds_values_and_keeps_meta_small(tmp_path, weights):
    path = save_npz(tmp_path / 'w.npz', weights)
    graph = tf1.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, 227, 227, 3])
        alexnet.build(images)
        saver = tf1.train.Saver()
        with tf1.Session() as session:
            loaded = alexnet.load_weights(session, path, skip_layers=('fc8',))
            variables = alexnet.graph_layers(graph)
            values = session.run(variables)
            saver.save(session, str(tmp_path / 'model.ckpt'))
    assert loaded == list(alexnet.LAYER_NAMES[:-1])
    for layer in loaded:
        for kind in ('weights', 'biases'):
            assert np.array_equal(values[layer][kind], weights[layer][kind]), (layer, kind)
    # fc8 was skipped: it holds Caffe's filler (std 0.01, bias 0), not the file's values
    assert not np.array_equal(values['fc8']['weights'], weights['fc8']['weights'])
    assert abs(values['fc8']['weights'].std() - 0.01) < 0.001
    assert not values['fc8']['biases'].any()
    assert os.path.getsize(tmp_path / 'model.ckpt.meta') < 1 << 20


def _session_with_graph(num_classes=1000):
    graph = tf1.Graph()
    with graph.as_default():
        alexnet.build(tf1.placeholder(tf.float32, [None, 227, 227, 3]), num_classes=num_classes)
    return tf1.Session(graph=graph)


def test_all_problems_reported_in_one_error(weights):
    broken = {layer: dict(entry) for layer, entry in weights.items()}
    del broken['conv3']
    broken['conv4']['weights'] = broken['conv4']['weights'][..., :10]
    broken['fc9'] = broken['fc8']
    with _session_with_graph() as session:
        with pytest.raises(alexnet.WeightsError) as error:
            alexnet.load_weights(session, broken)
    message = str(error.value)
    assert 'missing layer conv3' in message
    assert 'conv4/weights has shape' in message
    assert 'unexpected layer(s) fc9' in message


def test_class_count_mismatch_names_the_fix(weights):
    with _session_with_graph(num_classes=21) as session:
        with pytest.raises(alexnet.WeightsError, match='fc8/weights .*skipped'):
            alexnet.load_weights(session, weights)
        alexnet.load_weights(session, weights, skip_layers=['fc8'])   # the fix works
        with pytest.raises(alexnet.WeightsError, match='unknown layer'):
            alexnet.load_weights(session, weights, skip_layers=['fc9'])


def test_pickled_npy_refused_unless_opted_in(tmp_path, weights):
    dict_of_dicts = tmp_path / 'dicts.npy'
    np.save(dict_of_dicts, weights, allow_pickle=True)
    with pytest.raises(alexnet.WeightsError, match='runs code.*--allow-pickle'):
        alexnet.read_weights(str(dict_of_dicts))
    loaded = alexnet.read_weights(str(dict_of_dicts), allow_pickle=True)
    assert np.array_equal(loaded['fc6']['weights'], weights['fc6']['weights'])

    dict_of_lists = tmp_path / 'lists.npy'
    np.save(dict_of_lists, {k: [v['weights'], v['biases']] for k, v in weights.items()},
            allow_pickle=True)
    loaded = alexnet.read_weights(str(dict_of_lists), allow_pickle=True)
    assert np.array_equal(loaded['conv2']['biases'], weights['conv2']['biases'])


def test_python2_pickle_with_byte_string_keys(tmp_path):
    """A Python-2 era file: protocol 2 pickle whose str keys come back as bytes or latin1."""
    small = {b'conv1': {b'weights': np.ones((2, 2), np.float32), b'biases': np.zeros(2, np.float32)}}
    path = tmp_path / 'py2.npy'
    with open(path, 'wb') as f:
        # the .npy header for an object array, then a protocol-2 pickle as Python 2's numpy wrote
        np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': ()})
        pickle.dump(np.array(small, dtype=object), f, protocol=2)
    loaded = alexnet.read_weights(str(path), allow_pickle=True)
    assert set(loaded) == {'conv1'} and set(loaded['conv1']) == {'weights', 'biases'}


def test_not_a_weights_file(tmp_path):
    text = tmp_path / 'notes.npz'
    text.write_text('hello')
    with pytest.raises(alexnet.WeightsError, match='not a weights file'):
        alexnet.read_weights(str(text))
    truncated = tmp_path / 'cut.npz'
    save_npz(truncated, {'conv1': random_weights()['conv1']})
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(alexnet.WeightsError, match='not a readable'):
        alexnet.read_weights(str(truncated))
    with pytest.raises(alexnet.WeightsError, match='python -m caffe_to_npy'):
        alexnet.read_weights(str(tmp_path / 'absent.npz'))


def test_preprocess_is_caffe_recipe():
    """Resize to 256x256 (bilinear: OpenCV's INTER_LINEAR to within its fixed-point rounding),
    centre crop 227 at offset 14, subtract the mean; a 256x256 image is not resampled."""
    import cv2
    rng = np.random.default_rng(0)
    mean = (104.0, 117.0, 123.0)
    image = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    out = alexnet.preprocess(image, mean)
    assert out.shape == (227, 227, 3) and out.dtype == np.float32
    resized = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = resized[14:241, 14:241] - np.array(mean, np.float32)
    assert np.abs(out - expected).max() <= 1.0
    square = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(alexnet.preprocess(square, mean),
                                  square[14:241, 14:241] - np.array(mean, np.float32))


def test_ten_crops_are_caffes_oversample_in_numpy_and_tf():
    """The corners and the centre of the 256x256 image, then their left-right mirrors, each minus
    the mean at its own window (a mean image here), mirrored after subtracting, as Caffe does."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (256, 256, 3)).astype(np.float32)
    crops = alexnet.preprocess(image, mean, crops=alexnet.TEN_CROPS)
    assert crops.shape == (10, 227, 227, 3) and crops.dtype == np.float32
    corners = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]
    for i, (top, left) in enumerate(corners):
        window = image[top:top + 227, left:left + 227] - mean[top:top + 227, left:left + 227]
        np.testing.assert_array_equal(crops[i], window)
        np.testing.assert_array_equal(crops[i + 5], window[:, ::-1])
    np.testing.assert_array_equal(crops[4], alexnet.preprocess(image, mean))
    # on a batch of images, in a graph's tensor
    batch = alexnet.preprocess_tensor(tf.constant(np.stack([image, image[::-1]])), mean).numpy()
    assert batch.shape == (2, 227, 227, 3)
    np.testing.assert_array_equal(batch[1], alexnet.preprocess(np.ascontiguousarray(image[::-1]),
                                                               mean))
