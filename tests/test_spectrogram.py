"""spectrogram.py: librosa parity on real speech, silence, short windows, image layout, viridis."""
import librosa
import matplotlib
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.fusion import alignment
from mmder_tf.config import FusionConfig
from mmder_tf.errors import ConfigError
from mmder_tf.media.decode import decode_clip
from mmder_tf.fusion.spectrogram import (
    colorize,
    mel_filterbank,
    mel_power,
    power_spectrogram,
    power_to_db,
    settings_from_config,
    spectrogram_images,
    spectrogram_values,
    viridis_table,
)

SETTINGS = settings_from_config(FusionConfig())


def _librosa_mel(window, settings, dtype=np.float64):
    return librosa.feature.melspectrogram(
        y=window.astype(dtype), sr=settings.sample_rate, n_fft=settings.n_fft, hop_length=settings.hop_length,
        win_length=settings.win_length, window="hann", center=True, pad_mode="reflect", power=2.0,
        n_mels=settings.n_mels, fmin=settings.fmin, fmax=settings.fmax,
    ).T


@pytest.fixture(scope="module")
def speech_windows(realclips):
    """The 8 aligned windows of a real CREMA-D sentence (MP3 in FLV), as fuse_clip sees them."""
    clip = decode_clip(realclips["1001_DFA_ANG_XX.flv"], 8, sample_rate=16000, need_video=False)
    return alignment.audio_windows(clip.waveform, clip.duration, 8, 16000).numpy()


def test_mel_power_matches_librosa_on_real_speech(speech_windows):
    ours = mel_power(speech_windows, SETTINGS).numpy()
    assert np.abs(speech_windows).max() > 0.05  # real speech, not silence
    for i, window in enumerate(speech_windows):
        reference = _librosa_mel(window, SETTINGS)
        assert ours[i].shape == reference.shape
        # element-wise, down to the quietest bins (float64 STFT inside; 1.4e-7 measured)
        np.testing.assert_allclose(ours[i], reference, rtol=1e-5, atol=1e-12 * reference.max())


def test_db_matches_librosa_with_the_clip_maximum_as_reference(speech_windows):
    power = mel_power(speech_windows, SETTINGS).numpy()
    ours = power_to_db(power, 80.0).numpy()
    reference = librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=80.0)
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    assert ours.max() == pytest.approx(0.0, abs=1e-5) and ours.min() >= -80.0


