"""convert_tfrecord.py (record_writer, records) on small generated folders: quirks, split,
determinism, schema, parsing."""
import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import alexnet
import dataset_folder
import record_writer as ct
import records
import setting
import synthetic_dataset as sd
import weights_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = weights_file.IMAGENET_MEAN_BGR


def convert(image_dir, output_dir, ratios=setting.SPLIT_RATIOS, seed=setting.SPLIT_SEED,
            workers=setting.CONVERT_WORKERS, **options):
    """record_writer.convert with setting.py's split where a test doesn't choose its own."""
    return ct.convert(image_dir, output_dir, ratios, seed, workers, **options)


tf1 = tf.compat.v1


def read_split_csv(records_dir):
    with open(os.path.join(records_dir, records.SPLIT_FILE), newline='', encoding='utf-8') as f:
        reader = csv.reader(f)
        assert next(reader) == ['path', 'label', 'split']
        return [(path, int(label), split) for path, label, split in reader]


def expected_bgr8(path):
    """The 8-bit BGR pixels a source file should become, computed independently of to_bgr8."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint16:
        image = np.floor(image.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def numpy_flip(image, variant):
    if variant & 1:
        image = image[:, ::-1]
    if variant & 2:
        image = image[::-1]
    return image


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'convert_tfrecord.py'), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope='module')
def quirky(tmp_path_factory):
    """3 classes x 12 files with every quirk, converted twice (2 workers, then 1)."""
    base = tmp_path_factory.mktemp('quirky')
    folder = sd.make_dataset_folder(str(base / 'images'), num_classes=3, per_class=12, size=64,
                                    seed=1, workers=1)
    first = convert(folder.root, str(base / 'out1'), seed=7, workers=2, progress=False)
    second = convert(folder.root, str(base / 'out2'), seed=7, workers=1, progress=False)
    return folder, first, second, str(base / 'out1'), str(base / 'out2')


# --- splitting -----------------------------------------------------------------------------------

@pytest.mark.parametrize('n, expected', [(100, [80, 10, 10]), (99, [79, 10, 10]), (3, [1, 1, 1]),
                                         (4, [2, 1, 1]), (10, [8, 1, 1]), (15, [12, 2, 1]),
                                         (11, [9, 1, 1])])
def test_split_counts_hand_computed(n, expected):
    assert dataset_folder.split_counts(n, (0.8, 0.1, 0.1)) == expected


@pytest.mark.parametrize('ratios', [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.34, 0.33, 0.33),
                                    (0.98, 0.01, 0.01), (0.29, 0.42, 0.29)])
def test_split_counts_sum_cover_and_stay_close(ratios):
    for n in range(3, 400):
        counts = dataset_folder.split_counts(n, ratios)
        assert sum(counts) == n and min(counts) >= 1
        if min(n * r for r in ratios) >= 1:     # no split needed topping up to one image
            assert all(abs(c - n * r) < 1 for c, r in zip(counts, ratios)), (n, counts)


def test_every_readable_image_once_corrupt_reported(quirky):
    folder, conversion, _, out, _ = quirky
    rows = read_split_csv(out)
    paths = [path for path, _, _ in rows]
    assert sorted(paths) == sorted(folder.images)                # each readable image exactly once
    assert {path: label for path, label, _ in rows} == {
        path: info['label'] for path, info in folder.images.items()}
    assert [path for path, _ in conversion.skipped] == folder.corrupt == \
        [p for p in folder.corrupt if p not in paths]
    assert sorted(path for path, _ in conversion.ignored) == sorted(folder.ignored)
    # every quirk but the corrupt file made it in
    quirks = {info['quirk'] for info in folder.images.values()}
    assert quirks >= {'odd_size', 'grayscale', 'uint16', 'rgba', 'uppercase_ext'}


def test_splits_disjoint_stratified_and_sized(quirky):
    folder, _, _, out, _ = quirky
    rows = read_split_csv(out)
    by_split = {split: {path for path, _, s in rows if s == split} for split in records.SPLITS}
    assert not (by_split['train'] & by_split['validation'])
    assert not (by_split['train'] & by_split['test'])
    assert not (by_split['validation'] & by_split['test'])
    for label in range(len(folder.classes)):
        counts = [sum(1 for _, l, s in rows if l == label and s == split) for split in records.SPLITS]
        assert counts == dataset_folder.split_counts(folder.count(label), setting.SPLIT_RATIOS)
        assert min(counts) >= 1


def test_exact_80_10_10_for_100_images(tmp_path):
    folder = sd.make_dataset_folder(str(tmp_path / 'img'), num_classes=2, per_class=100, size=32,
                                    quirks=False, workers=1)
    out = str(tmp_path / 'out')
    convert(folder.root, out, ratios=(0.8, 0.1, 0.1), workers=2, progress=False)
    rows = read_split_csv(out)
    for label in (0, 1):
        assert [sum(1 for _, l, s in rows if l == label and s == split) for split in records.SPLITS] \
            == [80, 10, 10]
    assert [records.count_records(out, split) for split in records.SPLITS] == [160, 20, 20]
    assert [sum(1 for _ in tf.data.TFRecordDataset(records.record_files(out, split)))
            for split in records.SPLITS] == [160, 20, 20]


def test_too_small_class_is_an_error_naming_it(tmp_path):
    folder = sd.make_dataset_folder(str(tmp_path / 'img'), num_classes=3, per_class=5, size=32,
                                    quirks=False, too_small_class=True, workers=1)
    with pytest.raises(dataset_folder.ConvertError, match=folder.classes[-1]):
        convert(folder.root, str(tmp_path / 'out'), workers=1, progress=False)
    assert not os.path.exists(tmp_path / 'out')


# --- determinism and the files -------------------------------------------------------------------

def test_rerun_is_byte_identical(quirky):
    _, first, second, out1, out2 = quirky
    names = sorted(os.listdir(out1))
    assert names == sorted(os.listdir(out2))
    assert [os.path.basename(f) for f in first.files] == names
    assert 'split.csv' in names and 'labels.txt' in names
    for name in names:
        with open(os.path.join(out1, name), 'rb') as a, open(os.path.join(out2, name), 'rb') as b:
            assert a.read() == b.read(), name


def test_another_seed_gives_another_split(quirky, tmp_path):
    folder, _, _, out1, _ = quirky
    convert(folder.root, str(tmp_path / 'out'), seed=8, workers=1, progress=False)
    assert read_split_csv(str(tmp_path / 'out')) != read_split_csv(out1)


def test_labels_sorted_folder_names(quirky):
    folder, _, _, out, _ = quirky
    assert records.read_labels(out) == sorted(folder.classes) == folder.classes


def test_records_match_split_csv_in_order_and_count(quirky):
    folder, _, _, out, _ = quirky
    rows = read_split_csv(out)
    for split in records.SPLITS:
        expected = [(path, label) for path, label, s in rows if s == split]
        got = [(path, label) for _, label, path, _ in records.read_records(out, split)]
        assert got == expected
        assert records.count_records(out, split) == len(expected)
        assert all(os.path.basename(f).startswith(split + '-') for f in records.record_files(out, split))


def test_count_records_without_split_csv(quirky, tmp_path):
    _, _, _, out, _ = quirky
    for split in records.SPLITS:
        for f in records.record_files(out, split):
            os.link(f, tmp_path / os.path.basename(f))
    for split in records.SPLITS:
        assert records.count_records(str(tmp_path), split) == records.count_records(out, split) > 0


def test_round_trip_is_lossless(quirky):
    folder, _, _, out, _ = quirky
    seen = set()
    for split in records.SPLITS:
        for image, label, path, features in records.read_records(out, split):
            source = os.path.join(folder.root, *path.split('/'))
            expected = expected_bgr8(source)
            assert image.dtype == np.uint8 and image.shape == expected.shape, path
            np.testing.assert_array_equal(image, expected, err_msg=path)
            assert (int(features['image/height']), int(features['image/width'])) == image.shape[:2]
            assert features['image/format'].numpy() == b'png'
            assert label == folder.images[path]['label']
            seen.add(folder.images[path]['quirk'])
            if folder.images[path]['quirk'] == 'uint16':
                raw = cv2.imread(source, cv2.IMREAD_UNCHANGED)
                # the fixture really tells rounding from OpenCV's truncation (>> 8)
                assert (raw >> 8 != image).any()
            if folder.images[path]['quirk'] == 'grayscale':
                assert (image == image[..., :1]).all()
    assert {'grayscale', 'uint16', 'rgba', 'odd_size', 'uppercase_ext', None} <= seen


def asymmetric_bgr(height=256, width=256):
    """Left half blue, right half red, top rows green (BGR): every flip and channel swap shows."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :width // 2] = (255, 0, 0)
    image[:, width // 2:] = (0, 0, 255)
    image[:40] = (0, 200, 0)
    image[40:, :10] = (10, 20, 30)
    return image


@pytest.fixture(scope='module')
def formats(tmp_path_factory):
    """Every extension in mixed case, all holding the same asymmetric BGR picture."""
    base = tmp_path_factory.mktemp('formats')
    image = asymmetric_bgr()
    for name, exts in (('alpha', ('.png', '.BMP', '.tiff')), ('beta', ('.TIF', '.Png', '.jpeg')),
                       ('gamma', ('.jpg', '.JPEG', '.bmp'))):
        os.makedirs(base / 'images' / name)
        for i, ext in enumerate(exts):
            assert cv2.imwrite(str(base / 'images' / name / ('%s%d%s' % (name, i, ext))), image)
    out = str(base / 'out')
    conversion = convert(str(base / 'images'), out, workers=2, progress=False)
    return str(base / 'images'), out, conversion, image


def test_every_extension_any_case(formats):
    _, out, conversion, _ = formats
    assert len(conversion.rows) == 9 and not conversion.skipped and not conversion.ignored
    assert records.read_labels(out) == ['alpha', 'beta', 'gamma']


def test_bgr_order_in_records_and_dataset(formats):
    _, out, _, image = formats
    offset, mean = alexnet.CROP_OFFSET, np.float32(MEAN)
    checked = 0
    for split in records.SPLITS:
        for decoded, _, path, _ in records.read_records(out, split):
            if not path.lower().endswith(('.jpg', '.jpeg')):     # lossy sources aren't exact
                np.testing.assert_array_equal(decoded, image)
                checked += 1
        for preprocessed, _, path in records.make_dataset(out, split, MEAN):
            if path.numpy().decode().lower().endswith(('.jpg', '.jpeg')):
                continue
            pixels = preprocessed.numpy() + mean                 # 256x256: crop at offset 14
            for y, x in ((100, 0), (10, 100), (100, 200)):
                np.testing.assert_allclose(pixels[y, x], image[y + offset, x + offset], atol=1e-4)
    assert checked == 6
    assert tuple(image[100 + offset, offset]) == (255, 0, 0)     # the points differ in colour
    assert tuple(image[10 + offset, 100 + offset]) == (0, 200, 0)
    assert tuple(image[100 + offset, 200 + offset]) == (0, 0, 255)


def test_dataset_equals_alexnet_preprocess_including_non_256(quirky):
    """The records' pipeline gives exactly what alexnet.preprocess (--predict's) gives on the
    source's 8-bit pixels, whatever the image's size: one preprocessing."""
    folder, _, _, out, _ = quirky
    sizes = set()
    for split in records.SPLITS:
        for image, label, path in records.make_dataset(out, split, MEAN):
            path = path.numpy().decode()
            source = expected_bgr8(os.path.join(folder.root, *path.split('/')))
            assert image.shape == (alexnet.IMAGE_SIZE, alexnet.IMAGE_SIZE, 3)
            assert image.dtype == tf.float32 and label.dtype == tf.int64
            np.testing.assert_array_equal(image.numpy(), alexnet.preprocess(source, MEAN),
                                          err_msg=path)
            sizes.add(source.shape[:2])
    assert (242, 250) in sizes and (64, 64) in sizes and (257, 256) in sizes


def test_dataset_in_a_tf1_graph_equals_eager(quirky):
    _, _, _, out, _ = quirky
    eager = [(i.numpy(), int(l), p.numpy())
             for i, l, p in records.make_dataset(out, 'validation', MEAN)]
    graph = tf.Graph()
    with graph.as_default():
        one_shot = tf1.data.make_one_shot_iterator(
            records.make_dataset(out, 'validation', MEAN)).get_next()
        iterator = tf1.data.make_initializable_iterator(
            records.make_dataset(out, 'validation', MEAN).batch(2))
        batch = iterator.get_next()
        with tf1.Session() as session:
            for image, label, path in eager:
                got = session.run(one_shot)
                np.testing.assert_array_equal(got[0], image)
                assert (int(got[1]), got[2]) == (label, path)
            for _ in range(2):                                   # two epochs, no partial loss
                session.run(iterator.initializer)
                images = []
                while True:
                    try:
                        images.extend(session.run(batch)[0])
                    except tf.errors.OutOfRangeError:
                        break
                assert len(images) == len(eager)


# --- flips ---------------------------------------------------------------------------------------

def test_flip_variant_bits():
    image = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)
    for variant in range(records.FLIP_VARIANTS):
        np.testing.assert_array_equal(records.flip_variant(tf.constant(image[0]), variant).numpy(),
                                      numpy_flip(image[0], variant))
        np.testing.assert_array_equal(     # batches flip every image the same way
            records.flip_variant(tf.constant(image), tf.constant(variant)).numpy(),
            np.stack([numpy_flip(i, variant) for i in image]))
    assert not np.array_equal(numpy_flip(image[0], 1), numpy_flip(image[0], 2))


