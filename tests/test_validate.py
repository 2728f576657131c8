"""validate_alexnet_on_imagenet.py and classify.py (which it shares with fineturn.py --predict):
class names, classifying, outputs and the CLI's error paths.

The weights are random arrays of AlexNet's shapes, made here; their scale is chosen so the softmax
is far from uniform, so ordering and per-image bugs show.
"""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

import alexnet
import class_names
import classify
import netspec
import setting
import validate_alexnet_on_imagenet as validate
from images import ImageReadError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'validate_alexnet_on_imagenet.py')
ERROR_PREFIX = validate.PROG + ': error: '


def random_weights(num_classes=alexnet.NUM_IMAGENET_CLASSES, seed=0):
    """{layer: {'weights', 'biases'}}: He-scaled normals, conv1 also divided by the pixel scale."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer, (w_shape, b_shape) in netspec.BVLC_ALEXNET.with_classes(
            num_classes).weight_shapes().items():
        std = np.sqrt(2.0 / np.prod(w_shape[:-1])) / (16.0 if layer == 'conv1' else 1.0)
        weights[layer] = {'weights': rng.standard_normal(w_shape, np.float32) * np.float32(std),
                          'biases': rng.standard_normal(b_shape, np.float32) * np.float32(0.1)}
    return weights


def save_npz(path, weights):
    np.savez(path, **{'%s/%s' % (layer, kind): value
                      for layer, entry in weights.items() for kind, value in entry.items()})
    return str(path)


def write_image(path, seed, size=(300, 260), channels=3):
    """A picture with structure (shapes on a gradient), different for each seed."""
    rng = np.random.default_rng(seed)
    height, width = size
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    image = (rng.uniform(0, 255, 3) * ramp + rng.uniform(0, 128, 3)).astype(np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(image, (height, width, 3)))
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(0, (width, height)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(5, 80)), colour, -1)
    if channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    assert cv2.imwrite(str(path), image)
    return str(path)


def classify_with(paths, weights, batch_size=32, skip_unreadable=False):
    """classify.classify with the weights (a dict or a path), the ImageNet mean, one centre crop."""
    with classify.from_weights(weights) as classifier:
        return classify.classify(paths, classifier, batch_size, skip_unreadable)


def run_cli(*args):
    return subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def assert_clean_error(proc, *expected):
    """Non-zero exit, no traceback, exactly one error line from us that mentions `expected`."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, proc.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    assert ' * ' not in proc.stdout


@pytest.fixture(scope='module')
def weights():
    return random_weights()


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory, weights):
    return save_npz(tmp_path_factory.mktemp('weights') / 'alexnet.npz', weights)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """The real photo plus generated ones of other sizes and channel counts."""
    folder = tmp_path_factory.mktemp('images')
    return [classify.sample_photo(),
            write_image(folder / 'wide.png', 1, size=(200, 400)),
            write_image(folder / 'small_gray.jpg', 2, size=(90, 120), channels=1),
            write_image(folder / 'alpha.png', 3, channels=4),
            write_image(folder / 'square.tif', 4, size=(256, 256))]


# --- class names ---------------------------------------------------------------------------------

def test_class_names_are_caffes_1000_in_sorted_wnid_order():
    names = class_names.read(setting.IMAGENET_CLASSES)
    assert len(names) == 1000
    # indices of Caffe's synset_words.txt (sorted WNIDs), as every ImageNet model reports them
    expected = {0: 'tench, Tinca tinca', 1: 'goldfish, Carassius auratus', 281: 'tabby, tabby cat',
                285: 'Egyptian cat', 409: 'analog clock', 652: 'military uniform',
                999: 'toilet tissue, toilet paper, bathroom tissue'}
    assert {i: names[i] for i in expected} == expected
    assert not any(re.search(r'\bn\d{8}\b', name) for name in names)   # names only, no WNIDs
    assert names.count('crane') == 2 and len(set(names)) == 999         # bird and machine, as Caffe


def test_unreadable_class_names_file_is_a_clean_error(tmp_path):
    with pytest.raises(class_names.ClassNamesError, match='cannot read the class names'):
        class_names.read(str(tmp_path / 'missing.txt'))


# --- classify ------------------------------------------------------------------------------------

