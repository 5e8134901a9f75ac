"""mmder-pretrain end to end on conftest's small generated set (with its corrupt clip): unlabelled
folders (VoxCeleb2 layout), strategies drawn per clip, on-the-fly decoding equal to the cache,
kill -9 and resume ending with the weights of an uninterrupted run, the encoder taken by
load_pretrained and mmder-finetune --weights RUN, the reconstruction figure, the harder generator."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import kill_after_epoch

from mmder_tf import pretrain as cli
from mmder_tf.config import FusionConfig
from mmder_tf.data import datasets, synthetic
from mmder_tf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


# --------------------------------------------------------------------------- unlabelled data, no TF

def test_folder_scan_takes_any_nesting_and_voxceleb_speakers(small_dataset, tmp_path):
    clips = sorted(small_dataset.rglob("*.mp4"))[:3]
    layout = {"id00012/abcDEF/00001.mp4": clips[0], "id00012/xyz/00002.mp4": clips[1], "loose clip.mp4": clips[2]}
    for relative, source in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).symlink_to(source)
    (tmp_path / "id00012" / "notes.txt").write_text("not a clip")
    manifest = datasets.load_manifest("folder", tmp_path)
    assert [r.key for r in manifest] == sorted(layout)
    assert {r.key: r.subject for r in manifest} == {"id00012/abcDEF/00001.mp4": "id00012",
                                                    "id00012/xyz/00002.mp4": "id00012", "loose clip.mp4": "loose clip"}
    assert manifest.class_names == (datasets.UNLABELLED,) and {r.label for r in manifest} == {0}
    assert [Path(s.path).name for s in manifest.skipped] == ["notes.txt"]


def test_csv_of_paths_without_labels(small_dataset, tmp_path):
    clip = sorted(small_dataset.rglob("*.mp4"))[0]
    (tmp_path / "list.csv").write_text(f"path,subject\n{clip},spk1\nmissing.mp4,\n")
    manifest = datasets.scan_path_csv(tmp_path / "list.csv")
    assert [(r.subject, r.label_name) for r in manifest] == [("spk1", datasets.UNLABELLED)]
    assert "file not found" in manifest.skipped[0].reason


@pytest.mark.parametrize("argv, message", [
    (["--mask-ratio", "1.0"], "mask_ratio"),
    (["--strategy", "random", "--strategies", "cfas"], "at least two"),
    (["--strategy", "random", "--strategies", "cfas,nope"], "unknown strategies"),
    (["--epochs", "0"], "epochs"),
    (["--data-dir", "/nonexistent/voxceleb"], "no such directory"),
    (["--weights", "/nonexistent.pth"], "no such file"),
])
def test_bad_arguments_fail_before_any_work(small_dataset, tmp_path, capsys, argv, message):
    base = ["--data-dir", str(small_dataset), "--out", str(tmp_path / "run")]
    assert cli.main(base + argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_harder_generator_keeps_classes_and_changes_the_pictures():
    standard, wave_s, _ = synthetic.render_clip(3, "03", 0, seed=1, size=64, seconds=0.8)
    hard, wave_h, meta = synthetic.render_clip(3, "03", 0, seed=1, size=64, seconds=0.8, difficulty="hard")
    again, _, _ = synthetic.render_clip(3, "03", 0, seed=1, size=64, seconds=0.8, difficulty="hard")
    assert np.array_equal(hard, again) and meta["face"] == "smile"
    assert np.abs(hard.astype(int) - standard.astype(int)).mean() > 5
    # noisier pixels and sound
    assert np.abs(np.diff(hard.astype(int), axis=2)).mean() > np.abs(np.diff(standard.astype(int), axis=2)).mean()
    with pytest.raises(ConfigError, match="difficulty"):
        synthetic.render_clip(3, "03", 0, difficulty="impossible")


# --------------------------------------------------------------------------- the data path

def test_strategy_drawn_per_clip_is_that_strategy_fused(small_dataset, small_cache):
    import tensorflow as tf

    from mmder_tf.data.pipeline import draw_strategy, make_dataset

    config = FusionConfig(strategy="fslf", image_size=32)
    strategies = ("cfas", "fslf", "video")  # every branch is traced: three keep the test short
    mixed = make_dataset(small_cache, None, config, 16, training=False, with_keys=True, strategies=strategies,
                         seed=4)
    fused, _, keys = next(iter(mixed))
    chosen = [strategies[int(draw_strategy(k, len(strategies), 4))] for k in keys.numpy()]
    assert len(set(chosen)) >= 2  # 12 clips over 3 strategies
    single = {}
    for name in set(chosen):
        x, _, k = next(iter(make_dataset(small_cache, None, config.replace(strategy=name), 16, training=False,
                                         with_keys=True)))
        single[name] = dict(zip(k.numpy(), x.numpy()))
    for key, strategy, clip in zip(keys.numpy(), chosen, fused.numpy()):
        np.testing.assert_array_equal(clip, single[strategy][key])
    assert tf.reduce_all(draw_strategy(keys[0], 8, 4, epoch=0) == draw_strategy(keys[0], 8, 4, epoch=0))


def test_decoding_on_the_fly_equals_a_lossless_cache_and_skips_bad_clips(small_dataset, tmp_path):
    from mmder_tf.data.pipeline import decoding_dataset, make_dataset
    from mmder_tf.data.prepare import prepare

    manifest = datasets.load_manifest("ravdess", small_dataset)
    config = FusionConfig(strategy="cfas", image_size=32)
    prepare(manifest, tmp_path / "raw", config, frame_format="raw", progress=False)
    skipped = []
    streamed = decoding_dataset(manifest.records, config, 4, training=False, with_keys=True, num_parallel_calls=4,
                                on_skip=lambda record, reason: skipped.append((record.key, reason)))
    got = {k: x for batch in streamed for x, k in zip(batch[0].numpy(), batch[2].numpy())}
    cached = {k: x for batch in make_dataset(tmp_path / "raw", None, config, 4, training=False, with_keys=True)
              for x, k in zip(batch[0].numpy(), batch[2].numpy())}
    assert got.keys() == cached.keys() and len(got) == 12
    for key in got:
        np.testing.assert_array_equal(got[key], cached[key])
    assert len(skipped) == 1 and "CorruptMediaError" in skipped[0][1]


# --------------------------------------------------------------------------- runs: resume, weights, figure

def _argv(data, out, cache, extra=()):
    return ["--data-dir", str(data), "--dataset", "ravdess", "--out", str(out), "--cache", str(cache),
            "--preset", "tiny", "--image-size", "32", "--batch-size", "4", "--epochs", "2", "--warmup-epochs", "1",
            "--lr", "1e-3", "--figure-every", "1", "--verbose", "0", "--decode-workers", "1", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def reference_run(small_dataset, small_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert cli.main(_argv(small_dataset, out, small_cache)) == 0
    return out


def test_run_writes_encoder_figure_history_and_reports_the_bad_clip(reference_run, small_bad_clip):
    summary = json.loads((reference_run / "pretrain.json").read_text())
    assert summary["finished"] and [h["epoch"] for h in summary["history"]] == [0, 1]
    assert summary["initial_val_loss"] > summary["history"][-1]["val_loss"]
    assert summary["run"]["held_out_subjects"] and summary["run"]["train_clips"] + summary["run"][
        "held_out_clips"] == 12
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in summary["history"])
    lrs = [h["lr"] for h in summary["history"]]
    assert lrs[0] > lrs[-1] > 0  # warm-up then cosine
    assert [Path(s["path"]).name for s in summary["skipped_clips"]] == [small_bad_clip.name]
    assert sorted(p.name for p in (reference_run / "figures").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    from matplotlib import image

    picture = image.imread(reference_run / "figures" / "epoch_002.png")
    assert picture.shape[0] == 2 * 3 * (32 + 4)  # two clips x (original, masked, reconstructed)
    assert (reference_run / "logs").is_dir()


def test_lgi_former_pretrains_from_scratch_with_its_own_mask_in_the_figure(small_dataset, small_cache, tmp_path):
    """MAE-DFER's recipe end to end: LGI-Former, frame-difference target, the window mask in the epoch figure."""
    from mmder_tf import load_pretrained
    from mmder_tf.models.lgi_former.pretraining import LGIFormerPretrainer

    out = tmp_path / "run"
    argv = _argv(small_dataset, out, small_cache, ["--preset", "mae-dfer-tiny", "--target", "mae-dfer", "--epochs", "1",
                                                   "--warmup-epochs", "0"])
    assert cli.main(argv) == 0
    assert [p.name for p in (out / "figures").iterdir()] == ["epoch_001.png"]
    whole = load_pretrained(out, pretraining=True)
    assert isinstance(whole, LGIFormerPretrainer) and whole.frame_difference and whole.backbone.image_size == 32
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["finished"] and np.isfinite(summary["history"][-1]["loss"])


