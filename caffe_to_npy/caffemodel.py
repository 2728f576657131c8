"""Reading a binary .caffemodel without holding it in memory twice.

A 244 MB AlexNet file parsed whole by protobuf costs ~3x its size (bytes + message + arrays).
Instead we memory-map the file and walk the protobuf wire format ourselves at the top levels:
NetParameter -> each `layers` (V1, field 2) / `layer` (field 100) span -> each BlobProto span.
Small non-data fields (name, type, shape, legacy dims, layer params) are cut out and parsed by
the protobuf classes of caffe_pb; the packed float `data` of a blob (field 5) becomes a zero-copy
little-endian float32 view of the map. Unusual blobs (unpacked floats, double_data) fall back to a
protobuf parse of that one blob. Gradients (diff, double_diff) are never read.

Every length is checked against its enclosing span, so a truncated or corrupt file raises
ConversionError instead of crashing or reading past the end.
"""
import collections
import mmap
import os

import numpy as np
from google.protobuf.message import DecodeError

from . import caffe_pb
from .errors import ConversionError

Blob = collections.namedtuple('Blob', 'shape data span')  # data: float32 array (maybe a view)
RawLayer = collections.namedtuple('RawLayer', 'name type blobs format')  # format 'V1' or 'new'

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5
_FIXED_SIZE = {_WIRE_FIXED64: 8, _WIRE_FIXED32: 4}
# Per layer format: (NetParameter field, message class, its blobs field)
_LAYER_FORMATS = {
    caffe_pb.NET_V1_LAYERS: ('V1', caffe_pb.V1LayerParameter, caffe_pb.V1_BLOBS),
    caffe_pb.NET_LAYER: ('new', caffe_pb.LayerParameter, caffe_pb.LAYER_BLOBS),
}
_SKIPPED_BLOB_FIELDS = (caffe_pb.BLOB_DIFF, caffe_pb.BLOB_DOUBLE_DIFF)


class _WireError(Exception):
    """Internal: the bytes are not valid protobuf at `offset`."""

    def __init__(self, problem, offset):
        super().__init__(problem)
        self.problem, self.offset = problem, offset


def _varint(buf, pos, end):
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError('varint longer than 10 bytes', pos)
    raise _WireError('data ends inside a varint', pos)


