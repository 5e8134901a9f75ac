"""SavedModel export: same numbers outside mmder_tf, saved_model_cli, metadata, clear errors on bad input."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.serving import export
from mmder_tf.config import FusionConfig
from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.fileio import NotOwnedError
from mmder_tf.media.decode import write_video
from mmder_tf.fusion.clip import fuse_clip, fuse_media

CLASSES = ["anger", "happiness", "sadness"]
CONFIG = FusionConfig(strategy="fslf", image_size=64)
TOL = 1e-5


def client_media(path, sample_rate):
    """What a serving client sends to from_media, with plain PyAV (the docs/serving.md example):
    every decoded frame and its time, channels averaged to mono at sample_rate, sample 0 at the first frame."""
    import av

    with av.open(str(path)) as c:
        frames, times = zip(*[(np.rot90(f.to_ndarray(format="rgb24"), round(f.rotation / 90)), f.time)
                              for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        resampler, first_audio, chunks = None, None, []
        for frame in c.decode(audio=0):
            if resampler is None:
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sample_rate)
                first_audio = frame.time
            chunks += [r.to_ndarray() for r in resampler.resample(frame)]
        chunks += [r.to_ndarray() for r in resampler.resample(None)]
    wave = np.concatenate(chunks, axis=1).mean(axis=0)
    shift = int(round((first_audio - times[0]) * sample_rate))
    wave = np.concatenate([np.zeros(shift, np.float32), wave]) if shift > 0 else wave[-shift:]
    return np.stack(frames), np.asarray(times, np.float32), wave.astype(np.float32)


def generated_clip(path):
    """A real H.264/AAC mp4: moving colour blocks and a tone whose pitch rises."""
    rng = np.random.default_rng(3)
    frames = np.zeros((40, 72, 96, 3), np.uint8)
    for i in range(40):
        frames[i, :, :, 0] = (i * 6) % 256
        frames[i, 10 + i: 30 + i, 20:60, 1] = 220
        frames[i] = np.clip(frames[i].astype(int) + rng.integers(0, 20, frames[i].shape), 0, 255)
    t = np.arange(int(1.6 * 48000)) / 48000
    audio = 0.4 * np.sin(2 * np.pi * (300 + 200 * t) * t).astype(np.float32)
    return write_video(path, frames, fps=25, audio=audio, sample_rate=48000)


def keras_probabilities(model, fused):
    return tf.nn.softmax(model(tf.cast(np.asarray(fused), tf.float32), training=False)).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(7)
    model = export.build_classifier("tiny", CONFIG, CLASSES)
    out = export.export_saved_model(model, CONFIG, CLASSES, tmp_path_factory.mktemp("export") / "mmder" / "1",
                                    preset="tiny")
    return model, out


@pytest.fixture(scope="module")
def clips(realclips, tmp_path_factory):
    gen = generated_clip(tmp_path_factory.mktemp("gen") / "generated.mp4")
    return {"anger": realclips["1001_DFA_ANG_XX.flv"], "happy": realclips["1001_DFA_HAP_XX.flv"], "generated": gen}


def media_batch(paths):
    """Two clips of different lengths zero-padded into one from_media batch, plus the unpadded rows."""
    rows = []
    for path in paths:
        rows.append(client_media(path, CONFIG.sample_rate))
    f_max = max(r[0].shape[0] for r in rows)
    s_max = max(r[2].shape[0] for r in rows)
    h, w = rows[0][0].shape[1:3]
    frames = np.zeros((len(rows), f_max, h, w, 3), np.uint8)
    times = np.zeros((len(rows), f_max), np.float32)
    wave = np.zeros((len(rows), s_max), np.float32)
    for i, (f, t, s) in enumerate(rows):
        frames[i, : len(f)], times[i, : len(t)], wave[i, : len(s)] = f, t, s
    batch = {
        "frames": frames, "timestamps": times, "waveform": wave,
        "num_frames_valid": np.array([len(r[0]) for r in rows], np.int32),
        "num_samples": np.array([len(r[2]) for r in rows], np.int32),
    }
    return batch, rows


FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    data = np.load(sys.argv[2])
    loaded = tf.saved_model.load(sys.argv[1])
    sig = loaded.signatures
    out = {}
    r = sig["serving_default"](fused=tf.constant(data["fused"]))
    out["default_probabilities"] = r["probabilities"].numpy()
    out["default_labels"] = r["labels"].numpy().astype(str)
    out["default_class_names"] = r["class_names"].numpy().astype(str)
    out["float_probabilities"] = sig["serving_float"](fused=tf.constant(data["fused"].astype(np.float32)))["probabilities"].numpy()
    media = {k: tf.constant(data[k]) for k in ("frames", "timestamps", "waveform", "num_frames_valid", "num_samples")}
    r = sig["from_media"](**media)
    out["media_probabilities"] = r["probabilities"].numpy()
    out["media_labels"] = r["labels"].numpy().astype(str)
    meta = sig["metadata"](unused=tf.constant(0))
    out["metadata_json"] = np.array(meta["json"].numpy().decode())
    out["metadata_class_names"] = meta["class_names"].numpy().astype(str)
    out["metadata_sample_rate"] = meta["sample_rate"].numpy()
    out["no_mmder"] = np.array([m for m in sys.modules if m == "mmder_tf" or m.startswith("mmder_tf.")] == [])
    np.savez(sys.argv[3], **out)
""")