def test_classify_rows_are_distributions_in_input_order(weights, images):
    order = [images[3], images[0], images[4], images[1], images[2]]
    result = classify_with(order, weights, batch_size=2)   # batches of 2, 2 and 1
    assert result.paths == order and result.unreadable == []
    assert result.probs.shape == (5, 1000) and result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert (result.probs.max(axis=1) > 0.01).all()           # far from uniform (0.001) ...
    assert np.ptp(result.probs, axis=0).max() > 1e-3          # ... and image-dependent
    # each row belongs to its own image: the same images alone and in one batch agree
    for i in (0, 3):
        alone = classify_with([order[i]], weights, batch_size=1).probs[0]
        np.testing.assert_allclose(result.probs[i], alone, rtol=1e-4, atol=1e-7)
    together = classify_with(order, weights, batch_size=8).probs
    np.testing.assert_allclose(result.probs, together, rtol=1e-4, atol=1e-7)


def test_classify_skips_or_raises_on_unreadable_images(weights, images, tmp_path):
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a jpeg at all')
    result = classify_with([broken, images[1]], weights, skip_unreadable=True)
    assert result.paths == [images[1]] and result.probs.shape == (1, 1000)
    assert [path for path, _ in result.unreadable] == [str(broken)]
    assert str(broken) in result.unreadable[0][1]
    with pytest.raises(ImageReadError, match='broken.jpg'):
        classify_with([images[1], broken], weights)


def test_top_k_is_descending_probability():
    row = np.array([0.1, 0.4, 0.05, 0.4, 0.05], np.float32)
    assert classify.top_k(row, 3).tolist() == [1, 3, 0]
    text = classify.format_top_k('x.jpg', row, ['a', 'b', 'c', 'd', 'e'], 2)
    assert text.splitlines() == ['x.jpg', '  1. 0.4000  b', '  2. 0.4000  d']


# --- inputs and outputs --------------------------------------------------------------------------

def test_directories_expand_to_sorted_image_files(tmp_path):
    folder = tmp_path / 'photos'
    (folder / 'sub').mkdir(parents=True)
    (folder / '.hidden').mkdir()                 # a hidden folder is not walked, only listed
    for name in ('b.JPG', 'a.png', 'sub/c.tif', 'notes.txt', 'sub/.DS_Store', 'sub/._c.tif',
                 '.hidden/d.png'):
        (folder / name).write_bytes(b'x')
    single = tmp_path / 'named.dat'   # named on the command line: tried whatever its extension
    single.write_bytes(b'x')
    paths, ignored = classify.expand_inputs([str(single), str(folder)])
    assert paths == [str(single), str(folder / 'a.png'), str(folder / 'b.JPG'),
                     str(folder / 'sub' / 'c.tif')]
    assert ignored == [str(folder / '.hidden'), str(folder / 'notes.txt'),
                       str(folder / 'sub' / '.DS_Store'), str(folder / 'sub' / '._c.tif')]
    with pytest.raises(classify.ClassifyError, match='no such file'):
        classify.expand_inputs([str(folder), str(tmp_path / 'typo.jpg')])


def test_save_probs_is_loadable_without_pickle_and_leaves_no_temporary(tmp_path):
    probs = np.random.default_rng(1).random((3, 1000)).astype(np.float64)
    paths = ['a.jpg', 'dir/b.png', 'ü.tif']
    out = tmp_path / 'out' / 'probs.bin'          # folder created; name kept exactly
    classify.save_probs(str(out), probs, paths, ['c%d' % i for i in range(1000)])
    with np.load(out, allow_pickle=False) as data:
        assert data['probs'].dtype == np.float32 and data['paths'].dtype.kind == 'U'
        np.testing.assert_array_equal(data['probs'], probs.astype(np.float32))
        assert data['paths'].tolist() == paths
        assert data['classes'].tolist() == ['c%d' % i for i in range(1000)]
    assert os.listdir(tmp_path / 'out') == ['probs.bin']


def test_main_without_images_classifies_the_sample_photo(weights_file, tmp_path, capsys):
    out = tmp_path / 'probs.npz'
    assert validate.main(['--weights', weights_file, '--save-probs', str(out), '--top-k', '2']) == 0
    with np.load(out) as data:
        assert data['paths'].tolist() == [classify.sample_photo()]
        assert data['probs'].shape == (1, 1000)
    printed = capsys.readouterr().out
    assert 'grace_hopper.jpg' in printed and '  2. ' in printed and '  3. ' not in printed


# --- the command line ----------------------------------------------------------------------------

