"""Issue 25: reliability at the edges. Each test reproduces one situation an independent probe found
(diverged runs, NaN audio, tampered exports, symlink loops, full and read-only disks, hand-edited run
files, ...) and checks the behaviour that replaced it."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmder_tf import finetune
from mmder_tf.config import FusionConfig
from mmder_tf.errors import ConfigError, TrainingDivergedError

REPO = Path(__file__).resolve().parents[1]


def _finetune_args(dataset, cache, out, *extra):
    return ["--dataset", "ravdess", "--data-dir", str(dataset), "--out", str(out), "--preset", "tiny",
            "--image-size", "32", "--batch-size", "4", "--verbose", "0", "--strategy", "fslf", "--workers", "1",
            "--cache", str(cache), "--from-scratch", "--mode", "finetune", "--num-folds", "2", "--folds", "1",
            "--epochs", "1", *extra]


# ----------------------------------------------------------------------------- 1: a diverged run stops

def _tiny_fit(tmp_path, lr):
    import keras
    import tensorflow as tf

    from mmder_tf.training import engine

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32) * 100
    y = np.arange(8) % 3

    def epoch_dataset(epoch):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)

    return engine.fit_resumable(model, fold_dir=tmp_path / "fold", epoch_dataset=epoch_dataset, steps_per_epoch=2,
                                epochs=2, monitor=None, verbose=0, tensorboard=False)


def test_a_diverged_fit_stops_with_a_message_and_saves_nothing_of_it(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"training diverged in epoch 1 \(loss (nan|inf)\).*--lr"):
        _tiny_fit(tmp_path, 1e38)
    assert not (tmp_path / "fold" / "last.weights.h5").exists()
    assert _tiny_fit(tmp_path / "ok", 1e-3)["selected_epoch"] == 2  # a sane rate trains as before


@pytest.mark.parametrize("lr", ["inf", "1e400"])
def test_an_infinite_lr_is_refused_before_work(tmp_path, capsys, lr):
    assert finetune.main(["--lr", lr, "--out", str(tmp_path / "run")]) == 2
    assert "lr must be positive and finite" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_finetune_at_a_diverging_lr_exits_nonzero_without_results(small_dataset, small_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune.main(_finetune_args(small_dataset, small_cache, out, "--lr", "1e9")) == 1
    err = capsys.readouterr().err
    assert "training diverged in epoch 1" in err and err.count("\n") == 1, err
    assert not (out / "results.json").exists() and not (out / "results.md").exists()


def test_pretrain_config_refuses_an_infinite_lr(tmp_path):
    from mmder_tf.training.pretrain import PretrainConfig

    with pytest.raises(ConfigError, match="positive and finite"):
        PretrainConfig(out=str(tmp_path / "run"), data_dir=str(tmp_path), lr=math.inf)


# ----------------------------------------------------------------------------- 11: one-line errors, not tracebacks

def test_a_negative_seed_is_refused_before_work(tmp_path, capsys):
    assert finetune.main(["--seed", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "seed must be an integer >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("path, value, message", [
    (("fusion", "image_size"), "64", "image_size must be an integer, got '64'"),
    (("fusion", "image_size"), 64.0, "image_size must be an integer, got 64.0"),
    (("lr",), "fast", "lr must be a number, got 'fast'"),
    (("seed",), 0.5, "seed must be an integer >= 0, got 0.5"),
])
def test_a_hand_edited_run_file_is_one_clear_error(tmp_path, capsys, path, value, message):
    from mmder_tf.training.config import RunConfig, run_file_contents

    saved = run_file_contents(RunConfig(fusion=FusionConfig(image_size=64), preset="tiny"))
    target = saved["config"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (tmp_path / "run.json").write_text(json.dumps(saved))
    assert finetune.main(["--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / "run.json") in err and "Traceback" not in err


def test_prepare_refuses_image_size_zero(small_dataset, tmp_path, capsys):
    from mmder_tf.data import prepare

    assert prepare.main(["--dataset", "ravdess", "--data-dir", str(small_dataset), "--image-size", "0",
                         "--out", str(tmp_path / "cache"), "--no-progress"]) == 2
    assert "image_size must be a positive multiple of 32" in capsys.readouterr().err