def run_fresh(export_dir, inputs, tmp_path):
    inp, res = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inp, **inputs)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), str(export_dir), str(inp), str(res)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(res) as data:
        return {k: data[k] for k in data.files}


def test_fresh_process_matches_keras_on_both_signatures(exported, clips, tmp_path):
    model, export_dir = exported
    fused = np.stack([fuse_clip(clips[k], config=CONFIG) for k in ("anger", "happy", "generated")])
    media, rows = media_batch([clips["anger"], clips["happy"]])
    assert media["num_frames_valid"][0] != media["num_frames_valid"][1]  # padding is really exercised
    assert media["num_samples"][0] != media["num_samples"][1]
    got = run_fresh(export_dir, {"fused": fused, **media}, tmp_path)
    assert bool(got["no_mmder"]), "the fresh process imported mmder_tf"

    expected = keras_probabilities(model, fused)
    assert np.abs(got["default_probabilities"] - expected).max() <= TOL
    assert np.abs(got["float_probabilities"] - expected).max() <= TOL
    assert list(got["default_labels"]) == [CLASSES[i] for i in expected.argmax(1)]
    assert got["default_class_names"].tolist() == [CLASSES] * 3

    # from_media = in-process preprocess.fuse_media on each unpadded clip + the Keras model.
    fused_media = np.stack([fuse_media(f, t, s, CONFIG).numpy() for f, t, s in rows])
    expected_media = keras_probabilities(model, fused_media)
    assert np.abs(got["media_probabilities"] - expected_media).max() <= TOL
    assert list(got["media_labels"]) == [CLASSES[i] for i in expected_media.argmax(1)]
    # ...and a plain-PyAV client's media through the in-graph alignment gives exactly the
    # fused input of the training path (decode_clip picks the frames, then fuse_aligned).
    np.testing.assert_array_equal(fused_media, fused[:2])

    meta = json.loads(str(got["metadata_json"]))
    assert meta == export.read_metadata(export_dir)
    assert got["metadata_class_names"].tolist() == CLASSES
    assert int(got["metadata_sample_rate"]) == CONFIG.sample_rate


def test_metadata_asset_round_trips_the_config(exported):
    model, export_dir = exported
    meta = export.read_metadata(export_dir)
    assert FusionConfig.from_dict(meta["fusion_config"]) == CONFIG
    assert meta["class_names"] == CLASSES and meta["strategy"] == "fslf" and meta["preset"] == "tiny"
    assert (meta["sample_rate"], meta["num_frames"], meta["image_size"]) == (16000, 16, 64)
    assert meta["num_parameters"] == model.count_params()


