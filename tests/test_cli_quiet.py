"""Command lines print only their own output: TensorFlow's start-up logs are dropped unless --verbose."""
import os
import subprocess
import sys

from conftest import REPO

ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
ENV["PYTHONPATH"] = str(REPO)
# A run folder that is not one: the command fails with its own error only, after TensorFlow loaded.
COMMAND = [sys.executable, "-m", "mmder_tf.evaluate", "--run", "/nonexistent/run"]


def test_cli_stderr_holds_only_its_own_error():
    quiet = subprocess.run(COMMAND, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        "mmder-evaluate: error: /nonexistent/run: not a training run (no run.json)"], quiet.stderr
    verbose = subprocess.run(COMMAND + ["--verbose"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert verbose.returncode == 2 and "oneDNN" in verbose.stderr  # TensorFlow's own notice, on request
