"""Networks outside the AlexNet family, as Caffe's own examples define them, written as generated
Caffe models (random blobs) in the V1 or the new format: what the converter must convert although
nothing here can build them. No TensorFlow here.
"""
import numpy as np

from caffe_to_npy import synthetic

# Each as its Caffe example defines it (deploy layers), with its blob shapes in Caffe's layouts and
# the C, H, W input of each inner product that follows a spatial blob, worked out by hand:
# (layers, input N C H W, {layer: [weights shape, biases shape]}, {inner product: (C, H, W)}).
OUTSIDE = {
    # examples/mnist/lenet.prototxt: 28 -conv5-> 24 -pool2/2-> 12 -conv5-> 8 -pool2/2-> 4
    'lenet': ([
        ('conv1', 'Convolution', 'data', 'conv1', {'num_output': 20, 'kernel_size': [5]}),
        ('pool1', 'Pooling', 'conv1', 'pool1', {'pool': 'MAX', 'kernel_size': 2, 'stride': 2}),
        ('conv2', 'Convolution', 'pool1', 'conv2', {'num_output': 50, 'kernel_size': [5]}),
        ('pool2', 'Pooling', 'conv2', 'pool2', {'pool': 'MAX', 'kernel_size': 2, 'stride': 2}),
        ('ip1', 'InnerProduct', 'pool2', 'ip1', {'num_output': 500}),
        ('relu1', 'ReLU', 'ip1', 'ip1', {}),
        ('ip2', 'InnerProduct', 'ip1', 'ip2', {'num_output': 10}),
        ('prob', 'Softmax', 'ip2', 'prob', {}),
    ], (64, 1, 28, 28), {'conv1': [(20, 1, 5, 5), (20,)], 'conv2': [(50, 20, 5, 5), (50,)],
                         'ip1': [(500, 800), (500,)], 'ip2': [(10, 500), (10,)]},
        {'ip1': (50, 4, 4)}),
    # examples/cifar10/cifar10_full.prototxt: LRN within channels, average pooling;
    # 32 -conv5 pad2-> 32 -pool3/2-> 16 -conv-> 16 -pool-> 8 -conv-> 8 -pool-> 4
    'cifar10_full': ([
        ('conv1', 'Convolution', 'data', 'conv1',
         {'num_output': 32, 'pad': [2], 'kernel_size': [5], 'stride': [1]}),
        ('pool1', 'Pooling', 'conv1', 'pool1', {'pool': 'MAX', 'kernel_size': 3, 'stride': 2}),
        ('relu1', 'ReLU', 'pool1', 'pool1', {}),
        ('norm1', 'LRN', 'pool1', 'norm1', {'local_size': 3, 'alpha': 5e-05, 'beta': 0.75,
                                            'norm_region': 'WITHIN_CHANNEL'}),
        ('conv2', 'Convolution', 'norm1', 'conv2',
         {'num_output': 32, 'pad': [2], 'kernel_size': [5], 'stride': [1]}),
        ('relu2', 'ReLU', 'conv2', 'conv2', {}),
        ('pool2', 'Pooling', 'conv2', 'pool2', {'pool': 'AVE', 'kernel_size': 3, 'stride': 2}),
        ('norm2', 'LRN', 'pool2', 'norm2', {'local_size': 3, 'alpha': 5e-05, 'beta': 0.75,
                                            'norm_region': 'WITHIN_CHANNEL'}),
        ('conv3', 'Convolution', 'norm2', 'conv3',
         {'num_output': 64, 'pad': [2], 'kernel_size': [5], 'stride': [1]}),
        ('relu3', 'ReLU', 'conv3', 'conv3', {}),
        ('pool3', 'Pooling', 'conv3', 'pool3', {'pool': 'AVE', 'kernel_size': 3, 'stride': 2}),
        ('ip1', 'InnerProduct', 'pool3', 'ip1', {'num_output': 10}),
        ('prob', 'Softmax', 'ip1', 'prob', {}),
    ], (1, 3, 32, 32), {'conv1': [(32, 3, 5, 5), (32,)], 'conv2': [(32, 32, 5, 5), (32,)],
                        'conv3': [(64, 32, 5, 5), (64,)], 'ip1': [(10, 1024), (10,)]},
        {'ip1': (64, 4, 4)}),
    # MobileNet-style: depthwise convolutions (group == channels, MobileNet's names with a slash,
    # no bias where a batch norm would follow), a grouped 1x1; 16 -s2-> 8 -> 8 -> 8 -s2-> 4 -> 4
    # -pool2/2-> 2
    'depthwise': ([
        ('conv0', 'Convolution', 'data', 'conv0', {'num_output': 8, 'kernel_size': [3],
                                                   'stride': [2], 'pad': [1], 'bias_term': False}),
        ('conv0/relu', 'ReLU', 'conv0', 'conv0', {}),
        ('conv1/dw', 'Convolution', 'conv0', 'conv1/dw', {'num_output': 8, 'kernel_size': [3],
                                                          'pad': [1], 'group': 8,
                                                          'bias_term': False}),
        ('conv1/dw/relu', 'ReLU', 'conv1/dw', 'conv1/dw', {}),
        ('conv1', 'Convolution', 'conv1/dw', 'conv1', {'num_output': 16, 'kernel_size': [1]}),
        ('conv1/relu', 'ReLU', 'conv1', 'conv1', {}),
        ('conv2/dw', 'Convolution', 'conv1', 'conv2/dw', {'num_output': 16, 'kernel_size': [3],
                                                          'stride': [2], 'pad': [1],
                                                          'group': 16}),
        ('conv2', 'Convolution', 'conv2/dw', 'conv2', {'num_output': 12, 'kernel_size': [1],
                                                       'group': 2}),
        ('pool', 'Pooling', 'conv2', 'pool', {'pool': 'MAX', 'kernel_size': 2, 'stride': 2}),
        ('fc', 'InnerProduct', 'pool', 'fc', {'num_output': 5}),
        ('prob', 'Softmax', 'fc', 'prob', {}),
    ], (1, 3, 16, 16), {'conv0': [(8, 3, 3, 3)], 'conv1/dw': [(8, 1, 3, 3)],
                        'conv1': [(16, 8, 1, 1), (16,)], 'conv2/dw': [(16, 1, 3, 3), (16,)],
                        'conv2': [(12, 8, 1, 1), (12,)], 'fc': [(5, 48), (5,)]},
        {'fc': (12, 2, 2)}),
}


def write(directory, name, fmt):
    """(prototxt, caffemodel) of OUTSIDE[name] with random blobs, written in format `fmt`."""
    specs, dims, shapes, _ = OUTSIDE[name]
    rng = np.random.default_rng(len(name))
    blobs = {layer: [rng.standard_normal(shape).astype(np.float32) for shape in layer_shapes]
             for layer, layer_shapes in shapes.items()}
    return synthetic.write_model(str(directory), '%s_%s' % (name, fmt), specs, dims, blobs, fmt)