def test_saved_model_cli_show_and_run(exported, tmp_path):
    model, export_dir = exported
    show = subprocess.run(["saved_model_cli", "show", "--dir", str(export_dir), "--all"],
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    for name in export.SIGNATURES:
        assert f"signature_def['{name}']" in show.stdout
    assert "shape: (-1, 16, 64, 64, 3)" in show.stdout

    out = tmp_path / "cli_out"
    fused = np.arange(2 * 16 * 64 * 64 * 3).reshape(2, 16, 64, 64, 3).astype(np.uint8)
    np.save(tmp_path / "fused.npy", fused)
    run = subprocess.run(
        ["saved_model_cli", "run", "--dir", str(export_dir), "--tag_set", "serve",
         "--signature_def", "serving_default", "--outdir", str(out), "--inputs", f"fused={tmp_path / 'fused.npy'}"],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    probabilities = np.load(out / "probabilities.npy")
    assert np.abs(probabilities - keras_probabilities(model, fused)).max() <= TOL

    meta = subprocess.run(
        ["saved_model_cli", "run", "--dir", str(export_dir), "--tag_set", "serve",
         "--signature_def", "metadata", "--input_exprs", "unused=0"],
        capture_output=True, text=True, timeout=180)
    assert meta.returncode == 0, meta.stderr[-3000:]
    assert "fslf" in meta.stdout and "anger" in meta.stdout


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(str(exported[1])).signatures


def test_fused_signatures_reject_bad_input_clearly(served):
    # Loaded signatures (like TF Serving) do not compare inputs with the declared
    # shapes: the in-graph asserts must name the expected shape.
    sig = served["serving_default"]
    good = np.zeros((1, 16, 64, 64, 3), np.uint8)
    expected = r"must be \[batch, 16, 64, 64, 3\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        sig(fused=tf.constant(good[0]))  # rank 4: one clip without the batch axis
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        sig(fused=tf.constant(np.zeros((1, 16, 32, 32, 3), np.uint8)))  # another image size
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        sig(fused=tf.constant(np.zeros((1, 8, 64, 64, 3), np.uint8)))  # another frame count
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="uint8"):
        sig(fused=tf.constant(good.astype(np.int32)))  # dtype
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        sig(fused=tf.constant(good[:0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="0..255"):
        served["serving_float"](fused=tf.constant(np.full((1, 16, 64, 64, 3), -1.5, np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        served["serving_float"](fused=tf.constant(np.full((1, 16, 64, 64, 3), np.nan, np.float32)))


def test_in_graph_shape_checks_for_servers_that_skip_signature_shapes():
    # TF Serving hands tensors to the graph without checking the declared shape;
    # the asserts inside the signature must say what is wrong.
    check = tf.function(lambda x: export._check_fused(x, CONFIG, check_range=False),
                        input_signature=[tf.TensorSpec(None, tf.uint8)], autograph=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[batch, 16, 64, 64, 3\]"):
        check(tf.zeros((1, 16, 32, 32, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be \[batch, 16, 64, 64, 3\]"):
        check(tf.zeros((16, 64, 64, 3), tf.uint8))
    assert check(tf.zeros((2, 16, 64, 64, 3), tf.uint8)).shape == (2, 16, 64, 64, 3)


def _media(frames=12, samples=16000, batch=1):
    times = np.tile(np.arange(frames, dtype=np.float32) / 25.0, (batch, 1))
    rng = np.random.default_rng(0)
    return {
        "frames": rng.integers(0, 256, (batch, frames, 40, 50, 3), dtype=np.uint8),
        "timestamps": times,
        "waveform": rng.normal(0, 0.1, (batch, samples)).astype(np.float32),
        "num_frames_valid": np.full((batch,), frames, np.int32),
        "num_samples": np.full((batch,), samples, np.int32),
    }


def _call(sig, **inputs):
    return sig(**{k: tf.constant(v) for k, v in inputs.items()})


@pytest.mark.parametrize("change, message", [
    (lambda m: {**m, "frames": m["frames"][:0], "timestamps": m["timestamps"][:0], "waveform": m["waveform"][:0],
                "num_frames_valid": m["num_frames_valid"][:0], "num_samples": m["num_samples"][:0]}, "empty batch"),
    (lambda m: {**m, "timestamps": m["timestamps"][:, :5]}, "one entry per frame"),
    (lambda m: {**m, "num_frames_valid": m["num_frames_valid"] + 1}, "num_frames_valid is larger"),
    (lambda m: {**m, "num_samples": m["num_samples"] + 1}, "num_samples is larger"),
    (lambda m: {**m, "num_samples": m["num_samples"] * 0}, "needs audio"),
    (lambda m: {**m, "num_frames_valid": m["num_frames_valid"] * 0 + 1}, "at least 2 frames"),
    (lambda m: {**m, "timestamps": m["timestamps"][:, ::-1].copy()}, "increase"),
    (lambda m: {**m, "timestamps": m["timestamps"] / 1000.0}, "at least 0.2 s"),
    (lambda m: {**m, "waveform": np.where(np.arange(16000) == 5, np.nan, m["waveform"]).astype(np.float32)}, "NaN"),
    (lambda m: {**m, "num_samples": np.array([16000, 16000], np.int32)}, "same batch size"),
])
def test_from_media_rejects_bad_input_clearly(served, change, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(served["from_media"], **change(_media()))


def test_from_media_wrong_rank_or_dtype(served):
    m = _media()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"frames must be uint8 \[batch, frames"):
        _call(served["from_media"], **{**m, "frames": m["frames"][0]})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"waveform must be float32 \[batch, samples\]"):
        _call(served["from_media"], **{**m, "waveform": m["waveform"][0]})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"timestamps must be float32 \[batch, frames\]"):
        _call(served["from_media"], **{**m, "timestamps": m["timestamps"][0]})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_samples must be int32 \[batch\]"):
        _call(served["from_media"], **{**m, "num_samples": m["num_samples"].reshape(1, 1)})
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="float"):
        _call(served["from_media"], **{**m, "waveform": m["waveform"].astype(np.float64)})
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="uint8"):
        _call(served["from_media"], **{**m, "frames": m["frames"].astype(np.float32)})


def test_short_waveform_is_zero_padded_as_documented(served):
    # 100 samples is far less than one 2-unit window; the documented behaviour is the
    # training one: silence past the end of the audio, not an error and not a shift.
    short = _media(samples=100)
    padded = {**short, "waveform": np.pad(short["waveform"], [[0, 0], [0, 15900]]),
              "num_samples": np.array([16000], np.int32)}
    a = _call(served["from_media"], **short)["probabilities"].numpy()
    b = _call(served["from_media"], **padded)["probabilities"].numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_padding_rows_do_not_change_a_clip(served):
    # The same clip alone and padded next to a longer one gives the same answer.
    alone = _media(frames=10, samples=8000)
    longer = _media(frames=14, samples=12000)
    batch = {
        "frames": np.concatenate([np.pad(alone["frames"], [[0, 0], [0, 4], [0, 0], [0, 0], [0, 0]]),
                                  longer["frames"]]),
        "timestamps": np.concatenate([np.pad(alone["timestamps"], [[0, 0], [0, 4]]), longer["timestamps"]]),
        "waveform": np.concatenate([np.pad(alone["waveform"], [[0, 0], [0, 4000]]), longer["waveform"]]),
        "num_frames_valid": np.array([10, 14], np.int32),
        "num_samples": np.array([8000, 12000], np.int32),
    }
    a = _call(served["from_media"], **alone)["probabilities"].numpy()
    b = _call(served["from_media"], **batch)["probabilities"].numpy()
    np.testing.assert_allclose(b[0], a[0], atol=TOL)


def test_export_refuses_mismatches(exported, tmp_path):
    model, export_dir = exported
    with pytest.raises(ConfigError, match="class names"):
        export.export_saved_model(model, CONFIG, CLASSES[:2], tmp_path / "a")
    with pytest.raises(ConfigError, match="image_size"):
        export.export_saved_model(model, CONFIG.replace(image_size=96), CLASSES, tmp_path / "b")
    with pytest.raises(ConfigError, match="exists"):
        export.export_saved_model(model, CONFIG, CLASSES, export_dir)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers


def test_cli_weights_path_and_bad_checkpoint(exported, tmp_path, capsys):
    model, _ = exported
    weights = tmp_path / "clf.weights.h5"
    model.save_weights(str(weights))
    # Wrong preset for the weights: a clear error, no export written.
    rc = export.main([f"--weights={weights}", "--preset=small", "--class-names=" + ",".join(CLASSES),
                      "--image-size=64", "--output", str(tmp_path / "bad")])
    assert rc == 2 and "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(CheckpointError, match="not an mmder_tf export"):
        export.read_metadata(tmp_path)
    rc = export.main([f"--weights={weights}", "--preset=tiny", "--class-names=" + ",".join(CLASSES),
                      "--num-classes=4", "--output", str(tmp_path / "bad")])
    assert rc == 2 and "--num-classes 4" in capsys.readouterr().err


# ----------------------------------------------------------------------------- issue 11: bounds and owned outputs

def _seconds_clip(seconds, fps=25, samples_per_second=16000):
    return _media(frames=int(seconds * fps), samples=int(seconds * samples_per_second))


def test_from_media_refuses_a_timeline_1000_times_too_long_at_once(served, exported):
    """Timestamps in milliseconds made a 3 s clip 3000 s long: 86 s and 16.9 GB before, a clear error now."""
    import time

    clip = _seconds_clip(3.0)
    _call(served["from_media"], **clip)  # warm: the first call of a loaded signature builds its kernels
    started = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 900 s.*seconds, not milliseconds"):
        _call(served["from_media"], **{**clip, "timestamps": clip["timestamps"] * 1000.0})
    assert time.perf_counter() - started < 1.0
    # Under the limit but not matching the audio (a 0.48 s clip in ms = 480 s): the units disagree.
    short = _media()
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 4 times the waveform"):
        _call(served["from_media"], **{**short, "timestamps": short["timestamps"] * 1000.0})
    assert export.read_metadata(exported[1])["max_clip_seconds"] == 900.0


def test_overwrite_replaces_only_an_export_of_ours(exported, tmp_path):
    """`mmder-export RUN --output RUN --overwrite` deleted the training run; now it is refused and kept."""
    model, export_dir = exported
    run = tmp_path / "run"
    (run / "fold_1").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "fold_1" / "best.weights.h5").write_bytes(b"weights")
    for overwrite in (False, True):
        with pytest.raises(NotOwnedError, match=r"not an mmder_tf export \(it holds fold_1/, run.json\)") as caught:
            export.export_saved_model(model, CONFIG, CLASSES, run, overwrite=overwrite)
        assert "pass overwrite" not in str(caught.value) and "choose another path" in str(caught.value)
    assert sorted(p.name for p in run.rglob("*")) == ["best.weights.h5", "fold_1", "run.json"]
    # The CLI says the same in one line.
    rc = export.main([str(run), "--output", str(run), "--overwrite"])
    assert rc == 2
    # An export of ours is replaced, and what a killed export left beside it is cleaned up.
    target = tmp_path / "models" / "1"
    shutil.copytree(export_dir, target)
    (target.parent / ".1.tmp-999999-deadbeef").mkdir()
    (target.parent / ".1.tmp-999999-cafef00d").write_text("half an export")
    (target.parent / "notes.txt").write_text("mine")
    export.export_saved_model(model, CONFIG, CLASSES, target, overwrite=True)
    assert export.read_metadata(target)["class_names"] == CLASSES
    assert sorted(p.name for p in target.parent.iterdir()) == ["1", "notes.txt"]
