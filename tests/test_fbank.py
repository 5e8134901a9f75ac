"""HiCMAE's Kaldi fbank front end against torchaudio's own output on real recordings (../shared/golden/hicmae/fbank).

Bar: max abs difference <= 1e-3 on the normalised feature (the README of the golden
folder measures kaldi-native-fbank vs torchaudio at 2-9e-4 in log-mel units).
`MMDER_GOLDEN` points at another golden folder (default REPO/../shared/golden).
"""
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from mmder_tf import kaldi_fbank
from mmder_tf.fusion.fbank import kaldi_mel_banks

GOLDEN = Path(os.environ.get("MMDER_GOLDEN") or Path(__file__).resolve().parents[1].parent / "shared" / "golden")
FBANK = GOLDEN / "hicmae" / "fbank" / "fbank.npz"



def recordings():
    data = np.load(FBANK)
    names = sorted(k[: -len("_wav_int16")] for k in data.files if k.endswith("_wav_int16"))
    assert len(names) >= 3
    return data, names


def test_every_recording_matches_torchaudio():
    data, names = recordings()
    for name in names:
        waveform = data[f"{name}_wav_int16"].astype(np.float32) / 32768.0
        feature = data[f"{name}_feature"][0]
        raw = kaldi_fbank(waveform, target_length=None, normalize=False).numpy()
        assert raw.shape == data[f"{name}_fbank_raw"].shape, name
        assert np.abs(raw - data[f"{name}_fbank_raw"]).max() <= 1e-2, name  # log-mel units, 9.14x the feature's
        ours = kaldi_fbank(waveform, target_length=feature.shape[0], num_mel_bins=feature.shape[1]).numpy()
        assert np.abs(ours - feature).max() <= 1e-3, name


def test_mel_banks_and_the_empty_bin():
    data, names = recordings()
    ours = kaldi_mel_banks(128, 512, 16000)
    # Ours is drawn in float64, torchaudio's in float32: weights near a triangle's edge differ by ~1e-5.
    np.testing.assert_allclose(ours, data["mel_banks"], atol=3e-5)
    assert np.array_equal(ours > 0, data["mel_banks"] > 0)  # the same FFT bins in every triangle
    empty = np.flatnonzero(ours.max(axis=1) == 0)
    assert list(empty) == [3]  # no FFT bin falls in mel bin 3: torchaudio keeps it at log(eps), so do we
    feature = kaldi_fbank(data[f"{names[0]}_wav_int16"].astype(np.float32) / 32768.0).numpy()
    np.testing.assert_allclose(feature[:, 3], (np.log(np.finfo(np.float32).eps) + 4.2677393) / 9.1379948, rtol=1e-6)


def test_padding_rows_and_graph_use():
    # 1.0 s: 98 frames, then zero rows normalised to 0.467 (padding happens before normalisation, as upstream)
    wave = np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000).astype(np.float32) * 0.1
    feature = kaldi_fbank(wave).numpy()
    assert feature.shape == (256, 128)
    np.testing.assert_allclose(feature[98:], 4.2677393 / 9.1379948, rtol=1e-6)
    assert not np.allclose(feature[97], feature[98])
    # shorter than one frame: only padding
    np.testing.assert_allclose(kaldi_fbank(np.zeros(300, np.float32)).numpy(), 4.2677393 / 9.1379948, rtol=1e-6)
    # inside tf.data / a traced function with an unknown length: same values, static output shape
    traced = tf.function(kaldi_fbank, input_signature=[tf.TensorSpec([None], tf.float32)])
    out = traced(tf.constant(wave))
    assert out.shape == (256, 128)
    np.testing.assert_allclose(out.numpy(), feature, atol=1e-5)
    batch = next(iter(tf.data.Dataset.from_tensor_slices(wave[None]).map(kaldi_fbank).batch(1)))
    np.testing.assert_allclose(batch.numpy()[0], feature, atol=1e-5)
