"""Emotion dimensions end to end on conftest's small generated dataset: joint training on both
training paths (clips, and cached frozen-encoder features), re-evaluation of a joint checkpoint,
and `mmder-evaluate --ensemble` over two strategies' runs."""
import json

import numpy as np
import pytest

from mmder_tf import evaluate, finetune
from mmder_tf.data.datasets import load_manifest


@pytest.fixture(scope="module")
def targets_file(small_dataset, tmp_path_factory):
    manifest = load_manifest("ravdess", data_dir=small_dataset)
    rng = np.random.default_rng(0)
    rows = ["key,valence,arousal"]
    for i, record in enumerate(manifest):
        valence = "" if i % 5 == 0 else f"{rng.uniform(-1, 1):.4f}"  # some missing: masked, not zero
        rows.append(f"{record.key},{valence},{rng.uniform(-1, 1):.4f}")
    path = tmp_path_factory.mktemp("targets") / "dims.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _run(small_dataset, small_cache, targets_file, out, **options):
    return finetune.run(dataset="ravdess", data_dir=small_dataset, out=out, preset="tiny", image_size=32,
                        batch_size=4, verbose=0, workers=1, cache=small_cache, epochs=1, num_folds=2, folds="1",
                        targets_file=targets_file, targets="category,valence,arousal", from_scratch=True, **options)


def test_joint_runs_report_dimensions_and_ensemble(small_dataset, small_cache, targets_file, tmp_path):
    joint = _run(small_dataset, small_cache, targets_file, tmp_path / "fslf", strategy="fslf", mode="finetune",
                 lr=1e-3)
    saved = json.loads((tmp_path / "fslf" / "results.json").read_text())
    for name in ("valence", "arousal"):
        entry = saved["dimensions"][name]
        assert set(entry["folds"]) == {"1"} and -1 <= entry["pooled"]["ccc"] <= 1
        assert entry["folds"]["1"]["ccc"] == pytest.approx(entry["pooled"]["ccc"])  # one fold: pooled = fold
    with np.load(tmp_path / "fslf" / "fold_1" / "predictions.npz") as data:
        truth = data["true_valence"]
        assert np.isnan(truth).any() and saved["dimensions"]["valence"]["pooled"]["n"] == int(np.isfinite(truth).sum())
    uncertainty = joint["uncertainty"]["1"]
    assert set(uncertainty) == {"category", "valence", "arousal"}
    assert all(np.isfinite(v["log_variance"]) and v["weight"] > 0 for v in uncertainty.values())
    assert (tmp_path / "fslf" / "plots" / "scatter_valence.png").is_file()
    assert "## Emotion dimensions" in (tmp_path / "fslf" / "results.md").read_text()
    assert (tmp_path / "fslf" / "fold_1" / "val_predictions.npz").is_file()

    # the cached-feature linear probe trains the same heads; re-evaluating runs the full model on the clips
    probe = _run(small_dataset, small_cache, targets_file, tmp_path / "cfas", strategy="cfas", mode="linear_probe",
                 select="val_loss", task_weighting="fixed", task_weights="category=1,valence=0.5")
    assert probe["run"]["feature_cache"] is True
    assert probe["uncertainty"]["1"]["valence"] == {"weight": 0.5}
    with np.load(tmp_path / "cfas" / "fold_1" / "predictions.npz") as data:
        cached = data["pred_arousal"].copy()
    evaluated = evaluate.evaluate_run(tmp_path / "cfas", verbose=False)
    with np.load(tmp_path / "cfas" / "fold_1" / "predictions.npz") as data:
        np.testing.assert_allclose(data["pred_arousal"], cached, rtol=1e-4, atol=1e-4)
    assert evaluated["dimensions"]["arousal"]["pooled"]["ccc"] == pytest.approx(
        probe["dimensions"]["arousal"]["pooled"]["ccc"], abs=1e-4)

    out = tmp_path / "ensemble"
    assert evaluate.main(["--ensemble", str(tmp_path / "fslf"), str(tmp_path / "cfas"),
                          "--ensemble-weighting", "validation", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert [m["strategy"] for m in summary["ensemble"]["members"]] == ["fslf", "cfas"]
    fold = summary["folds"]["1"]
    assert set(fold["members"]) == {"fslf", "cfas"} and sum(fold["weights"].values()) == pytest.approx(1.0)
    assert "valence" in summary["dimensions"]
    assert evaluate.main(["--ensemble", str(tmp_path / "fslf")]) == 2  # one run is not an ensemble


def test_dimension_options_fail_early(small_dataset, tmp_path, capsys):
    base = ["--dataset", "ravdess", "--data-dir", str(small_dataset), "--out", str(tmp_path / "r")]
    assert finetune.main(base + ["--targets", "valence"]) == 2
    assert "must include 'category'" in capsys.readouterr().err
    assert finetune.main(base + ["--targets", "category,valence", "--task-weights", "valence=2"]) == 2
    assert "--task-weighting fixed" in capsys.readouterr().err
    assert finetune.main(base + ["--targets", "category,dominance", "--preset", "tiny", "--verbose", "0",
                                 "--from-scratch"]) == 2
    assert "not in the dataset" in capsys.readouterr().err