def parse_printed(stdout, top_k):
    """{path: [(probability, name)]} from the per-image blocks of the output."""
    blocks, lines = {}, stdout.splitlines()
    for i, line in enumerate(lines):
        if re.match(r'  1\. ', line):
            ranked = [re.match(r'  (\d+)\. (\d\.\d{4})  (.+)$', l) for l in lines[i:i + top_k]]
            assert [int(m.group(1)) for m in ranked] == list(range(1, top_k + 1)), lines[i:i + 6]
            blocks[lines[i - 1]] = [(float(m.group(2)), m.group(3)) for m in ranked]
    return blocks


def test_cli_classifies_files_and_directories(weights_file, weights, images, tmp_path):
    folder = tmp_path / 'folder'
    folder.mkdir()
    in_folder = [write_image(folder / name, seed) for name, seed in (('b.png', 7), ('a.jpg', 8))]
    (folder / 'broken.png').write_bytes(b'\x89PNG truncated')
    (folder / 'readme.txt').write_text('not an image')
    out, figure = tmp_path / 'probs.npz', tmp_path / 'figure.png'
    proc = run_cli(images[2], folder, images[0], '--weights', weights_file, '--top-k', 3,
                   '--batch-size', 2, '--save-probs', out, '--figure', figure)
    assert proc.returncode == 0, proc.stderr
    expected = [images[2], sorted(in_folder)[0], sorted(in_folder)[1], images[0]]
    with np.load(out, allow_pickle=False) as data:
        probs, paths = data['probs'], data['paths'].tolist()
    assert paths == expected and probs.shape == (4, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, classify_with(expected, weights).probs,
                               rtol=1e-4, atol=1e-7)
    # what is printed follows the saved probabilities, largest first
    names = class_names.read(setting.IMAGENET_CLASSES)
    printed = parse_printed(proc.stdout, 3)
    assert list(printed) == expected
    for path, row in zip(paths, probs):
        order = np.argsort(-row, kind='stable')[:3]
        assert printed[path] == [(round(float(row[j]), 4), names[j]) for j in order]
    # skipped files are listed, the figure is a PNG
    assert 'broken.png' in proc.stderr and 'readme.txt' in proc.stderr
    assert ' * 4 image(s) classified, 1 unreadable skipped' in proc.stdout
    assert figure.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert [name for name in os.listdir(tmp_path) if name.startswith('.tmp')] == []


@pytest.fixture(scope='module')
def small_weights(tmp_path_factory):
    """Tiny weights files: only fc8, for 10 classes; as .npz and as a pickled dict .npy."""
    folder = tmp_path_factory.mktemp('small')
    fc8 = {'fc8': {'weights': np.zeros((4096, 10), np.float32), 'biases': np.zeros(10, np.float32)}}
    np.save(folder / 'legacy.npy', fc8, allow_pickle=True)
    return {'npz': save_npz(folder / 'ten.npz', fc8), 'npy': str(folder / 'legacy.npy')}


def run_main(capsys, *args):
    """validate.main in this process -> (exit code, stdout, stderr); argparse exits count too."""
    try:
        code = validate.main([str(a) for a in args])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_cli_process_exits_cleanly_on_user_mistakes(tmp_path):
    """The real process: non-zero exit, one line, no traceback (main's wiring to sys.exit)."""
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'')
    missing = run_cli(broken, '--weights', tmp_path / 'nope.npz')
    assert_clean_error(missing, 'python -m caffe_to_npy', 'nope.npz')


@pytest.mark.parametrize('case', ['missing weights', 'pickled npy', 'pickled npy allowed',
                                  'not 1000 classes', 'all unreadable', 'no such input',
                                  'empty folder', 'top-k too large', 'bad batch size',
                                  'bad top-k'])
