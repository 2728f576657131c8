"""fineturn.py --export: a SavedModel that a TensorFlow-only Python loads and that agrees with
--predict; written atomically; refuses to replace anything but an earlier export.

The model is conftest's `tempered` run (unsaturated probabilities, so differences show).
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

import checkpoints
import classify
import export
import fineturn
import predict
import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# On other sizes than 256x256 the export resizes with TF's bilinear, --predict with OpenCV's:
# the network's inputs differ by < 1 pixel level, the probabilities of the tempered model by
# about 2e-3 at most (benchmarks/export_agreement.py; docs/BENCHMARKS.md).
RESIZE_TOLERANCE = 5e-3

# A client with nothing but TensorFlow: loads the export, runs both signatures on the files named
# in a JSON list, writes what they return to an .npz.
CLIENT = r'''
import importlib.util, json, sys
import numpy as np
import tensorflow as tf
assert importlib.util.find_spec('alexnet') is None, 'the project is importable: not a clean client'
export_dir, request, out = sys.argv[1:]
files = json.load(open(request))
model = tf.saved_model.load(export_dir)
serve, encoded = model.signatures['serving_default'], model.signatures['encoded']
data = [tf.io.read_file(path) for path in files]
by_file = encoded(image_bytes=tf.stack(data))
def decode(data):   # JPEG with the accurate DCT, as OpenCV (TF's default is a few levels off)
    if tf.io.is_jpeg(data):
        return tf.io.decode_jpeg(data, channels=3, dct_method='INTEGER_ACCURATE')
    return tf.io.decode_image(data, channels=3, expand_animations=False)
decoded = [decode(d) for d in data]
one_by_one = [serve(images=image[None]) for image in decoded]
square = [i for i, image in enumerate(decoded) if image.shape[:2] == (256, 256)]
batch = serve(images=tf.stack([decoded[i] for i in square]))
results = {'square': np.array(square), 'trainable': len(serve.trainable_variables),
           'variables': len(serve.variables)}
def plain(value):   # strings come as an object array of bytes: store them as bytes
    value = value.numpy()
    return value.astype(bytes) if value.dtype == object else value
for name, outputs in (('encoded', by_file), ('batch', batch)):
    for key, value in outputs.items():
        results[name + '/' + key] = plain(value)
for key in ('probabilities', 'class_ids', 'class_names'):
    results['serving/' + key] = np.concatenate([plain(o[key]) for o in one_by_one])
np.savez(out, **results)
'''


@pytest.fixture(scope='module')
def files(tiny_test_images, tmp_path_factory):
    """{kind: [paths]}: the test images as 256x256 PNG and BMP files, resized PNGs, a JPEG of each
    size and an (adaptive palette) GIF."""
    folder = tmp_path_factory.mktemp('client_images')
    found = {'square': [], 'resized': [], 'jpeg': [], 'gif': []}
    for i, path in enumerate(tiny_test_images):
        image = cv2.imread(path)
        found['square'].append(str(folder / ('%02d.%s' % (i, 'bmp' if i % 3 == 2 else 'png'))))
        cv2.imwrite(found['square'][-1], image)
        if i < 3:
            size = ((300, 241), (229, 250), (160, 120))[i]
            found['resized'].append(str(folder / ('%02d_%dx%d.png' % ((i,) + size))))
            cv2.imwrite(found['resized'][-1], cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            found['jpeg'].append(str(folder / ('%02d.jpg' % i)))
            cv2.imwrite(found['jpeg'][-1], cv2.resize(image, size) if i else image)
    found['gif'].append(str(folder / 'palette.gif'))
    Image.fromarray(cv2.imread(tiny_test_images[0])[..., ::-1]).convert(
        'P', palette=Image.ADAPTIVE).save(found['gif'][0])
    return found


@pytest.fixture(scope='module')
def client(exported, files, tmp_path_factory):
    """What the TensorFlow-only client got from the export, for every file of `files`."""
    work = tmp_path_factory.mktemp('client')
    paths = [path for kind in ('square', 'resized', 'jpeg', 'gif') for path in files[kind]]
    (work / 'request.json').write_text(json.dumps(paths))
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    process = subprocess.run([sys.executable, '-I', '-c', CLIENT, exported[0],
                              str(work / 'request.json'), str(work / 'out.npz')], cwd=str(work),
                             env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    with np.load(work / 'out.npz', allow_pickle=False) as data:
        return paths, dict(data)


@pytest.fixture(scope='module')
def predicted(tempered, client):
    """--predict's probabilities for the client's files (classify.py with the checkpoint)."""
    prefix, model = checkpoints.open_model(tempered)
    with predict.checkpoint_classifier(prefix, model) as classifier:
        return classify.classify(client[0], classifier).probs, model.classes


def test_both_signatures_agree_with_predict(client, predicted, files):
    paths, got = client
    ours, classes = predicted
    kinds = {path: kind for kind, listed in files.items() for path in listed}
    assert 0.3 < ours.max(axis=1).min() and ours.max(axis=1).max() < 0.99   # not saturated
    for signature in ('encoded', 'serving'):
        probabilities = got[signature + '/probabilities']
        assert probabilities.dtype == np.float32 and probabilities.shape == ours.shape
        assert got[signature + '/class_ids'].dtype == np.int64
        assert got[signature + '/class_ids'].tolist() == probabilities.argmax(1).tolist()
        assert [name.decode() for name in got[signature + '/class_names']] == \
            [classes[i] for i in got[signature + '/class_ids']]
        for path, mine, theirs in zip(paths, ours, probabilities):
            square = kinds[path] in ('square', 'gif') or (kinds[path] == 'jpeg' and
                                                          cv2.imread(path).shape[:2] == (256, 256))
            assert mine.argmax() == theirs.argmax(), (signature, path)
            # PNG, BMP, GIF and (decoded with the accurate DCT, as OpenCV's) JPEG pixels are
            # OpenCV's exactly; the resize differs on other sizes than 256x256
            tolerance = 1e-5 if square else RESIZE_TOLERANCE
            assert np.abs(mine - theirs).max() <= tolerance, (signature, path)
    # a batch of several images in one call gives each image's own result
    square = got['square'].tolist()
    np.testing.assert_allclose(got['batch/probabilities'], ours[square], atol=1e-5, rtol=0)
    assert got['trainable'] == 0 and got['variables'] == 16


def test_saved_model_cli_lists_the_signatures(exported):
    # TensorFlow installs the tool next to the Python it belongs to: found there rather than on
    # PATH, it is the one of the Python running the tests, activated or not
    tool = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    process = subprocess.run([tool, 'show', '--dir', exported[0], '--all'],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    text = ' '.join(process.stdout.split())
    for expected in ("signature_def['serving_default']", "signature_def['encoded']",
                     "inputs['images'] tensor_info: dtype: DT_UINT8 shape: (-1, -1, -1, 3)",
                     "inputs['image_bytes'] tensor_info: dtype: DT_STRING shape: (-1)",
                     "outputs['probabilities'] tensor_info: dtype: DT_FLOAT shape: (-1, 5)",
                     "outputs['class_ids'] tensor_info: dtype: DT_INT64 shape: (-1)",
                     "outputs['class_names'] tensor_info: dtype: DT_STRING shape: (-1)"):
        assert expected in text, expected


def test_class_names_and_provenance_travel_with_the_model(exported, tempered):
    out_dir = exported[0]
    model = rundir.read_model(tempered)
    with open(os.path.join(out_dir, 'assets', export.CLASSES_ASSET), encoding='utf-8') as f:
        assert f.read().splitlines() == model.classes
    with open(os.path.join(out_dir, export.INFO_FILE), encoding='utf-8') as f:
        info = json.load(f)
    assert info['source_checkpoint'] == os.path.abspath(checkpoints.find(tempered))
    assert info['classes'] == model.classes and info['input_order'] == 'RGB'
    assert info['preprocessing']['mean_bgr'] == list(model.mean)
    assert info['preprocessing']['crop'] == [227, 227]
    assert info['validation_accuracy'] is None and info['test_accuracy'] is None  # never tested
    assert ' * exported ' in exported[1].stdout and out_dir in exported[1].stdout
    assert sorted(os.listdir(os.path.dirname(out_dir))) == ['1']     # no temporary left


def run(capsys, *args):
    code = fineturn.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_existing_export_is_refused_then_overwritten(trained, tempered, tmp_path, capsys):
    out_dir = tmp_path / 'export'
    code, _, err = run(capsys, '--export', out_dir, '--run-dir', trained)
    assert code == 0, err
    with open(out_dir / export.INFO_FILE) as f:
        info = json.load(f)
    with open(os.path.join(trained, checkpoints.BEST_FILE)) as f:
        best = json.load(f)
    with open(os.path.join(trained, 'test_report.json')) as f:
        tested = json.load(f)
    # the figures of the run's best epoch, from its metrics.csv and test report
    assert info['epoch'] == best['epoch'] and info['validation_accuracy'] == best['val_accuracy']
    assert info['test_accuracy'] == tested['accuracy']
    before = os.path.getmtime(out_dir / 'saved_model.pb')
    code, _, err = run(capsys, '--export', out_dir, '--run-dir', tempered)
    assert code == 1 and '--overwrite' in err and len(err.strip().splitlines()) == 1
    assert os.path.getmtime(out_dir / 'saved_model.pb') == before
    code, _, err = run(capsys, '--export', out_dir, '--run-dir', tempered, '--overwrite')
    assert code == 0, err
    with open(out_dir / export.INFO_FILE) as f:
        assert json.load(f)['source_checkpoint'] == os.path.abspath(
            checkpoints.find(tempered))
    assert os.listdir(tmp_path) == ['export']


def test_overwrite_replaces_only_an_export(tempered, tmp_path, capsys):
    folder = tmp_path / 'notes'
    folder.mkdir()
    (folder / 'thesis.tex').write_text('precious')
    code, _, err = run(capsys, '--export', folder, '--run-dir', tempered, '--overwrite')
    assert code == 1 and 'not an earlier export' in err and 'Traceback' not in err
    assert (folder / 'thesis.tex').read_text() == 'precious'


@pytest.mark.parametrize('earlier', [False, True])
def test_a_failed_export_leaves_nothing_behind(tempered, tmp_path, capsys, monkeypatch, earlier):
    """A write that fails midway (a full disk here): one line, no export dir or temporary, and an
    earlier export is kept."""
    out_dir = tmp_path / 'export'
    if earlier:
        out_dir.mkdir()
        (out_dir / 'saved_model.pb').write_bytes(b'earlier')

    def full_disk(servable, folder, signatures):
        os.makedirs(os.path.join(folder, 'variables'))
        with open(os.path.join(folder, 'variables', 'partial'), 'wb') as f:
            f.write(b'half')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(export.tf.saved_model, 'save', full_disk)
    code, out, err = run(capsys, '--export', out_dir, '--run-dir', tempered, '--overwrite')
    assert code == 1 and 'cannot write the export' in err and 'no space left' in err.lower()
    assert len(err.strip().splitlines()) == 1
    if earlier:
        assert os.listdir(tmp_path) == ['export'] and os.listdir(out_dir) == ['saved_model.pb']
        assert (out_dir / 'saved_model.pb').read_bytes() == b'earlier'
    else:
        assert os.listdir(tmp_path) == []


def test_one_exporter_at_a_time(tempered, tmp_path, capsys):
    """Another process exporting to the same folder holds its lock (a file next to it)."""
    out_dir = tmp_path / 'export'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]); import outputdir;'
         ' lock = outputdir.FolderLock(sys.argv[2], "--export", path=sys.argv[3]);'
         ' print("held", flush=True); time.sleep(60)',
         ROOT, str(out_dir), str(tmp_path / '.export.lock')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        code, out, err = run(capsys, '--export', out_dir, '--run-dir', tempered)
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert 'in use by another process (PID %d)' % holder.pid in err
        assert not os.path.exists(out_dir)
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run(capsys, '--export', out_dir, '--run-dir', tempered)   # free again
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ['export']                        # no lock file left


def test_a_killed_export_leaves_no_export(tempered, tmp_path):
    out_dir = tmp_path / 'export'
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'fineturn.py'), '--export',
                                str(out_dir), '--run-dir', tempered], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        # kill it while it writes the variables into its temporary folder
        while time.time() < deadline and process.poll() is None and not any(
                name.startswith('.export.tmp-') and os.path.isdir(tmp_path / name / 'variables')
                for name in os.listdir(tmp_path)):
            time.sleep(0.05)
        assert process.poll() is None, 'the export finished before it could be killed'
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not os.path.exists(out_dir)
    left = [name for name in os.listdir(tmp_path) if name.startswith('.export.tmp-')]
    assert left                               # the dead exporter's half-written folder ...
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'fineturn.py'), '--export',
                          str(out_dir), '--run-dir', tempered], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'removed' in out.stdout and 'freed' in out.stdout
    assert sorted(os.listdir(tmp_path)) == ['export']   # ... is gone after the next export
