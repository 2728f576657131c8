"""One exit-status convention in every command: 0 done, 1 an error (the user's or the machine's),
2 a usage error (argparse's), 130 interrupted (Ctrl-C), each error or interruption one line on
stderr without a traceback.

Each command's main() runs in this process with the fault injected into the first function it
calls inside its error handling, so no TensorFlow loads and each case takes milliseconds.
"""
import errno

import numpy as np
import pytest

import convert_tfrecord
import dataset_folder
import environment
import fineturn
import synthetic_dataset
import validate_alexnet_on_imagenet as validate
from caffe_to_npy import __main__ as caffe_to_npy_main
from caffe_to_npy import synthetic
from errors import UserError


def _caffe_to_npy(tmp_path):
    return caffe_to_npy_main.main, 'caffe_to_npy', (caffe_to_npy_main, 'convert_file'), [
        str(tmp_path / 'deploy.prototxt'), str(tmp_path / 'model.caffemodel'),
        str(tmp_path / 'w.npz')]


def _convert_tfrecord(tmp_path):
    return convert_tfrecord.main, 'convert_tfrecord.py', (dataset_folder, 'plan'), [
        '--data-dir', str(tmp_path), '--output-dir', str(tmp_path / 'out')]


def _fineturn(tmp_path):
    return fineturn.main, 'fineturn.py', (environment, 'load_tensorflow'), [
        '--data-dir', str(tmp_path), '--weights', str(tmp_path / 'w.npz'), '--run-dir',
        str(tmp_path / 'run')]


def _validate(tmp_path):
    return validate.main, validate.PROG, (environment, 'load_tensorflow'), [
        str(tmp_path / 'photo.jpg'), '--weights', str(tmp_path / 'w.npz')]


def _synthetic_dataset(tmp_path):
    return synthetic_dataset.main, 'synthetic_dataset.py', (
        synthetic_dataset, 'make_dataset_folder'), [str(tmp_path / 'images')]


def _synthetic_caffe(tmp_path):
    return synthetic.main, 'python -m caffe_to_npy.synthetic', (synthetic, 'write_alexnet'), [
        str(tmp_path / 'caffe')]


COMMANDS = {'caffe_to_npy': _caffe_to_npy, 'convert_tfrecord': _convert_tfrecord,
            'fineturn': _fineturn, 'validate': _validate, 'synthetic_dataset': _synthetic_dataset,
            'caffe_to_npy.synthetic': _synthetic_caffe}


def _raising(error):
    def fail(*args, **kwargs):
        raise error
    return fail


def _status(main, argv):
    """main(argv)'s exit status; an interrupt that escapes it fails the test (left alone, it
    would stop the whole test session)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail('KeyboardInterrupt escaped main(): it should print one line and return 130')


def _one_line(err, prog):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith(prog + ': '), lines[0]
    return lines[0]


@pytest.mark.parametrize('command', sorted(COMMANDS))
@pytest.mark.parametrize('fault, status', [(KeyboardInterrupt(), 130),
                                           (UserError('the injected problem'), 1)],
                         ids=['ctrl-c', 'error'])
def test_interrupt_is_130_and_an_error_1_in_one_line(command, fault, status, tmp_path,
                                                     monkeypatch, capsys):
    main, prog, (module, name), argv = COMMANDS[command](tmp_path)
    monkeypatch.setattr(module, name, _raising(fault))
    assert _status(main, argv) == status
    line = _one_line(capsys.readouterr().err, prog)
    if status == 1:
        assert line == '%s: error: the injected problem' % prog


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_usage_error_is_2(command, tmp_path, capsys):
    main, prog, _, argv = COMMANDS[command](tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(argv + ['--no-such-flag'])
    assert exit.value.code == 2 and '--no-such-flag' in capsys.readouterr().err


def test_caffe_to_npy_full_disk_is_1_in_one_line(tmp_path, monkeypatch, capsys):
    """The machine's error: as the user's, 1 and one line, and nothing written."""
    prototxt, caffemodel = synthetic.write_alexnet(str(tmp_path), num_classes=3, width=1 / 16)
    monkeypatch.setattr(np.lib.format, 'write_array',
                        _raising(OSError(errno.ENOSPC, 'No space left on device')))
    out = tmp_path / 'out'
    out.mkdir()
    assert caffe_to_npy_main.main([prototxt, caffemodel, str(out / 'w.npz')]) == 1
    line = _one_line(capsys.readouterr().err, 'caffe_to_npy')
    assert 'cannot write the weights' in line and 'no space left' in line
    assert list(out.iterdir()) == []