def _fields(buf, start, end):
    """Yield (number, wire_type, field_start, value_start, value_end) for each field in a span."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError('field number 0', field_start)
        if wire == _WIRE_VARINT:
            _, value_end = _varint(buf, pos, end)
        elif wire == _WIRE_BYTES:
            length, pos = _varint(buf, pos, end)
            value_end = pos + length
        elif wire in _FIXED_SIZE:
            value_end = pos + _FIXED_SIZE[wire]
        else:  # groups (3, 4) are not used by Caffe; 6 and 7 do not exist
            raise _WireError('invalid wire type %d' % wire, field_start)
        if value_end > end:
            raise _WireError('a field of %d bytes runs %d bytes past the end of its message'
                             % (value_end - pos, value_end - end), field_start)
        yield number, wire, field_start, pos, value_end
        pos = value_end


class CaffeModel:
    """A memory-mapped .caffemodel: `layers` lists RawLayer(name, type, blobs, format).

    Blob data are views of the map: use them while the CaffeModel is open (a context manager),
    copy what must outlive it. `release(blob)` drops a blob's pages from this process's memory
    once it has been written out (they stay in the OS page cache and re-read on access).
    """

    def __init__(self, path):
        self.path = path
        try:
            with open(path, 'rb') as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise ConversionError('%s is empty: re-download or re-export the .caffemodel'
                                          % path)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise ConversionError('caffemodel not found: %s (check the path)' % path) from None
        except IsADirectoryError:
            raise ConversionError('caffemodel %s is a directory, not a file' % path) from None
        except OSError as e:
            raise ConversionError('cannot read caffemodel %s: %s' % (path, e.strerror)) from None
        self.size = size
        try:
            self.layers = self._read_layers()
        except BaseException:
            self.close()
            raise

    # -- walking the file --------------------------------------------------------------------
    def _read_layers(self):
        buf, layers = self._map, []
        last_name = None
        try:
            for number, wire, _, start, end in _fields(buf, 0, self.size):
                if number in _LAYER_FORMATS and wire == _WIRE_BYTES:
                    layers.append(self._read_layer(number, start, end))
                    last_name = layers[-1].name
        except _WireError as e:
            where = ('after layer %r' % last_name) if last_name else 'before the first layer'
            raise ConversionError(
                '%s is truncated or corrupt: %s at byte %d of %d (%s); re-download or re-export '
                'the .caffemodel' % (self.path, e.problem, e.offset, self.size, where)) from None
        if not layers:
            raise ConversionError(
                '%s holds no Caffe layers: is it a binary .caffemodel? (arguments are '
                'DEPLOY.prototxt MODEL.caffemodel OUT)' % self.path)
        return layers

    def _read_layer(self, number, start, end):
        fmt, message_class, blobs_field = _LAYER_FORMATS[number]
        buf, rest, blobs = self._map, [], []
        for field, wire, field_start, value_start, value_end in _fields(buf, start, end):
            if field == blobs_field and wire == _WIRE_BYTES:
                blobs.append((value_start, value_end))
            else:
                rest.append(buf[field_start:value_end])
        message = _parse(message_class, b''.join(rest), self.path, 'layer at byte %d' % start)
        name = message.name
        if fmt == 'V1' and not name and message.type == 0:
            raise ConversionError('%s uses the pre-2014 V0 layer format, which is not supported: '
                                  'upgrade it with Caffe\'s upgrade_net_proto_binary' % self.path)
        return RawLayer(name, caffe_pb.layer_type(message),
                        [self._read_blob(s, e, name, i) for i, (s, e) in enumerate(blobs)], fmt)

    def _read_blob(self, start, end, layer, index):
        buf, rest, data_spans, unusual = self._map, [], [], False
        for field, wire, field_start, value_start, value_end in _fields(buf, start, end):
            if field == caffe_pb.BLOB_DATA and wire == _WIRE_BYTES:
                data_spans.append((field_start, value_start, value_end))
            elif field == caffe_pb.BLOB_DATA or field == caffe_pb.BLOB_DOUBLE_DATA:
                unusual = True  # unpacked floats, or a double-precision blob
                rest.append(buf[field_start:value_end])
            elif field not in _SKIPPED_BLOB_FIELDS:
                rest.append(buf[field_start:value_end])
        what = 'blob %d of layer %r' % (index, layer)
        if unusual or len(data_spans) > 1:
            # Rare encodings: let protobuf decode this one blob (minus its gradients).
            rest += [buf[f:e] for f, _, e in data_spans]
            message = _parse(caffe_pb.BlobProto, b''.join(rest), self.path, what)
            values = message.double_data if len(message.double_data) else message.data
            data = np.array(values, dtype=np.float32)
        else:
            message = _parse(caffe_pb.BlobProto, b''.join(rest), self.path, what)
            data = np.empty(0, np.float32)
            if data_spans:
                _, s, e = data_spans[0]
                if (e - s) % 4:
                    raise ConversionError('%s is corrupt: %s has %d data bytes, not a multiple of 4'
                                          % (self.path, what, e - s))
                data = np.frombuffer(buf, dtype='<f4', count=(e - s) // 4, offset=s)
        if message.HasField('shape'):
            shape = tuple(int(d) for d in message.shape.dim)
        elif any(message.HasField(f) for f in ('num', 'channels', 'height', 'width')):
            shape = (message.num, message.channels, message.height, message.width)
        else:
            shape = (data.size,)
        if int(np.prod(shape, dtype=np.int64)) != data.size:
            raise ConversionError('%s is corrupt: %s has shape %s but %d values; re-export the '
                                  '.caffemodel' % (self.path, what, shape, data.size))
        return Blob(shape, data, (start, end))

    # -- memory ------------------------------------------------------------------------------
    def release(self, blob):
        """Drop a blob's pages from this process's resident memory (data stay readable)."""
        if self._map is None or not hasattr(mmap, 'MADV_DONTNEED'):
            return
        start = blob.span[0] - blob.span[0] % mmap.PAGESIZE
        self._map.madvise(mmap.MADV_DONTNEED, start, blob.span[1] - start)

    def close(self):
        if self._map is not None:
            self.layers = []
            try:
                self._map.close()
            except BufferError:
                pass  # a caller still holds views: the map closes when the last one goes
            self._map = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _parse(message_class, data, path, what):
    try:
        return message_class.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ConversionError('%s is corrupt: cannot decode %s (%s); re-download or re-export '
                              'the .caffemodel' % (path, what, e)) from None