def flip_variants_of(flipped, paths, plain):
    """The flip variant of each image in `flipped`, found against the plain image of its path."""
    found = []
    for image, path in zip(flipped, paths):
        base = plain[path]
        matches = [v for v in range(records.FLIP_VARIANTS)
                   if np.array_equal(image, numpy_flip(base, v))]
        assert matches, 'a flipped image that is no flip variant'
        found.append(matches[0])
    return found


def train_positions(out):
    return records.split_positions(out, 'train')


def plain_images(out):
    return {p.numpy(): i.numpy() for i, _, p in records.make_dataset(out, 'train', MEAN)}


def test_training_flips_are_reproducible_per_epoch_in_graph_and_eager(quirky):
    """The one flip path: training_dataset's order and flips are a function of the epoch's seed,
    the same in a tf.compat.v1 graph and eagerly."""
    _, _, _, out, _ = quirky
    plain = plain_images(out)
    count = len(plain)
    graph = tf.Graph()
    with graph.as_default():
        seed = tf1.placeholder(tf.int64, [])
        iterator = tf1.data.make_initializable_iterator(
            records.training_dataset(out, train_positions(out), seed, True, MEAN))
        element = iterator.get_next()
        per_epoch = []
        with tf1.Session() as session:
            for e in (10, 11, 10):
                session.run(iterator.initializer, {seed: e})
                drawn = [session.run(element) for _ in range(count)]
                paths = [p for _, _, p in drawn]
                per_epoch.append((paths, flip_variants_of([i for i, _, _ in drawn], paths, plain)))
    assert per_epoch[0] == per_epoch[2] != per_epoch[1]
    assert sorted(per_epoch[0][0]) == sorted(plain)           # every image once
    eager = list(records.training_dataset(out, train_positions(out), tf.constant(11, tf.int64),
                                          True, MEAN))
    paths = [p.numpy() for _, _, p in eager]
    assert (paths, flip_variants_of([i.numpy() for i, _, _ in eager], paths, plain)) \
        == per_epoch[1]
    assert set(per_epoch[0][1] + per_epoch[1][1]) == set(range(records.FLIP_VARIANTS))
    unflipped = list(records.training_dataset(out, train_positions(out), tf.constant(11, tf.int64),
                                              False, MEAN))
    assert [p.numpy() for _, _, p in unflipped] == paths       # the order ignores the flips
    assert all(np.array_equal(i.numpy(), plain[p.numpy()]) for i, _, p in unflipped)


