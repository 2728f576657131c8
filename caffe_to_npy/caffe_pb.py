"""The few Caffe protobuf messages the converter needs, declared in code.

We do not ship Caffe's caffe.proto or a generated caffe_pb2: the messages below are built as a
FileDescriptorProto (package `caffe`, proto2) in a private descriptor pool. Field numbers, types,
defaults and the V1 LayerType enum values follow Caffe's public schema (src/caffe/proto/caffe.proto
of BVLC/caffe); only the fields we read or write are declared. Everything else in a real file
(param {}, weight_filler {}, include {} ...) is skipped: unknown fields in binary files are kept
as opaque bytes by protobuf, and text files are parsed with allow_unknown_field=True.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR = {
    'double': _F.TYPE_DOUBLE, 'float': _F.TYPE_FLOAT, 'int64': _F.TYPE_INT64,
    'uint32': _F.TYPE_UINT32, 'int32': _F.TYPE_INT32, 'bool': _F.TYPE_BOOL,
    'string': _F.TYPE_STRING,
}

# V1LayerParameter.LayerType, as numbered in caffe.proto (values are not in alphabetical order).
V1_LAYER_TYPES = {
    'NONE': 0, 'ABSVAL': 35, 'ACCURACY': 1, 'ARGMAX': 30, 'BNLL': 2, 'CONCAT': 3,
    'CONTRASTIVE_LOSS': 37, 'CONVOLUTION': 4, 'DATA': 5, 'DECONVOLUTION': 39, 'DROPOUT': 6,
    'DUMMY_DATA': 32, 'EUCLIDEAN_LOSS': 7, 'ELTWISE': 25, 'EXP': 38, 'FLATTEN': 8,
    'HDF5_DATA': 9, 'HDF5_OUTPUT': 10, 'HINGE_LOSS': 28, 'IM2COL': 11, 'IMAGE_DATA': 12,
    'INFOGAIN_LOSS': 13, 'INNER_PRODUCT': 14, 'LRN': 15, 'MEMORY_DATA': 29,
    'MULTINOMIAL_LOGISTIC_LOSS': 16, 'MVN': 34, 'POOLING': 17, 'POWER': 26, 'RELU': 18,
    'SIGMOID': 19, 'SIGMOID_CROSS_ENTROPY_LOSS': 27, 'SILENCE': 36, 'SOFTMAX': 20,
    'SOFTMAX_LOSS': 21, 'SPLIT': 22, 'SLICE': 33, 'TANH': 23, 'WINDOW_DATA': 24, 'THRESHOLD': 31,
}

# message name -> [(field name, number, 'optional'|'repeated', type, default, packed)]
# type is a scalar name above, or '.caffe.<Message>' / '.caffe.<Message>.<Enum>'.
_MESSAGES = {
    'BlobShape': [
        ('dim', 1, 'repeated', 'int64', None, True),
    ],
    'BlobProto': [
        ('num', 1, 'optional', 'int64', '0', False),
        ('channels', 2, 'optional', 'int64', '0', False),
        ('height', 3, 'optional', 'int64', '0', False),
        ('width', 4, 'optional', 'int64', '0', False),
        ('data', 5, 'repeated', 'float', None, True),
        ('diff', 6, 'repeated', 'float', None, True),
        ('shape', 7, 'optional', '.caffe.BlobShape', None, False),
        ('double_data', 8, 'repeated', 'double', None, True),
        ('double_diff', 9, 'repeated', 'double', None, True),
    ],
    'NetParameter': [
        ('name', 1, 'optional', 'string', None, False),
        ('layers', 2, 'repeated', '.caffe.V1LayerParameter', None, False),
        ('input', 3, 'repeated', 'string', None, False),
        ('input_dim', 4, 'repeated', 'int64', None, False),
        ('input_shape', 8, 'repeated', '.caffe.BlobShape', None, False),
        ('layer', 100, 'repeated', '.caffe.LayerParameter', None, False),
    ],
    'LayerParameter': [
        ('name', 1, 'optional', 'string', None, False),
        ('type', 2, 'optional', 'string', None, False),
        ('bottom', 3, 'repeated', 'string', None, False),
        ('top', 4, 'repeated', 'string', None, False),
        ('blobs', 7, 'repeated', '.caffe.BlobProto', None, False),
        ('convolution_param', 106, 'optional', '.caffe.ConvolutionParameter', None, False),
        ('dropout_param', 108, 'optional', '.caffe.DropoutParameter', None, False),
        ('inner_product_param', 117, 'optional', '.caffe.InnerProductParameter', None, False),
        ('lrn_param', 118, 'optional', '.caffe.LRNParameter', None, False),
        ('pooling_param', 121, 'optional', '.caffe.PoolingParameter', None, False),
        ('input_param', 143, 'optional', '.caffe.InputParameter', None, False),
    ],
    'V1LayerParameter': [
        ('bottom', 2, 'repeated', 'string', None, False),
        ('top', 3, 'repeated', 'string', None, False),
        ('name', 4, 'optional', 'string', None, False),
        ('type', 5, 'optional', '.caffe.V1LayerParameter.LayerType', None, False),
        ('blobs', 6, 'repeated', '.caffe.BlobProto', None, False),
        ('convolution_param', 10, 'optional', '.caffe.ConvolutionParameter', None, False),
        ('dropout_param', 12, 'optional', '.caffe.DropoutParameter', None, False),
        ('inner_product_param', 17, 'optional', '.caffe.InnerProductParameter', None, False),
        ('lrn_param', 18, 'optional', '.caffe.LRNParameter', None, False),
        ('pooling_param', 19, 'optional', '.caffe.PoolingParameter', None, False),
    ],
    'ConvolutionParameter': [
        ('num_output', 1, 'optional', 'uint32', None, False),
        ('bias_term', 2, 'optional', 'bool', 'true', False),
        ('pad', 3, 'repeated', 'uint32', None, False),
        ('kernel_size', 4, 'repeated', 'uint32', None, False),
        ('group', 5, 'optional', 'uint32', '1', False),
        ('stride', 6, 'repeated', 'uint32', None, False),
        ('pad_h', 9, 'optional', 'uint32', '0', False),
        ('pad_w', 10, 'optional', 'uint32', '0', False),
        ('kernel_h', 11, 'optional', 'uint32', None, False),
        ('kernel_w', 12, 'optional', 'uint32', None, False),
        ('stride_h', 13, 'optional', 'uint32', None, False),
        ('stride_w', 14, 'optional', 'uint32', None, False),
        ('axis', 16, 'optional', 'int32', '1', False),
        ('dilation', 18, 'repeated', 'uint32', None, False),
    ],
    'InnerProductParameter': [
        ('num_output', 1, 'optional', 'uint32', None, False),
        ('bias_term', 2, 'optional', 'bool', 'true', False),
        ('axis', 5, 'optional', 'int32', '1', False),
        ('transpose', 6, 'optional', 'bool', 'false', False),
    ],
    'LRNParameter': [
        ('local_size', 1, 'optional', 'uint32', '5', False),
        ('alpha', 2, 'optional', 'float', '1', False),
        ('beta', 3, 'optional', 'float', '0.75', False),
        ('norm_region', 4, 'optional', '.caffe.LRNParameter.NormRegion', 'ACROSS_CHANNELS', False),
        ('k', 5, 'optional', 'float', '1', False),
    ],
    'PoolingParameter': [
        ('pool', 1, 'optional', '.caffe.PoolingParameter.PoolMethod', 'MAX', False),
        ('kernel_size', 2, 'optional', 'uint32', None, False),
        ('stride', 3, 'optional', 'uint32', '1', False),
        ('pad', 4, 'optional', 'uint32', '0', False),
        ('kernel_h', 5, 'optional', 'uint32', None, False),
        ('kernel_w', 6, 'optional', 'uint32', None, False),
        ('stride_h', 7, 'optional', 'uint32', None, False),
        ('stride_w', 8, 'optional', 'uint32', None, False),
        ('pad_h', 9, 'optional', 'uint32', '0', False),
        ('pad_w', 10, 'optional', 'uint32', '0', False),
        ('global_pooling', 12, 'optional', 'bool', 'false', False),
        ('round_mode', 13, 'optional', '.caffe.PoolingParameter.RoundMode', 'CEIL', False),
    ],
    'DropoutParameter': [
        ('dropout_ratio', 1, 'optional', 'float', '0.5', False),
    ],
    'InputParameter': [
        ('shape', 1, 'repeated', '.caffe.BlobShape', None, False),
    ],
}

_ENUMS = {
    'V1LayerParameter': {'LayerType': V1_LAYER_TYPES},
    'LRNParameter': {'NormRegion': {'ACROSS_CHANNELS': 0, 'WITHIN_CHANNEL': 1}},
    'PoolingParameter': {'PoolMethod': {'MAX': 0, 'AVE': 1, 'STOCHASTIC': 2},
                         'RoundMode': {'CEIL': 0, 'FLOOR': 1}},
}


def _file_descriptor():
    fdp = descriptor_pb2.FileDescriptorProto(name='caffe_to_npy/caffe.proto', package='caffe',
                                             syntax='proto2')
    for msg_name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        for enum_name, values in _ENUMS.get(msg_name, {}).items():
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in sorted(values.items(), key=lambda kv: kv[1]):
                enum.value.add(name=value_name, number=number)
        for name, number, label, ftype, default, packed in fields:
            field = msg.field.add(name=name, number=number, json_name=name)
            field.label = _F.LABEL_REPEATED if label == 'repeated' else _F.LABEL_OPTIONAL
            if ftype in _SCALAR:
                field.type = _SCALAR[ftype]
            else:
                enum_owner, _, enum_name = ftype[len('.caffe.'):].partition('.')
                is_enum = bool(enum_name) and enum_name in _ENUMS.get(enum_owner, {})
                field.type = _F.TYPE_ENUM if is_enum else _F.TYPE_MESSAGE
                field.type_name = ftype
            if default is not None:
                field.default_value = default
            if packed:
                field.options.packed = True
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName('caffe.' + name))


BlobShape = _message_class('BlobShape')
BlobProto = _message_class('BlobProto')
NetParameter = _message_class('NetParameter')
LayerParameter = _message_class('LayerParameter')
V1LayerParameter = _message_class('V1LayerParameter')
ConvolutionParameter = _message_class('ConvolutionParameter')
InnerProductParameter = _message_class('InnerProductParameter')
LRNParameter = _message_class('LRNParameter')
PoolingParameter = _message_class('PoolingParameter')
DropoutParameter = _message_class('DropoutParameter')
InputParameter = _message_class('InputParameter')

# Field numbers the wire-format reader walks by hand (the rest goes through the classes above).
NET_V1_LAYERS = NetParameter.DESCRIPTOR.fields_by_name['layers'].number    # 2
NET_LAYER = NetParameter.DESCRIPTOR.fields_by_name['layer'].number          # 100
V1_BLOBS = V1LayerParameter.DESCRIPTOR.fields_by_name['blobs'].number       # 6
LAYER_BLOBS = LayerParameter.DESCRIPTOR.fields_by_name['blobs'].number      # 7
BLOB_DATA = BlobProto.DESCRIPTOR.fields_by_name['data'].number              # 5
BLOB_DIFF = BlobProto.DESCRIPTOR.fields_by_name['diff'].number              # 6
BLOB_DOUBLE_DATA = BlobProto.DESCRIPTOR.fields_by_name['double_data'].number  # 8
BLOB_DOUBLE_DIFF = BlobProto.DESCRIPTOR.fields_by_name['double_diff'].number  # 9

# Caffe's own V1 -> new layer type names (what UpgradeV1LayerType produces), so both formats
# are handled by one table keyed by the new-style type string.
V1_TYPE_NAMES = {
    'ABSVAL': 'AbsVal', 'ACCURACY': 'Accuracy', 'ARGMAX': 'ArgMax', 'BNLL': 'BNLL',
    'CONCAT': 'Concat', 'CONTRASTIVE_LOSS': 'ContrastiveLoss', 'CONVOLUTION': 'Convolution',
    'DATA': 'Data', 'DECONVOLUTION': 'Deconvolution', 'DROPOUT': 'Dropout',
    'DUMMY_DATA': 'DummyData', 'EUCLIDEAN_LOSS': 'EuclideanLoss', 'ELTWISE': 'Eltwise',
    'EXP': 'Exp', 'FLATTEN': 'Flatten', 'HDF5_DATA': 'HDF5Data', 'HDF5_OUTPUT': 'HDF5Output',
    'HINGE_LOSS': 'HingeLoss', 'IM2COL': 'Im2col', 'IMAGE_DATA': 'ImageData',
    'INFOGAIN_LOSS': 'InfogainLoss', 'INNER_PRODUCT': 'InnerProduct', 'LRN': 'LRN',
    'MEMORY_DATA': 'MemoryData', 'MULTINOMIAL_LOGISTIC_LOSS': 'MultinomialLogisticLoss',
    'MVN': 'MVN', 'POOLING': 'Pooling', 'POWER': 'Power', 'RELU': 'ReLU', 'SIGMOID': 'Sigmoid',
    'SIGMOID_CROSS_ENTROPY_LOSS': 'SigmoidCrossEntropyLoss', 'SILENCE': 'Silence',
    'SOFTMAX': 'Softmax', 'SOFTMAX_LOSS': 'SoftmaxWithLoss', 'SPLIT': 'Split', 'SLICE': 'Slice',
    'TANH': 'TanH', 'WINDOW_DATA': 'WindowData', 'THRESHOLD': 'Threshold', 'NONE': '',
}
_V1_NAME_BY_NUMBER = {number: name for name, number in V1_LAYER_TYPES.items()}


def layer_type(layer):
    """New-style type string ('Convolution', ...) of a LayerParameter or V1LayerParameter."""
    if isinstance(layer.type, str):
        return layer.type
    return V1_TYPE_NAMES.get(_V1_NAME_BY_NUMBER.get(layer.type, ''), 'V1:%d' % layer.type)
