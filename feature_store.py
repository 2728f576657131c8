"""The feature store: frozen features computed once per image, shared by runs and processes.

With the layers below a boundary frozen, an image's features there (pool5 for fc6-fc8, fc7 for
the SVM) are a function of the weights, the mean, the network's structure, the layer, the flip
variant and the image alone. The store keeps them under a key of exactly those, so every split of
a protocol, every later run on the same images and weights, and every job of a cluster array job
on a shared file system computes an image's features once.

    STORE/
      <key>/                      one FeatureKey: digest of the weights file's digest, the mean's
                                  bytes, the structure's JSON, the layer, the variants and
                                  PREPROCESSING
        key.json                  what the key is made of, for people (each entry names its key)
        <ab>/                     a shard: the entries of the images whose digest starts with ab
          <image digest>.feat     an entry: one image's features for every variant of the key
          .lock                   the shard's write lock, held for one check and one rename
          .claim                  the shard's claim, held while a process computes its images
      .tmp/<host>/                entries being written by processes on <host>

An image is named by image_digest, the digest of its record's encoded bytes: the same pixels in
another records folder share the entry, changed pixels never do.

**Entries hold every variant of the key.** Extraction produces an image's flip variants together,
and across a protocol every image is a training image in some split, so every variant of every
image is needed: one file per image is one write, one lock, one rename and one checksum per image,
and 4x fewer files than one per variant (metadata operations are what shared file systems are
slowest at). The variants are part of the key, so a --no-flip run (variant 0 only) has its own
entries rather than half-filled ones.

**An entry is checked before every use**: magic, the header's own crc32, key, image, shape,
dtype, size and the data's crc32 (header, header_problem, checksum). An entry that fails is
deleted, reported (a warning), counted and computed again.

**Concurrency.** Many processes may fill one store at once; none ever sees a torn entry or writes
a duplicate one, and none waits longer than one entry's write:
- a process computes features outside any lock and writes each entry whole to a temporary file
  (its host's .tmp folder). Then, holding the shard's lock (fcntl.flock, which the kernel releases
  if the holder dies), it checks whether an intact entry is already there: if so it drops its copy
  (counted as `discarded`), else it renames its file into place. An entry therefore appears whole,
  by one rename, and at most once; the lock is held for that check and rename only;
- claims keep concurrent jobs on different images: a process computes a shard only after taking
  the shard's claim (a non-blocking flock on .claim) and passes over shards others hold. When
  every shard left is held by others it computes some of them too (`stolen`) instead of waiting:
  the lock above keeps one copy. Claims die with their holder, so a killed job's shards are free
  at once (on NFS, when its lease expires);
- a killed writer leaves at most a temporary file in its host's .tmp folder; the next store on
  that host removes those whose process is gone (atomicfile.remove_orphans), and any store removes
  other hosts' temporary files a day old.
flock works across machines on NFS (Linux maps it to NFS byte-range locks) and on Lustre mounted
with -o flock. On a system without fcntl (Windows) nothing is locked: entries are still whole
(rename), but two processes may both write one.

Nothing deletes a key's entries but damage: the store grows with every new key, and deleting
STORE/<key>/ (its key.json says what it holds) frees that key's space.

**Reading** fills one array (in memory, or a memory-mapped scratch file above a size: pool_array)
with the features of a list of images in one pass. A protocol reads its pool once and indexes it
per split by positions (splits.Split.positions): no copy per split.

No TensorFlow here: the extractor is a callback.
"""
import collections
import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
import zlib

import numpy as np

from atomicfile import atomic_path, atomic_write, remove_orphans, temporary_writer, writing
from errors import UserError
from outputdir import held

try:
    import fcntl
except ImportError:                       # Windows: no flock, so no locks nor claims
    fcntl = None

