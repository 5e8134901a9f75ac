"""Clip -> fused 16 x 224 x 224 x 3 input, per core: ours vs the official recipe vs a bare decode.

For each clip (a generated 1280x720 30 fps 3.5 s H.264 clip with 48 kHz stereo
AAC, the real RAVDESS mp4 and a real CREMA-D flv), timed in the same run and
pinned to one core (TF intra/inter-op threads 1):
- ours:     mmder_tf.fusion.clip.fuse_clip(path, strategy)
- official: benchmarks/official_pipeline.official_fuse(path, strategy)
- bare:     PyAV decoding every video frame, no colour conversion (the floor
            for any pipeline that reads the whole clip)
- graph:    preprocess.fused_function(config) alone on already-decoded arrays
            (alignment windows, spectrograms, resizes, fusion), in clips/s per
            core (median of --repeats blocks of --graph-repeats calls)
Bars: official/ours >= 10 on the real clips, ours/bare <= 2.0.

    python benchmarks/preprocess.py [--strategy fslf] [--repeats 5] [--official-repeats 2] [--clips CREMA-D ...]
        [--crop center|face|aligned]    (ours with face crops: detection + tracking included in its time)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# One core for every thread (BLAS, TF, PyAV), set before numpy and TF start theirs.
from percore import CORE  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REALCLIPS = REPO.parent / "shared" / "realclips"

# One TF thread, set before TensorFlow runs any op (later settings are ignored).
import tensorflow as tf  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


def generated_clip(directory: Path) -> Path:
    """1280x720, 30 fps, 3.5 s: a textured background and a moving bright disc; voiced 48 kHz stereo audio."""
    from mmder_tf.media.decode import write_video

    rng = np.random.default_rng(0)
    count, height, width = 105, 720, 1280
    yy, xx = np.mgrid[0:height, 0:width]
    background = (
        np.stack([xx * 200 / width, yy * 200 / height, (xx + yy) * 100 / (width + height)], -1)
        + rng.normal(0, 6, (height, width, 3))
    )
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        cx, cy = 300 + 6 * i, 360 + 80 * np.sin(i / 10)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 150**2)[..., None]
        frames[i] = np.clip(np.where(disc, 230.0, background), 0, 255).astype(np.uint8)
    rate = 48000
    t = np.arange(int(3.5 * rate)) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    voice = 0.3 * voice / np.abs(voice).max() + 0.01 * rng.normal(size=t.size)
    audio = np.stack([voice, 0.8 * voice], axis=1)
    return write_video(directory / "generated_1280x720_30fps.mp4", frames, 30, audio, rate)


def bare_decode(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def cpu_seconds():
    t = os.times()  # children only: os.times ticks are 10 ms, process_time is exact
    return time.process_time() + t.children_user + t.children_system


def timed(fn, *args, **kwargs):
    """(wall s, CPU s): on a shared machine the CPU time of the pinned process is the per-core cost."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn(*args, **kwargs)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="fslf")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--official-repeats", type=int, default=2)
    parser.add_argument("--graph-repeats", type=int, default=20)
    parser.add_argument("--crop", default="center", choices=("center", "face", "aligned", "none"))
    parser.add_argument("--clips", nargs="+", choices=("generated", "RAVDESS", "CREMA-D"),
                        default=("generated", "RAVDESS", "CREMA-D"))
    add_smoke(parser)
    args = smoke_sizes(parser.parse_args(argv), repeats=1, official_repeats=1, graph_repeats=1, clips=("RAVDESS",))
    core = CORE

    from official_pipeline import official_fuse

    from mmder_tf.config import FusionConfig, face_crop_mode
    from mmder_tf.media.decode import decode_clip
    from mmder_tf.fusion.clip import fuse_clip, fused_function

    config = FusionConfig(strategy=args.strategy, crop=args.crop)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [
            ("generated", generated_clip(Path(tmp)) if "generated" in args.clips else None),
            ("RAVDESS", REALCLIPS / "01-01-01-01-01-01-01.mp4"),
            ("CREMA-D", REALCLIPS / "1001_DFA_ANG_XX.flv"),
        ]
        for label, path in clips:
            if label not in args.clips:
                continue
            ours_out = fuse_clip(path, config=config)  # warm-up: tracing, imports, file cache
            official_out = official_fuse(path, args.strategy)
            assert ours_out.shape == official_out.shape == (16, 224, 224, 3), (ours_out.shape, official_out.shape)
            bare_decode(path)
            ours, bare, official = [], [], []
            for i in range(args.repeats):
                ours.append(timed(fuse_clip, path, config=config))
                bare.append(timed(bare_decode, path))
                if i < args.official_repeats:
                    official.append(timed(official_fuse, path, args.strategy))
            ours_w, bare_w, official_w = (statistics.median(t[0] for t in x) for x in (ours, bare, official))
            ours_s, bare_s, official_s = (statistics.median(t[1] for t in x) for x in (ours, bare, official))

            n = config.frames_per_modality
            clip = decode_clip(path, n, sample_rate=config.sample_rate, face_crop=face_crop_mode(config.crop))
            graph = fused_function(config)
            inputs = (clip.frames[n], clip.waveform.astype(np.float32), np.float32(clip.duration))
            graph(*inputs)
            graph_s = statistics.median(
                timed(lambda: [graph(*inputs).numpy() for _ in range(args.graph_repeats)])[1] / args.graph_repeats
                for _ in range(args.repeats)
            )

            print(
                f"preprocess {label} ({path.name}, {clip.num_video_frames} frames "
                f"{clip.frames[n].shape[2]}x{clip.frames[n].shape[1]}) {args.strategy}, crop {args.crop}, core {core}, 1 thread, "
                f"CPU s (wall s): ours {ours_s:.3f} ({ours_w:.3f}) = {1 / ours_s:.2f} clips/s; "
                f"official {official_s:.2f} ({official_w:.2f}) = {1 / official_s:.3f} clips/s; "
                f"official/ours = {official_s / ours_s:.1f}x ({official_w / ours_w:.1f}x wall, bar >= 10); "
                f"bare decode {bare_s:.3f} ({bare_w:.3f}), ours/bare = {ours_s / bare_s:.2f} "
                f"({ours_w / bare_w:.2f} wall, bar <= 2.0); in-graph part {1 / graph_s:.1f} clips/s "
                f"({graph_s * 1000:.0f} ms CPU)"
            )


if __name__ == "__main__":
    main()
