"""The official MultiMAE-DER preprocessing, re-implemented from its description
(shared/REFERENCE.md section 2), as the reference that benchmarks/preprocess.py times.

What it does, per clip:
- every video frame decoded to RGB and resized to the modality size (224 x 224;
  112 x 224 for CFAS) without crop; frames round(linspace(0, (n-1) * rate, n)),
  rate 3 (16 frames) or 6 (8 frames) -- the first ~1.5 s of the clip;
- audio at 44.1 kHz, stereo samples interleaved into one signal, scaled by max |x|;
- n windows in units of N/(n+1) samples, window i = units i..i+2 (not aligned
  with the frames);
- per window a hand-written numpy MFCC: pre-emphasis 0.97, 25 ms Hamming frames
  every 0.1 ms (4 samples), rfft of 512 points (which keeps only the first 512
  samples of each 1103-sample frame), 40 triangular mel filters, 20 log10,
  DCT-II coefficients 1..13, sinusoidal lifter 22;
- drawn with matplotlib matshow (viridis), saved as JPEG, read back and resized
  to the modality size as RGB;
- fused with fusion.fuse(official=True) (wrapped uint8 addition for SFAS).

Frames are decoded with PyAV (the fastest decoder we measured, see decoders.py)
so the comparison is not flattered by a slow reader.

    python benchmarks/official_pipeline.py CLIP [--strategy fslf]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _smoke import add_smoke  # noqa: E402  (this folder is on sys.path)

OFFICIAL_SAMPLE_RATE = 44100
PRE_EMPHASIS = 0.97
FRAME_SIZE = 0.025
FRAME_STRIDE = 0.0001
NFFT = 512
NFILT = 40
NUM_CEPS = 13
CEP_LIFTER = 22


def decode_all(path):
    """Every frame as RGB, and the audio at 44.1 kHz with stereo samples interleaved."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    with av.open(str(path)) as container:
        layout = container.streams.audio[0].layout
        resampler = av.AudioResampler(format="flt", layout=layout, rate=OFFICIAL_SAMPLE_RATE)
        chunks = []
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    audio = np.concatenate(chunks).astype(np.float64)
    return frames, audio / max(np.abs(audio).max(), np.finfo(np.float64).eps)


def mel_filterbank(sample_rate=OFFICIAL_SAMPLE_RATE):
    high = 2595 * np.log10(1 + (sample_rate / 2) / 700)
    hz = 700 * (10 ** (np.linspace(0, high, NFILT + 2) / 2595) - 1)
    bins = np.floor((NFFT + 1) * hz / sample_rate)
    bank = np.zeros((NFILT, NFFT // 2 + 1))
    for m in range(1, NFILT + 1):
        left, centre, right = int(bins[m - 1]), int(bins[m]), int(bins[m + 1])
        for k in range(left, centre):
            bank[m - 1, k] = (k - bins[m - 1]) / (bins[m] - bins[m - 1])
        for k in range(centre, right):
            bank[m - 1, k] = (bins[m + 1] - k) / (bins[m + 1] - bins[m])
    return bank


def mfcc(signal, sample_rate=OFFICIAL_SAMPLE_RATE):
    """[frames, 13] MFCC of one window, the official recipe."""
    from scipy.fftpack import dct

    emphasized = np.append(signal[0], signal[1:] - PRE_EMPHASIS * signal[:-1])
    frame_length = int(round(FRAME_SIZE * sample_rate))
    frame_step = int(round(FRAME_STRIDE * sample_rate))
    count = int(np.ceil(abs(len(emphasized) - frame_length) / frame_step))
    padded = np.append(emphasized, np.zeros(count * frame_step + frame_length - len(emphasized)))
    indices = np.arange(frame_length)[None, :] + np.arange(0, count * frame_step, frame_step)[:, None]
    frames = padded[indices] * np.hamming(frame_length)
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    banks = power @ mel_filterbank(sample_rate).T
    banks = 20 * np.log10(np.where(banks == 0, np.finfo(float).eps, banks))
    coefficients = dct(banks, type=2, axis=1, norm="ortho")[:, 1 : NUM_CEPS + 1]
    lift = 1 + (CEP_LIFTER / 2) * np.sin(np.pi * np.arange(NUM_CEPS) / CEP_LIFTER)
    return coefficients * lift


def render_jpeg(values, size, workdir):
    """matshow (viridis) -> JPEG file -> RGB uint8 resized to size (h, w)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.matshow(values.T, cmap="viridis", aspect="auto")
    target = os.path.join(workdir, "mfcc.jpg")
    figure.savefig(target)
    plt.close(figure)
    image = cv2.cvtColor(cv2.imread(target), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def official_fuse(path, strategy="fslf", num_frames=16, image_size=224):
    """One clip -> uint8 [num_frames, image_size, image_size, 3] the official way."""
    import cv2

    from mmder_tf.fusion import alignment
    from mmder_tf.config import frames_per_modality, modality_size, needs_audio, needs_video
    from mmder_tf.fusion.strategies import fuse

    n = frames_per_modality(strategy, num_frames)
    height, width = modality_size(strategy, image_size)
    frames, audio = decode_all(path)
    # the official code resizes every decoded frame before picking any
    resized = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in frames])
    video = resized[np.asarray(alignment.select_frame_indices(np.arange(len(frames), dtype=np.float32), n,
                                                              official=True))]
    spectrograms = None
    if needs_audio(strategy):
        unit = len(audio) / (n + 1)
        with tempfile.TemporaryDirectory() as workdir:
            spectrograms = np.stack([
                render_jpeg(mfcc(audio[int(i * unit): int((i + 2) * unit)]), (height, width), workdir)
                for i in range(n)
            ])
    seed = None
    if strategy == "rfas":
        seed = np.random.default_rng().integers(0, 2**31, 2)  # unseeded, as the official code
    fused = fuse(video if needs_video(strategy) else None, spectrograms, strategy, seed=seed, official=True)
    return np.asarray(fused)


def main(argv=None):
    parser = argparse.ArgumentParser(description="time the official preprocessing of one clip")
    parser.add_argument("clip", type=Path, nargs="?", help="the clip to time (--smoke: a real RAVDESS clip)")
    parser.add_argument("--strategy", default="fslf")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.clip is None:
        if not args.smoke:
            parser.error("the clip to time is required")
        args.clip = Path(__file__).resolve().parents[2] / "shared" / "realclips" / "01-01-01-01-01-01-01.mp4"
    official_fuse(args.clip, args.strategy)  # warm-up (imports, matplotlib fonts)
    start = time.perf_counter()
    fused = official_fuse(args.clip, args.strategy)
    print(f"official_pipeline {args.clip.name} {args.strategy}: {time.perf_counter() - start:.3f} s/clip, "
          f"output {fused.dtype} {list(fused.shape)}")


if __name__ == "__main__":
    main()
