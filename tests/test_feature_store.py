"""The feature store: computed once, checked before use, shared safely by concurrent processes."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import feature_store
from fault_injection import flip_byte, temporary_files
from store_worker import LAYER_SHAPE, VARIANTS, digests, extractor, features_of, key

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'store_worker.py')


def expected(names):
    return np.stack([features_of(name) for name in names])


def open_store(root, messages=None):
    return feature_store.FeatureStore(str(root), key(), log=(messages.append if messages
                                                             is not None else print))


def entries(root):
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                  for name in names if name.endswith(feature_store.SUFFIX)
                  and not name.startswith('.'))


def test_computed_once_then_reused_across_splits_and_runs(tmp_path):
    names = digests(30)
    calls = []
    store = open_store(tmp_path)
    assert store.missing(names) == names
    pool = store.load(names, extractor(names, calls))
    np.testing.assert_array_equal(pool, expected(names))
    assert sorted(calls) == list(range(30)) and store.counts['extracted'] == 30
    assert store.counts['written'] == 30 and len(entries(tmp_path)) == 30
    assert store.missing(names) == []

    # split 2, or a later run: another store object on the same key computes nothing ...
    again = open_store(tmp_path)
    calls.clear()
    np.testing.assert_array_equal(again.load(names[::-1], extractor(names[::-1], calls)),
                                  expected(names[::-1]))
    assert calls == [] and again.counts['extracted'] == 0 and again.counts['read'] == 30
    assert again.summary(30).startswith('features of 30 images: 30 reused from ')
    # a job that computed entries another job stored first says so: the time was not free
    again.counts.update(extracted=5, discarded=5)
    assert again.summary(30).endswith(', 0 computed (5 computed here too and discarded: another '
                                      'job stored them first)')
    # ... a split indexes the pool by positions: no copy of the features per split
    train = np.array([3, 1, 4])
    np.testing.assert_array_equal(pool[train], expected([names[i] for i in train]))

    # another layer is another key: computed again, in its own folder
    other = feature_store.FeatureStore(str(tmp_path), feature_store.FeatureKey(
        'weights-digest', (104.0, 117.0, 123.0), {'net': 'tiny'}, 'fc7', VARIANTS, LAYER_SHAPE),
        log=print)
    other.load(names, extractor(names, calls))
    assert sorted(calls) == list(range(30)) and len(entries(tmp_path)) == 60


def test_missing_fills_only_what_is_missing_and_duplicates_once(tmp_path):
    names = digests(12)
    store = open_store(tmp_path)
    store.fill(names[:5], extractor(names[:5]))
    assert store.missing(names) == names[5:]
    asked = names + names[:3] + [names[7]]           # the same image twice in a pool
    calls = []
    got = store.load(asked, extractor(asked, calls))
    assert sorted(asked[p] for p in calls) == sorted(names[5:])
    np.testing.assert_array_equal(got, expected(asked))
    progress = []
    store.fill(digests(14), extractor(digests(14)), progress.append)
    assert sum(progress) == 2


def test_the_key_follows_everything_the_features_depend_on(monkeypatch):
    base = dict(weights_digest='w1', mean=(104, 117, 123), structure={'layers': [1]},
                layer='pool5', variants=(0, 1, 2, 3), shape=(6, 6, 256))
    same = feature_store.FeatureKey(**base).hex
    assert feature_store.FeatureKey(**base).hex == same
    for name, value in (('weights_digest', 'w2'), ('mean', (104, 117, 124)),
                        ('mean', np.zeros((256, 256, 3))), ('structure', {'layers': [2]}),
                        ('layer', 'fc7'), ('variants', (0,))):
        assert feature_store.FeatureKey(**dict(base, **{name: value})).hex != same, name
    monkeypatch.setattr(feature_store, 'PREPROCESSING', feature_store.PREPROCESSING + 1)
    assert feature_store.FeatureKey(**base).hex != same
    assert feature_store.FeatureKey(**base).shape == (4, 6, 6, 256)


def test_damaged_entries_are_found_deleted_and_computed_again(tmp_path):
    names = digests(8)
    store = open_store(tmp_path)
    store.load(names, extractor(names))
    size = key().entry_bytes
    os.truncate(store.entry(names[1]), size - 7)                     # torn
    flip_byte(store.entry(names[2]), size - 5)                       # a flipped data byte
    flip_byte(store.entry(names[3]), len(feature_store.MAGIC) + 4)   # a flipped header byte
    with open(store.entry(names[4]), 'ab') as f:                     # too long
        f.write(b'x')
    messages, calls = [], []
    again = open_store(tmp_path, messages)
    got = again.load(names, extractor(names, calls))
    np.testing.assert_array_equal(got, expected(names))
    assert sorted(calls) == [1, 2, 3, 4]
    assert again.counts['damaged'] == 4 and again.counts['written'] == 4
    text = '\n'.join(messages)
    for reason in ('truncated: %d bytes, expected %d' % (size - 7, size), 'checksum mismatch',
                   'header checksum mismatch', 'too long'):
        assert 'is damaged (%s' % reason in text
    assert 'computing it again' in text
    assert open_store(tmp_path).read(names)[1] == {}                 # all intact now


def test_an_entry_of_another_key_or_image_is_not_used(tmp_path):
    names = digests(3)
    store = open_store(tmp_path)
    store.load(names, extractor(names))
    os.replace(store.entry(names[0]), store.entry(names[1]))        # image 0's under 1's name
    _, problems = open_store(tmp_path).read(names)
    assert problems == {names[0]: 'missing',
                        names[1]: 'written for key %s, image %s' % (key().hex, names[0])}


def test_a_killed_writer_leaves_no_temporary_file(tmp_path):
    go = str(tmp_path / 'go')
    root = tmp_path / 'store'
    worker = subprocess.Popen([sys.executable, WORKER, str(root), '6', go, 'pause'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        open(go, 'w').close()
        deadline = time.time() + 60
        while not os.path.exists(go + '.paused'):
            assert worker.poll() is None, worker.communicate()
            assert time.time() < deadline
            time.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    left = temporary_files(str(root))
    assert len(left) == 1 and os.path.getsize(left[0]) < key().entry_bytes   # killed mid-write
    assert entries(root) == []                                  # nothing torn under a real name
    messages = []
    store = open_store(root, messages)
    names = digests(6)
    np.testing.assert_array_equal(store.load(names, extractor(names)), expected(names))
    assert temporary_files(str(root)) == []
    assert 'removed 1 temporary file(s) that interrupted writes left in' in messages[0]
    assert store.counts['stolen'] == 0          # the dead worker's claim died with it


def test_other_hosts_temporary_files_go_when_a_day_old(tmp_path):
    other = tmp_path / feature_store.TEMP_DIR / 'another-host'
    other.mkdir(parents=True)
    old, recent = other / '.aa.tmp-99999-x1.feat', other / '.bb.tmp-99999-x2.feat'
    for path in (old, recent):
        path.write_bytes(b'half an entry')
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    messages = []
    names = digests(2)
    open_store(tmp_path, messages).load(names, extractor(names))
    assert not old.exists() and recent.exists()   # a live writer elsewhere may own the recent one
    assert any('removed 1 temporary file(s) that interrupted writes on other machines' in m
               for m in messages)


def test_claimed_shards_are_computed_rather_than_waited_for(tmp_path):
    names = digests(20)
    holder = open_store(tmp_path)
    shards = sorted({name[:2] for name in names})
    held = [holder._claim(shard) for shard in shards]     # another job, stalled, holds them all
    assert all(claim is not None for claim in held)
    store = open_store(tmp_path)
    finished = []
    thread = threading.Thread(target=lambda: finished.append(
        store.load(names, extractor(names))), daemon=True)
    thread.start()
    thread.join(60)
    assert finished, 'fill waited for the claims of another process'
    np.testing.assert_array_equal(finished[0], expected(names))
    assert store.counts['stolen'] == 20
    for claim in held:
        claim.close()
    assert holder._claim(shards[0]) is not None


def test_three_processes_at_once_write_each_entry_once(tmp_path):
    count = 96
    go = str(tmp_path / 'go')
    root = tmp_path / 'store'
    workers = [subprocess.Popen([sys.executable, WORKER, str(root), str(count), go, 'fill'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    time.sleep(1.0)                      # let them import numpy and wait at the start line
    open(go, 'w').close()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        results.append(json.loads(out))
    counts = [result['counts'] for result in results]
    # every entry ends whole, written once, with what a sequential run computes
    assert sum(c.get('written', 0) for c in counts) == count
    assert sum(c.get('extracted', 0) for c in counts) == \
        count + sum(c.get('discarded', 0) for c in counts)
    names = digests(count)
    assert len(entries(root)) == count
    sequential = open_store(tmp_path / 'sequential').load(names, extractor(names))
    np.testing.assert_array_equal(open_store(root).read(names)[0], sequential)
    digest = __import__('hashlib').sha256(sequential.tobytes()).hexdigest()
    assert [result['features'] for result in results] == [digest] * 3
    assert temporary_files(str(root)) == []
    # the claims spread the work: far less than each process computing every image
    assert sum(c.get('extracted', 0) for c in counts) < 2 * count, counts


def test_pool_array_in_memory_or_memory_mapped(tmp_path):
    small = feature_store.pool_array(10, (4, 3), ram_gb=1)
    assert not isinstance(small, np.memmap) and small.shape == (10, 4, 3)
    big = feature_store.pool_array(10, (4, 3), ram_gb=0, scratch_dir=str(tmp_path))
    assert isinstance(big, np.memmap) and big.shape == (10, 4, 3)
    big[:] = 1.5
    assert float(big.sum()) == 180.0
    assert os.listdir(tmp_path) == []            # the scratch file is already deleted
    names = digests(10)
    store = open_store(tmp_path / 'store')
    got = store.load(names, extractor(names), out=feature_store.pool_array(
        10, key().shape, ram_gb=0, scratch_dir=str(tmp_path)))
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, expected(names))


def test_a_wrong_extractor_is_a_bug_not_an_entry(tmp_path):
    names = digests(4)
    store = open_store(tmp_path)
    with pytest.raises(ValueError, match='expected 4'):
        store.fill(names, lambda positions: iter([expected(names[:3])]))
    with pytest.raises(ValueError, match=r'expected \[n, 4, 3, 4, 5\]'):
        store.fill(names, lambda positions: iter([np.zeros((4, 2))]))
    assert temporary_files(str(tmp_path)) == []


def test_a_disk_that_keeps_damaging_entries_is_one_line(tmp_path, monkeypatch):
    def damaging(f, head, payload):
        f.write(head)
        f.write(bytes(memoryview(payload).cast('B'))[::-1])     # the right size, wrong bytes
    monkeypatch.setattr(feature_store, '_write_entry', damaging)
    names = digests(2)
    messages = []
    store = open_store(tmp_path, messages)
    with pytest.raises(feature_store.DamagedEntryError,
                       match=r'^feature store entries .* fail their checks after being computed '
                             r'again: check the disk of '):
        store.load(names, extractor(names))
    assert store.counts['extracted'] == 6 and store.counts['damaged'] == 4
