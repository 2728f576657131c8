"""`python fineturn.py --export OUT_DIR`: a run's model as a TF2 SavedModel that classifies pixels.

A client sends images, never a mean or a crop: the preprocessing is inside the model.

    signature        input                                       outputs
    serving_default  images       uint8 [N, H, W, 3], RGB        probabilities float32 [N, classes]
                                  (any H, W; one size a batch)   class_ids     int64 [N]
    encoded          image_bytes  string [N], PNG/JPEG/BMP/GIF   class_names   string [N]
                                  file bytes (GIF: first frame)

Inside, the same steps as training and --predict: RGB -> BGR, alexnet.preprocess_tensor (resize
to 256x256, centre crop 227x227, subtract the run's mean: the one preprocessing, so
serving_default gets from an image's pixels the tensor --predict gets from its file), the network
of graph.classifier (no dropout) on the checkpoint's arrays held as non-trainable variables,
softmax. The class names are an asset (assets/classes.txt) read into a lookup table, and
assets.extra/export.json records the source checkpoint, its validation and test accuracy, the
preprocessing and the input order.

The `encoded` signature decodes files with TensorFlow's decoders, not the project's image reader
(images.py: OpenCV, in no SavedModel): they ignore a JPEG's EXIF orientation and take 16-bit PNG
down by truncating, where the reader turns the photo upright and rounds.
"""
import json
import os
import tempfile

import tensorflow as tf

import alexnet
import checkpoints
import graph
import outputdir
import report
import rundir
import weights_file
from atomicfile import atomic_dir, remove_orphans, writing
from console import log
from errors import UserError

CLASSES_ASSET = 'classes.txt'
INFO_FILE = os.path.join('assets.extra', 'export.json')
SAVED_MODEL_FILE = 'saved_model.pb'


class ExportError(UserError):
    """An export that can't be written where asked; the message says what to do."""