def test_cache_order_draws_what_the_full_graph_draws(quirky):
    """training_order (the cached head's) gives training_dataset's images and flip variants."""
    _, _, _, out, _ = quirky
    plain = plain_images(out)
    split_paths = list(plain)                      # split.csv's order: record index -> path
    seed = tf.constant(7, tf.int64)
    full = list(records.training_dataset(out, train_positions(out), seed, True, MEAN))
    paths = [p.numpy() for _, _, p in full]
    variants = flip_variants_of([i.numpy() for i, _, _ in full], paths, plain)
    (positions, drawn), indices = next(iter(records.training_order(len(plain), seed, flip=True)))
    by_position = sorted(zip(positions.numpy(), indices.numpy(), drawn.numpy()))
    assert [split_paths[index] for _, index, _ in by_position] == paths
    assert [int(variant) for _, _, variant in by_position] == variants


# --- reading errors ------------------------------------------------------------------------------

def test_reading_a_missing_conversion_names_the_command(tmp_path):
    with pytest.raises(records.RecordsError, match='python convert_tfrecord.py'):
        records.read_labels(str(tmp_path))
    with pytest.raises(records.RecordsError, match=r'no validation\*\.tfrecord in .*: run python '
                                              r'convert_tfrecord.py --image-dir .* --output-dir'):
        records.record_files(str(tmp_path), 'validation')
    with pytest.raises(ValueError, match='unknown split'):
        records.record_files(str(tmp_path), 'training')


