"""The synthetic dataset: real mp4 files, RAVDESS names, and cues that need both modalities."""
from collections import Counter

import numpy as np
import pytest

from mmder_tf.data import synthetic
from mmder_tf.data.datasets import load_manifest
from mmder_tf.errors import ConfigError


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    paths = synthetic.generate(out, actors=2, clips_per_class=2, seed=3, size=64, fps=25, seconds=1.2)
    return out, paths


def test_files_are_real_mp4_with_audio(small_set):
    import av

    from mmder_tf.media import decode_clip

    out, paths = small_set
    assert len(paths) == 2 * 7 * 2 and all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    with av.open(str(paths[0])) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        assert container.streams.audio[0].rate == 16000
    clip = decode_clip(paths[5], num_frames=(16, 8))
    assert clip.frames[16].shape == (16, 64, 64, 3) and clip.frames[16].dtype == np.uint8
    assert clip.duration == pytest.approx(1.2, abs=0.05)
    assert clip.waveform is not None and np.abs(clip.waveform).max() > 0.05


def test_ravdess_adapter_reads_labels_and_actors(small_set):
    out, paths = small_set
    manifest = load_manifest("ravdess", out)
    assert len(manifest) == len(paths) and not manifest.skipped
    assert manifest.class_names == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert set(manifest.class_counts().values()) == {4}
    assert manifest.subject_counts() == {"01": 14, "02": 14}
    for record in manifest:
        code = record.meta["emotion_code"]
        assert record.label_name == synthetic.EMOTIONS[code][0]
        assert f"Actor_{record.subject}" in record.key


def test_generation_is_deterministic_and_resumable(small_set, tmp_path):
    frames_a, wave_a, _ = synthetic.render_clip(2, "05", 1, seed=3, size=64, seconds=1.2)
    frames_b, wave_b, _ = synthetic.render_clip(2, "05", 1, seed=3, size=64, seconds=1.2)
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(wave_a, wave_b)
    frames_c, _, _ = synthetic.render_clip(2, "05", 1, seed=4, size=64, seconds=1.2)
    assert not np.array_equal(frames_a, frames_c)
    out, paths = small_set
    before = {p: p.stat().st_mtime_ns for p in paths}
    synthetic.generate(out, actors=2, clips_per_class=2, seed=3, size=64, fps=25, seconds=1.2)
    assert {p: p.stat().st_mtime_ns for p in paths} == before  # existing clips are kept
    with pytest.raises(ConfigError):
        synthetic.generate(tmp_path, actors=0)


def test_cue_design_needs_both_modalities():
    faces = Counter(face for _, face, _ in synthetic.EMOTIONS.values())
    voices = Counter(voice for _, _, voice in synthetic.EMOTIONS.values())
    pairs = {(face, voice) for _, face, voice in synthetic.EMOTIONS.values()}
    assert len(pairs) == 7  # both together identify every class
    assert max(faces.values()) == 2 and len(faces) == 4  # the face alone confuses pairs of classes
    assert len(voices) == 2 and max(voices.values()) == 4  # the voice alone confuses 3-4 classes
    best_video = sum(1 for _ in faces) / 7  # one class per face can be guessed right
    best_audio = len(voices) / 7
    assert best_video == pytest.approx(4 / 7) and best_audio == pytest.approx(2 / 7)


def _pitch(waveform, rate):
    """Median autocorrelation pitch over loud 40 ms frames."""
    size, estimates = int(0.04 * rate), []
    for start in range(0, len(waveform) - size, size // 2):
        frame = waveform[start:start + size]
        if np.sqrt(np.mean(frame ** 2)) < 0.08:
            continue
        frame = frame - frame.mean()
        corr = np.correlate(frame, frame, "full")[size - 1:]
        lo, hi = int(rate / 500), int(rate / 70)
        estimates.append(rate / (lo + np.argmax(corr[lo:hi])))
    return float(np.median(estimates))


def test_voice_register_and_face_shapes_are_distinct():
    for actor in (1, 2):
        _, low, meta_low = synthetic.render_clip(actor, "01", 0, seed=0, size=64, seconds=2.0)
        _, high, meta_high = synthetic.render_clip(actor, "03", 0, seed=0, size=64, seconds=2.0)
        assert (meta_low["voice"], meta_high["voice"]) == ("low", "high")
        assert _pitch(high, 16000) / _pitch(low, 16000) > 1.4
        # same speaking rate: the mouth motion must not reveal the vocal style
        assert abs(meta_high["syllables"] - meta_low["syllables"]) <= 2
    # mouth area (dark red interior) of the same actor and pose: open >> flat, and smile/frown curve differently
    actor = synthetic._actor(1, 0)

    def mouth_pixels(face, lips=False):
        params = synthetic._FACES[face]
        image = synthetic.draw_face(128, actor, face, False, params["open0"] + params["open1"], (64, 64), False, 1.0,
                                    np.random.default_rng(0)).astype(int)
        if lips:  # lips and interior: red far above green and blue (skin is not)
            return (image[..., 1] < 110) & (image[..., 0] > 2 * image[..., 1])
        return (np.abs(image[..., 0] - 90) < 30) & (image[..., 1] < 60) & (image[..., 2] < 70)

    open_area, flat_area = mouth_pixels("open").sum(), mouth_pixels("flat").sum()
    assert open_area > 2 * flat_area > 0
    for face, corners_up in (("smile", True), ("frown", False)):
        mask = mouth_pixels(face, lips=True)
        columns = np.nonzero(mask.any(axis=0))[0]
        rows = np.arange(mask.shape[0])[:, None]

        def mean_row(cols):
            return float((rows * mask[:, cols]).sum() / mask[:, cols].sum())

        edge = max(2, len(columns) // 6)
        corners = (mean_row(columns[:edge]) + mean_row(columns[-edge:])) / 2
        centre = mean_row(columns[len(columns) // 2 - 1: len(columns) // 2 + 2])
        assert (corners < centre - 2) if corners_up else (corners > centre + 2), (face, corners, centre)
