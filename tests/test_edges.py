"""Issue 25: reliability at the edges. Each test reproduces one situation an independent probe found
(diverged runs, NaN audio, tampered exports, symlink loops, full and read-only disks, hand-edited run
files, ...) and checks the behaviour that replaced it."""
import json
import math
import os
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


# ----------------------------------------------------------------------------- 2: NaN / Inf audio samples

@pytest.fixture(scope="module")
def nan_audio_clip(tmp_path_factory):
    """A real mkv whose float PCM audio holds 100 NaN samples (the probe's case)."""
    from mmder_tf.media.decode import write_video

    frames = np.zeros((50, 32, 32, 3), np.uint8)
    frames[..., 1] = np.arange(50)[:, None, None] * 4
    audio = 0.3 * np.sin(np.arange(32000) / 16000 * 2 * np.pi * 330).astype(np.float32)
    audio[4000:4100] = np.nan
    return write_video(tmp_path_factory.mktemp("nan") / "nan.mkv", frames, fps=25, audio=audio, sample_rate=16000,
                       audio_codec="pcm_f32le")


def test_nan_audio_is_refused_by_the_decoder_and_the_window_stream(nan_audio_clip):
    from mmder_tf.errors import CorruptMediaError
    from mmder_tf.media.decode import decode_clip
    from mmder_tf.media.stream import stream_windows

    with pytest.raises(CorruptMediaError, match=r"nan.mkv: the audio holds 100 NaN or infinite sample"):
        decode_clip(nan_audio_clip, 8)
    assert decode_clip(nan_audio_clip, 8, need_audio=False).frames  # the video alone is fine
    results = [clip for _, clip in stream_windows(nan_audio_clip, 1.0, 1.0, 8)]
    assert len(results) == 2  # a window at a time: the damaged one is reported, the other one decoded
    assert isinstance(results[0], CorruptMediaError) and "NaN or infinite" in str(results[0])
    assert results[1].waveform is not None and np.isfinite(results[1].waveform).all()


def _export(out, image_size=32, classes=("a", "b", "c")):
    import keras

    from mmder_tf.serving import export

    config = FusionConfig(strategy="fslf", image_size=image_size)
    keras.utils.set_random_seed(0)
    export.export_saved_model(export.build_classifier("tiny", config, list(classes)), config, list(classes), out)
    return out


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("export") / "1")


def test_predict_reports_a_clip_with_nan_audio_as_failed(nan_audio_clip, tiny_export, capsys):
    from mmder_tf.serving import predict

    predict.main([str(nan_audio_clip), "--model", str(tiny_export), "--no-progress"])
    captured = capsys.readouterr()
    assert "NaN or infinite sample" in captured.out + captured.err


# ----------------------------------------------------------------------------- 3: a tampered export is refused