# Bump when what reaches the network for a given image changes (alexnet.preprocess_tensor, the
# order of flips and mean): stored features then belong to an older key and are never reused.
PREPROCESSING = 1
CHUNK = 1 << 20
DTYPE = np.dtype('<f4')
MAGIC = b'fineturn feature store entry v1\n'
HEADER_SIZE = 512
SUFFIX = '.feat'
KEY_FILE = 'key.json'
LOCK_FILE, CLAIM_FILE = '.lock', '.claim'
TEMP_DIR = '.tmp'
BATCH = 256                    # images a process claims and computes at a time
ORPHAN_AGE = 24 * 3600         # another host's temporary file this old has no live writer


# --- checked files: a header with its own checksum, then data under a crc32 ----------------------

def header(magic, fields, size):
    """A checked file's header: `magic`, the JSON line of `fields`, that line's crc32 in hex,
    padded with spaces to `size` bytes."""
    text = json.dumps(fields, sort_keys=True).encode()
    block = magic + text + b'\n' + b'%08x\n' % zlib.crc32(text)
    if len(block) > size:
        raise ValueError('checked file header of %d bytes' % len(block))
    return block.ljust(size, b' ')


def read_header(f, magic, size, what):
    """The fields of the header at the start of the open file `f`, or why it is unusable."""
    block = f.read(size)
    if not block.startswith(magic):
        return 'not a %s' % what if len(block) >= len(magic) else 'truncated header'
    lines = block[len(magic):].split(b'\n')
    if len(lines) < 3 or b'%08x' % zlib.crc32(lines[0]) != lines[1]:
        return 'header checksum mismatch'
    return json.loads(lines[0])


def header_problem(fields, expected, shape, size, expected_size):
    """Why a checked file of `size` bytes whose header holds `fields` (or read_header's reason)
    is not the one of `expected` fields, features `shape` and `expected_size` bytes; or None."""
    if isinstance(fields, str):
        return fields
    if any(fields.get(name) != value for name, value in expected.items()):
        return 'written for %s' % ', '.join('%s %s' % (name, fields.get(name))
                                            for name in expected)
    if tuple(fields.get('shape', ())) != tuple(shape) or fields.get('dtype') != DTYPE.str:
        return 'holds %s %s, expected %s %s' % (fields.get('dtype'), fields.get('shape'),
                                                DTYPE.str, list(shape))
    if size != expected_size:
        return '%s: %d bytes, expected %d' % ('truncated' if size < expected_size else 'too long',
                                              size, expected_size)
    return None


def checksum(f, size, crc, into=None):
    """Continue `crc` over the next `size` bytes of `f`, read into the bytes of array `into` if
    given; EOFError if the file ends first."""
    target = memoryview(into).cast('B') if into is not None else None
    buffer = memoryview(bytearray(min(CHUNK, size))) if into is None else None
    done = 0
    while done < size:
        part = min(CHUNK, size - done)
        view = target[done:done + part] if target is not None else buffer[:part]
        if f.readinto(view) != part:
            raise EOFError
        crc = zlib.crc32(view, crc)
        done += part
    return crc


def file_digest(path, digest=None):
    """blake2b (16 bytes unless `digest` is given to continue) of a file's contents."""
    digest = digest or hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK), b''):
            digest.update(block)
    return digest


# --- keys ----------------------------------------------------------------------------------------

def image_digest(encoded):
    """The name of an image in the store: a hex digest of its record's encoded bytes."""
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


class FeatureKey:
    """What an image's features depend on besides the image: the weights the frozen layers come
    from (frozen_features.frozen_source_digest), the mean (3 BGR values or a mean image), the
    network's structure (netspec.Structure.to_dict()), the layer whose output is stored, the
    flip variants, and PREPROCESSING. `shape` is the layer's output shape; an entry holds
    (len(variants), *shape) float32."""

    def __init__(self, weights_digest, mean, structure, layer, variants, shape):
        mean = np.ascontiguousarray(mean, DTYPE)
        self.shape = (len(variants),) + tuple(int(n) for n in shape)
        self.description = {
            'weights': weights_digest,
            'mean': {'shape': list(mean.shape),
                     'blake2b': hashlib.blake2b(mean.tobytes(), digest_size=16).hexdigest(),
                     **({'values': mean.tolist()} if mean.size <= 3 else {})},
            'structure': structure, 'layer': layer, 'variants': [int(v) for v in variants],
            'shape': list(self.shape), 'dtype': DTYPE.str, 'preprocessing': PREPROCESSING}
        self.hex = hashlib.blake2b(json.dumps(self.description, sort_keys=True).encode(),
                                   digest_size=16).hexdigest()

    @property
    def entry_bytes(self):
        return HEADER_SIZE + int(np.prod(self.shape)) * DTYPE.itemsize


