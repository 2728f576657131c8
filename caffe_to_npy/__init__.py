"""Caffe deploy.prototxt + .caffemodel -> TensorFlow-layout weights (.npz), checked against Caffe.

    python -m caffe_to_npy DEPLOY.prototxt MODEL.caffemodel OUT.npz [--legacy-npy] [--verify IMAGE ...]

Public API:
    convert(prototxt, caffemodel) -> {layer: {'weights', 'biases'}}   (in memory)
    convert_file(prototxt, caffemodel, out_path, legacy_npy=False, *, mean, labels=None)
                         -> Summary   (atomic write; `mean` None outside the AlexNet family)
    Net(prototxt)        the prototxt's structure with inferred blob shapes
    ConversionError      every bad-input error
    compare.verify(prototxt, caffemodel, weights_path, image_paths) -> dict   (OpenCV's Caffe vs
                         our graph; importing caffe_to_npy.compare loads TensorFlow)
    synthetic.write_alexnet(directory, num_classes=1000, seed=0, fmt='v1') -> (prototxt, caffemodel)
    synthetic.write_model(directory, name, layers, dims, blobs, fmt='new') -> (prototxt, caffemodel)
                         of any network (the tests' networks outside the AlexNet family)
"""
from .converter import Net, Summary, WEIGHT_LAYOUTS, convert, convert_file
from .errors import ConversionError

TOLERANCE = 1e-4   # --verify: the largest max|ours - caffe| / max|caffe| of fc8 and prob

__all__ = ['ConversionError', 'Net', 'Summary', 'TOLERANCE', 'WEIGHT_LAYOUTS', 'convert',
           'convert_file']