@pytest.mark.parametrize("sample_rate,n_fft,n_mels,fmin,fmax", [(16000, 512, 128, 0.0, 8000.0), (22050, 1024, 40, 60.0, 7600.0)])
def test_filterbank_is_librosa_slaney(sample_rate, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    np.testing.assert_allclose(ours.T, reference, rtol=1e-9, atol=1e-12)


def test_other_settings_match_librosa(speech_windows):
    settings = settings_from_config(FusionConfig(n_fft=1024, win_ms=40, hop_ms=10, n_mels=64, fmin=50.0, fmax=7000.0))
    assert (settings.win_length, settings.hop_length) == (640, 160)
    ours = mel_power(speech_windows[:2], settings).numpy()
    for i in range(2):
        reference = _librosa_mel(speech_windows[i], settings)
        np.testing.assert_allclose(ours[i], reference, rtol=1e-5, atol=1e-12 * reference.max())


@pytest.mark.parametrize("length", [100, 255, 257])
def test_windows_shorter_than_n_fft(speech_windows, length):
    # reflect padding wider than the window itself, as numpy/librosa do it
    short = speech_windows[2:4, :length]
    ours = mel_power(short, SETTINGS).numpy()
    assert ours.shape == (2, 1 + length // SETTINGS.hop_length, SETTINGS.n_mels)
    for i in range(2):
        with pytest.warns(UserWarning):  # librosa warns that n_fft exceeds the signal
            reference = _librosa_mel(short[i], SETTINGS)
        np.testing.assert_allclose(ours[i], reference, rtol=1e-5, atol=1e-12 * reference.max())


def test_one_sample_window_gives_a_defined_image():
    images = spectrogram_images(np.full((3, 1), 0.5, np.float32), SETTINGS, (32, 32)).numpy()
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8


@pytest.mark.parametrize("kind", ["logmel", "stft", "mfcc"])
def test_silence_is_the_floor_not_nan(kind):
    settings = settings_from_config(FusionConfig(spectrogram=kind))
    values = spectrogram_values(np.zeros((4, 800), np.float32), settings).numpy()
    assert np.isfinite(values).all() and not values.any()
    images = spectrogram_images(np.zeros((4, 800), np.float32), settings, (32, 48)).numpy()
    np.testing.assert_array_equal(images, np.broadcast_to(viridis_table().numpy()[0], images.shape))


def test_logmel_scale_shared_by_the_clip():
    rng = np.random.default_rng(0)
    loud = rng.standard_normal(1600).astype(np.float32)
    windows = np.stack([loud, loud * 0.01])  # 40 dB quieter
    values = spectrogram_values(windows, SETTINGS).numpy()
    assert values[0].max() == pytest.approx(1.0)
    assert values[1].max() == pytest.approx(1.0 - 40.0 / 80.0, abs=1e-4)


def test_mfcc_shapes_and_official_recipe(speech_windows):
    ours = spectrogram_values(speech_windows, settings_from_config(FusionConfig(spectrogram="mfcc", n_mfcc=20)))
    assert ours.shape[-1] == 20
    # every coefficient (c0, the log energy, included) spans the range over the clip: no row is flat
    np.testing.assert_allclose(ours.numpy().min(axis=(0, 1)), 0.0, atol=1e-6)
    np.testing.assert_allclose(ours.numpy().max(axis=(0, 1)), 1.0, atol=1e-6)
    official = settings_from_config(FusionConfig(official=True))
    assert (official.kind, official.n_mels, official.n_mfcc, official.first_coefficient) == ("mfcc", 40, 13, 1)
    values = spectrogram_values(speech_windows, official).numpy()
    assert values.shape[-1] == 13
    # official: every image is scaled on its own, as matshow does
    np.testing.assert_allclose(values.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(values.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_stft_is_the_linear_frequency_power_in_db(speech_windows):
    settings = settings_from_config(FusionConfig(spectrogram="stft"))
    values = spectrogram_values(speech_windows, settings).numpy()
    assert values.shape[-1] == settings.n_fft // 2 + 1
    power = power_spectrogram(speech_windows, settings).numpy()
    db = np.maximum(10 * np.log10(np.maximum(power, 1e-10) / power.max()), -settings.top_db)
    np.testing.assert_allclose(values, (db + settings.top_db) / settings.top_db, atol=1e-6)


def test_image_orientation_low_frequencies_at_the_bottom_time_to_the_right():
    sr = 16000
    t = np.arange(sr) / sr
    low = np.sin(2 * np.pi * 300 * t)
    high = np.sin(2 * np.pi * 6000 * t)
    late = np.where(t >= 0.5, low, 0.0)
    gray = settings_from_config(FusionConfig(colormap="gray"))
    images = spectrogram_images(np.stack([low, high, late]).astype(np.float32), gray, (64, 64)).numpy()[..., 0]
    rows = images.astype(float).mean(axis=2)
    assert rows[0].argmax() > 40  # 300 Hz near the bottom
    assert rows[1].argmax() < 20  # 6 kHz near the top
    columns = images[2].astype(float).mean(axis=0)
    assert columns[:28].max() < 10 and columns[36:].min() > columns[:28].max() + 20
    assert np.array_equal(images[0], spectrogram_images(low[np.newaxis].astype(np.float32), gray, (64, 64)).numpy()[0, ..., 1])


def test_viridis_table_equals_matplotlib():
    reference = np.round(matplotlib.colormaps["viridis"](np.arange(256))[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(viridis_table().numpy(), reference)


def test_colorize_uses_matplotlib_lookup():
    values = np.concatenate([np.random.default_rng(1).random(500), [0.0, 1.0, 255 / 256, 1 / 256]]).astype(np.float32)
    ours = colorize(values).numpy()
    reference = np.round(matplotlib.colormaps["viridis"](values)[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(ours, reference)
    gray = colorize(values, "gray").numpy()
    np.testing.assert_array_equal(gray[:, 0], np.round(values * 255).astype(np.uint8))
    assert (gray[:, 0] == gray[:, 2]).all()


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        settings_from_config(FusionConfig(win_ms=50.0))  # 800 samples > n_fft 512
    with pytest.raises(ConfigError):
        settings_from_config(FusionConfig(fmax=9000.0))


def test_runs_in_dataset_map_with_unknown_lengths(speech_windows):
    eager = spectrogram_images(speech_windows, SETTINGS, (64, 96)).numpy()
    ds = tf.data.Dataset.from_tensors(speech_windows).map(lambda w: spectrogram_images(w, SETTINGS, (64, 96)))
    mapped = next(iter(ds)).numpy()
    np.testing.assert_array_equal(mapped, eager)
    fn = tf.function(lambda w: spectrogram_images(w, SETTINGS, (64, 96)),
                     input_signature=[tf.TensorSpec([None, None], tf.float32)])
    np.testing.assert_array_equal(fn(speech_windows).numpy(), eager)
    assert fn(speech_windows[:3, :300]).shape == (3, 64, 96, 3)


@pytest.mark.parametrize("frames", [100, 300])  # time axis grows (ResizeBilinear path) / shrinks (antialiased)
def test_render_resize_is_the_antialiased_bilinear_resize(frames):
    from mmder_tf.fusion.resize import resize_bilinear

    image = np.random.default_rng(3).random((2, 128, frames, 1)).astype(np.float32)
    reference = tf.image.resize(image, (224, 224), method="bilinear", antialias=True).numpy()
    np.testing.assert_allclose(resize_bilinear(image, (224, 224)).numpy(), reference, atol=1e-5)
    fn = tf.function(lambda x: resize_bilinear(x, (224, 224)), input_signature=[tf.TensorSpec([None, None, None, 1])])
    np.testing.assert_allclose(fn(image).numpy(), reference, atol=1e-5)
    shrunk = tf.image.resize(image, (64, 64), method="bilinear", antialias=True).numpy()
    np.testing.assert_allclose(resize_bilinear(image, (64, 64)).numpy(), shrunk, atol=1e-5)
