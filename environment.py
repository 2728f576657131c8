"""Loading TensorFlow: its environment, and its start-up chatter kept out of the console.

Each command line parses its flags first (so --help and flag errors answer at once), then calls
load_tensorflow(), its import boundary, and only then imports the modules that import
TensorFlow at their top.

TensorFlow reads its environment when it loads, and prints lines of its own while it starts:
absl's preamble, CUDA probing on a machine without a GPU, CPU-feature notices, and deprecation
warnings of the tf.compat.v1 APIs this project uses on purpose. With TF_CPP_MIN_LOG_LEVEL left at
its default here (2), those known lines are dropped and anything else it prints still shows;
TF_CPP_MIN_LOG_LEVEL=0 (or 1) in the environment shows everything.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile

# Lines TensorFlow prints while it starts that say nothing to a user of this project.
NOISE = re.compile(
    r'All log messages before absl::InitializeLog\(\) is called|cudart_stub\.cc|'
    r'Could not find cuda drivers|failed call to cuInit|cuda_platform\.cc|cpu_feature_guard\.cc|'
    r'To enable the following instructions|rebuild TensorFlow with the appropriate compiler|'
    r'oneDNN custom operations are on|TF_ENABLE_ONEDNN_OPTS=0|Unable to register cu(DNN|FFT|BLAS)'
    r'|computation placer already registered|TF-TRT Warning')


def verbose():
    """True when the user asked for TensorFlow's own logging (TF_CPP_MIN_LOG_LEVEL 0 or 1)."""
    return os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2') in ('0', '1')


def prepare_tensorflow():
    """Defaults that must be set before TensorFlow is imported; the user's environment wins.

    TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ info and warning logs stay out of the console.
    TF_ENABLE_ONEDNN_OPTS=1: oneDNN kernels. TensorFlow enables them by default only on CPUs with
    AVX-512 VNNI or newer; on AVX2 machines they run the head step about 2x and the conv layers
    about 1.2x faster than Eigen's (benchmarks/bench_fineturn.py measures both)."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


@contextlib.contextmanager
def filtered_stderr():
    """Capture what is written to file descriptor 2 (C++ code included) inside the block, then
    write back every line that is not known start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode('utf-8', 'replace').splitlines()
                    if line.strip() and not NOISE.search(line)]
            if kept:
                print('\n'.join(kept), file=sys.stderr, flush=True)


class _NoDeprecations(logging.Filter):
    def filter(self, record):
        return 'is deprecated and will be removed' not in record.getMessage()


def load_tensorflow():
    """The import boundary: set the environment, import TensorFlow and let it probe its devices
    (where it prints most of its start-up lines), keeping the known noise out of the console."""
    prepare_tensorflow()
    with contextlib.nullcontext() if verbose() else filtered_stderr():
        import tensorflow as tf
        tf.config.list_physical_devices()
    logger = tf.get_logger()
    if not verbose() and not any(isinstance(f, _NoDeprecations) for f in logger.filters):
        logger.addFilter(_NoDeprecations())
    return tf