# --- atomic writing, overwrite, strict -----------------------------------------------------------

def snapshot(directory):
    result = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), 'rb') as f:
            result[name] = f.read()
    return result


def test_refuses_to_overwrite_then_replaces_and_drops_stale_shards(quirky, tmp_path):
    folder, _, _, out1, _ = quirky
    out = str(tmp_path / 'out')
    convert(folder.root, out, seed=7, workers=1, progress=False)
    before = snapshot(out)
    with pytest.raises(dataset_folder.ConvertError, match='--overwrite'):
        convert(folder.root, out, seed=7, workers=1, progress=False)
    assert snapshot(out) == before
    stale = os.path.join(out, 'train-00003-of-00004.tfrecord')
    with open(stale, 'wb') as f:
        f.write(b'old')
    convert(folder.root, out, seed=7, workers=1, overwrite=True, progress=False)
    assert snapshot(out) == before == snapshot(out1)


def test_interrupted_run_leaves_nothing_that_looks_complete(quirky, tmp_path, monkeypatch):
    folder, _, _, out1, _ = quirky
    written = []

    def failing(*args, **kwargs):
        if len(written) == 5:
            raise KeyboardInterrupt
        written.append(args)
        return original(*args, **kwargs)

    original = ct.serialize_example
    monkeypatch.setattr(ct, 'serialize_example', failing)
    fresh = str(tmp_path / 'fresh')
    with pytest.raises(KeyboardInterrupt):
        convert(folder.root, fresh, workers=2, progress=False)
    assert not os.path.exists(fresh)                    # created by the run, removed when empty
    # an earlier complete set survives a failed --overwrite untouched, with no temporary files
    existing = str(tmp_path / 'existing')
    os.makedirs(existing)
    for name, data in snapshot(out1).items():
        with open(os.path.join(existing, name), 'wb') as f:
            f.write(data)
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        convert(folder.root, existing, seed=9, workers=1, overwrite=True, progress=False)
    assert snapshot(existing) == snapshot(out1)


