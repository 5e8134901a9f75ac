"""Command lines print only their own output: TensorFlow's start-up logs are dropped unless --verbose."""
import os
import subprocess
import sys

from conftest import REPO

ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
ENV["PYTHONPATH"] = str(REPO)


def test_cli_stderr_holds_only_its_own_error(tmp_path):
    # Builds a model (TensorFlow and Keras start) before it finds the weights missing.
    command = [sys.executable, "-m", "mmder_tf.export", "--weights", str(tmp_path / "none.weights.h5"),
               "--preset", "tiny", "--class-names", "a,b", "--image-size", "32", "--output", str(tmp_path / "out")]
    quiet = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"mmder-export: error: {tmp_path / 'none.weights.h5'}: no such weights file"], quiet.stderr
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert verbose.returncode == 2 and "oneDNN" in verbose.stderr  # TensorFlow's own notice, on request