class DamagedEntryError(UserError):
    """An entry that still fails its checks after being computed again: a failing disk."""


def pool_array(rows, shape, ram_gb, scratch_dir=None):
    """An array for `rows` entries of `shape`: in memory if it takes at most `ram_gb`, else a
    memory map of a scratch file in `scratch_dir`, deleted at once (its space is freed when the
    array goes, and a killed process leaves nothing behind)."""
    shape = (rows,) + tuple(shape)
    if int(np.prod(shape)) * DTYPE.itemsize <= ram_gb * (1 << 30):
        return np.empty(shape, DTYPE)
    with tempfile.TemporaryFile(dir=scratch_dir) as scratch:
        return np.memmap(scratch, DTYPE, 'w+', shape=shape)


def _host():
    name = socket.gethostname() or 'host'
    return ''.join(c if c.isalnum() or c in '.-_' else '_' for c in name)


def _write_entry(f, head, payload):
    """Write an entry's bytes to the open file `f` (a function of its own, so that a test can
    stop a writer half way)."""
    f.write(head)
    f.write(payload)


# --- the store -----------------------------------------------------------------------------------

class FeatureStore:
    """The entries of one FeatureKey in the store at `root`.

    missing(digests) says which images have no entry; fill(digests, extract) computes those;
    read(digests) returns their features as one array; load(digests, extract) does all three and
    recomputes damaged entries. `counts` counts what this object did: extracted (images
    computed), written (entries put in place), discarded (computed, but another process's entry
    came first), stolen (computed although another process had claimed them), damaged (entries
    that failed a check and were deleted), read (entries read). `log` takes the lines that say
    what the store did, `warn` (by default log, with 'warning: ') those about damage."""

    def __init__(self, root, key, log=print, warn=None):
        self.root, self.key, self.log = root, key, log
        self.warn = warn or (lambda message: log('warning: ' + message))
        self.folder = os.path.join(root, key.hex)
        self.counts = collections.Counter()
        self._temp_dir = None

    def entry(self, digest):
        return os.path.join(self.folder, digest[:2], digest + SUFFIX)

    def missing(self, digests):
        """The digests among `digests` that have no entry, once each, in order."""
        return [digest for digest in dict.fromkeys(digests)
                if not os.path.exists(self.entry(digest))]

    # -- computing -----------------------------------------------------------------------------
    def fill(self, digests, extract, progress=None, batch=BATCH):
        """Compute the missing entries of `digests`. `extract(positions)` yields float32 arrays
        [n, *key.shape] holding, in order, the features of the images at those positions of
        `digests`; `progress(n)` is called as entries are done. Returns the images computed."""
        first = {}
        for position, digest in enumerate(digests):
            first.setdefault(digest, position)
        todo = collections.defaultdict(list)
        for digest in self.missing(digests):
            todo[digest[:2]].append(digest)
        computed = 0
        while todo:
            with contextlib.ExitStack() as claims:
                picked = self._pick(todo, batch, claims)
                if picked:
                    self._compute(picked, first, extract, progress)
                    computed += len(picked)
        return computed

    def _pick(self, todo, batch, claims):
        """Take up to about `batch` images off `todo` ({shard: [digests]}) to compute: those of
        shards this process claims (each claim entered into the ExitStack `claims`), else, when
        others hold every shard left, some of theirs (never waiting for them)."""
        picked = []
        for shard in sorted(todo):
            if len(picked) >= batch:
                break
            claim = self._claim(shard)
            if claim is not None:
                claims.enter_context(claim)
                picked += self.missing(todo.pop(shard))
        if not picked:
            for shard in sorted(todo):
                if len(picked) >= batch:
                    break
                stolen = self.missing(todo.pop(shard))
                self.counts['stolen'] += len(stolen)
                picked += stolen
        return picked

    def _compute(self, picked, first, extract, progress):
        positions = sorted(first[digest] for digest in picked)
        digest_at = {first[digest]: digest for digest in picked}
        done = 0
        for features in extract(positions):
            features = np.asarray(features, DTYPE)
            if features.shape[1:] != self.key.shape or done + len(features) > len(positions):
                raise ValueError('the extractor gave features %s after %d of %d images, expected '
                                 '[n, %s]' % (features.shape, done, len(positions),
                                              ', '.join(map(str, self.key.shape))))
            for row in features:
                self._write(digest_at[positions[done]], row)
                done += 1
            self.counts['extracted'] += len(features)
            if progress is not None:
                progress(len(features))
        if done != len(positions):
            raise ValueError('the extractor gave the features of %d images, expected %d'
                             % (done, len(positions)))

    def _write(self, digest, features):
        """Put an entry for `digest` in place, unless an intact one is there already."""
        path = self.entry(digest)
        payload = np.ascontiguousarray(features, DTYPE)
        head = header(MAGIC, {'key': self.key.hex, 'image': digest, 'shape': list(self.key.shape),
                              'dtype': DTYPE.str, 'crc32': zlib.crc32(payload)}, HEADER_SIZE)
        with writing(path, 'a feature store entry', needed=self.key.entry_bytes), \
                atomic_path(path, directory=self._temporaries(), place=self._place) as temporary:
            with open(temporary, 'wb') as f:
                _write_entry(f, head, payload)

    def _place(self, temporary, path):
        """Rename the written entry `temporary` to `path`, unless an intact entry is there
        already (then atomic_path deletes it)."""
        with self._locked(os.path.dirname(path)):
            if self._check(path) is None:
                self.counts['discarded'] += 1
            else:
                os.replace(temporary, path)
                self.counts['written'] += 1

    def _temporaries(self):
        """This host's folder of temporary entries, cleared of what dead writers left (once per
        store object): this host's by their process, other hosts' by age."""
        if self._temp_dir is None:
            parent = os.path.join(self.root, TEMP_DIR)
            folder = os.path.join(parent, _host())
            os.makedirs(folder, exist_ok=True)
            os.makedirs(self.folder, exist_ok=True)
            if not os.path.exists(os.path.join(self.folder, KEY_FILE)):
                atomic_write(os.path.join(self.folder, KEY_FILE),
                             lambda f: json.dump(self.key.description, f, indent=1),
                             what='the feature store key', directory=folder)
            remove_orphans(folder, log=self.log)
            self._remove_old(parent, folder)
            self._temp_dir = folder
        return self._temp_dir

    def _remove_old(self, parent, mine):
        old, count = time.time() - ORPHAN_AGE, 0
        for host in os.listdir(parent):
            folder = os.path.join(parent, host)
            if folder == mine or not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                try:
                    if temporary_writer(name)[0] and os.path.getmtime(path) < old:
                        os.remove(path)
                        count += 1
                except FileNotFoundError:          # its host's own cleanup came first
                    pass
        if count:
            self.log('removed %d temporary file(s) that interrupted writes on other machines '
                     'left in %s' % (count, parent))

    def _locked(self, shard_dir):
        """The shard's write lock, waited for: its holders hold it for one check and rename."""
        with writing(shard_dir, 'the feature store'):
            os.makedirs(shard_dir, exist_ok=True)
        return held(os.path.join(shard_dir, LOCK_FILE))

    def _claim(self, shard):
        """The shard's claim, an open file (closing it gives the claim back), or None if another
        process holds it."""
        shard_dir = os.path.join(self.folder, shard)
        with writing(shard_dir, 'the feature store'):
            os.makedirs(shard_dir, exist_ok=True)
            handle = os.open(os.path.join(shard_dir, CLAIM_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                return None
        return os.fdopen(handle, 'rb')

    # -- reading -------------------------------------------------------------------------------
    def _check(self, path, into=None):
        """None if `path` is an intact entry of this key (its features read into `into` if
        given), else why not ('missing' if there is none)."""
        digest = os.path.basename(path)[:-len(SUFFIX)]
        try:
            f = open(path, 'rb')
        except FileNotFoundError:
            return 'missing'
        with f:
            fields = read_header(f, MAGIC, HEADER_SIZE, 'feature store entry')
            problem = header_problem(fields, {'key': self.key.hex, 'image': digest},
                                     self.key.shape, os.fstat(f.fileno()).st_size,
                                     self.key.entry_bytes)
            if problem is not None:
                return problem
            try:
                crc = checksum(f, self.key.entry_bytes - HEADER_SIZE, 0, into)
            except EOFError:
                return 'truncated while reading'
        if crc != fields['crc32']:
            return 'checksum mismatch: %08x, expected %08x' % (crc, fields['crc32'])
        return None

    def read(self, digests, out=None, only=None):
        """(features, problems): the features of `digests` as one array [len(digests),
        *key.shape] (`out` if given, e.g. from pool_array), and {digest: why} for the images
        whose entry is missing or fails a check (their rows are left as they were). With `only`
        (digests), the rows of the others are left as they are too."""
        if out is None:
            out = np.empty((len(digests),) + self.key.shape, DTYPE)
        done, problems = {}, {}
        for row, digest in enumerate(digests):
            if only is not None and digest not in only:
                continue
            if digest in done:
                if digest not in problems:
                    out[row] = out[done[digest]]
                continue
            done[digest] = row
            problem = self._check(self.entry(digest), out[row])
            if problem is None:
                self.counts['read'] += 1
            else:
                problems[digest] = problem
        return out, problems

    def remove_damaged(self, digest, why):
        """Delete a damaged entry (unless another process has replaced it by an intact one
        meanwhile) and say so."""
        path = self.entry(digest)
        if why == 'missing':
            return
        with self._locked(os.path.dirname(path)):
            if self._check(path) not in (None, 'missing'):
                with writing(path, 'the feature store'):
                    os.remove(path)
                self.counts['damaged'] += 1
                self.warn('feature store entry %s is damaged (%s): computing it again'
                          % (path, why))

    def load(self, digests, extract, progress=None, out=None, batch=BATCH):
        """The features of `digests` (fill's arguments) as one array (`out` if given): missing
        entries computed, every entry checked as it is read, damaged ones deleted, logged and
        computed again."""
        self.fill(digests, extract, progress, batch)
        out, problems = self.read(digests, out)
        for _ in range(2):
            if not problems:
                return out
            for digest, why in problems.items():
                self.remove_damaged(digest, why)
            self.fill(digests, extract, progress, batch)      # the entries just deleted
            problems = self.read(digests, out, only=problems)[1]
        raise DamagedEntryError('feature store entries %s fail their checks after being computed '
                                'again: check the disk of %s'
                                % (', '.join(sorted(problems)[:3]), self.root))

    def summary(self, images):
        """One line for the log: how many of `images` were reused and computed."""
        computed = self.counts['extracted'] - self.counts['discarded']
        notes = []
        if self.counts['damaged']:
            notes.append('%d damaged entries recomputed' % self.counts['damaged'])
        if self.counts['discarded']:
            notes.append('%d computed here too and discarded: another job stored them first'
                         % self.counts['discarded'])
        return ('features of %d images: %d reused from %s, %d computed%s'
                % (images, images - computed, self.folder, computed,
                   ' (%s)' % '; '.join(notes) if notes else ''))