class Servable(tf.Module):
    """The network of a checkpoint with its preprocessing and class names, as tf.functions."""

    def __init__(self, arrays, model, classes_file):
        super().__init__(name='alexnet')
        self._structure, self._mean = model.structure, model.mean
        self.weights = {layer: {kind: tf.Variable(value, trainable=False,
                                                  name='%s_%s' % (layer, kind))
                                for kind, value in entry.items()}
                        for layer, entry in arrays.items()}
        self.classes_file = tf.saved_model.Asset(classes_file)
        self.class_names = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self.classes_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value='')

    def _preprocess(self, images_rgb):
        """uint8 RGB [..., H, W, 3] -> the network's input [..., 227, 227, 3]."""
        return alexnet.preprocess_tensor(tf.reverse(images_rgb, axis=[-1]), self._mean)

    def _classify(self, images):
        _, probabilities = graph.classifier(images, self._structure, weights=self.weights)
        class_ids = tf.argmax(probabilities, axis=1, output_type=tf.int64)
        return {'probabilities': probabilities, 'class_ids': class_ids,
                'class_names': self.class_names.lookup(class_ids)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')])
    def serve(self, images):
        return self._classify(self._preprocess(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
    def encoded(self, image_bytes):
        side = self._structure.input_size

        def decode(data):   # each file has its own size: decode and preprocess one at a time
            # JPEG with the accurate integer DCT, as OpenCV's (and libjpeg's) default: the same
            # pixels as --predict reads, where TF's default (the fast DCT) is off by a few levels
            rgb = tf.cond(tf.io.is_jpeg(data),
                          lambda: tf.io.decode_jpeg(data, channels=3,
                                                    dct_method='INTEGER_ACCURATE'),
                          lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                                     expand_animations=False))
            return self._preprocess(rgb)
        images = tf.map_fn(decode, image_bytes,
                           fn_output_signature=tf.TensorSpec([side, side, 3], tf.float32))
        return self._classify(images)


def run_figures(prefix):
    """(epoch, validation accuracy, test accuracy, the test report's path) of a checkpoint, from
    its run dir's metrics.csv and a centre-crop test report made with it: the run's own, or an
    --evaluate's (None where absent)."""
    run_dir, name = os.path.dirname(prefix), os.path.basename(prefix)
    row = next((r for r in rundir.read_metrics(run_dir) if r['checkpoint'] == name), None)
    test, source = None, None
    for folder in (run_dir, report.evaluation_dir(prefix, 1)):
        try:
            found = report.read_report(folder)
        except report.ReportError:       # the figure is optional: a damaged report gives none
            found = None
        if found and found['checkpoint'] == os.path.normpath(prefix) and found['crops'] == 1:
            test, source = found['accuracy'], os.path.join(folder, report.REPORT_FILE)
            break
    return (int(row['epoch']) if row else None, float(row['val_accuracy']) if row else None,
            test, source)


def export_info(prefix, model):
    """What assets.extra/export.json records."""
    epoch, validation, test, test_report = run_figures(prefix)
    mean = weights_file.mean_array(model.mean)
    return {
        'source_checkpoint': os.path.abspath(prefix),
        'epoch': epoch,
        'validation_accuracy': validation,
        'test_accuracy': test,
        'test_report': os.path.abspath(test_report) if test_report else None,
        'classes': list(model.classes),
        'input_order': 'RGB',
        'signatures': {
            'serving_default': 'images: uint8 [N, H, W, 3] RGB, any H and W',
            'encoded': 'image_bytes: string [N], PNG/JPEG/BMP/GIF file bytes',
            'outputs': 'probabilities float32 [N, classes], class_ids int64 [N], '
                       'class_names string [N]'},
        'preprocessing': {
            'channels': 'RGB input reversed to BGR, the order of the Caffe weights',
            'resize': [alexnet.RESIZE_SIZE, alexnet.RESIZE_SIZE],
            'resize_method': 'bilinear, half-pixel centres, no antialiasing',
            'crop': [alexnet.IMAGE_SIZE, alexnet.IMAGE_SIZE],
            'crop_offset': [alexnet.CROP_OFFSET, alexnet.CROP_OFFSET],
            'mean_bgr': mean.tolist() if mean.ndim == 1 else weights_file.describe_mean(mean),
            'softmax': True, 'dropout': False},
        'structure': model.structure.to_dict(),
        'tensorflow': tf.__version__,
    }


def check_target(out_dir, overwrite):
    """An ExportError unless `out_dir` is free, or with `overwrite` an earlier export (never
    another kind of folder: a typo must not delete it)."""
    if not os.path.lexists(out_dir):
        return
    if not overwrite:
        raise ExportError('%s already exists: pass --overwrite to replace it, or choose another '
                          'OUT_DIR' % out_dir)
    if not os.path.isdir(out_dir) or (os.listdir(out_dir) and not os.path.isfile(
            os.path.join(out_dir, SAVED_MODEL_FILE))):
        raise ExportError('%s is not an earlier export (no %s): --overwrite replaces only an '
                          'export; choose another OUT_DIR' % (out_dir, SAVED_MODEL_FILE))


def export(out_dir, run_dir, checkpoint=None, overwrite=False):
    """The --export command: write the SavedModel of `checkpoint` (or the best of `run_dir`).

    One process at a time writes `out_dir` (a lock file next to it); it appears whole or not at
    all (atomicfile.atomic_dir), and what killed exporters left next to it is removed first."""
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.split(out_dir)
    with writing(parent, 'the folder'):
        os.makedirs(parent, exist_ok=True)
    with outputdir.FolderLock(out_dir, '--export', path=os.path.join(parent, '.%s.lock' % name)):
        remove_orphans(parent, target=name, log=log)
        check_target(out_dir, overwrite)
        prefix, model = checkpoints.open_model(run_dir, checkpoint)
        arrays = checkpoints.arrays(prefix, model.structure)
        with writing(out_dir, 'the export', needed=checkpoints.size(len(model.classes)),
                     also=(tf.errors.OpError,)), \
                atomic_dir(out_dir, replace=overwrite) as folder:
            with tempfile.TemporaryDirectory() as scratch:
                classes_file = os.path.join(scratch, CLASSES_ASSET)
                with open(classes_file, 'w', encoding='utf-8') as f:
                    f.write(''.join(label + '\n' for label in model.classes))
                servable = Servable(arrays, model, classes_file)
                tf.saved_model.save(servable, folder, signatures={
                    'serving_default': servable.serve, 'encoded': servable.encoded})
            os.makedirs(os.path.join(folder, os.path.dirname(INFO_FILE)))
            with open(os.path.join(folder, INFO_FILE), 'w', encoding='utf-8') as f:
                json.dump(export_info(prefix, model), f, indent=1)
    log(' * exported %s (%d classes) to %s: signatures serving_default (images: uint8 RGB) and '
        'encoded (image_bytes); see %s' % (prefix, len(model.classes), out_dir,
                                           os.path.join(out_dir, INFO_FILE)))
