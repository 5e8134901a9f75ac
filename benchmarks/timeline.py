"""`mmder-predict --timeline` on generated 1-, 5- and 10-minute recordings: peak memory and time per minute.

The recordings are cheap to make: 320 x 240 at 10 fps H.264 (+ 16 kHz AAC
speech-like audio), written frame by frame with PyAV (memory does not grow with
the length); a real face (the face crop of a CREMA-D frame) drifts slowly over a
textured background, so the face detector and tracker do their real work.

Each length is predicted by a separate `python -m mmder_tf.predict REC --model M
--timeline` process pinned to one core (1 TF thread); the export is the tiny
preset with real input sizes (FSLF, 16 frames, 224 px, face crops), so the
figures are the pipeline's (stream decoding, face tracking, fusion), not a large
encoder's. Printed per length: windows, CPU s and wall s of the process, CPU s
per minute of recording, and its peak resident memory (ru_maxrss); then the ratio
of the 10-minute CPU time to 10x the 1-minute one (1.0 = time proportional to length).

    python benchmarks/timeline.py [--minutes 1 5 10] [--window 3] [--hop 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from percore import CORE  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)
REALCLIPS = REPO.parent / "shared" / "realclips"
FPS, WIDTH, HEIGHT, RATE = 10, 320, 240, 16000


def face_patch() -> np.ndarray:
    from mmder_tf.media import face
    from mmder_tf.media.decode import decode_clip

    frames = decode_clip(REALCLIPS / "1001_DFA_HAP_XX.flv", 2, need_audio=False).frames[2][:1]
    return face.face_crops(frames, "face")[0][0]


def write_recording(path: Path, minutes: float, patch: np.ndarray) -> Path:
    """Frame by frame, audio interleaved, as a phone writes it."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 0.5 + 40, yy * 0.6 + 30, 90 + 0 * xx], -1)
    # a few noisy backgrounds, reused: making the frames must cost little next to predicting them
    backgrounds = [np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    side = 120
    patch = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    count = int(minutes * 60 * FPS)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.options = {"preset": "veryfast"}
        audio = out.add_stream("aac", rate=RATE)
        audio.codec_context.layout = "mono"
        per_frame = RATE // FPS
        for i in range(count):
            t = i / FPS
            frame = backgrounds[i % len(backgrounds)].copy()
            cx, cy = int(WIDTH / 2 + 60 * np.sin(t / 7)), int(HEIGHT / 2 + 20 * np.sin(t / 5))
            frame[cy - side // 2: cy + side // 2, cx - side // 2: cx + side // 2] = patch
            image = av.VideoFrame.from_ndarray(frame, format="rgb24")
            image.pts = i
            image.time_base = Fraction(1, FPS)
            out.mux(video.encode(image))
            s = (np.arange(per_frame) + i * per_frame) / RATE
            pitch = 140 + 40 * np.sin(2 * np.pi * 0.3 * s)
            voice = 0.3 * np.sin(2 * np.pi * pitch * s) * (np.sin(2 * np.pi * 2 * s) > 0)
            sound = av.AudioFrame.from_ndarray(voice.astype(np.float32)[None], format="fltp", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = RATE, i * per_frame, Fraction(1, RATE)
            out.mux(audio.encode(sound))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def export_model(directory: Path) -> Path:
    import keras

    from mmder_tf.config import FusionConfig
    from mmder_tf.serving import export

    keras.utils.set_random_seed(0)
    config = FusionConfig(strategy="fslf", crop="face")
    classes = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust"]
    model = export.build_classifier("tiny", config, classes)
    return export.export_saved_model(model, config, classes, directory / "model")


def run(recording: Path, model: Path, out: Path, window: float, hop: float):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO), TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1")
    command = [sys.executable, "-m", "mmder_tf.predict", str(recording), "--model", str(model), "--timeline",
               "--window", str(window), "--hop", str(hop), "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"predict failed: {stderr[-2000:]}")
    windows = sum(1 for _ in open(out / f"{recording.stem}.timeline.csv")) - 1
    return windows, usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=(1, 5, 10))
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--hop", type=float, default=3.0)
    add_smoke(parser)
    args = smoke_sizes(parser.parse_args(argv), minutes=(0.1,))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = export_model(tmp)
        patch = face_patch()
        cpu_per_minute = {}
        for minutes in args.minutes:
            started = time.perf_counter()
            recording = write_recording(tmp / f"recording_{minutes:g}min.mp4", minutes, patch)
            made = time.perf_counter() - started
            windows, cpu, wall, peak_mb, _ = run(recording, model, tmp / "out", args.window, args.hop)
            cpu_per_minute[minutes] = cpu / minutes
            print(f"timeline {minutes:g} min ({WIDTH}x{HEIGHT} {FPS} fps, {recording.stat().st_size / 1e6:.1f} MB, "
                  f"made in {made:.0f} s), window {args.window:g} s hop {args.hop:g} s, fslf 224 px face crops, "
                  f"tiny encoder, core {CORE}, 1 thread: {windows} windows, CPU {cpu:.1f} s (wall {wall:.1f} s), "
                  f"{cpu / minutes:.1f} CPU s per minute of recording, peak memory {peak_mb:.0f} MB (bar < 2048)")
        # A run = a fixed start (TensorFlow, the SavedModel, the detector) + a cost per minute:
        # the cost of each added stretch of recording is what must not grow with the length.
        lengths = sorted(cpu_per_minute)
        steps = [(a, b, (cpu_per_minute[b] * b - cpu_per_minute[a] * a) / (b - a)) for a, b in zip(lengths, lengths[1:])]
        for a, b, rate in steps:
            print(f"timeline CPU s per added minute of recording, {a:g} -> {b:g} min: {rate:.2f}")
        if len(steps) > 1:
            print(f"timeline added-minute cost, last step / first step = {steps[-1][2] / steps[0][2]:.2f} "
                  "(1.0 = time proportional to length)")


if __name__ == "__main__":
    main()
