"""The finetune / evaluate CLIs and the Python API end to end on the small generated
dataset of conftest (with one corrupt clip): bad arguments fail before any work,
the corrupt clip is skipped and reported, kill-and-resume matches an uninterrupted
run, re-evaluation reproduces the metrics. One run serves several checks."""
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import kill_after_epoch

from mmder_tf import finetune
from mmder_tf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


@pytest.fixture
def dataset(small_dataset):
    """4 actors x 3 emotions x 1 clip + one corrupt clip, RAVDESS layout (conftest, generated once)."""
    return small_dataset


def _base(dataset, out, cache=None, scratch=True):
    args = ["--dataset", "ravdess", "--data-dir", str(dataset), "--out", str(out), "--preset", "tiny",
            "--image-size", "32", "--batch-size", "4", "--verbose", "0", "--strategy", "fslf", "--workers", "1"]
    return args + (["--cache", str(cache)] if cache else []) + (["--from-scratch"] if scratch else [])


# --------------------------------------------------------------------------- bad arguments: clear and early

def test_unknown_strategy_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.main(["--strategy", "xyz"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'xyz'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "ravdess"], "needs --data-dir"),
    (["--dataset", "cremad", "--data-dir", "/nonexistent/cremad", "--from-scratch", "--preset", "tiny"], "no such directory"),
    (["--dataset", "csv"], "needs --manifest"),
    (["--folds", "0"], "start at 1"),
    (["--folds", "a,b"], "comma-separated"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
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


def test_an_out_folder_of_foreign_files_is_refused_and_left_alone(dataset, tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("mine")
    assert finetune.main(_base(dataset, out)) == 2
    err = capsys.readouterr().err
    assert "chapter1.tex" in err and "not a mmder-finetune run" in err
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]
    (out / "chapter1.tex").unlink()
    from mmder_tf.training.protocol import check_run_folder

    check_run_folder(out)  # empty: a new run may start there
    (out / "cache").mkdir()
    (out / "cache" / "settings.json").write_text("{}")
    check_run_folder(out)  # a run interrupted while preparing its cache resumes
    (out / "notes.txt").write_text("x")
    check_run_folder(out)  # a run's folder stays the user's to annotate
    (out / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_run_folder(out / "file")


def test_fold_number_beyond_protocol(dataset, tmp_path, capsys):
    assert finetune.main(_base(dataset, tmp_path / "run") + ["--num-folds", "2", "--folds", "3"]) == 2
    assert "only 2 folds" in capsys.readouterr().err


def test_weights_of_another_preset(dataset, tmp_path, capsys):
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone

    # A converted encoder of another size: a preset folder, as convert writes it.
    weights = VideoMAEBackbone(hidden_dim=96, depth=1, num_heads=2, num_frames=16, image_size=32).save_to_preset(
        tmp_path / "other")
    out = tmp_path / "run"
    assert finetune.main(_base(dataset, out, scratch=False) + ["--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "not preset 'tiny'" in err and "width 96" in err
    assert not (out / "cache").exists()


# --------------------------------------------------------------------------- recipes that cannot work refuse

def test_real_dataset_without_weights_refuses_unless_from_scratch(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune.main(_base(dataset, out, scratch=False)) == 2
    err = capsys.readouterr().err
    assert "--dataset ravdess without --weights would train a randomly initialised encoder" in err
    assert "--weights" in err and "--from-scratch" in err
    assert not out.exists()
    config = finetune.config_from_argv(_base(dataset, out))  # --from-scratch: accepted, and trains the encoder
    assert config.from_scratch and config.mode == "finetune" and config.weights is None
    weights = tmp_path / "x.weights.h5"
    weights.write_bytes(b"")
    assert finetune.main(_base(dataset, out) + ["--weights", str(weights)]) == 2
    assert "--from-scratch and --weights contradict each other" in capsys.readouterr().err
    assert finetune.config_from_argv(["--out", str(out)]).is_demo  # the generated demo needs no weights
    with pytest.raises(ConfigError, match="without --weights"):
        finetune.run(dataset="ravdess", data_dir=dataset, out=out)


@pytest.mark.parametrize("preset", ["base", "large"])
def test_paper_recipe_full_finetuning_of_a_large_encoder_refuses_without_lr(dataset, tmp_path, capsys, preset):
    argv = _base(dataset, tmp_path / "run") + ["--mode", "finetune", "--recipe", "paper", "--preset", preset]
    assert finetune.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--recipe paper with --mode finetune would train every parameter of the {preset} encoder" in err
    assert "--recipe mae-dfer" in err and "--lr" in err
    # an explicit --lr, the mae-dfer recipe, a linear probe or a small encoder are fine
    for extra in (["--lr", "1e-4"], ["--recipe", "mae-dfer"], ["--mode", "linear_probe"], ["--preset", "small"]):
        finetune.config_from_argv(argv + extra)


def test_mean_std_and_spectrogram_options_reach_the_model_and_the_config(dataset, tmp_path):
    from mmder_tf.training.config import RunConfig
    from mmder_tf.training.model import build_classifier

    config = finetune.config_from_argv(_base(dataset, tmp_path / "run") + [
        "--std", "0.3", "--mean", "0.5,0.4,0.3", "--spectrogram", "mfcc", "--n-mfcc", "20", "--hop-ms", "10"])
    assert config.std == (0.3, 0.3, 0.3) and config.mean == (0.5, 0.4, 0.3)
    assert (config.fusion.spectrogram, config.fusion.n_mfcc, config.fusion.hop_ms) == ("mfcc", 20, 10.0)
    assert RunConfig.from_json(config.to_json()) == config  # saved whole: evaluate and export rebuild the same
    model = build_classifier(config, 3)
    assert model.normalize.std == (0.3, 0.3, 0.3) and model.normalize.mean == (0.5, 0.4, 0.3)
    official = finetune.config_from_argv(_base(dataset, tmp_path / "run") + ["--official"])
    assert official.std == (0.225, 0.225, 0.225) and official.fusion.official
    assert finetune.config_from_argv(_base(dataset, tmp_path / "run")).std == (0.229, 0.224, 0.225)
    with pytest.raises(ConfigError, match="--std must be"):
        finetune.config_from_argv(_base(dataset, tmp_path / "run") + ["--std", "0.2,0.3"])


def test_run_api_rejects_bad_options_with_exceptions(tmp_path):
    from mmder_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown strategy 'xyz'"):
        finetune.run(strategy="xyz", out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        finetune.run(epoch=3)
    with pytest.raises(ConfigError, match="needs --data-dir"):
        finetune.run(dataset="ravdess", out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="official is a flag"):
        finetune.run(official="yes")
    assert not (tmp_path / "run").exists()


def test_command_line_and_python_api_build_the_same_config(tmp_path):
    from mmder_tf.training.config import RunConfig

    argv = ["--data-dir", str(tmp_path), "--dataset", "ravdess", "--folds", "3,1", "--official",
            "--no-feature-cache", "--image-size", "32", "--from-scratch", "--mode", "linear_probe"]
    config = finetune.config_from_argv(argv)
    assert config == RunConfig.resolve(data_dir=tmp_path, dataset="ravdess", folds=[3, 1], official=True,
                                       feature_cache=False, epochs=None, image_size=32, from_scratch=True,
                                       mode="linear_probe")
    assert config.folds == (1, 3) and config.fusion.official and config.fusion.image_size == 32
    assert (config.preset, config.epochs, config.mode) == ("large", 100, "linear_probe")  # the paper's defaults
    demo = finetune.config_from_argv([])
    assert (demo.preset, demo.image_size, demo.epochs, demo.lr, demo.is_demo) == ("tiny", 64, 12, 2e-3, True)
    assert RunConfig.from_json(config.to_json()) == config  # frozen, written whole, read back equal
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3


def test_ensure_demo_data_uses_the_demo_location(tmp_path, monkeypatch):
    from mmder_tf.training import protocol

    monkeypatch.setenv("MMDER_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(protocol, "generate_demo_data", lambda *a, **k: calls.append(a) or a[0])
    folder = finetune.ensure_demo_data(actors=3, clips=1, seed=5)
    config = finetune.config_from_argv(["--synthetic-actors", "3", "--synthetic-clips", "1", "--seed", "5"])
    assert folder == config.demo_data_dir == tmp_path / "synthetic" / "a3_c1_s5"
    assert calls == [(folder, 3, 1, 5)]
    default = finetune.config_from_argv([])
    assert finetune.ensure_demo_data() == default.demo_data_dir
    assert calls[-1][1:] == (default.synthetic_actors, default.synthetic_clips, 0)
    assert finetune.ensure_demo_data(directory=tmp_path / "mine") == tmp_path / "mine"


# --------------------------------------------------------------------------- one full run through the Python API

RUN_ARGS = ["--mode", "finetune", "--epochs", "2", "--num-folds", "2", "--folds", "1", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def reference_run(small_dataset, small_cache, tmp_path_factory):
    """An uninterrupted run through finetune.run() (the notebook API) on the data with a corrupt clip."""
    out = tmp_path_factory.mktemp("reference") / "run"
    results = finetune.run(dataset="ravdess", data_dir=small_dataset, out=out, preset="tiny", image_size=32,
                           from_scratch=True,
                           batch_size=4, verbose=0, strategy="fslf", workers=1, cache=small_cache, mode="finetune",
                           epochs=2, num_folds=2, folds=[1], lr=1e-3)
    return out, results


def test_run_api_completes_and_reports_the_bad_clip(reference_run, small_bad_clip):
    out, results = reference_run
    assert results["out"] == out
    saved = json.loads((out / "results.json").read_text())
    assert saved["war_mean"] == results["war_mean"] and saved["folds"].keys() == results["folds"].keys() == {"1"}
    skipped = results["skipped_clips"]
    assert [Path(entry["path"]).name for entry in skipped] == [small_bad_clip.name], skipped
    assert skipped[0]["reason"]
    report = (out / "results.md").read_text()
    assert "skipped clips" in report.lower() and small_bad_clip.name in report
    fold = results["folds"]["1"]
    bad_key = "Actor_02/" + small_bad_clip.name
    with np.load(out / "fold_1" / "predictions.npz") as predictions:
        assert bad_key not in set(predictions["keys"])
        assert len(predictions["keys"]) == fold["n"]
    assert fold["n_train"] + fold["n_val"] + fold["n"] == 12  # 13 clips, the corrupt one skipped
    assert results["run"]["mode"] == "finetune" and results["run"]["feature_cache"] is False
    assert [h["epoch"] for h in json.loads((out / "fold_1" / "results.json").read_text())["history"]] == [0, 1]


def test_config_reruns_a_saved_run_exactly(reference_run, tmp_path, capsys):
    from mmder_tf.training.config import RunConfig

    reference, results = reference_run
    saved = RunConfig.from_run(reference)
    assert saved.out == str(reference) and (saved.epochs, saved.folds, saved.lr) == (2, (1,), 1e-3)
    assert finetune.main(["--config", str(reference / "run.json"), "--epochs", "3"]) == 2
    assert "cannot change epochs" in capsys.readouterr().err
    again = tmp_path / "again"
    assert finetune.main(["--config", str(reference / "run.json"), "--out", str(again)]) == 0
    assert RunConfig.from_run(again) == saved.replace(out=str(again))
    first = json.loads((reference / "results.json").read_text())["folds"]
    second = json.loads((again / "results.json").read_text())["folds"]
    metrics = ("uar", "war", "confusion", "selected_epoch", "n", "n_train", "n_val")
    assert {f: {m: r[m] for m in metrics} for f, r in second.items()} == \
        {f: {m: r[m] for m in metrics} for f, r in first.items()}


# --------------------------------------------------------------------------- kill and resume

def _fold_predictions(out, number=1):
    with np.load(out / f"fold_{number}" / "predictions.npz") as data:
        return data["keys"].copy(), data["logits"].copy()


def test_kill_after_first_epoch_and_resume_matches_uninterrupted(reference_run, small_dataset, small_cache,
                                                                 tmp_path, capsys):
    reference, _ = reference_run
    resumed = tmp_path / "resumed"
    kill_after_epoch([sys.executable, "-m", "mmder_tf.finetune", *_base(small_dataset, resumed, small_cache), *RUN_ARGS],
                     resumed / "backup" / "fold_1" / "training_metadata.json", ENV, REPO)
    assert not (resumed / "fold_1" / "results.json").exists()

    # The same command again (in process: TF is already up) resumes from the backup.
    assert finetune.main(_base(small_dataset, resumed, small_cache) + RUN_ARGS) == 0
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
    assert finetune.main(_base(small_dataset, resumed, small_cache) + RUN_ARGS) == 0
    assert "already finished" in capsys.readouterr().out


# --------------------------------------------------------------------------- the cached-feature linear probe end to end

def test_linear_probe_with_feature_cache_and_reevaluation(small_dataset, small_cache, tmp_path):
    from mmder_tf.evaluate import evaluate_run

    out = tmp_path / "probe"
    results = finetune.run(dataset="ravdess", data_dir=small_dataset, out=out, preset="tiny", image_size=32,
                           from_scratch=True,
                           batch_size=4, verbose=0, strategy="fslf", workers=1, cache=small_cache,
                           mode="linear_probe", epochs=2, num_folds=2, folds="2", select="last")
    assert results["run"]["feature_cache"] is True and list(results["folds"]) == ["2"]
    fold = results["folds"]["2"]
    assert fold["weights_kind"] == "head" and fold["epoch_policy"].startswith("last")
    assert len(list((out / "features").glob("*.npz"))) == 1
    head_keys, head_logits = _fold_predictions(out, 2)
    # Re-evaluation runs the full classifier (encoder + trained head) on the clips: same logits, same metrics.
    evaluated = evaluate_run(out, verbose=False)
    keys, logits = _fold_predictions(out, 2)
    np.testing.assert_array_equal(keys, head_keys)
    np.testing.assert_allclose(logits, head_logits, rtol=1e-4, atol=1e-4)
    assert evaluated["folds"]["2"]["war"] == pytest.approx(fold["war"])
    assert evaluated["folds"]["2"]["uar"] == pytest.approx(fold["uar"])


def test_crop_is_the_datasets_default_and_a_prepared_face_cache_is_accepted(tmp_path):
    """Before: the face default lived only in mmder-prepare; mmder-finetune had no --crop, trained on centre
    squares and refused the face cache mmder-prepare made for the same dataset."""
    from mmder_tf import finetune as finetune_cli
    from mmder_tf import pretrain as pretrain_cli
    from mmder_tf.config import FusionConfig, default_crop
    from mmder_tf.data.pipeline import check_config
    from mmder_tf.data.prepare import frame_sets

    data = tmp_path / "RAVDESS"
    data.mkdir()
    argv = ["--dataset", "ravdess", "--data-dir", str(data), "--preset", "tiny", "--from-scratch", "--image-size", "32"]
    config = finetune_cli.config_from_argv(argv)
    assert config.fusion.crop == default_crop("ravdess", data) == "face"
    assert finetune_cli.config_from_argv(argv + ["--crop", "center"]).fusion.crop == "center"
    assert finetune_cli.config_from_argv(["--preset", "tiny"]).fusion.crop == "center"  # generated demo data
    pretrain = pretrain_cli.config_from_args(["--dataset", "ravdess", "--data-dir", str(data), "--out", str(tmp_path / "p")])
    assert pretrain.fusion.crop == "face"
    # What mmder-prepare --dataset ravdess writes (its default crop, the same rule) is what the run reads.
    prepared = FusionConfig(image_size=32, crop=default_crop("ravdess", data))
    settings = {"image_size": 32, "crop": prepared.crop, "sample_rate": prepared.sample_rate,
                "official": prepared.official, "frame_sets": [list(f) for f in frame_sets(prepared)]}
    check_config({"settings": settings}, config.fusion)
