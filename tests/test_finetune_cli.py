"""The finetune / evaluate CLIs end to end on a small generated dataset: bad arguments,
a corrupt clip, kill-and-resume, re-evaluation."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmder_tf import finetune

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 actors x 3 emotions x 1 clip, RAVDESS layout (generated, seeded)."""
    from mmder_tf.data import synthetic

    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, actors=4, clips_per_class=2, seed=3, size=64, seconds=1.2,
                       emotions=("01", "03", "05"))
    return root


@pytest.fixture(scope="module")
def cache(dataset, tmp_path_factory):
    from mmder_tf.config import FusionConfig
    from mmder_tf.data.datasets import load_manifest
    from mmder_tf.data.prepare import prepare

    out = tmp_path_factory.mktemp("cache")
    prepare(load_manifest("ravdess", data_dir=dataset), out, FusionConfig(strategy="fslf", image_size=32),
            progress=False)
    return out


def _base(dataset, out, cache=None):
    args = ["--dataset", "ravdess", "--data-dir", str(dataset), "--out", str(out), "--preset", "tiny",
            "--image-size", "32", "--batch-size", "4", "--verbose", "0", "--strategy", "fslf", "--workers", "1"]
    return args + (["--cache", str(cache)] if cache else [])


def _cli(args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mmder_tf.finetune", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=REPO)


# --------------------------------------------------------------------------- bad arguments: clear and early

def test_unknown_strategy_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.main(["--strategy", "xyz"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'xyz'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "ravdess"], "needs --data-dir"),
    (["--dataset", "cremad", "--data-dir", "/nonexistent/cremad"], "no such directory"),
    (["--dataset", "csv"], "needs --manifest"),
    (["--folds", "0"], "start at 1"),
    (["--folds", "a,b"], "comma-separated"),
    (["--epochs", "0"], "--epochs"),
    (["--weights", "/nonexistent.weights.h5"], "no such file"),
])
def test_bad_arguments_fail_before_work(argv, message, tmp_path, capsys):
    assert finetune.main(argv + ["--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_more_folds_than_subjects(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune.main(_base(dataset, out) + ["--num-folds", "9"]) == 2
    err = capsys.readouterr().err
    assert "9 folds but only 4 subjects" in err
    assert not (out / "cache").exists()  # nothing was prepared


def test_fold_number_beyond_protocol(dataset, tmp_path, capsys):
    assert finetune.main(_base(dataset, tmp_path / "run") + ["--num-folds", "2", "--folds", "3"]) == 2
    assert "only 2 folds" in capsys.readouterr().err


def test_weights_of_another_preset(dataset, tmp_path, capsys):
    import keras

    from mmder_tf.backbone import VideoMAEBackbone

    # A converted encoder of another size: .weights.h5 plus the sidecar config convert writes.
    backbone = VideoMAEBackbone(hidden_dim=96, depth=1, num_heads=2, num_frames=16, image_size=32)
    weights = tmp_path / "other.weights.h5"
    backbone.save_weights(str(weights))
    (tmp_path / "other.config.json").write_text(json.dumps(
        {"format": "mmder_tf", "model": keras.saving.serialize_keras_object(backbone)}))
    out = tmp_path / "run"
    assert finetune.main(_base(dataset, out) + ["--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "not preset 'tiny'" in err and "width 96" in err
    assert not (out / "cache").exists()


# --------------------------------------------------------------------------- a corrupt clip is reported, the run completes

def test_bad_clip_is_skipped_and_reported(dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = data / "Actor_02" / "01-01-03-02-02-02-02.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    out = tmp_path / "run"
    code = finetune.main(_base(data, out) + ["--mode", "linear_probe", "--epochs", "2", "--num-folds", "2",
                                             "--folds", "1", "--select", "last"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    skipped = results["skipped_clips"]
    assert any(entry["path"].endswith(bad.name) for entry in skipped), skipped
    assert "skipped clips" in (out / "results.md").read_text().lower()
    fold = results["folds"]["1"]
    bad_key = "Actor_02/" + bad.name
    with np.load(out / "fold_1" / "predictions.npz") as predictions:
        assert bad_key not in set(predictions["keys"])
        assert len(predictions["keys"]) == fold["n"]
    assert results["run"]["feature_cache"] is True
    assert fold["epoch_policy"].startswith("last")


# --------------------------------------------------------------------------- kill and resume

def _fold_predictions(out):
    with np.load(out / "fold_1" / "predictions.npz") as data:
        return data["keys"].copy(), data["logits"].copy()


def test_kill_after_first_epoch_and_resume_matches_uninterrupted(dataset, cache, tmp_path, capsys):
    args = ["--mode", "finetune", "--epochs", "2", "--num-folds", "2", "--folds", "1", "--lr", "1e-3"]
    reference = tmp_path / "reference"
    done = _cli(_base(dataset, reference, cache) + args)
    assert done.returncode == 0, done.stderr[-3000:]

    resumed = tmp_path / "resumed"
    process = subprocess.Popen([sys.executable, "-m", "mmder_tf.finetune", *_base(dataset, resumed, cache), *args],
                               env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metadata = resumed / "backup" / "fold_1" / "training_metadata.json"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        try:  # Keras writes the metadata in place: a read can catch it half-written
            if metadata.exists() and json.loads(metadata.read_text()).get("epoch", 0) >= 1:
                break
        except ValueError:
            pass
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (resumed / "fold_1" / "results.json").exists()

    again = _cli(_base(dataset, resumed, cache) + args)
    assert again.returncode == 0, again.stderr[-3000:]
    fold = json.loads((resumed / "fold_1" / "results.json").read_text())
    assert fold["resumed_from_epoch"] >= 1
    assert [h["epoch"] for h in fold["history"]] == [0, 1]
    ref_keys, ref_logits = _fold_predictions(reference)
    keys, logits = _fold_predictions(resumed)
    np.testing.assert_array_equal(keys, ref_keys)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    ref = json.loads((reference / "results.json").read_text())
    res = json.loads((resumed / "results.json").read_text())
    assert res["war_mean"] == ref["war_mean"] and res["uar_mean"] == ref["uar_mean"]

    # A finished fold is not trained again; evaluate reproduces its metrics from the checkpoint.
    from mmder_tf.evaluate import main as evaluate_main

    assert evaluate_main(["--run", str(resumed)]) == 0
    evaluated = json.loads((resumed / "fold_1" / "results.json").read_text())
    assert evaluated["war"] == pytest.approx(fold["war"])
    assert (resumed / "plots" / "confusion_pooled.png").exists()
    assert (resumed / "plots" / "curves_fold1.png").exists()
    capsys.readouterr()
    assert finetune.main(_base(dataset, resumed, cache) + args) == 0
    assert "already finished" in capsys.readouterr().out
