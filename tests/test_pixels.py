"""One reader, one preprocessing: the tensor that reaches the network from an image file is the same
whether the file went through convert_tfrecord.py and the records' pipeline (training,
--evaluate) or through --predict (validate and --verify read like --predict), for every kind of
file the converter takes; and a file one path refuses, the other refuses too."""
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import alexnet
import classify
import dataset_folder
import fineturn
import images
import record_writer
import records
import weights_file
from caffe_to_npy import synthetic
from test_convert_tfrecord import expected_bgr8

CLASS = 'kinds'
TRUNCATED = ('cut_short.jpg', 'cut_short.tif')
EXIF_ROTATE_90_CLOCKWISE = 6            # the EXIF Orientation tag's value


def picture(height, width, seed, channels=3):
    """Smooth gradients and blobs with noise: something a codec treats like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = [np.sin(x / (9 + 4 * c) + c) * np.cos(y / (13 + 3 * c)) for c in range(channels)]
    image = 127 + 100 * np.stack(base, axis=-1) + rng.normal(0, 12, (height, width, channels))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_kinds(folder):
    """{name: what it is} of the files written to `folder`."""
    os.makedirs(folder)
    made = {}

    def save(name, image, what):
        assert cv2.imwrite(os.path.join(folder, name), image), name
        made[name] = what
    deep = picture(250, 260, 1).astype(np.uint16) * 257 + np.uint16(100)
    save('deep.tif', deep, '16-bit TIFF')
    save('deep.png', deep[::-1], '16-bit PNG')     # (OpenCV's own 8-bit reading truncates it)
    save('grey.png', picture(270, 230, 2, channels=1)[..., 0], 'grey PNG')
    save('alpha.png', picture(240, 250, 3, channels=4), 'RGBA PNG')
    save('odd.png', picture(241, 300, 4), '300x241 image')
    rgb = picture(220, 280, 5)[..., ::-1]
    Image.fromarray(rgb).quantize(64).save(os.path.join(folder, 'palette.gif'))
    made['palette.gif'] = 'palette GIF'
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_90_CLOCKWISE
    Image.fromarray(picture(200, 300, 6)[..., ::-1]).save(os.path.join(folder, 'rotated.jpg'),
                                                          exif=exif.tobytes(), quality=90)
    made['rotated.jpg'] = 'JPEG with an EXIF rotation'
    data = io.BytesIO()
    Image.fromarray(picture(256, 256, 7)).save(data, 'JPEG', quality=90)
    with open(os.path.join(folder, TRUNCATED[0]), 'wb') as f:
        f.write(data.getvalue()[:len(data.getvalue()) * 2 // 3])     # an interrupted download
    ok, tiff = cv2.imencode('.tif', picture(256, 256, 8))
    with open(os.path.join(folder, TRUNCATED[1]), 'wb') as f:
        f.write(tiff.tobytes()[:len(tiff) // 2])
    return made


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """(the image folder, {name: kind}, the records folder, the Conversion)."""
    base = tmp_path_factory.mktemp('pixels')
    image_dir = str(base / 'images')
    kinds = write_kinds(os.path.join(image_dir, CLASS))
    records_dir = str(base / 'records')
    conversion = record_writer.convert(image_dir, records_dir, (0.8, 0.1, 0.1), 1, 1,
                                       progress=False)
    return image_dir, kinds, records_dir, conversion


def records_inputs(records_dir, mean, crops):
    """{relative path: the network's input} as the records' pipeline makes it (make_dataset,
    what --evaluate and training's validation and test feed the network), over every split."""
    return {path.numpy().decode(): image.numpy() for split in records.SPLITS
            for image, _, path in records.make_dataset(records_dir, split, mean, crops)}


def predict_inputs(paths, mean, crops):
    """{path: the network's input, or the reason it is unreadable} as --predict feeds it
    (classify's batches, alexnet.load_image)."""
    return {path: image if error is None else error
            for batch in classify._load_batches(paths, 2, mean, crops)
            for path, image, error in batch}


@pytest.mark.parametrize('mean', ['ImageNet', 'mean image'])
@pytest.mark.parametrize('ten_crop', [False, True])
def test_the_network_gets_the_same_tensor_from_records_and_from_predict(converted, mean,
                                                                        ten_crop):
    image_dir, kinds, records_dir, _ = converted
    mean = weights_file.IMAGENET_MEAN_BGR if mean == 'ImageNet' else synthetic.mean_image(3)
    crops = alexnet.crop_windows(ten_crop)
    from_records = records_inputs(records_dir, mean, crops)
    assert sorted(from_records) == sorted('%s/%s' % (CLASS, name) for name in kinds)
    paths = [os.path.join(image_dir, CLASS, name) for name in sorted(kinds)]
    from_files = predict_inputs(paths, mean, crops)
    for name, kind in sorted(kinds.items()):
        ours = from_files[os.path.join(image_dir, CLASS, name)]
        expected = from_records['%s/%s' % (CLASS, name)]
        assert ours.shape == expected.shape == (10, 227, 227, 3)[0 if ten_crop else 1:], kind
        np.testing.assert_array_equal(ours, expected, err_msg=kind)


def test_the_pixels_follow_the_documented_rules(converted):
    """EXIF orientation applied (the upright photo), 16-bit rounded, grey copied, alpha and
    palette resolved to colours: in the records exactly as read_bgr8 gives them."""
    image_dir, kinds, records_dir, _ = converted
    stored = {path: image for split in records.SPLITS
              for image, _, path, _ in records.read_records(records_dir, split)}
    for name in kinds:
        path = os.path.join(image_dir, CLASS, name)
        np.testing.assert_array_equal(stored['%s/%s' % (CLASS, name)], images.read_bgr8(path))
        if name != 'rotated.jpg':      # and as a reader written apart from it (no EXIF) says
            np.testing.assert_array_equal(stored['%s/%s' % (CLASS, name)], expected_bgr8(path),
                                          err_msg=name)
    as_stored = cv2.imread(os.path.join(image_dir, CLASS, 'rotated.jpg'),
                           cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert as_stored.shape == (200, 300, 3)
    upright = stored['%s/rotated.jpg' % CLASS]
    np.testing.assert_array_equal(upright, cv2.rotate(as_stored, cv2.ROTATE_90_CLOCKWISE))
    for name in ('deep.tif', 'deep.png'):
        deep = cv2.imread(os.path.join(image_dir, CLASS, name), cv2.IMREAD_UNCHANGED)
        assert deep.dtype == np.uint16
        np.testing.assert_array_equal(stored['%s/%s' % (CLASS, name)],
                                      ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8))
    grey = stored['%s/grey.png' % CLASS]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    palette = Image.open(os.path.join(image_dir, CLASS, 'palette.gif')).convert('RGB')
    np.testing.assert_array_equal(stored['%s/palette.gif' % CLASS], np.asarray(palette)[..., ::-1])


def test_a_truncated_file_is_refused_by_the_converter_and_by_predict(converted, tempered,
                                                                     capfd):
    """A JPEG or a TIFF cut short: the converter skips it, --predict too, for the same reason,
    in one line each (none of the decoders' own complaints)."""
    image_dir, kinds, _, conversion = converted
    reason = 'not decodable (corrupt, truncated or unsupported format)'
    assert conversion.skipped == [('%s/%s' % (CLASS, name), reason) for name in TRUNCATED]
    truncated = [os.path.join(image_dir, CLASS, name) for name in TRUNCATED]
    good = os.path.join(image_dir, CLASS, 'odd.png')
    code = fineturn.main(['--predict'] + truncated + [good, '--run-dir', tempered])
    out, err = capfd.readouterr()
    assert code == 1 and ' * 1 image(s) classified, 2 unreadable skipped' in out
    assert err.splitlines() == ['warning: skipped unreadable image: %s: %s' % (path, reason)
                                for path in truncated]


def test_a_folder_gives_predict_the_files_the_converter_takes(tmp_path):
    """One list of image extensions: what --predict takes from a folder is what the converter
    takes from a class folder."""
    folder = tmp_path / 'images' / 'one'
    folder.mkdir(parents=True)
    # ._a.tif: the AppleDouble file a Mac's zip puts next to a.tif, an image's name but no image
    for name in ('a.tif', 'b.TIFF', 'c.jpg', 'd.JPEG', 'e.png', 'f.bmp', 'g.gif', 'h.webp',
                 'i.jpe', 'j.ppm', 'notes.txt', 'Thumbs.db', 'k.psd', 'l.GIF', '._a.tif',
                 '.DS_Store'):
        (folder / name).write_bytes(b'x')
    taken, ignored = classify.expand_inputs([str(folder)])
    _, found, skipped = dataset_folder.scan(str(tmp_path / 'images'))
    assert sorted(os.path.basename(path) for path in taken) == \
        sorted(path.split('/')[1] for path in found['one'])
    assert '._a.tif' not in str(taken)
    assert sorted(os.path.basename(path) for path in ignored) == \
        sorted(path.split('/')[1] for path, _ in skipped) == \
        ['.DS_Store', '._a.tif', 'Thumbs.db', 'k.psd', 'notes.txt']
    assert dict(skipped)['one/._a.tif'] == 'hidden'
    assert 'g.gif' in str(taken) and 'l.GIF' in str(taken)
