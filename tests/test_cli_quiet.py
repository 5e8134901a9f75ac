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
    # --verbose leaves TensorFlow's own logs alone; which notices it prints depends on the CPU (oneDNN's
    # only on some), so only what the command controls is asserted: its error is still the last line.
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert verbose.returncode == 2
    assert verbose.stderr.strip().splitlines()[-1] == f"mmder-export: error: {tmp_path / 'none.weights.h5'}: no such weights file"


def test_quiet_switch_is_what_the_commands_control(monkeypatch):
    import logging

    import tensorflow as tf

    from mmder_tf.cli import QUIET_ENV, quiet_tensorflow

    monkeypatch.delenv(QUIET_ENV, raising=False)
    monkeypatch.setattr(tf.get_logger(), "level", logging.INFO)
    quiet_tensorflow(verbose=True)  # on request: nothing changed
    assert QUIET_ENV not in os.environ and tf.get_logger().level == logging.INFO
    quiet_tensorflow()
    assert os.environ[QUIET_ENV] == "1" and tf.get_logger().level == logging.ERROR


def test_pretrain_keeps_tensorflow_quiet(tmp_path):
    """mmder-pretrain starts TensorFlow before it reads --weights (it printed TensorFlow's start-up logs)."""
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    command = [sys.executable, "-m", "mmder_tf.pretrain", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"),
               "--weights", str(tmp_path / "bad.pth"), "--preset", "tiny", "--image-size", "32", "--verbose", "0"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("mmder-pretrain: error: "), done.stderr