def test_encoder_loads_directly_and_finetunes_from_the_run(reference_run, small_dataset, small_cache, tmp_path):
    from mmder_tf import finetune, load_pretrained

    encoder = load_pretrained(reference_run)
    whole = load_pretrained(reference_run, pretraining=True)
    for mine, theirs in zip(encoder.weights, whole.backbone.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    out = tmp_path / "finetune"
    assert finetune.main(["--dataset", "ravdess", "--data-dir", str(small_dataset), "--cache", str(small_cache),
                          "--out", str(out), "--weights", str(reference_run), "--image-size", "32",
                          "--batch-size", "4", "--epochs", "1", "--num-folds", "2", "--folds", "1", "--verbose", "0",
                          "--workers", "1", "--select", "last"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["run"]["preset"] == "tiny" and run["run"]["weights"] == str(reference_run)


def test_kill_and_rerun_ends_with_the_uninterrupted_weights(reference_run, small_dataset, small_cache, tmp_path):
    import h5py

    resumed = tmp_path / "resumed"
    argv = _argv(small_dataset, resumed, small_cache)
    kill_after_epoch([sys.executable, "-m", "mmder_tf.pretrain", *argv], resumed / "backup" / "training_metadata.json",
                     ENV, REPO)
    assert not json.loads((resumed / "pretrain.json").read_text())["finished"]

    assert cli.main(argv) == 0
    summary = json.loads((resumed / "pretrain.json").read_text())
    # >= 1: on a loaded machine the kill can land after the last epoch's backup
    assert summary["resumed_from_epoch"] >= 1 and [h["epoch"] for h in summary["history"]] == [0, 1]

    def weights(path):
        values = {}
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, item: values.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                              else None)
        return values

    reference, result = (weights(run / "encoder" / "model.weights.h5") for run in (reference_run, resumed))
    assert reference.keys() == result.keys() and len(reference) > 10
    for name in reference:
        np.testing.assert_allclose(result[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    ref_summary = json.loads((reference_run / "pretrain.json").read_text())
    assert summary["history"][-1]["loss"] == pytest.approx(ref_summary["history"][-1]["loss"], rel=1e-5)


def test_a_kill_inside_the_backup_write_resumes_from_the_epoch_before(tmp_path):
    from mmder_tf.training.engine import read_backup_epoch, repair_backup

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"weights of epoch 3")
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert not repair_backup(backup) and read_backup_epoch(backup) == 3
    # killed while Keras rewrote the metadata of epoch 4: new weights, truncated metadata, the pair of 3 in *.bkp
    (backup / "latest.weights.h5.bkp").write_bytes(b"weights of epoch 3")
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 3, "batch": 0}')
    (backup / "latest.weights.h5").write_bytes(b"weights of epoch 4")
    (backup / "training_metadata.json").write_text('{"epo')
    assert repair_backup(backup) and read_backup_epoch(backup) == 3
    assert (backup / "latest.weights.h5").read_bytes() == b"weights of epoch 3"
    # no previous pair: start over rather than resume from weights nobody can date
    (backup / "training_metadata.json").write_text("")
    assert repair_backup(backup) and read_backup_epoch(backup) == 0 and not (backup / "latest.weights.h5").exists()
