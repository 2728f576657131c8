"""A process that fills a feature store, for test_feature_store's concurrency and kill tests.

    python tests/store_worker.py STORE IMAGES GO_FILE fill|pause

Waits until GO_FILE exists (so that several workers start together), then loads the features of
IMAGES generated images with a numpy stand-in for the network, and prints its counts and a digest
of what it read as one JSON line. `pause` stops the first entry write half way, creates
GO_FILE + '.paused' and sleeps, for the test to kill it there.
"""
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import feature_store  # noqa: E402

LAYER_SHAPE = (3, 4, 5)
VARIANTS = (0, 1, 2, 3)
BATCH = 8                   # images claimed at a time: small, so that workers interleave


def key():
    return feature_store.FeatureKey('weights-digest', (104.0, 117.0, 123.0), {'net': 'tiny'},
                                    'pool5', VARIANTS, LAYER_SHAPE)


def digests(count):
    return [feature_store.image_digest(b'image %d' % i) for i in range(count)]


def features_of(digest):
    """What the stand-in network computes for an image: a function of the image alone."""
    rng = np.random.default_rng(int(digest[:12], 16))
    return rng.normal(size=(len(VARIANTS),) + LAYER_SHAPE).astype(np.float32)


def extractor(names, calls=None, batch=5, delay=0.0):
    """extract(positions) for FeatureStore.fill: batches of features_of, `delay` s per image;
    the positions asked for are appended to `calls`."""
    def extract(positions):
        if calls is not None:
            calls.extend(positions)
        for start in range(0, len(positions), batch):
            part = positions[start:start + batch]
            time.sleep(delay * len(part))
            yield np.stack([features_of(names[p]) for p in part])
    return extract


def main(root, count, go, mode):
    while not os.path.exists(go):
        time.sleep(0.001)
    store = feature_store.FeatureStore(root, key(), log=lambda message: None)
    if mode == 'pause':
        def half_then_stop(f, head, payload):
            f.write(head)
            f.write(payload[:len(payload) // 2])
            f.flush()
            with open(go + '.paused', 'w'):
                pass
            time.sleep(120)
        feature_store._write_entry = half_then_stop
    names = digests(count)
    features = store.load(names, extractor(names, delay=0.003), batch=BATCH)
    print(json.dumps({'counts': dict(store.counts),
                      'features': hashlib.sha256(features.tobytes()).hexdigest()}))


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
