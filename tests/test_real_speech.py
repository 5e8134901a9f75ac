"""The real-speech benchmark (smoke mode on a handful of real RAVDESS files), the speech recipe's
SpecAugment masks, and the shipped pre-trained speech encoder (speech-tiny) with its model card."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_spec_augment_masks_bands_and_is_seeded():
    import tensorflow as tf

    from mmder_tf.training.recipes import spec_augment

    x = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3)), tf.uint8)
    seed = tf.constant([1, 2], tf.int64)
    out = spec_augment(x, seed, 2, 0.25, 2, 0.25).numpy()
    again = spec_augment(x, seed, 2, 0.25, 2, 0.25).numpy()
    np.testing.assert_array_equal(out, again)
    assert out.shape == x.shape and out.dtype == np.uint8
    changed = np.any(out != x.numpy(), axis=-1)  # [B, T, H, W]
    # a frequency band is masked in every image of the clip: some row changed across all 4 images
    rows_everywhere = np.all(np.any(changed, axis=3), axis=1)  # [B, H]
    assert rows_everywhere.any()
    # masks never exceed their bands: at most 2 x 25 % of the rows masked everywhere
    assert rows_everywhere.sum(axis=1).max() <= 2 * (0.25 * 32 + 1)
    # no masking at all leaves the clip as it was
    np.testing.assert_array_equal(spec_augment(x, seed, 0, 0.25, 0, 0.25).numpy(), x.numpy())


def test_speech_recipe_is_named_and_augments_audio_only():
    from mmder_tf.training import recipes
    from mmder_tf.training.config import RECIPES

    assert "speech" in RECIPES
    settings = recipes.recipe_settings("speech", 16)
    assert recipes.uses_masking(settings) and recipes.uses_soft_labels(settings)
    assert recipes.batch_augmenter(recipes.recipe_settings("paper", 16), 8, "audio") is None
    mix = recipes.batch_augmenter(settings, 8, "audio")
    import tensorflow as tf

    x = tf.zeros((2, 2, 32, 32, 3), tf.uint8)
    mixed, targets = mix(x, tf.constant([0, 1]), tf.constant([0, 0], tf.int64))
    assert tuple(targets.shape) == (2, 8)
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-6)


def test_shipped_speech_preset_loads_with_its_model_card():
    from mmder_tf.models.presets import weights_preset_path
    from mmder_tf.models.preset_io import load_preprocessing, read_metadata
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone
    from mmder_tf.training.config import RunConfig

    path = weights_preset_path("speech-tiny")
    backbone = VideoMAEBackbone.from_preset(path)
    assert (backbone.hidden_dim, backbone.depth, backbone.num_frames) == (64, 2, 16)
    fusion = load_preprocessing(path)
    assert fusion.strategy == "audio" and fusion.image_size == 64
    tokens = backbone(np.zeros((1, 16, 64, 64, 3), np.float32))
    assert tuple(tokens.shape) == (1, 8 * 4 * 4, 64)
    assert read_metadata(path)["parameter_count"] < 1_000_000
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 3_000_000  # small enough to ship inside the package
    card = (path / "README.md").read_text()
    for fact in ("BanglaSER", "CC BY 4.0", "python benchmarks/real_speech.py --pretrain", "RAVDESS"):
        assert fact in card
    # `--weights speech-tiny` names it in a run
    config = RunConfig(dataset="csv", manifest=str(REPO / "README.md"), weights="speech-tiny",
                       fusion=fusion, preset="tiny", mode="finetune", recipe="speech")
    assert Path(config.weights) == path


@pytest.mark.slow
def test_real_speech_benchmark_smoke(tmp_path, capsys):
    import real_speech

    if not (real_speech.REALAUDIO / "ravdess_speech.csv").is_file():
        pytest.fail(f"real audio not found at {real_speech.REALAUDIO}: set MMDER_REALAUDIO")
    out = tmp_path / "out"
    results = real_speech.main(["--smoke", "--work", str(tmp_path / "work"), "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("real speech: best mmder_tf WAR ")
    assert "| eGeMAPS+SVM WAR " in lines[-1] and "| pre-training gain " in lines[-1]
    assert set(results) >= {"egemaps", "scratch", "pretrained", "probe", "pretraining_gain"}
    for row in ("egemaps", "scratch", "pretrained", "probe"):
        folds = results[row]["folds"]
        assert len(folds) == 2 and all(0.0 <= f["war"] <= 1.0 and f["cpu_s"] >= 0 for f in folds.values())
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["classes"]) == 8 and (out / "confusion.png").stat().st_size > 0
    # the test subjects of the two folds are disjoint
    assert not set(saved["folds"][0]) & set(saved["folds"][1])


def test_manifest_mode_reads_any_labelled_csv_with_subject_folds(tmp_path, capsys):
    """--manifest: paths relative to the CSV's folder, K subject-grouped folds, the reference row."""
    import real_speech

    source = real_speech.REALAUDIO / "ravdess_speech.csv"
    if not source.is_file():
        pytest.fail(f"real audio not found at {real_speech.REALAUDIO}: set MMDER_REALAUDIO")
    lines = source.read_text().splitlines()
    # actors 1-3, statement 1, repetition 1 (fields 5 and 6 of the RAVDESS name): 15 clips each
    kept = [line for line in lines[1:] if line.endswith((",actor01", ",actor02", ",actor03"))
            and Path(line.split(",")[0]).stem.split("-")[4:6] == ["01", "01"]]
    assert len(kept) == 45
    (tmp_path / "audio").symlink_to(real_speech.REALAUDIO / "ravdess_speech")
    manifest = tmp_path / "mine.csv"
    manifest.write_text("path,label,subject\n" + "\n".join(
        line.replace("ravdess_speech/", "audio/", 1) for line in kept) + "\n")
    results = real_speech.main(["--manifest", str(manifest), "--num-folds", "3", "--rows", "egemaps",
                                "--work", str(tmp_path / "work")])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("real speech: best mmder_tf WAR n/a | eGeMAPS+SVM WAR ")
    folds = results["egemaps"]["folds"]
    assert sorted(folds) == [1, 2, 3]
    assert [f["test"] for f in folds.values()] == [["actor01"], ["actor02"], ["actor03"]]


def test_manifest_errors_are_one_line(tmp_path):
    import real_speech

    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.flac,happy\n")
    with pytest.raises(SystemExit, match="needs columns path,label,subject"):
        real_speech.read_manifest(bad)
    bad.write_text("path,label,subject\nmissing.flac,happy,s1\n")
    with pytest.raises(SystemExit, match="1 listed files do not exist"):
        real_speech.read_manifest(bad)
