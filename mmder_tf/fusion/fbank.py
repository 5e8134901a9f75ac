"""HiCMAE's audio front end: waveform -> Kaldi log-mel fbank -> cut/pad -> AudioSet normalisation (tf.signal only).

What `torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False,
window_type="hanning", dither=0, frame_shift=10)` computes, as HiCMAE's data
loader calls it, in TensorFlow graph code (tf.data, SavedModel):

* the waveform's mean is removed; frames of 25 ms every 10 ms, only whole ones
  (Kaldi's snip_edges); each frame: its own mean removed, pre-emphasis 0.97
  (the first sample against itself), Kaldi's "hanning" window
  0.5 - 0.5 cos(2 pi n / (N - 1)), zero-padded to the next power of two;
* power spectrum -> HTK-mel triangles (mel = 1127 ln(1 + f / 700), drawn in
  mel space between 20 Hz and Nyquist, no area normalisation; the Nyquist bin
  gets no weight) -> natural log, floored at float32 eps;
* cut, or zero-padded at the end, to `target_length` frames, THEN normalised
  (fbank + 4.2677393) / (4.5689974 * 2), so padded rows are 0.467.

At 16 kHz, 128 bins and a 512-point FFT, mel bin 3 covers no FFT bin: Kaldi
refuses these options, torchaudio (and so HiCMAE) gives the bin an all-zero
filter, i.e. log(eps) in every frame. It is kept, as HiCMAE's models saw it.
Upstream also multiplies the waveform by a random gain Beta(10, 10) + 0.5 even
at evaluation; the deterministic feature here uses gain 1.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mmder_tf.errors import ConfigError

# AudioSet statistics HiCMAE normalises with (mean, std; the std is doubled).
FBANK_MEAN, FBANK_STD = -4.2677393, 4.5689974
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
EPS = float(np.finfo(np.float32).eps)


def _mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def kaldi_mel_banks(num_mel_bins: int, fft_size: int, sample_rate: int, low_freq: float = LOW_FREQ) -> np.ndarray:
    """[num_mel_bins, fft_size // 2 + 1] float32 triangles in mel space, as Kaldi draws them (last column zero)."""
    nyquist = 0.5 * sample_rate
    if not 0 <= low_freq < nyquist:
        raise ConfigError(f"low frequency {low_freq} Hz must lie below Nyquist ({nyquist} Hz)")
    low, high = _mel(low_freq), _mel(nyquist)
    delta = (high - low) / (num_mel_bins + 1)
    left = low + delta * np.arange(num_mel_bins)[:, None]
    mel = _mel(sample_rate / fft_size * np.arange(fft_size // 2))[None, :]
    up, down = (mel - left) / delta, (left + 2 * delta - mel) / delta
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


def kaldi_fbank(waveform, sample_rate=16000, num_mel_bins=128, target_length=256, frame_length_ms=25.0,
                frame_shift_ms=10.0, normalize=True):
    """float waveform [n] (int16 / 32768) -> HiCMAE's feature [target_length, num_mel_bins] float32.

    `normalize=False` gives the log-mel values before the AudioSet scaling (still
    cut/padded to `target_length` unless that is None). Fewer samples than one
    frame give only padding rows.
    """
    sample_rate, num_mel_bins = int(sample_rate), int(num_mel_bins)
    window_size = int(round(sample_rate * frame_length_ms / 1000.0))
    shift = int(round(sample_rate * frame_shift_ms / 1000.0))
    if window_size < 2 or shift < 1 or num_mel_bins < 1:
        raise ConfigError(f"fbank needs a frame of >= 2 samples, a shift >= 1 and mel bins >= 1 (got {window_size}, "
                          f"{shift}, {num_mel_bins})")
    fft_size = 1 << (window_size - 1).bit_length()
    banks = tf.constant(kaldi_mel_banks(num_mel_bins, fft_size, sample_rate).T)  # [bins, mel]
    hann = 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(window_size) / (window_size - 1))

    x = tf.reshape(tf.cast(waveform, tf.float32), [-1])
    x = x - tf.reduce_mean(x)
    frames = tf.signal.frame(x, window_size, shift, pad_end=False)  # [frames, window]; none when n < window
    frames = frames - tf.reduce_mean(frames, axis=1, keepdims=True)
    previous = tf.concat([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - PREEMPHASIS * previous) * tf.constant(hann.astype(np.float32))
    frames = tf.pad(frames, [[0, 0], [0, fft_size - window_size]])  # explicit: rfft refuses short empty input
    power = tf.square(tf.abs(tf.signal.rfft(frames, fft_length=[fft_size])))
    fbank = tf.math.log(tf.maximum(tf.matmul(power, banks), EPS))
    if target_length is not None:
        fbank = fbank[:target_length]
        fbank = tf.pad(fbank, [[0, target_length - tf.shape(fbank)[0]], [0, 0]])
        fbank = tf.ensure_shape(fbank, [target_length, num_mel_bins])
    if normalize:
        fbank = (fbank - FBANK_MEAN) / (FBANK_STD * 2.0)
    return fbank