def _tampered(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_export_whose_asset_class_names_were_reversed_is_refused(tiny_export, nan_audio_clip, tmp_path, capsys):
    from mmder_tf.serving import predict

    tampered = _tampered(tiny_export, tmp_path / "tampered")
    asset = tampered / "assets" / "mmder_tf.json"
    metadata = json.loads(asset.read_text())
    metadata["class_names"] = metadata["class_names"][::-1]
    asset.write_text(json.dumps(metadata))
    assert predict.main([str(nan_audio_clip), "--model", str(tampered), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "disagrees with the SavedModel's own metadata on class_names" in err and "['c', 'b', 'a']" in err
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_export_whose_graph_comes_from_another_size_is_refused(tiny_export, tmp_path):
    from mmder_tf.errors import CheckpointError
    from mmder_tf.serving.predict import ExportedModel

    other = _export(tmp_path / "other64", image_size=64)
    tampered = _tampered(tiny_export, tmp_path / "tampered")
    (tampered / "saved_model.pb").write_bytes((other / "saved_model.pb").read_bytes())
    with pytest.raises(CheckpointError, match=r"disagrees with the SavedModel's own metadata on .*fusion_config.* "
                                              r"\(image_size: assets 32, graph 64\)"):
        ExportedModel(tampered)
    ExportedModel(tiny_export)  # the untouched export loads


# ----------------------------------------------------------------------------- 8 and 12: full disks, many epochs

def _fit(out, epochs, callbacks=(), calls=None):
    import keras
    import tensorflow as tf

    from mmder_tf.training import engine

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    y = np.arange(8) % 3

    def epoch_dataset(epoch):
        if calls is not None:
            calls.append(epoch)
        order = np.random.default_rng([0, epoch]).permutation(8)
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(4)

    info = engine.fit_resumable(model, fold_dir=out, epoch_dataset=epoch_dataset, steps_per_epoch=2, epochs=epochs,
                                monitor=None, verbose=0, tensorboard=False, extra_callbacks=callbacks)
    return model, info


def test_many_epochs_do_not_build_every_pipeline_before_the_first_step(tmp_path):
    import keras

    from mmder_tf.training import engine

    class Stop(Exception):
        pass

    class StopAtFirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise Stop

    calls = []
    with pytest.raises(Stop):
        _fit(tmp_path / "fold", 10**6, [StopAtFirstStep()], calls)
    assert 1 <= len(calls) <= engine.EPOCHS_PER_FIT


def test_fits_in_chunks_give_the_uninterrupted_result(tmp_path, monkeypatch):
    from mmder_tf.training import engine

    whole, info_whole = _fit(tmp_path / "whole", 5)
    monkeypatch.setattr(engine, "EPOCHS_PER_FIT", 2)
    chunked, info = _fit(tmp_path / "chunked", 5)
    assert [h["epoch"] for h in info["history"]] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([h["loss"] for h in info["history"]], [h["loss"] for h in info_whole["history"]],
                               rtol=1e-6)
    for a, b in zip(whole.get_weights(), chunked.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_full_disk_keeps_the_last_good_checkpoint_and_a_rerun_resumes(tmp_path, monkeypatch):
    import shutil

    import keras

    from mmder_tf import fileio

    real_usage = shutil.disk_usage
    full = {"now": False}

    def usage(path):
        total, used, free = real_usage(path)
        return type(real_usage(path))(total, used, 0 if full["now"] else free)

    class FillTheDiskInEpoch3(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            full["now"] = epoch == 2

    monkeypatch.setattr(fileio.shutil, "disk_usage", usage)
    with pytest.raises(OSError) as raised:
        _fit(tmp_path / "fold", 4, [FillTheDiskInEpoch3()])
    message = fileio.file_system_error(raised.value)
    assert message.startswith("no space left on the device mounted at ") and "last good checkpoint" in message
    backup = tmp_path / "fold" / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2  # epochs 1 and 2 complete
    assert not [p for p in backup.iterdir() if ".tmp-" in p.name]
    full["now"] = False
    resumed, info = _fit(tmp_path / "fold", 4)  # the same command again, with space
    assert info["resumed_from"] == 2 and [h["epoch"] for h in info["history"]] == [0, 1, 2, 3]
    whole, _ = _fit(tmp_path / "whole", 4)
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- 6: every media name gets a line

def test_predict_folder_reports_dangling_links_and_fifos(tiny_export, nan_audio_clip, tmp_path, capsys):
    from mmder_tf.serving import predict

    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    os.mkfifo(folder / "pipe.mkv")
    (folder / "nan.mkv").symlink_to(nan_audio_clip)
    items = dict(predict.expand_paths([folder]))
    assert set(items) == {str(folder / n) for n in ("gone.mp4", "pipe.mkv", "nan.mkv")}
    assert "a symbolic link to a missing file" in items[str(folder / "gone.mp4")]
    assert "a named pipe (FIFO)" in items[str(folder / "pipe.mkv")]
    assert items[str(folder / "nan.mkv")] is None
    assert predict.main([str(folder), "--model", str(tiny_export), "--no-progress", "--json"]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped") == 2 and "gone.mp4" in err and "pipe.mkv" in err


# ----------------------------------------------------------------------------- 5: a symbolic link loop

def test_a_link_loop_in_a_folder_dataset_visits_each_clip_once_and_warns(tmp_path):
    from mmder_tf.data.datasets import scan_folder

    for subject in ("id1", "id2"):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "a.mp4").write_bytes(b"clip")
    (tmp_path / "id1" / "loop").symlink_to(tmp_path)  # id1/loop/id2/a.mp4 is id2's clip under id1
    (tmp_path / "id2" / "again.mp4").symlink_to(tmp_path / "id2" / "a.mp4")
    with pytest.warns(UserWarning, match=r"2 folder\(s\) or file\(s\) reached a second time"):
        manifest = scan_folder(tmp_path)
    assert [(r.key, r.subject) for r in manifest.records] == [("id1/a.mp4", "id1"), ("id2/a.mp4", "id2")]


# ----------------------------------------------------------------------------- 9, 11, 12: arguments and read-only disks

@pytest.mark.parametrize("argv, message", [
    (["--seconds", "nan"], "seconds must be in 0.6..600.0, got nan"),
    (["--fps", "1e9"], "fps must be in 1..240.0"),
    (["--sample-rate", "100"], "sample_rate must be in 8000..96000 Hz"),
])
def test_synthetic_refuses_unusable_numbers_at_once(tmp_path, capsys, argv, message):
    from mmder_tf.data import synthetic

    assert synthetic.main([str(tmp_path / "out"), "--actors", "1", "--workers", "1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_visualize_refuses_a_huge_image_size(capsys, tmp_path):
    from mmder_tf.reports import visualize

    assert visualize.main([str(tmp_path / "clip.mp4"), "--image-size", "100000", "--out", str(tmp_path / "x.png")]) \
        == 2
    assert "image_size must be a positive multiple of 32 up to 2048" in capsys.readouterr().err


def _read_only_folder(tmp_path, monkeypatch):
    """A read-only folder: a read-only tmpfs where the machine lets us mount one (root), else the same
    refusal simulated (os.access and the writers' open report EROFS)."""
    import errno
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                            capture_output=True).returncode == 0:
        return folder, lambda: subprocess.run(["umount", str(folder)], check=False)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(folder) + os.sep):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return folder, lambda: None


def test_demo_data_in_a_read_only_home_names_synthetic_dir(tmp_path, monkeypatch, capsys):
    folder, release = _read_only_folder(tmp_path, monkeypatch)
    try:
        assert finetune.main(["--synthetic-dir", str(folder / "cache"), "--out", str(tmp_path / "run"),
                              "--verbose", "0"]) == 2
    finally:
        release()
    err = capsys.readouterr().err
    assert "cannot write the demo dataset to" in err and "pass --synthetic-dir" in err and err.count("\n") == 1


def test_prepare_into_a_read_only_folder_is_one_line(small_dataset, tmp_path, monkeypatch, capsys):
    from mmder_tf.data import prepare

    folder, release = _read_only_folder(tmp_path, monkeypatch)
    try:
        code = prepare.main(["--dataset", "ravdess", "--data-dir", str(small_dataset), "--image-size", "32",
                             "--out", str(folder / "cache"), "--no-progress"])
    finally:
        release()
    err = capsys.readouterr().err
    assert code == 1 and "mmder-prepare: error: cannot write: read-only file system" in err, err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- 10: a finished shared cache

def test_a_finished_cache_is_read_without_the_writer_lock(small_dataset, small_cache, tmp_path):
    """Multi-worker runs on one shared cache: a worker took the writer lock just to check a finished
    cache, and the other one failed on it. Readers of a complete cache no longer ask for the lock."""
    import subprocess
    import sys
    import textwrap

    from mmder_tf.data.datasets import load_manifest
    from mmder_tf.data.prepare import prepare

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mmder_tf.fileio import WriterLock
        WriterLock({str(small_cache)!r}, "mmder-prepare").acquire()
        print("READY", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "READY"
        index = prepare(load_manifest("ravdess", data_dir=small_dataset), small_cache,
                        FusionConfig(strategy="fslf", image_size=32), progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert index["complete"] and index["prepared_now"] == 0
