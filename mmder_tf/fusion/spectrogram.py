"""Audio windows -> spectrogram images, with tf.signal only (runs in tf.data and SavedModels).

Pipeline for a batch of windows float32 [n, L] (one clip's aligned windows):

1. STFT like ``librosa.stft(center=True, pad_mode="reflect")``: each window is
   reflect-padded by n_fft // 2 on both sides (any length, even shorter than
   n_fft, by mirrored indices as numpy does), framed every hop samples, weighted
   by a periodic Hann window of win_length samples centred in n_fft, and
   transformed with an rfft of n_fft points. Power = |X|^2. (librosa >= 0.10
   defaults to pad_mode="constant"; comparisons must pass pad_mode="reflect".)
   Everything up to the [0, 1] values runs in float64: float32 FFT rounding is
   ~1e-7 of the peak, which the quiet bins shown in an 80 dB range cannot afford,
   and float32 dB differed in the last bit between eager and traced runs.
2. Mel filterbank: Slaney mel scale with Slaney area normalisation, exactly
   ``librosa.filters.mel(htk=False, norm="slaney")`` (librosa's default), so the
   mel power equals ``librosa.feature.melspectrogram`` with the same STFT settings.
   ``tf.signal.linear_to_mel_weight_matrix`` is not used: it is HTK-scaled and draws
   its triangles in mel space rather than in Hz, so it matches no librosa setting.
3. dB: 10 log10(max(P, 1e-10)) relative to the maximum over *all* windows of the
   clip (so the windows of one clip share a scale), floored at -top_db. A clip whose
   power never exceeds 1e-10 (silence) is the floor everywhere.
4. "logmel": (dB + top_db) / top_db in [0, 1]; "stft": the same on the linear-frequency
   power spectrum (n_fft // 2 + 1 bins, no mel filters). "mfcc":
   ``tf.signal.mfccs_from_log_mel_spectrograms`` of the natural-log mel spectrum
   (measured from the floor, so silence is 0), first n_mfcc coefficients, each
   coefficient min-max scaled over the clip's windows on its own ("row" scale; a
   constant row -> 0). One scale for all coefficients would give c0 (the log
   energy, ~40x the spread of the others) the whole colour range and leave c1..
   about 2.5 % of it, an almost flat image; per coefficient, every row uses the
   range, and the windows of a clip still share each row's scale. The README
   lists the dynamic range measured on the real clips before and after.
5. Image: frequency (or cepstral index) runs up the image with the lowest at the
   bottom row, time runs left to right; bilinearly resized to (H, W) (antialiased
   along an axis that shrinks); mapped to
   uint8 RGB by the viridis colormap (matplotlib's table, embedded) or replicated gray.

``official=True`` reproduces the official code's spectrogram *recipe*: MFCC from 40
mel filters, coefficients 1..13 (c0 dropped), sinusoidal lifter 22, pre-emphasis
0.97 (applied per window), a Hamming window, each image min-max scaled on its own
as a whole (as matplotlib's ``matshow`` autoscales: "image" scale), viridis. Not reproduced: 44.1 kHz audio,
its hop of about 4 samples, HTK-style unnormalised filters, the JPEG round trip and
the axes drawn by matshow, and stereo channels interleaved into one signal.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from mmder_tf.fusion.resize import resize_bilinear
from mmder_tf.fusion.viridis import VIRIDIS_RGB
from mmder_tf.errors import ConfigError

AMIN = 1e-10
SPECTROGRAMS = ("logmel", "stft", "mfcc")


@dataclasses.dataclass(frozen=True)
class SpectrogramSettings:
    """The resolved settings of one spectrogram recipe (from a FusionConfig)."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 80
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 8000.0
    top_db: float = 80.0
    kind: str = "logmel"  # "logmel", "stft" or "mfcc"
    n_mfcc: int = 40
    first_coefficient: int = 0  # official drops c0
    lifter: float = 0.0
    preemphasis: float = 0.0
    window: str = "hann"  # "hann" (periodic, librosa) or "hamming" (symmetric, official)
    scale: str = "row"  # mfcc: "row" (each coefficient over the clip) or "image" (official: each image as a whole)
    colormap: str = "viridis"

    def __post_init__(self):
        if self.win_length < 1 or self.hop_length < 1:
            raise ConfigError(
                f"window ({self.win_length}) and hop ({self.hop_length}) must be at least one sample; "
                "raise win_ms / hop_ms or the sample rate"
            )
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length {self.win_length} samples exceeds n_fft {self.n_fft}; raise n_fft or lower win_ms")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sample_rate={self.sample_rate}"
            )
        if self.kind not in SPECTROGRAMS:
            raise ConfigError(f"spectrogram must be one of {', '.join(SPECTROGRAMS)}, got {self.kind!r}")
        if self.scale not in ("row", "image"):
            raise ConfigError(f"scale must be 'row' or 'image', got {self.scale!r}")
        if self.kind == "mfcc" and not 1 <= self.first_coefficient + self.n_mfcc <= self.n_mels:
            raise ConfigError(f"n_mfcc={self.n_mfcc} (from c{self.first_coefficient}) needs n_mels >= that many, got {self.n_mels}")
        if self.top_db <= 0:
            raise ConfigError(f"top_db must be positive, got {self.top_db}")
        if self.colormap not in ("viridis", "gray"):
            raise ConfigError(f"colormap must be 'viridis' or 'gray', got {self.colormap!r}")


