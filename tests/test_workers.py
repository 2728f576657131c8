"""images.Workers, the converter's image processes: results in order, a worker's failure reported,
and, above all, stopping at any moment without hanging.

The stopping cases run in a child process with a deadline and are killed with their whole process
group past it, so a regression fails the test instead of hanging the suite. No TensorFlow here.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 120           # seconds; a round below takes well under one
BIG = 4 << 20            # bytes in one result: far more than a pipe holds (64 KiB on Linux)
ROUNDS = 20              # Pool.terminate() hung in about 1 round in 5 to 10 of these


def run_child(code, deadline=DEADLINE, interrupt_after_line=None):
    """Run `code` in a fresh interpreter (its own process group) -> (status, stdout, stderr).

    With interrupt_after_line, the whole group gets SIGINT, as Ctrl-C in a terminal sends it, once
    the child has printed that line. Past the deadline the group is killed and the test fails.
    """
    child = subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        if interrupt_after_line is not None:
            for line in child.stdout:
                if line.strip() == interrupt_after_line:
                    os.killpg(child.pid, signal.SIGINT)
                    break
        out, err = child.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        pytest.fail('still running after %d s: stopping the workers hung' % deadline)
    return child.returncode, out, err


def test_results_come_in_order_for_any_number_of_workers():
    lengths = list(range(1, 700))                 # many chunks, uneven work
    for count in (1, 2, 3):
        workers = images.Workers(count)
        try:
            assert list(workers.map(bytes, lengths)) == [bytes(n) for n in lengths]
            assert list(workers.map(len, ['ab', 'c'])) == [2, 1]    # the same workers again
        finally:
            workers.close()


def test_a_failing_function_raises_its_error_in_this_process():
    workers = images.Workers(2)
    try:
        with pytest.raises(TypeError):
            list(workers.map(bytes, [1, 2, 'not a length', 4]))
    finally:
        workers.close()


def test_closing_while_results_are_in_flight_never_hangs():
    """The interrupted conversion (test_convert_tfrecord's KeyboardInterrupt after 5 records):
    the consumer stops while workers are still sending big results, and close() must return at
    once, every time, leaving no process behind. multiprocessing.Pool.terminate() hung here: it
    kills workers that may be holding its shared result queue's lock or be half-way through a
    result, and then its own threads wait on that queue forever."""
    status, out, err = run_child('''
        import multiprocessing, images
        for round in range(%d):
            workers = images.Workers(2)
            try:
                for index, result in enumerate(workers.map(bytes, [%d] * 200)):
                    if index == 5:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                pass
            finally:
                workers.close()
            print(round, len(multiprocessing.active_children()), flush=True)
        ''' % (ROUNDS, BIG))
    assert status == 0, err
    assert out.split() == [str(n) for r in range(ROUNDS) for n in (r, 0)]


def test_ctrl_c_stops_the_workers_quietly():
    """Ctrl-C reaches every process of the terminal's group: the workers leave it to this process,
    which stops them; no worker prints a traceback or 'Process ...' line of its own."""
    status, out, err = run_child('''
        import sys, images
        workers = images.Workers(2)
        try:
            for index, result in enumerate(workers.map(bytes, [%d] * 100000)):
                if index == 3:
                    print('working', flush=True)
        except KeyboardInterrupt:
            print('interrupted', file=sys.stderr)
        finally:
            workers.close()
        ''' % BIG, interrupt_after_line='working')
    assert status == 0
    assert err.strip() == 'interrupted', err


def test_a_worker_that_dies_is_an_error_naming_its_files():
    """A worker killed in the middle of its files (the kernel's out-of-memory killer, a decoder
    that crashes) is a one-line error, not a wait for results that will never come."""
    status, out, err = run_child('''
        import os, images
        workers = images.Workers(2)
        try:
            list(workers.map(os._exit, [7] * 40))
        except images.WorkerError as error:
            print(error)
        finally:
            workers.close()
        ''')
    assert status == 0, err
    assert out.startswith('an image worker process stopped (exit code 7) while reading 7, 7, 7'), out
    assert issubclass(images.WorkerError, images.UserError)