def test_strict_fails_on_the_corrupt_file(quirky, tmp_path):
    folder, _, _, _, _ = quirky
    with pytest.raises(dataset_folder.ConvertError, match=folder.corrupt[0]):
        convert(folder.root, str(tmp_path / 'out'), workers=1, strict=True, progress=False)
    assert not os.path.exists(tmp_path / 'out')


# --- the command line ----------------------------------------------------------------------------

def test_cli_converts_and_reports(quirky, tmp_path):
    folder, _, _, out1, _ = quirky
    out = str(tmp_path / 'out')
    result = run_cli('--image-dir', folder.root, '--output-dir', out, '--seed', '7', '--quiet')
    assert result.returncode == 0, result.stderr
    assert snapshot(out) == snapshot(out1)
    lines = result.stdout.splitlines()
    assert folder.corrupt[0] in result.stdout and 'skipped 1 ' in result.stdout
    rows = read_split_csv(out)
    total = [line.split() for line in lines if line.startswith('total ')][0]
    assert total[1:] == ([str(sum(1 for r in rows if r[2] == s)) for s in records.SPLITS]
                         + [str(len(rows))])
    for label, name in enumerate(folder.classes):
        row = [line.split() for line in lines if line.split()[:1] == [name]][0]
        assert row[1:] == [str(sum(1 for r in rows if r[1] == label and r[2] == s))
                           for s in records.SPLITS] + [str(folder.count(label))]


