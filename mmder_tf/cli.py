"""What every command line shares: TensorFlow's C++ start-up logs kept off the terminal unless asked for.

TensorFlow prints its oneDNN notice and absl's "All log messages before
absl::InitializeLog()" line from C++ while it is imported, before
TF_CPP_MIN_LOG_LEVEL is read, so the only way to keep them off a command's output
is to hold file descriptor 2 while TensorFlow loads. Any other line written then
(a real import error, say) is passed on.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import tempfile

# C++ start-up lines TensorFlow and absl print on every import (INFO/WARNING, never errors).
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard|cuda_\w+|gpu_device|util)\.cc:\d+\]"
    r"|To enable the following instructions:.*rebuild TensorFlow with the appropriate compiler flags\.)")


QUIET_ENV = "MMDER_QUIET_TENSORFLOW"


def quiet_in_workers():
    """In a worker process: as quiet as the command that started it."""
    if os.environ.get(QUIET_ENV) == "1":
        quiet_tensorflow()


def quiet_tensorflow(verbose: bool = False):
    """Import TensorFlow now with its C++ start-up logs dropped, and keep its later INFO/WARNING logs
    off, C++ (TF_CPP_MIN_LOG_LEVEL=2) and Python (tf.get_logger: retracing counts, AutoGraph
    fall-backs) alike; errors are still shown. verbose=True: change nothing."""
    if verbose:
        return
    os.environ[QUIET_ENV] = "1"  # worker processes (spawned, so they import TensorFlow again) follow
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _import_holding_stderr()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)


def _import_holding_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401 - imported for its side effect: loading the C++ runtime now
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line.strip() and not _STARTUP_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


def one_line_file_errors(prog: str):
    """Decorate a command's main(): a write refused by the disk (full, read-only, permission) ends the
    command with one line naming the device or file and exit status 1, never a traceback."""
    def wrap(main):
        @functools.wraps(main)
        def wrapped(*args, **kwargs):
            from mmder_tf.fileio import file_system_error

            try:
                return main(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - anything else is re-raised untouched
                message = file_system_error(error)
                if message is None:
                    raise
                print(f"{prog}: error: {message}", file=sys.stderr)
                return 1
        return wrapped
    return wrap
