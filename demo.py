"""`python fineturn.py --demo`: the whole chain in a few minutes, on synthetic weights and images.

Nothing here is downloaded and nothing outside the demo folder is touched:
  1. a random AlexNet-shaped Caffe model in the model zoo's V1 format (caffe_to_npy.synthetic),
  2. converted with caffe_to_npy and verified against OpenCV's Caffe runtime,
  3. a land-use-like folder of procedural textures with UC Merced's quirks (synthetic_dataset),
  4. converted to TFRecords (convert_tfrecord),
  5. fine-tuned with fineturn's recipe for a few epochs, with the full report.
prepare() does steps 1-4 and returns the settings of step 5, which fineturn.py runs; finish()
prints where the outputs are.
The accuracy it prints shows that the chain works; it says nothing about AlexNet on UC Merced.
"""
import dataclasses
import os
import shutil

import caffe_to_npy
import classify
import dataset_folder
import outputdir
import record_writer
import synthetic_dataset
import weights_file
from caffe_to_npy import synthetic
from caffe_to_npy.compare import verify
from rundir import RunError

DEMO_CLASSES = 21        # UC Merced's class names
DEMO_PER_CLASS = 20      # 16 / 2 / 2 per class with the 0.8 / 0.1 / 0.1 split
DEMO_SEED = 1
MARKER = '.fineturn-demo'   # marks a folder the demo made, so a rerun may replace it


def prepare_folder(demo_dir):
    """An empty demo folder; an earlier demo's is replaced, anything else is refused."""
    if os.path.exists(demo_dir):
        if not os.path.isdir(demo_dir):
            raise RunError('--demo-dir %s is a file' % demo_dir)
        if os.listdir(demo_dir) and not os.path.exists(os.path.join(demo_dir, MARKER)):
            raise RunError('--demo-dir %s holds files the demo did not make: choose an '
                                    'empty or new folder' % demo_dir)
        run_dir = os.path.join(demo_dir, 'run')
        if os.path.isdir(run_dir):
            with outputdir.FolderLock(run_dir, '--demo-dir'):   # no demo is running there
                pass
        shutil.rmtree(demo_dir)
    os.makedirs(demo_dir)
    with open(os.path.join(demo_dir, MARKER), 'w') as f:
        f.write('made by python fineturn.py --demo; deleted and remade by the next demo run\n')


def step(number, text):
    print('\n[%d/5] %s' % (number, text), flush=True)


def prepare(settings, demo_dir, ratios, workers):
    """Steps 1-4 under `demo_dir`, the records split by `ratios` with `workers` processes;
    returns the settings of step 5, the training run: `settings`' recipe on the demo's weights
    and records, in the demo's run dir."""
    demo_dir = os.path.abspath(demo_dir)
    print('fineturn demo in %s\nSYNTHETIC weights and images: random AlexNet-shaped weights (not '
          'the model zoo\'s) and procedural textures (not UC Merced).' % demo_dir)
    prepare_folder(demo_dir)

    step(1, 'a random AlexNet-shaped Caffe model, V1 format like bvlc_alexnet.caffemodel')
    caffe_dir = os.path.join(demo_dir, 'caffe')
    os.makedirs(caffe_dir)
    prototxt, caffemodel = synthetic.write_alexnet(caffe_dir, seed=DEMO_SEED, fmt='v1',
                                                   name='bvlc_alexnet_synthetic')
    print('wrote %s (%.0f MB) and %s' % (caffemodel, os.path.getsize(caffemodel) / 1e6, prototxt))

    step(2, 'python -m caffe_to_npy, then --verify against OpenCV\'s Caffe runtime')
    weights = os.path.join(demo_dir, 'weights', 'bvlc_alexnet_synthetic.npz')
    os.makedirs(os.path.dirname(weights))
    summary = caffe_to_npy.convert_file(prototxt, caffemodel, weights,
                                        mean=weights_file.IMAGENET_MEAN_BGR)
    print('converted %d layers, %d parameters in %.2f s -> %s'
          % (len(summary.layers), summary.parameters, summary.seconds, weights))
    images = os.path.join(demo_dir, 'images')
    folder = synthetic_dataset.make_dataset_folder(images, num_classes=DEMO_CLASSES,
                                                   per_class=DEMO_PER_CLASS, seed=DEMO_SEED)
    photos = [classify.sample_photo()] + [os.path.join(images, path)
                                          for path in sorted(folder.images)[:2]]
    check = verify(prototxt, caffemodel, weights, photos)
    print('verify on %d images: max relative difference fc8 %.2e, prob %.2e (tolerance %.0e), '
          'top-1 agreement %.0f%%: %s' % (check['images'], check['fc8'], check['prob'],
                                          check['tolerance'], 100 * check['top1_agreement'],
                                          'PASS' if check['ok'] else 'FAIL'))
    if not check['ok']:
        raise RunError('the converted weights do not match OpenCV\'s Caffe forward')
    os.remove(caffemodel)   # 244 MB no longer needed: the .npz holds the same values

    step(3, '%d classes x %d procedural textures with UC Merced\'s quirks -> %s'
         % (DEMO_CLASSES, DEMO_PER_CLASS, images))
    print('%d readable images, %d corrupt, %d non-images (odd sizes, grayscale, 16-bit, RGBA, '
          '.TIF, Thumbs.db, .DS_Store ...)' % (len(folder.images), len(folder.corrupt),
                                               len(folder.ignored)))

    step(4, 'python convert_tfrecord.py')
    records_dir = os.path.join(demo_dir, 'data')
    conversion = record_writer.convert(images, records_dir, ratios, DEMO_SEED, workers,
                                       progress=False)
    print(dataset_folder.summary(conversion))

    step(5, 'python fineturn.py: %d epochs of the recipe in setting.py' % settings.epochs)
    return dataclasses.replace(settings, records_dir=records_dir, weights=weights,
                               run_dir=os.path.join(demo_dir, 'run'),
                               feature_store=os.path.join(demo_dir, 'feature_store'))


def finish(settings, seconds):
    """The demo's last words, after the training run of `settings` took `seconds` in all."""
    run_dir = settings.run_dir
    print('\ndemo finished in %.0f s. SYNTHETIC weights and images: the accuracy above shows the '
          'chain works, not how AlexNet does on UC Merced.' % seconds)
    print('report:  %s\nfigures: %s\n         %s\nmetrics: %s'
          % (os.path.join(run_dir, 'test_report.md'), os.path.join(run_dir, 'confusion_matrix.png'),
             os.path.join(run_dir, 'curves.png'), os.path.join(run_dir, 'metrics.csv')))
