"""class_names.read, the one reader of class-name files, and its rule; the records, the converter
and validate read through it."""

import pytest

import class_names
import records


def write(tmp_path, text, name='names.txt', encoding='utf-8'):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_one_name_per_line_stripped_trailing_blank_lines_ignored(tmp_path):
    path = write(tmp_path, 'tench, Tinca tinca  \r\ngoldfish\t\n airplane\n\n  \n')
    assert class_names.read(path) == ['tench, Tinca tinca', 'goldfish', 'airplane']
    assert class_names.read(write(tmp_path, '\ufeffriver\nbeach', 'bom.txt')) == ['river', 'beach']


def test_a_blank_line_between_names_is_refused(tmp_path):
    """It would shift every class after it by one."""
    with pytest.raises(class_names.ClassNamesError, match=r'names.txt: line 2 is blank'):
        class_names.read(write(tmp_path, 'river\n\nbeach\n'))


def test_places_category_files_name_class_index(tmp_path):
    path = write(tmp_path, '/a/airfield 0\n/a/apartment_building/outdoor 2\n/a/airport_terminal 1\n')
    assert class_names.read(path) == ['airfield', 'airport_terminal',
                                      'apartment_building/outdoor']
    with pytest.raises(class_names.ClassNamesError, match='not 0 to 1, each once'):
        class_names.read(write(tmp_path, '/a/airfield 0\n/a/airport 0\n', 'twice.txt'))
    # a file where only some lines look like Places' is names as they are
    assert class_names.read(write(tmp_path, '/a/airfield 0\nriver\n', 'mixed.txt')) == \
        ['/a/airfield 0', 'river']


def test_empty_or_unreadable_files_are_one_clear_error(tmp_path):
    with pytest.raises(class_names.ClassNamesError, match='holds no class names'):
        class_names.read(write(tmp_path, '\n\n'))
    with pytest.raises(class_names.ClassNamesError, match='cannot read the class names'):
        class_names.read(str(tmp_path / 'absent.txt'))
    with pytest.raises(class_names.ClassNamesError, match='cannot read the class names'):
        class_names.read(write(tmp_path, 'caf\xe9\n', 'latin1.txt', encoding='latin-1'))


def test_labels_txt_is_read_by_the_same_rule(tmp_path):
    write(tmp_path, 'airplane \nbeach\n\n', 'labels.txt')
    assert records.read_labels(str(tmp_path)) == ['airplane', 'beach']


def test_the_converter_stores_places_names(tmp_path):
    """python -m caffe_to_npy --labels with Places' category file stores the bare names."""
    import weights_file
    from caffe_to_npy import __main__ as caffe_to_npy_main, synthetic
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), num_classes=3, seed=5,
                                                   fmt='new', width=1 / 16)
    labels = write(tmp_path, '/b/bamboo_forest 1\n/a/airfield 0\n/c/canyon 2\n', 'places.txt')
    out = str(tmp_path / 'places.npz')
    assert caffe_to_npy_main.main([prototxt, caffemodel, out, '--labels', labels]) == 0
    assert weights_file.read(out).labels == ['airfield', 'bamboo_forest', 'canyon']
