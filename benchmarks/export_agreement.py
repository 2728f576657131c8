"""How closely an export (fineturn.py --export) agrees with fineturn.py --predict, by image size.

    python benchmarks/export_agreement.py --run-dir RUN IMAGE_DIR [--sizes 256x256 300x241 ...]

Exports the run's best checkpoint to a temporary folder and loads it back with
tf.saved_model.load. Each image of IMAGE_DIR is resized with OpenCV (INTER_AREA) to each size and
written as PNG; then, per size, it compares:
  - input: the network's input after preprocessing, inside the export (alexnet.preprocess_tensor
    in its graph) against --predict's (alexnet.load_image of the PNG), largest absolute
    difference in pixel levels: both are the one preprocessing, so 0 at every size;
  - probabilities: the export's serving_default against --predict's, largest absolute difference;
  - top-1: the fraction of images where both give the same class.
"""
import argparse
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import environment  # noqa: E402


def size(text):
    width, height = (int(v) for v in text.lower().split('x'))
    return width, height


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('images', help='a folder of images (searched recursively)')
    parser.add_argument('--run-dir', required=True, help='a trained run (its best checkpoint)')
    parser.add_argument('--sizes', type=size, nargs='+',
                        default=[size(s) for s in ('256x256', '300x241', '512x384', '257x256',
                                                   '242x250', '229x250', '160x120')],
                        help='WIDTHxHEIGHT sizes to compare (default: %(default)s)')
    parser.add_argument('--limit', type=int, default=50, help='images used at most')
    args = parser.parse_args()
    environment.load_tensorflow()   # the import boundary: TensorFlow loads after the flags
    import tensorflow as tf
    import alexnet
    import checkpoints
    import classify
    import export
    import images
    import predict
    paths = classify.expand_inputs([args.images])[0][:args.limit]
    work = tempfile.mkdtemp(prefix='export_agreement-')
    try:
        out_dir = os.path.join(work, 'export')
        export.export(out_dir, args.run_dir)
        exported = tf.saved_model.load(out_dir).signatures['serving_default']
        prefix, model = checkpoints.open_model(args.run_dir)
        print('%d images of %s; model %s' % (len(paths), args.images, prefix))
        print('%-9s %12s %14s %8s' % ('size', 'input diff', 'prob diff', 'top-1'))
        with predict.checkpoint_classifier(prefix, model) as classifier:
            for width, height in args.sizes:
                folder = os.path.join(work, '%dx%d' % (width, height))
                os.makedirs(folder)
                resized = []
                for i, path in enumerate(paths):
                    image = cv2.resize(images.read_bgr8(path), (width, height),
                                       interpolation=cv2.INTER_AREA)
                    resized.append(os.path.join(folder, '%04d.png' % i))
                    cv2.imwrite(resized[-1], image)
                ours = classify.classify(resized, classifier).probs
                pixels = np.stack([cv2.imread(p) for p in resized])
                theirs = exported(images=tf.constant(pixels[..., ::-1]))['probabilities'].numpy()
                inputs = max(np.abs(alexnet.load_image(path, model.mean)
                                    - alexnet.preprocess_tensor(image, model.mean).numpy()).max()
                             for path, image in zip(resized, pixels))
                print('%-9s %12.4f %14.2e %7.1f%%' % (
                    '%dx%d' % (width, height), inputs, np.abs(ours - theirs).max(),
                    100 * np.mean(ours.argmax(1) == theirs.argmax(1))), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
