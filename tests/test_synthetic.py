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

    from mmder_tf.media.decode import decode_clip

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


def _band_fraction(waveform, rate, lo, hi):
    power = np.abs(np.fft.rfft(waveform)) ** 2
    freqs = np.fft.rfftfreq(len(waveform), 1 / rate)
    return float(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum())


def _pitch(waveform, rate):
    """Median autocorrelation pitch over loud 40 ms frames (first peak above 0.8 x the highest)."""
    size, estimates = int(0.04 * rate), []
    for start in range(0, len(waveform) - size, size // 2):
        frame = waveform[start:start + size]
        if np.sqrt(np.mean(frame ** 2)) < 0.05:
            continue
        frame = frame - frame.mean()
        corr = np.correlate(frame, frame, "full")[size - 1:]
        lo, hi = int(rate / 500), int(rate / 70)
        window = corr[lo:hi]
        peaks = [i for i in range(1, len(window) - 1)
                 if window[i] >= window[i - 1] and window[i] >= window[i + 1] and window[i] > 0.8 * window.max()]
        estimates.append(rate / (lo + peaks[0]))
    return float(np.median(estimates))


def test_voice_register_and_band_differ_by_style():
    for actor in (1, 2):  # a male and a female actor
        _, low, meta_low = synthetic.render_clip(actor, "01", 0, seed=0, size=64, seconds=1.2)
        _, high, meta_high = synthetic.render_clip(actor, "03", 0, seed=0, size=64, seconds=1.2)
        assert (meta_low["voice"], meta_high["voice"]) == ("low", "high")
        assert _pitch(high, 16000) / _pitch(low, 16000) > 2.0
        # the dark voice lives in the bottom rows of a spectrogram, the bright one in a high band
        assert _band_fraction(low, 16000, 0, 1000) > 0.9
        assert _band_fraction(high, 16000, 1500, 6000) > 0.8
        # same speaking rate: the mouth motion must not reveal the vocal style
        assert abs(meta_high["syllables"] - meta_low["syllables"]) <= 2


def _face(face, actor=1, size=128):
    params = synthetic._FACES[face]
    return synthetic.draw_face(size, synthetic._actor(actor, 0), face, False, params["open0"] + params["open1"],
                               (size / 2, size * 0.52), False, 1.0, np.random.default_rng(0)).astype(int)


def test_face_shapes_differ_in_whole_regions():
    size = 128
    mouth = (slice(int(0.62 * size), int(0.92 * size)), slice(int(0.25 * size), int(0.75 * size)))
    eyes = (slice(int(0.22 * size), int(0.50 * size)), slice(int(0.15 * size), int(0.85 * size)))

    def dark(image):
        return image.max(axis=-1) < 80

    def white(image):
        return image.min(axis=-1) > 225

    faces = {name: _face(name) for name in synthetic._FACES}
    # open: a big dark mouth; flat: a thin line; smile: white teeth; frown: a thick dark arc
    assert dark(faces["open"][mouth]).sum() > 2 * dark(faces["flat"][mouth]).sum() > 0
    assert white(faces["smile"][mouth]).sum() > 0.04 * faces["smile"][mouth][..., 0].size
    assert white(faces["flat"][mouth]).sum() == white(faces["frown"][mouth]).sum() == 0
    # eyes: huge for open, shut (no white) for smile, slits for frown
    eye_white = {name: white(image[eyes]).sum() for name, image in faces.items()}
    assert eye_white["smile"] == 0
    assert eye_white["open"] > 2 * eye_white["flat"] > 0
    assert eye_white["frown"] < eye_white["flat"] / 4
    # mouth curvature: smile corners up, frown corners down
    for face, corners_up in (("smile", True), ("frown", False)):
        mask = dark(faces[face])
        mask[: int(0.6 * size)] = False
        columns = np.nonzero(mask.any(axis=0))[0]
        rows = np.arange(mask.shape[0])[:, None]

        def mean_row(cols):
            return float((rows * mask[:, cols]).sum() / mask[:, cols].sum())

        edge = max(2, len(columns) // 6)
        corners = (mean_row(columns[:edge]) + mean_row(columns[-edge:])) / 2
        centre = mean_row(columns[len(columns) // 2 - 1: len(columns) // 2 + 2])
        assert (corners < centre - 3) if corners_up else (corners > centre + 3), (face, corners, centre)


def test_cues_generalise_across_actors_not_identity():
    """Coarse 8x8 pictures and two band energies classify held-out actors; the actor does not predict the class."""
    size, codes = 64, list(synthetic.EMOTIONS)

    def features(actor, code):
        frames, wave, _ = synthetic.render_clip(actor, code, 0, seed=1, size=size, seconds=0.6)
        gray = frames[len(frames) // 2].mean(axis=-1)
        face = gray.reshape(8, size // 8, 8, size // 8).mean(axis=(1, 3)).ravel()
        face = (face - face.mean()) / face.std()  # brightness and skin tone are per-actor nuisance
        voice = np.array([_band_fraction(wave, 16000, 0, 1000), _band_fraction(wave, 16000, 1500, 6000)])
        return face, voice

    data = {(a, c): features(a, c) for a in range(1, 7) for c in codes}
    train, test = [a for a in range(1, 5)], [5, 6]

    def nearest_centroid(part, key_of):
        centroids = {}
        for a in train:
            for c in codes:
                centroids.setdefault(key_of(c), []).append(data[a, c][part])
        centroids = {k: np.mean(v, 0) for k, v in centroids.items()}
        hits = [min(centroids, key=lambda k: np.linalg.norm(data[a, c][part] - centroids[k])) == key_of(c)
                for a in test for c in codes]
        return np.mean(hits)

    assert nearest_centroid(0, lambda c: synthetic.EMOTIONS[c][1]) >= 0.9  # face from a coarse picture
    assert nearest_centroid(1, lambda c: synthetic.EMOTIONS[c][2]) == 1.0  # voice style from two band energies


def test_stale_folder_is_regenerated(tmp_path):
    import json

    paths = synthetic.generate(tmp_path, actors=[3], clips_per_class=1, seed=0, size=32, seconds=0.6,
                               emotions=("01",))
    description = json.loads((tmp_path / "synthetic.json").read_text())
    assert description["version"] == synthetic.GENERATOR_VERSION
    before = paths[0].stat().st_mtime_ns
    description["version"] = synthetic.GENERATOR_VERSION - 1
    (tmp_path / "synthetic.json").write_text(json.dumps(description))
    synthetic.generate(tmp_path, actors=[3], clips_per_class=1, seed=0, size=32, seconds=0.6, emotions=("01",))
    assert paths[0].stat().st_mtime_ns != before
    assert json.loads((tmp_path / "synthetic.json").read_text())["version"] == synthetic.GENERATOR_VERSION


def test_dimension_cues_are_opt_in_and_carried_by_both_modalities():
    plain = synthetic.render_clip(3, "05", 1, seed=2, size=64, seconds=0.8)
    cued = synthetic.render_clip(3, "05", 1, seed=2, size=64, seconds=0.8, dimensions=True)
    values = synthetic.clip_dimensions(3, "05", 1, seed=2)
    assert {k: cued[2][k] for k in synthetic.DIMENSIONS} == values and "valence" not in plain[2]
    assert all(-1 <= v <= 1 for v in values.values())
    # video: only the two edge strips change, to 128 + 100 x value; the face (class cue) is untouched
    strip = 64 // 16
    np.testing.assert_array_equal(cued[0][:, strip:-strip], plain[0][:, strip:-strip])
    assert np.all(cued[0][:, :strip] == round(128 + 100 * values["valence"]))
    assert np.all(cued[0][:, -strip:] == round(128 + 100 * values["arousal"]))
    # audio: the voice plus two tones whose levels follow the values (-48 dB at -1 .. -12 dB at +1)
    spectrum = np.abs(np.fft.rfft(cued[1].astype(np.float64))) / (cued[1].size / 2)
    freqs = np.fft.rfftfreq(cued[1].size, 1 / 16000)
    scale = 1 / max(1.0, np.abs(plain[1] + synthetic.dimension_tones(values, 0.8, 16000)).max() / 0.95)
    for tone, name in zip((6200.0, 7300.0), synthetic.DIMENSIONS):
        level = spectrum[np.argmin(np.abs(freqs - tone))]
        assert 20 * np.log10(level / scale) == pytest.approx(-30 + 18 * values[name], abs=1.0)
    # the values spread within every class (not a function of the class alone)
    spread = [synthetic.clip_dimensions(a, "03", i)["valence"] for a in range(1, 13) for i in range(2)]
    assert np.std(spread) > 0.25 and np.mean(spread) > 0.1


def test_dimensions_table_matches_the_manifest(tmp_path):
    from mmder_tf.data.datasets import attach_targets

    synthetic.generate(tmp_path, actors=[4], clips_per_class=1, seed=1, size=32, seconds=0.6,
                       emotions=("01", "03"), dimensions=True)
    manifest = attach_targets(load_manifest("ravdess", tmp_path), tmp_path / synthetic.DIMENSIONS_TABLE)
    for record in manifest:
        code, index = record.meta["emotion_code"], 0
        assert {k: record.targets[k] for k in synthetic.DIMENSIONS} == \
            pytest.approx(synthetic.clip_dimensions(4, code, index, seed=1))
    # the same folder asked for without the cues is regenerated and loses its table
    synthetic.generate(tmp_path, actors=[4], clips_per_class=1, seed=1, size=32, seconds=0.6, emotions=("01", "03"))
    assert not (tmp_path / synthetic.DIMENSIONS_TABLE).exists()