def _bad_inputs(tmp):
    """name -> (extra arguments, output dir)."""
    empty = tmp / 'empty'
    empty.mkdir()
    no_images = tmp / 'no_images'
    (no_images / 'forest').mkdir(parents=True)
    (no_images / 'forest' / 'Thumbs.db').write_bytes(b'x')
    good = tmp / 'good'
    sd.make_dataset_folder(str(good), num_classes=2, per_class=4, size=32, quirks=False, workers=1)
    small = tmp / 'small'
    sd.make_dataset_folder(str(small), num_classes=2, per_class=4, size=32, quirks=False,
                           too_small_class=True, workers=1)
    a_file = tmp / 'a_file'
    a_file.write_text('not a folder')
    out = str(tmp / 'out')
    return {
        'missing dir': (['--image-dir', str(tmp / 'nope'), '--output-dir', out], out, 'nope'),
        'empty dir': (['--image-dir', str(empty), '--output-dir', out], out, 'no class folders'),
        'class without images': (['--image-dir', str(no_images), '--output-dir', out], out,
                                 'forest'),
        'output is a file': (['--image-dir', str(good), '--output-dir', str(a_file)], None,
                             'a_file'),
        'ratios sum': (['--image-dir', str(good), '--output-dir', out, '--ratios', '0.8', '0.3',
                        '0.1'], out, 'summing to 1'),
        'ratio not positive': (['--image-dir', str(good), '--output-dir', out, '--ratios', '1.0',
                                '0', '0'], out, 'positive'),
        'two ratios': (['--image-dir', str(good), '--output-dir', out, '--ratios', '0.9', '0.1'],
                       out, 'expected 3 arguments'),
        'too small class': (['--image-dir', str(small), '--output-dir', out], out,
                            sd.class_names(2)[-1]),
        'strict': ([], None, None),
    }


def test_cli_bad_input_one_line_no_traceback_nothing_written(quirky, tmp_path):
    folder = quirky[0]
    cases = _bad_inputs(tmp_path)
    out = str(tmp_path / 'out')
    cases['strict'] = (['--image-dir', folder.root, '--output-dir', out, '--strict'], out,
                       folder.corrupt[0])
    for name, (args, output, needle) in cases.items():
        result = run_cli(*args)
        assert result.returncode != 0, name
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and 'error' in errors[0], (name, result.stderr)
        assert needle in errors[0], (name, errors[0])
        assert 'Traceback' not in result.stderr + result.stdout, name
        if output is not None:
            assert not os.path.exists(output), name
    assert (tmp_path / 'a_file').read_text() == 'not a folder'


def test_cli_help_names_every_flag():
    result = run_cli('--help')
    assert result.returncode == 0
    for flag in ('--image-dir', '--output-dir', '--ratios', '--seed', '--workers', '--overwrite',
                 '--strict'):
        assert flag in result.stdout
    assert '--data-dir: an alias' in ' '.join(result.stdout.split())


def test_data_dir_is_an_alias_of_image_dir():
    import convert_tfrecord
    assert convert_tfrecord.parse_args(['--data-dir', 'pictures']).image_dir == 'pictures'
    assert convert_tfrecord.parse_args(['--image-dir', 'pictures']).image_dir == 'pictures'


# --- the generated dataset -----------------------------------------------------------------------

def test_synthetic_folder_is_deterministic_and_quirky(tmp_path):
    a = sd.make_dataset_folder(str(tmp_path / 'a'), num_classes=4, per_class=6, size=48, seed=3,
                               workers=2)
    b = sd.make_dataset_folder(str(tmp_path / 'b'), num_classes=4, per_class=6, size=48, seed=3,
                               workers=1)
    assert a.images == b.images and a.corrupt == b.corrupt and a.ignored == b.ignored
    for rel in list(a.images) + a.corrupt + a.ignored:
        with open(os.path.join(a.root, rel), 'rb') as fa:
            with open(os.path.join(b.root, rel), 'rb') as fb:
                assert fa.read() == fb.read(), rel
    assert a.classes == list(sd.CLASS_NAMES[:4])
    shapes = {info['quirk']: cv2.imread(os.path.join(a.root, rel), cv2.IMREAD_UNCHANGED)
              for rel, info in a.images.items()}
    assert shapes['grayscale'].ndim == 2
    assert shapes['uint16'].dtype == np.uint16
    assert shapes['rgba'].shape[2] == 4
    assert min(shapes['odd_size'].shape[:2]) >= alexnet.IMAGE_SIZE
    assert any(rel.endswith('.TIF') for rel in a.images)
    assert cv2.imread(os.path.join(a.root, a.corrupt[0])) is None
    assert sum(1 for info in a.images.values() if info['quirk'] is None) == 4 * 6 - 8
