"""moviepy vs PyAV for the same job on the same real clips, pinned to one core.

Job: every video frame as RGB uint8 plus the audio as 16 kHz mono float.
moviepy (test-only dependency) pipes raw frames out of an ffmpeg subprocess;
PyAV decodes in process. The third line is what decode_clip actually does
(convert only the 16 selected frames), for scale.

    python benchmarks/decoders.py [--repeats 5] [clip ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import percore  # noqa: E402,F401  (before numpy: one core for every thread, ffmpeg children included)
import numpy as np  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CLIPS = [
    REPO.parent / "shared" / "realclips" / "01-01-01-01-01-01-01.mp4",
    REPO.parent / "shared" / "realclips" / "1001_DFA_ANG_XX.flv",
]


def with_moviepy(path, rate=16000):
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(path))
    try:
        frames = np.stack(list(clip.iter_frames()))
        audio = clip.audio.to_soundarray(fps=rate).mean(axis=1).astype(np.float32)
    finally:
        clip.close()
    return frames, audio


def with_pyav(path, rate=16000):
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video)])
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="fltp", layout=container.streams.audio[0].layout, rate=rate)
        chunks = []
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]
    return frames, np.concatenate(chunks)


def with_decode_clip(path, rate=16000):
    from mmder_tf.media.decode import decode_clip

    clip = decode_clip(path, 16, sample_rate=rate)
    return clip.frames[16], clip.waveform


def cpu_seconds():
    # user + system of this process and of waited-for children (moviepy's ffmpeg):
    # on a shared machine this, not wall time, is the per-core cost
    t = os.times()  # children only: os.times ticks are 10 ms, process_time is exact
    return time.process_time() + t.children_user + t.children_system


def timed(fn, path):
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn(path)
    return (time.perf_counter() - wall, cpu_seconds() - cpu), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--repeats", type=int, default=5)
    add_smoke(parser)
    args = parser.parse_args(argv)
    smoke_sizes(args, repeats=1, clips=args.clips[:1])
    methods = {"moviepy": with_moviepy, "pyav": with_pyav, "decode_clip": with_decode_clip}
    for path in args.clips:
        shapes = {}
        for name, fn in methods.items():  # warm-up: imports, TF start, file cache
            _, (frames, audio) = timed(fn, path)
            shapes[name] = (frames.shape, audio.shape)
        times = {name: [] for name in methods}
        for _ in range(args.repeats):  # interleaved so that load changes hit all equally
            for name, fn in methods.items():
                times[name].append(timed(fn, path)[0])
        wall = {name: statistics.median(v[0] for v in values) for name, values in times.items()}
        cpu = {name: statistics.median(v[1] for v in values) for name, values in times.items()}
        print(
            f"decoders {path.name}: all frames {shapes['pyav'][0]} + 16 kHz mono {shapes['pyav'][1]} on 1 core, "
            f"median of {args.repeats}, CPU s (wall s): moviepy {cpu['moviepy']:.3f} ({wall['moviepy']:.3f}), "
            f"pyav {cpu['pyav']:.3f} ({wall['pyav']:.3f}), moviepy/pyav = {cpu['moviepy'] / cpu['pyav']:.2f}x "
            f"({wall['moviepy'] / wall['pyav']:.2f}x wall); decode_clip (16 frames converted) "
            f"{cpu['decode_clip']:.3f} ({wall['decode_clip']:.3f}) = {cpu['decode_clip'] / cpu['pyav']:.2f} of pyav"
        )
        if abs(shapes["moviepy"][0][0] - shapes["pyav"][0][0]) > 2:
            print(f"  note: frame counts differ (moviepy {shapes['moviepy'][0][0]}, pyav {shapes['pyav'][0][0]})")


if __name__ == "__main__":
    main()
