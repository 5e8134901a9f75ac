"""Dynamic range of MFCC images on the real clips, before (one scale for all coefficients) and after (per coefficient).

    python benchmarks/mfcc_range.py [--strategy fslf]

Measure: for each cepstral coefficient row of a clip's MFCC images (the values in
[0, 1] that the colormap indexes, over all the clip's windows and time frames),
the spread p95 - p5 as a percentage of the colour range. A row with a spread of
2 % is drawn in two or three viridis colours: flat. One line per clip: c0's spread
and the median and minimum spread of c1..c(n-1), before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mmder_tf.config import FusionConfig  # noqa: E402
from mmder_tf.fusion import alignment  # noqa: E402
from mmder_tf.fusion.spectrogram import power_to_db, settings_from_config, spectrogram_values  # noqa: E402
from mmder_tf.fusion.spectrogram import _mel_power64  # noqa: E402
from mmder_tf.media.decode import decode_clip  # noqa: E402
from _smoke import add_smoke  # noqa: E402  (this folder is on sys.path)

REALCLIPS = Path(__file__).resolve().parents[2] / "shared" / "realclips"


def one_scale_mfcc(windows, settings):
    """The former recipe: the same MFCCs, min-max scaled over the whole clip with one scale."""
    db = power_to_db(_mel_power64(windows, settings), settings.top_db)
    log_mel = (db + settings.top_db) * (np.log(10.0) / 10.0)
    mfcc = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., : settings.n_mfcc].numpy()
    return (mfcc - mfcc.min()) / (mfcc.max() - mfcc.min())


def spreads(values):
    rows = values.reshape(-1, values.shape[-1])  # [windows * frames, coefficients]
    return 100 * (np.percentile(rows, 95, axis=0) - np.percentile(rows, 5, axis=0))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", default="fslf")
    add_smoke(parser)
    args = parser.parse_args(argv)
    config = FusionConfig(strategy=args.strategy, spectrogram="mfcc")
    settings = settings_from_config(config)
    clips = sorted(REALCLIPS.glob("1001_*.flv")) + [REALCLIPS / "01-01-01-01-01-01-01.mp4"] + sorted(
        (REALCLIPS / "audio-only").glob("*.mp3"))
    clips = clips[:1] if args.smoke else clips
    summary = {"before": [], "after": []}
    for path in clips:
        clip = decode_clip(path, config.frames_per_modality, need_video=False, sample_rate=config.sample_rate)
        windows = alignment.audio_windows(clip.waveform, clip.duration, config.frames_per_modality,
                                          config.sample_rate)
        before = spreads(one_scale_mfcc(windows, settings))
        after = spreads(spectrogram_values(windows, settings).numpy())
        for name, s in (("before", before), ("after", after)):
            summary[name].append(s[1:])
        print(f"{path.name}: c0 {before[0]:.1f}% -> {after[0]:.1f}% | c1..c{len(before) - 1} median "
              f"{np.median(before[1:]):.1f}% -> {np.median(after[1:]):.1f}%, min {before[1:].min():.1f}% -> "
              f"{after[1:].min():.1f}%", flush=True)
    b, a = np.concatenate(summary["before"]), np.concatenate(summary["after"])
    print(f"all {len(clips)} clips, c1..: median spread {np.median(b):.1f}% -> {np.median(a):.1f}%, "
          f"min {b.min():.1f}% -> {a.min():.1f}% of the colour range (p95 - p5 per coefficient row)")


if __name__ == "__main__":
    main()