def settings_from_config(config) -> SpectrogramSettings:
    """The spectrogram recipe a FusionConfig asks for (official=True: the official MFCC recipe)."""
    sr = int(config.sample_rate)
    common = dict(
        sample_rate=sr,
        n_fft=int(config.n_fft),
        win_length=int(round(config.win_ms * sr / 1000.0)),
        hop_length=int(round(config.hop_ms * sr / 1000.0)),
        fmin=float(config.fmin),
        fmax=float(config.fmax if config.fmax is not None else sr / 2),
        top_db=float(config.top_db),
    )
    if config.official:
        return SpectrogramSettings(
            **common, n_mels=40, kind="mfcc", n_mfcc=13, first_coefficient=1, lifter=22.0,
            preemphasis=0.97, window="hamming", scale="image", colormap="viridis",
        )
    return SpectrogramSettings(
        **common, n_mels=int(config.n_mels), kind=config.spectrogram, n_mfcc=int(config.n_mfcc),
        colormap=config.colormap,
    )


def _hz_to_mel(hz):
    """Slaney mel: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), hz)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular filters, float64 [n_fft // 2 + 1, n_mels] (librosa's default).

    Computed once per setting in float64 and embedded as a graph constant.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    weights = np.ascontiguousarray(weights.T)
    weights.setflags(write=False)
    return weights


def _analysis_window(settings: SpectrogramSettings) -> tf.Tensor:
    if settings.window == "hamming":
        window = tf.signal.hamming_window(settings.win_length, periodic=False, dtype=tf.float64)
    else:
        window = tf.signal.hann_window(settings.win_length, periodic=True, dtype=tf.float64)
    left = (settings.n_fft - settings.win_length) // 2
    return tf.pad(window, [[left, settings.n_fft - settings.win_length - left]])


def _reflect_pad(windows: tf.Tensor, pad: int) -> tf.Tensor:
    """numpy-style reflect padding of the last axis, valid for any length >= 1.

    Indices are mirrored with period 2 (L - 1), which is what repeated reflection
    gives when the pad exceeds the signal (short windows); tf.pad(REFLECT) cannot.
    """
    length = tf.shape(windows)[-1]
    index = tf.range(-pad, length + pad)
    period = tf.maximum(2 * (length - 1), 1)
    index = tf.math.floormod(index, period)
    index = tf.where(index > length - 1, period - index, index)
    return tf.gather(windows, index, axis=-1)


def power_spectrogram(windows: tf.Tensor, settings: SpectrogramSettings) -> tf.Tensor:
    """|STFT|^2 of each window, float64 [n, frames, n_fft // 2 + 1] with frames = 1 + L // hop.

    float64 because float32 FFT rounding (~1e-7 of the peak) swamps the quiet bins
    that the 80 dB range displays; the cost is negligible next to decoding.
    """
    windows = tf.cast(windows, tf.float64)
    if settings.preemphasis:
        windows = tf.concat([windows[:, :1], windows[:, 1:] - settings.preemphasis * windows[:, :-1]], axis=1)
    padded = _reflect_pad(windows, settings.n_fft // 2)
    frames = tf.signal.frame(padded, settings.n_fft, settings.hop_length, axis=-1)
    spectrum = tf.signal.rfft(frames * _analysis_window(settings))
    return tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))


@functools.lru_cache(maxsize=32)
def _sparse_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """The nonzero entries of mel_filterbank(...).T: (indices int64 [nnz, 2], values float64 [nnz], shape)."""
    weights = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
    nonzero = np.nonzero(weights)
    return np.stack(nonzero, axis=1).astype(np.int64), weights[nonzero], weights.shape


# Windows longer than this (samples; 4 s at 16 kHz, i.e. clips over ~34 s at 16
# frames) get their STFT one window at a time: the framed float64 windows and
# their complex spectra are ~2 x n_fft / hop times the audio, 3 GB for the 16
# windows of a 10-minute clip at once. Each window's result is the same either way.
LONG_WINDOW_SAMPLES = 65536


def _mel_power64_batch(windows: tf.Tensor, settings: SpectrogramSettings) -> tf.Tensor:
    # Each FFT bin feeds at most two triangles (~500 of the 257 x 128 weights are
    # nonzero), so a sparse product costs ~half of the dense float64 matmul.
    indices, values, shape = _sparse_filterbank(
        settings.sample_rate, settings.n_fft, settings.n_mels, settings.fmin, settings.fmax
    )
    bank = tf.sparse.SparseTensor(indices, values, shape)  # [n_mels, bins]
    power = power_spectrogram(windows, settings)
    batch = tf.shape(power)[:2]
    mel = tf.sparse.sparse_dense_matmul(tf.reshape(power, [-1, shape[1]]), bank, adjoint_b=True)
    return tf.reshape(mel, tf.concat([batch, [shape[0]]], axis=0))


def _mel_power64(windows: tf.Tensor, settings: SpectrogramSettings) -> tf.Tensor:
    windows = tf.convert_to_tensor(windows)

    def one_by_one():
        return tf.map_fn(lambda window: _mel_power64_batch(window[tf.newaxis], settings)[0], windows,
                         fn_output_signature=tf.float64, parallel_iterations=1)

    length = windows.shape[-1]
    if length is not None:
        return one_by_one() if length > LONG_WINDOW_SAMPLES else _mel_power64_batch(windows, settings)
    return tf.cond(tf.shape(windows)[-1] > LONG_WINDOW_SAMPLES, one_by_one,
                   lambda: _mel_power64_batch(windows, settings))


def mel_power(windows: tf.Tensor, settings: SpectrogramSettings) -> tf.Tensor:
    """Mel power spectrogram, float32 [n, frames, n_mels] (librosa.feature.melspectrogram layout transposed)."""
    return tf.cast(_mel_power64(windows, settings), tf.float32)


def power_to_db(power: tf.Tensor, top_db: float) -> tf.Tensor:
    """dB relative to the maximum over the whole tensor (one clip), in [-top_db, 0]; silence -> -top_db.

    Computed in the input's dtype (float64 inside this module: in float32, graph
    rewrites change the last bit between eager and traced runs, enough to flip a
    colormap step).
    """
    power = tf.convert_to_tensor(power)
    peak = tf.reduce_max(power)
    amin = tf.constant(AMIN, power.dtype)
    db = (10.0 / math.log(10.0)) * (tf.math.log(tf.maximum(power, amin)) - tf.math.log(tf.maximum(peak, amin)))
    floor = tf.constant(-top_db, power.dtype)
    db = tf.maximum(db, floor)
    return tf.where(peak > amin, db, tf.fill(tf.shape(db), floor))


def _min_max(values: tf.Tensor, axis) -> tf.Tensor:
    low = tf.reduce_min(values, axis=axis, keepdims=True)
    span = tf.reduce_max(values, axis=axis, keepdims=True) - low
    return tf.math.divide_no_nan(values - low, span)


def spectrogram_values(windows: tf.Tensor, settings: SpectrogramSettings) -> tf.Tensor:
    """Per-window features scaled to [0, 1], float32 [n, frames, features] (mels or cepstral coefficients)."""
    if settings.kind == "stft":
        db = power_to_db(power_spectrogram(windows, settings), settings.top_db)
        return tf.cast((db + settings.top_db) / settings.top_db, tf.float32)
    db = power_to_db(_mel_power64(windows, settings), settings.top_db)
    if settings.kind == "logmel":
        return tf.cast((db + settings.top_db) / settings.top_db, tf.float32)
    # Natural log measured from the floor: a silent window is exactly zero, so its
    # MFCCs are exactly zero rather than rounding noise stretched by the scaling.
    log_mel = (db + settings.top_db) * (math.log(10.0) / 10.0)
    mfcc = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)
    mfcc = mfcc[..., settings.first_coefficient: settings.first_coefficient + settings.n_mfcc]
    if settings.lifter:
        index = np.arange(settings.first_coefficient, settings.first_coefficient + settings.n_mfcc)
        lift = 1.0 + (settings.lifter / 2.0) * np.sin(np.pi * index / settings.lifter)
        mfcc = mfcc * tf.constant(lift, mfcc.dtype)
    # row: each coefficient over all windows and frames of the clip; image: each window's image as a whole
    return tf.cast(_min_max(mfcc, axis=[1, 2] if settings.scale == "image" else [0, 1]), tf.float32)


def viridis_table() -> tf.Tensor:
    """uint8 [256, 3]."""
    table = np.array([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in VIRIDIS_RGB], dtype=np.uint8)
    return tf.constant(table)


def colorize(unit: tf.Tensor, colormap: str = "viridis") -> tf.Tensor:
    """[..., H, W] values in [0, 1] -> uint8 [..., H, W, 3].

    viridis indexes floor(v * 256) clipped to 255, matplotlib's own lookup for a 256-colour map.
    """
    unit = tf.clip_by_value(tf.convert_to_tensor(unit, tf.float32), 0.0, 1.0)
    if colormap == "gray":
        gray = tf.cast(tf.round(unit * 255.0), tf.uint8)
        return tf.repeat(gray[..., tf.newaxis], 3, axis=-1)
    if colormap != "viridis":
        raise ConfigError(f"colormap must be 'viridis' or 'gray', got {colormap!r}")
    # unit * 256 is exact (a power of two), so truncating it clipped to [0, 255] is
    # floor(v * 256) clipped to 255; gather_nd of whole [3] rows is the cheapest lookup
    index = tf.cast(tf.clip_by_value(unit * 256.0, 0.0, 255.0), tf.int32)
    return tf.gather_nd(viridis_table(), index[..., tf.newaxis])


def render(values: tf.Tensor, size, colormap: str = "viridis") -> tf.Tensor:
    """[n, frames, features] in [0, 1] -> uint8 [n, H, W, 3], lowest feature at the bottom, time left to right.

    Bilinear resize with antialiasing (which only changes the result along an axis that shrinks).
    """
    image = tf.reverse(tf.transpose(values, [0, 2, 1]), axis=[1])[..., tf.newaxis]
    # Antialiasing only matters where an axis shrinks; usually none does (128 mels, ~100 STFT frames -> 224 x 224).
    image = resize_bilinear(image, size)
    return colorize(image[..., 0], colormap)


def spectrogram_images(windows: tf.Tensor, settings: SpectrogramSettings, size) -> tf.Tensor:
    """Audio windows float32 [n, L] -> spectrogram images uint8 [n, H, W, 3]."""
    return render(spectrogram_values(windows, settings), size, settings.colormap)