def test_cli_user_mistakes_are_one_clean_line(case, weights_file, small_weights, images, tmp_path,
                                              capsys):
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'')
    (tmp_path / 'empty').mkdir()
    args, expected = {
        'missing weights': ([images[0], '--weights', tmp_path / 'nope.npz'],
                            ['python -m caffe_to_npy', 'nope.npz']),
        'pickled npy': ([images[0], '--weights', small_weights['npy']], ['--allow-pickle']),
        # with the opt-in the file is read, and then fails for its class count
        'pickled npy allowed': ([images[0], '--weights', small_weights['npy'], '--allow-pickle'],
                                ['10 classes', '1000']),
        'not 1000 classes': ([images[0], '--weights', small_weights['npz']],
                             ['10 classes in fc8 and no class names', 'imagenet_classes.txt',
                              'pass --labels FILE', 'python -m caffe_to_npy deploy.prototxt '
                              'model.caffemodel %s --labels FILE' % small_weights['npz']]),
        'all unreadable': ([broken, '--weights', weights_file], ['could be read', 'broken.jpg']),
        'no such input': ([tmp_path / 'typo.jpg', '--weights', weights_file], ['typo.jpg']),
        'empty folder': ([tmp_path / 'empty', '--weights', weights_file], ['no image files']),
        'top-k too large': ([images[0], '--weights', weights_file, '--top-k', 1001], ['1001']),
        'bad batch size': ([images[0], '--weights', weights_file, '--batch-size', 0],
                           ['--batch-size']),
        'bad top-k': (['--top-k', 'five'], ['--top-k', 'five']),
    }[case]
    assert_clean_error(run_main(capsys, *args), *expected)


def test_a_model_of_other_classes_is_named_by_labels(images, tmp_path, capsys):
    """A 7-class model converted without class names (a Places365-like case): --labels names
    its outputs, in fc8's order; without them the error names that fix, not another command."""
    path = save_npz(tmp_path / 'seven.npz', random_weights(num_classes=7, seed=4))
    labels = tmp_path / 'seven.txt'
    names = ['scene %d' % i for i in range(7)]
    labels.write_text('\n'.join(names) + '\n')
    probs = tmp_path / 'probs.npz'
    proc = run_main(capsys, images[0], images[1], '--weights', path, '--labels', labels,
                    '--top-k', 7, '--save-probs', probs)
    assert proc.returncode == 0, proc.stderr
    with np.load(probs) as data:
        assert data['classes'].tolist() == names
        rows = data['probs']
    printed = parse_printed(proc.stdout, 7)
    for image, row in zip(images[:2], rows):
        order = np.argsort(-row, kind='stable')
        assert [name for _, name in printed[image]] == [names[j] for j in order]
    labels.write_text('\n'.join(names[:6]) + '\n')
    assert_clean_error(run_main(capsys, images[0], '--weights', path, '--labels', labels),
                       'seven.txt names 6 classes but', 'has 7 outputs')
    missing = run_main(capsys, images[0], '--weights', path)
    assert_clean_error(missing, '7 classes in fc8 and no class names', '--labels FILE')
    assert 'fineturn.py' not in missing.stderr


# --- end to end: Caffe model -> caffe_to_npy -> this script, against OpenCV's Caffe runtime --------

def opencv_caffe_probs(prototxt, caffemodel, paths):
    """OpenCV's own Caffe forward of the same preprocessed images -> (N, classes)."""
    from caffe_to_npy import compare
    images = np.stack([alexnet.load_image(path, (104.0, 117.0, 123.0)) for path in paths])
    return compare.caffe_forward(prototxt, caffemodel, images, outputs=('prob',))['prob']


@pytest.mark.parametrize('fmt', ['v1', 'new'])
def test_converted_caffe_model_gives_caffes_probabilities(fmt, images, tmp_path):
    from caffe_to_npy import synthetic
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), fmt=fmt, seed=11)
    weights_path, out = tmp_path / 'alexnet.npz', tmp_path / 'probs.npz'
    convert = subprocess.run([sys.executable, '-m', 'caffe_to_npy', prototxt, caffemodel,
                              str(weights_path)], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert convert.returncode == 0, convert.stderr
    photos = [images[0], images[1], images[2]]   # grace_hopper.jpg and two generated pictures
    proc = run_cli(*photos, '--weights', weights_path, '--save-probs', out, '--batch-size', 2)
    assert proc.returncode == 0, proc.stderr
    with np.load(out, allow_pickle=False) as data:
        ours, paths = data['probs'], data['paths'].tolist()
    assert paths == photos
    caffe = opencv_caffe_probs(prototxt, caffemodel, photos)
    assert caffe.max() > 0.01   # a real distribution, not a uniform one that anything matches
    relative = np.abs(ours - caffe).max() / np.abs(caffe).max()
    print('%s: max relative difference of probs %.2e, top-1 %s' % (
        fmt, relative, (ours.argmax(1) == caffe.argmax(1)).tolist()))
    assert relative < 1e-4
    assert ours.argmax(1).tolist() == caffe.argmax(1).tolist()
