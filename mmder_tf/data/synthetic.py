"""A generated audio-visual emotion dataset whose classes need BOTH modalities.

Real mp4 files (H.264 + AAC via `media.write_video`) of drawn, animated faces that
speak with synthetic voices, named like RAVDESS full audio-video speech
(`Actor_AA/01-01-EE-II-SS-RR-AA.mp4`, modality 01 = audio-video, channel 01 =
speech) so `load_manifest("ravdess", out_dir)` reads them as the 7-class protocol
(calm is not generated).

Cue design. Each class is a (visual expression, vocal style) pair:

| class     | code | face  | voice |
|-----------|------|-------|-------|
| neutral   | 01   | flat  | low   |
| happy     | 03   | smile | high  |
| sad       | 04   | frown | low   |
| angry     | 05   | frown | high  |
| fearful   | 06   | open  | high  |
| disgust   | 07   | smile | low   |
| surprised | 08   | open  | low   |

- Faces: flat = level brows, closed straight mouth; smile = wide mouth with raised
  corners, squinted eyes; open = small round wide-open mouth, wide eyes, high
  brows; frown = lowered corners, inner brows pulled down (a V), narrow eyes.
- Voices: low = register 0.8x the actor's pitch, falling within each syllable,
  dark timbre (steep spectral tilt); high = 1.35x, rising, bright (flat tilt). Both ~4 syllables/s (jittered per clip): the mouth opens
  with the syllables, so the speaking rate must not differ or the video would
  reveal the vocal style.
So video alone separates {neutral} {happy, disgust} {sad, angry} {fearful,
surprised} (best accuracy 4/7 ~ 0.57), audio alone {neutral, sad, disgust,
surprised} vs {happy, angry, fearful} (2/7 ~ 0.29), and only both identify all 7.

The cues are coarse (mouth and brows span many 16-pixel patches at 64-224 px;
pitch register and contour are visible in any spectrogram) so a tiny
ViT trained on ~100-200 clips on a CPU picks them up. Nuisances keep it from being
trivial: per-actor skin tone, hair, background, face size/shape and voice (base
pitch by gender, vocal-tract length = formant scale, spectral tilt); per-clip head
position jitter and bob, brightness, pixel noise, blinks, speaking-rate and pitch
jitter, random vowels, background noise; intensity 02 ("strong") exaggerates the
expression and the pitch excursion and is louder.

The mouth opens with the same syllable envelope that drives the voice, so the
audio-visual alignment of the paper (frame i with audio around T_i) pairs
matching moments. Everything is drawn from numpy generators seeded by
(seed, actor, emotion, clip index): the same seed gives the same pixels and samples.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from mmder_tf.errors import ConfigError

EMOTIONS = {  # RAVDESS code -> (class name, face, voice)
    "01": ("neutral", "flat", "low"),
    "03": ("happy", "smile", "high"),
    "04": ("sad", "frown", "low"),
    "05": ("angry", "frown", "high"),
    "06": ("fearful", "open", "high"),
    "07": ("disgust", "smile", "low"),
    "08": ("surprised", "open", "low"),
}

# Geometry in units of the head's half-axes (ax horizontal, ay vertical).
_FACES = {
    #        mouth half-width, corner lift, open base, open per syllable, brow raise, inner brow, eye half-height
    "flat": dict(width=0.40, lift=0.00, open0=0.015, open1=0.09, brow=0.00, inner=0.00, eye=0.090),
    "smile": dict(width=0.56, lift=0.17, open0=0.030, open1=0.09, brow=0.03, inner=0.02, eye=0.055),
    "open": dict(width=0.24, lift=0.00, open0=0.160, open1=0.11, brow=0.11, inner=0.02, eye=0.150),
    "frown": dict(width=0.40, lift=-0.15, open0=0.010, open1=0.07, brow=-0.02, inner=-0.10, eye=0.060),
}
_VOICES = {
    # register, contour start -> end (x register), spectral tilt (x the actor's: < 1 is a
    # brighter voice, a coarse cue that survives low-resolution spectrograms), syllables
    # per second. The rate is the
    # same for both styles: the mouth moves with the syllables, so a different rate
    # would let the video see the vocal style.
    "low": dict(register=0.80, start=1.12, end=0.78, tilt=1.7, rate=4.0),
    "high": dict(register=1.35, start=0.85, end=1.30, tilt=0.6, rate=4.0),
}
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
                   dtype=np.float64)

_SKIN = [(224, 188, 160), (198, 150, 110), (150, 105, 75), (240, 205, 180), (110, 75, 55), (215, 170, 130),
         (180, 130, 95), (235, 195, 165)]
_HAIR = [(40, 30, 25), (90, 60, 30), (20, 20, 20), (160, 120, 60), (60, 45, 35), (120, 110, 100)]
_BACKGROUND = [(70, 90, 120), (110, 120, 90), (60, 60, 70), (130, 110, 120), (90, 110, 110), (120, 100, 80)]


def _actor(actor: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, actor, 7919])
    male = actor % 2 == 1  # RAVDESS: odd actors are male
    return dict(
        skin=np.array(_SKIN[(actor * 3 + seed) % len(_SKIN)], float) + rng.uniform(-12, 12, 3),
        hair=np.array(_HAIR[(actor * 5 + seed) % len(_HAIR)], float),
        background=np.array(_BACKGROUND[(actor + seed) % len(_BACKGROUND)], float) + rng.uniform(-15, 15, 3),
        scale=rng.uniform(0.88, 1.08),
        aspect=rng.uniform(0.74, 0.88),
        f0=rng.uniform(100, 135) if male else rng.uniform(180, 230),
        formant_scale=rng.uniform(0.88, 0.98) if male else rng.uniform(1.04, 1.16),
        tilt=rng.uniform(0.8, 1.3),
    )


def _syllables(rng, seconds, rate):
    """Syllable (onset, length) pairs: jittered spacing, voice active from ~0.15 s to ~0.2 s before the end."""
    onsets, t = [], 0.12 + rng.uniform(0, 0.12)
    while True:
        length = 0.72 / rate * rng.uniform(0.85, 1.15)
        if t + length > seconds - 0.15:
            break
        onsets.append((t, length))
        t += 1.0 / rate * rng.uniform(0.85, 1.15)
    return onsets


def _envelope(times, syllables):
    env = np.zeros_like(times)
    for onset, length in syllables:
        phase = (times - onset) / length
        inside = (phase >= 0) & (phase < 1)
        env[inside] = np.maximum(env[inside], np.sin(np.pi * phase[inside]) ** 2)
    return env


def synthesize_voice(rng, actor, voice: str, strong: bool, seconds: float, sample_rate: int, syllables):
    """Harmonic source at a contoured pitch, shaped by per-syllable vowel formants and the syllable envelope."""
    style = _VOICES[voice]
    count = int(round(seconds * sample_rate))
    times = np.arange(count) / sample_rate
    excursion = 1.25 if strong else 1.0
    base = actor["f0"] * style["register"] * rng.uniform(0.95, 1.05)
    f0 = np.full(count, base)
    formants = np.tile(_VOWELS[0] * actor["formant_scale"], (count, 1))
    for onset, length in syllables:
        lo, hi = int(onset * sample_rate), min(count, int((onset + length) * sample_rate))
        progress = np.linspace(0.0, 1.0, hi - lo)
        start = 1 + (style["start"] - 1) * excursion
        end = 1 + (style["end"] - 1) * excursion
        f0[lo:hi] = base * (start + (end - start) * progress)
        formants[lo:hi] = _VOWELS[rng.integers(len(_VOWELS))] * actor["formant_scale"] * rng.uniform(0.95, 1.05)
    f0 *= 1 + 0.01 * np.sin(2 * np.pi * 5.5 * times)  # vibrato
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    nyquist = 0.45 * sample_rate
    # float32 and one harmonic at a time: the [harmonics, samples] products are the cost.
    source = np.zeros(count, np.float32)
    f0_32, phase_32 = f0.astype(np.float32), phase.astype(np.float32)
    formants_32 = formants.astype(np.float32)
    for k in range(1, int(nyquist // f0.min()) + 1):
        freq = k * f0_32
        shape = np.full(count, 0.02, np.float32)
        for j, (bandwidth, gain) in enumerate(((90.0, 1.0), (120.0, 0.6), (160.0, 0.3))):
            shape += gain * np.exp(-0.5 * ((freq - formants_32[:, j]) / bandwidth) ** 2)
        shape *= (freq <= nyquist) / np.float32(k ** (0.5 * actor["tilt"] * style["tilt"]))
        source += shape * np.sin(k * phase_32)
    envelope = _envelope(times, syllables)
    voice_signal = envelope * (source / (np.abs(source).max() + 1e-9) + 0.05 * rng.standard_normal(count))
    noise = rng.uniform(0.003, 0.02) * rng.standard_normal(count)
    signal = voice_signal * (0.85 if strong else 0.55) + noise
    return (signal / max(1.0, np.abs(signal).max() / 0.95)).astype(np.float32), envelope


def _mouth_polygon(cx, cy, half_width, lift, opening, points=24):
    x = np.linspace(-1.0, 1.0, points)
    corner = -lift * x ** 2  # negative y is up: a positive lift raises the corners
    upper = cy + corner - opening / 2 * (1 - x ** 2)
    lower = cy + corner + opening / 2 * (1 - x ** 2)
    xs = cx + half_width * x
    return np.concatenate([np.stack([xs, upper], 1), np.stack([xs[::-1], lower[::-1]], 1)])


def draw_face(size: int, actor: dict, face: str, strong: bool, opening: float, pose: tuple, blink: bool,
              brightness: float, rng) -> np.ndarray:
    """One RGB uint8 frame: background, hair, head ellipse, eyes, brows, mouth."""
    import cv2

    params = _FACES[face]
    gain = 1.4 if strong else 1.0
    shift = 4  # cv2 sub-pixel coordinates: values are scaled by 2**shift
    one = 1 << shift

    def pt(x, y):
        return int(round(x * one)), int(round(y * one))

    image = np.empty((size, size, 3), np.float32)
    gradient = np.linspace(0.85, 1.1, size, dtype=np.float32)[:, None, None]
    image[:] = actor["background"][None, None, :] * gradient
    cx, cy = pose
    ax = size * 0.30 * actor["scale"] * actor["aspect"] / 0.8
    ay = size * 0.38 * actor["scale"]
    canvas = image.astype(np.uint8).copy()
    cv2.ellipse(canvas, pt(cx, cy - 0.18 * ay), pt(ax * 1.06, ay * 0.95), 0, 0, 360, actor["hair"].tolist(), -1,
                cv2.LINE_AA, shift)
    cv2.ellipse(canvas, pt(cx, cy), pt(ax, ay), 0, 0, 360, np.clip(actor["skin"], 0, 255).tolist(), -1,
                cv2.LINE_AA, shift)
    eye_y = cy - 0.18 * ay
    eye_h = ay * max(0.01, 0.09 + (params["eye"] - 0.09) * gain)
    for side in (-1, 1):
        ex = cx + side * 0.40 * ax
        if blink:
            cv2.line(canvas, pt(ex - 0.18 * ax, eye_y), pt(ex + 0.18 * ax, eye_y), (40, 30, 30),
                     max(1, size // 80), cv2.LINE_AA, shift)
        else:
            cv2.ellipse(canvas, pt(ex, eye_y), pt(0.19 * ax, eye_h), 0, 0, 360, (245, 245, 240), -1, cv2.LINE_AA, shift)
            cv2.ellipse(canvas, pt(ex, eye_y), pt(0.08 * ax, min(eye_h, 0.08 * ax)), 0, 0, 360, (30, 25, 25), -1,
                        cv2.LINE_AA, shift)
        brow_y = eye_y - 0.20 * ay - params["brow"] * gain * ay
        inner = brow_y - params["inner"] * gain * ay  # positive inner raises the inner end
        outer = brow_y + params["inner"] * gain * ay * 0.3
        cv2.line(canvas, pt(cx + side * 0.16 * ax, inner), pt(cx + side * 0.62 * ax, outer), actor["hair"].tolist(),
                 max(2, size // 32), cv2.LINE_AA, shift)
    mouth_y = cy + 0.48 * ay
    half_width = ax * params["width"] * (1 + (gain - 1) * 0.3)
    polygon = _mouth_polygon(cx, mouth_y, half_width, params["lift"] * gain * ay, max(0.0, opening) * ay)
    polygon = np.round(polygon * one).astype(np.int32)
    cv2.fillPoly(canvas, [polygon], (90, 20, 30), cv2.LINE_AA, shift)
    cv2.polylines(canvas, [polygon], True, (150, 50, 60), max(1, size // 64), cv2.LINE_AA, shift)
    out = canvas.astype(np.float32)
    out *= brightness
    out += 4.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def render_clip(actor_id: int, code: str, index: int, seed: int = 0, size: int = 160, fps: float = 25,
                seconds: float = 2.0, sample_rate: int = 16000):
    """(frames uint8 [N, size, size, 3], waveform float32 [S], meta) of one clip, deterministic."""
    if code not in EMOTIONS:
        raise ConfigError(f"emotion code {code!r} is not generated; choose from {sorted(EMOTIONS)}")
    _, face, voice = EMOTIONS[code]
    strong = index % 2 == 1
    actor = _actor(actor_id, seed)
    rng = np.random.default_rng([seed, actor_id, int(code), index])
    syllables = _syllables(rng, seconds, _VOICES[voice]["rate"] * rng.uniform(0.88, 1.12))
    waveform, _ = synthesize_voice(rng, actor, voice, strong, seconds, sample_rate, syllables)
    count = int(round(seconds * fps))
    frame_times = np.arange(count) / fps
    envelope = _envelope(frame_times, syllables)
    params = _FACES[face]
    base = np.array([size / 2, size / 2]) + rng.uniform(-0.06, 0.06, 2) * size
    bob_phase, bob_rate = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.9)
    blink_at = rng.uniform(0.2, seconds - 0.3)
    brightness = rng.uniform(0.85, 1.15)
    frames = np.empty((count, size, size, 3), np.uint8)
    for i, t in enumerate(frame_times):
        pose = (base[0] + 0.01 * size * math.sin(bob_phase + 2 * math.pi * bob_rate * t),
                base[1] + 0.015 * size * math.sin(bob_phase * 1.3 + 2 * math.pi * bob_rate * t))
        opening = params["open0"] + params["open1"] * envelope[i]
        frames[i] = draw_face(size, actor, face, strong, opening, pose, abs(t - blink_at) < 0.06, brightness, rng)
    return frames, waveform, {"face": face, "voice": voice, "strong": strong, "syllables": len(syllables)}


def clip_name(actor_id: int, code: str, index: int) -> str:
    intensity, statement, repetition = 1 + index % 2, 1 + (index // 2) % 2, 1 + index // 4
    if repetition > 99:
        raise ConfigError(f"clip index {index} does not fit the RAVDESS repetition field")
    return f"Actor_{actor_id:02d}/01-01-{code}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor_id:02d}.mp4"


def _write_clip(job):
    from mmder_tf.media import write_video

    path, actor_id, code, index, seed, size, fps, seconds, sample_rate = job
    frames, waveform, _ = render_clip(actor_id, code, index, seed, size, fps, seconds, sample_rate)
    write_video(path, frames, fps=fps, audio=waveform, sample_rate=sample_rate)
    return path


def generate(out_dir, actors=6, clips_per_class: int = 4, seed: int = 0, size: int = 160, fps: float = 25,
             seconds: float = 2.0, sample_rate: int = 16000, emotions=tuple(EMOTIONS), overwrite: bool = False,
             progress: bool = False, workers: int = 1) -> list[Path]:
    """Write the dataset under out_dir; returns every clip path (existing ones are kept unless overwrite).

    `actors` is a count (actors 1..n) or a sequence of actor numbers (1..99).
    Clips are seeded individually, so `workers` processes give the same files.
    """
    actor_ids = list(range(1, int(actors) + 1)) if isinstance(actors, (int, np.integer)) else [int(a) for a in actors]
    if not actor_ids or any(not 1 <= a <= 99 for a in actor_ids):
        raise ConfigError(f"actors must be a positive count or numbers in 1..99, got {actors!r}")
    if clips_per_class < 1 or size < 32 or size % 2 or seconds < 0.6 or fps <= 0:
        raise ConfigError("need clips_per_class >= 1, an even size >= 32, seconds >= 0.6 and fps > 0")
    unknown = [c for c in emotions if c not in EMOTIONS]
    if unknown:
        raise ConfigError(f"emotion codes {unknown} are not generated; choose from {sorted(EMOTIONS)}")
    out_dir = Path(out_dir)
    paths, todo = [], []
    for actor_id in actor_ids:
        for code in emotions:
            for index in range(clips_per_class):
                path = out_dir / clip_name(actor_id, code, index)
                paths.append(path)
                if overwrite or not path.exists():
                    todo.append((path, actor_id, code, index, seed, size, fps, seconds, sample_rate))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="synthetic clips", unit="clip")
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        # spawn: the parent may have TensorFlow loaded, which does not survive fork.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            for _ in pool.imap_unordered(_write_clip, todo):
                if bar is not None:
                    bar.update()
    else:
        for job in todo:
            _write_clip(job)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    description = {
        "generator": "mmder_tf.data.synthetic", "seed": seed, "actors": actor_ids, "clips_per_class": clips_per_class,
        "size": size, "fps": fps, "seconds": seconds, "sample_rate": sample_rate,
        "classes": {EMOTIONS[c][0]: {"code": c, "face": EMOTIONS[c][1], "voice": EMOTIONS[c][2]} for c in emotions},
    }
    from mmder_tf.data.datasets import atomic_write_text
    atomic_write_text(out_dir / "synthetic.json", json.dumps(description, indent=1, sort_keys=True))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mmder_tf.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder (RAVDESS layout)")
    parser.add_argument("--actors", type=int, default=6)
    parser.add_argument("--clips-per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        paths = generate(args.out, actors=args.actors, clips_per_class=args.clips_per_class, seed=args.seed,
                         size=args.size, fps=args.fps, seconds=args.seconds, sample_rate=args.sample_rate,
                         overwrite=args.overwrite, progress=True, workers=args.workers)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} clips in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
