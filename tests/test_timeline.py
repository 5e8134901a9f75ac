"""Recordings as streamed windows (media.stream) and `mmder-predict --timeline`."""
import csv
import json

import numpy as np
import pytest

from mmder_tf.config import FusionConfig
from mmder_tf.errors import ConfigError
from mmder_tf.media.decode import decode_clip, write_video
from mmder_tf.media.stream import plan_windows, recording_length, stream_windows
from mmder_tf.serving import export, predict
from mmder_tf.serving.timeline import default_window

CLASSES = ["neutral", "anger", "joy"]
CONFIG = FusionConfig(strategy="fslf", image_size=32, num_frames=8)


def test_plan_windows():
    assert plan_windows(2.0, 3.0, 1.5) == [plan_windows(2.0, 3.0, 1.5)[0]]
    spans = [(w.start, w.end) for w in plan_windows(10.0, 4.0, 2.0)]
    assert spans == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    spans = [(w.start, w.end) for w in plan_windows(9.0, 4.0, 2.0)]
    assert spans == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (5.0, 9.0)]  # the tail gets a full-length window
    with pytest.raises(ConfigError):
        plan_windows(10.0, 0.0, 1.0)


def test_streamed_windows_are_the_segments_decode_clip_decodes(recording):
    """Frames and durations exactly, audio up to the resampler's state at a segment's start."""
    windows = list(stream_windows(recording, 4.0, 3.0, (8, 4), sample_rate=16000))
    assert [(w.start, w.end) for w, _ in windows] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0), (8.0, 12.0)]
    for window, clip in windows:
        reference = decode_clip(recording, (8, 4), start=window.start, end=window.end)
        for n in (8, 4):
            np.testing.assert_array_equal(clip.frames[n], reference.frames[n])
            np.testing.assert_array_equal(clip.frame_indices[n], reference.frame_indices[n])
        assert clip.duration == pytest.approx(reference.duration)
        assert len(clip.waveform) == len(reference.waveform)
        np.testing.assert_allclose(clip.waveform, reference.waveform, atol=2e-2)
        assert clip.face_found is None


def test_streamed_windows_crop_faces_as_decode_clip_does(realclips, tmp_path):
    import cv2

    from mmder_tf.media import face

    still = decode_clip(realclips["1001_DFA_HAP_XX.flv"], 2, need_audio=False).frames[2][:1]
    patch = cv2.resize(face.face_crops(still, "face")[0][0], (100, 100), interpolation=cv2.INTER_AREA)
    frames = np.full((20, 160, 224, 3), 120, np.uint8)
    for i in range(20):  # the face drifts right
        frames[i, 30:130, 40 + 3 * i: 140 + 3 * i] = patch
    path = write_video(tmp_path / "face.mp4", frames, 10)
    for window, clip in stream_windows(path, 1.0, 1.0, 4, need_audio=False, face_crop="aligned"):
        reference = decode_clip(path, 4, start=window.start, end=window.end, need_audio=False, face_crop="aligned")
        np.testing.assert_array_equal(clip.frames[4], reference.frames[4])
        assert clip.face_tracks[4].source == ("detected",) * 4


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 12 s, 10 fps, 48 x 32 recording whose first half is red and loud and whose second half is blue and silent."""
    rng = np.random.default_rng(3)
    frames = np.zeros((120, 32, 48, 3), np.uint8)
    frames[:60, ..., 0] = 200
    frames[60:, ..., 2] = 200
    frames = np.clip(frames + rng.integers(0, 20, frames.shape), 0, 255).astype(np.uint8)
    t = np.arange(12 * 16000) / 16000
    audio = np.where(t < 6, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    return write_video(tmp_path_factory.mktemp("rec") / "phone.mp4", frames, 10, audio=audio, sample_rate=16000)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    model = export.build_classifier("tiny", CONFIG, CLASSES)
    out = tmp_path_factory.mktemp("export") / "model"
    export.export_saved_model(model, CONFIG, CLASSES, out)
    return model, out


def test_timeline_cli_writes_csv_json_png(exported, recording, tmp_path, capsys):
    import tensorflow as tf

    from mmder_tf.fusion.clip import fuse_decoded

    model, export_dir = exported
    out = tmp_path / "out"
    rc = predict.main([str(recording), "--model", str(export_dir), "--timeline", "--window", "4", "--hop", "2",
                       "--json", "--no-progress", "--out", str(out)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert recording_length(recording) == pytest.approx(12.0)
    timeline = result["timeline"]
    assert [(w["start"], w["end"]) for w in timeline] == [(2.0 * k, 2.0 * k + 4) for k in range(5)]
    assert all(w["modalities"] == ["video", "audio"] for w in timeline)
    for window in timeline:
        assert sum(window["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # each window is predicted as the clip decode_clip makes of that segment
    clip = decode_clip(recording, CONFIG.frames_per_modality, start=4.0, end=8.0)
    fused = fuse_decoded(clip, CONFIG)
    expected = tf.nn.softmax(model(tf.cast(fused[None], tf.float32), training=False)).numpy()[0]
    np.testing.assert_allclose([timeline[2]["probabilities"][c] for c in CLASSES], expected, atol=2e-3)
    mean = np.mean([[w["probabilities"][c] for c in CLASSES] for w in timeline], axis=0)
    np.testing.assert_allclose([result["probabilities"][c] for c in CLASSES], mean, rtol=1e-6)
    with open(out / "phone.timeline.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and rows[2]["start_s"] == "4.000" and rows[2]["modalities"] == "video+audio"
    assert float(rows[2]["joy"]) == pytest.approx(timeline[2]["probabilities"]["joy"], abs=1e-6)
    assert json.loads((out / "phone.timeline.json").read_text())["timeline"] == timeline
    assert (out / "phone.timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_default_window_and_errors(exported, recording, tmp_path, capsys):
    _, export_dir = exported
    rc = predict.main([str(recording), str(tmp_path / "missing.mp4"), "--model", str(export_dir), "--timeline",
                       "--json", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert results[0]["window_s"] == 3.0 and results[0]["hop_s"] == 1.5  # no dataset recorded: 3 s windows
    assert default_window({"dataset": "cremad"}) == 2.5 and default_window({"dataset": None}) == 3.0
    assert "error" in results[1] and "missing.mp4" in results[1]["error"]
    assert predict.main([str(recording), "--model", str(export_dir), "--timeline", "--window", "-1",
                         "--no-progress", "--out", str(tmp_path)]) == 1
