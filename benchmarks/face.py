"""Face detection + tracking per clip, per core: MTCNN (the default) vs OpenCV's Haar cascade.

On every real video clip in ../shared/realclips, the 16 frames the alignment
chooses are decoded once; then, timed in the same run and pinned to one core
(interleaved repeats, medians of CPU seconds):
- mtcnn: media.face.face_crops(frames, "face")                 detect + track + crop
         (the shipped path: full cascade on keyframes, R-Net + O-Net refinement elsewhere)
- every: the same with the full cascade on every frame (detect(..., follow=False), the
         path before keyframes)
- haar:  media.face.face_crops(frames, "face", detector="haar")
Per clip it also prints what the proof asks: on how many chosen frames the tracked
face was detected, the box jitter (FaceTrack.jitter: mean |frame-to-frame change|
of the box centre and side over the mean side) and the share of the crop the face
box covers, for the face crop and for the centre square; and how far the shipped
boxes are from the every-frame cascade's (centre distance and |side ratio - 1| as
fractions of the face side, eye positions likewise: mean and max over the frames).

Then robustness, the reason to choose a detector: every chosen frame of the real
clips altered three ways the recordings of users are (turned in-plane by 25
degrees, darkened to 35 % brightness, the whole frame shrunk to a third inside a
grey canvas), and the share of altered frames on which each detector finds a face
within half a face of the one it found on the original.

    python benchmarks/face.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from percore import CORE  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REALCLIPS = REPO.parent / "shared" / "realclips"

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from preprocess import timed  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)


def altered(frames):
    """{name: (frames, map of a point in the original to the altered frame)} for the three alterations."""
    import cv2

    height, width = frames.shape[1:3]
    centre = (width / 2, height / 2)
    rotation = cv2.getRotationMatrix2D(centre, 25, 1.0)
    turned = np.stack([cv2.warpAffine(f, rotation, (width, height), borderMode=cv2.BORDER_REFLECT) for f in frames])
    dark = np.clip(frames.astype(np.float32) * 0.35, 0, 255).astype(np.uint8)
    small = np.full_like(frames, 110)
    h3, w3 = height // 3, width // 3
    y0, x0 = (height - h3) // 2, (width - w3) // 2
    for i, f in enumerate(frames):
        small[i, y0: y0 + h3, x0: x0 + w3] = cv2.resize(f, (w3, h3), interpolation=cv2.INTER_AREA)
    return {
        "turned 25 deg": (turned, lambda x, y: rotation @ np.array([x, y, 1.0])),
        "dark 35%": (dark, lambda x, y: np.array([x, y])),
        "small 1/3": (small, lambda x, y: np.array([x0 + x * w3 / width, y0 + y * h3 / height])),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    add_smoke(parser)
    args = smoke_sizes(parser.parse_args(argv), repeats=1)

    from mmder_tf.media import face
    from mmder_tf.media.decode import decode_clip

    clips = sorted(p for p in REALCLIPS.iterdir() if p.suffix in (".mp4", ".flv"))[: 1 if args.smoke else None]
    robust = {name: {"mtcnn": 0, "haar": 0, "total": 0} for name in ("turned 25 deg", "dark 35%", "small 1/3")}
    totals = {"mtcnn": [], "every": [], "haar": []}
    agreement = []

    def every_frame(frames):
        """face_crops with the full cascade on every frame."""
        track = face.track(face.detect(frames, follow=False), *frames.shape[1:3])
        return face.crop_frames(frames, "face", track), track

    for path in clips:
        frames = decode_clip(path, 16, need_audio=False).frames[16]
        face.face_crops(frames, "face")  # warm-up: model load, tracing
        face.face_crops(frames, "face", detector="haar")
        every_frame(frames)
        runs = {"mtcnn": [], "every": [], "haar": []}
        for _ in range(args.repeats):
            runs["mtcnn"].append(timed(face.face_crops, frames, "face"))
            runs["every"].append(timed(every_frame, frames))
            runs["haar"].append(timed(face.face_crops, frames, "face", detector="haar"))
        cpu = {d: statistics.median(t[1] for t in r) for d, r in runs.items()}
        wall = {d: statistics.median(t[0] for t in r) for d, r in runs.items()}
        for d in totals:
            totals[d].append(cpu[d])
        crops, track = face.face_crops(frames, "face")
        _, every_track = every_frame(frames)
        _, haar_track = face.face_crops(frames, "face", detector="haar")
        differences = []
        for ours, reference in zip(face.detect(frames), face.detect(frames, follow=False)):
            if ours and reference:
                a, b = max(ours, key=lambda f: f.side), max(reference, key=lambda f: f.side)
                differences.append((np.hypot(a.cx - b.cx, a.cy - b.cy) / b.side, abs(a.side / b.side - 1),
                                    np.abs(np.subtract(a.eyes, b.eyes)).max() / b.side))
        differences = np.asarray(differences)
        agreement.append(differences)
        height, width = frames.shape[1:3]
        side = face.crop_size(track)
        face_share = float(np.median(track.sides[track.detected]) ** 2) / side**2
        centre_share = float(np.median(track.sides[track.detected]) ** 2) / min(height, width) ** 2
        print(f"face {path.name} ({width}x{height}, 16 chosen frames), core {CORE}, 1 thread, CPU s (wall s): "
              f"mtcnn {cpu['mtcnn']:.3f} ({wall['mtcnn']:.3f}), every-frame cascade {cpu['every']:.3f} "
              f"({wall['every']:.3f}), haar {cpu['haar']:.3f} ({wall['haar']:.3f}), "
              f"mtcnn/every = {cpu['mtcnn'] / cpu['every']:.2f}x, mtcnn/haar = {cpu['mtcnn'] / cpu['haar']:.2f}x; "
              f"detected on {track.source.count('detected')}/16 (every {every_track.source.count('detected')}/16, "
              f"haar {haar_track.source.count('detected')}/16); jitter {track.jitter():.4f} (every "
              f"{every_track.jitter():.4f}, haar {haar_track.jitter():.4f}); vs every-frame boxes: centre "
              f"{differences[:, 0].mean():.3f} (max {differences[:, 0].max():.3f}), side {differences[:, 1].mean():.3f} "
              f"(max {differences[:, 1].max():.3f}), eyes max {differences[:, 2].max():.3f} of the side; face box = "
              f"{face_share:.0%} of the face crop, {centre_share:.0%} of the centre square")
        found = {d: face.detect(frames, d) for d in ("mtcnn", "haar")}
        for name, (frames_altered, to_altered) in altered(frames).items():
            again = {d: face.detect(frames_altered, d) for d in ("mtcnn", "haar")}
            for t in range(len(frames)):
                robust[name]["total"] += 1
                for d in ("mtcnn", "haar"):
                    reference = found["mtcnn"][t] or found["haar"][t]
                    if not reference:
                        continue
                    best = max(reference, key=lambda f: f.side)
                    x, y = to_altered(best.cx, best.cy)
                    scale = 1 / 3 if name == "small 1/3" else 1.0
                    if any(np.hypot(f.cx - x, f.cy - y) < 0.5 * best.side * scale for f in again[d][t]):
                        robust[name][d] += 1
    every = np.concatenate(agreement)
    print(f"face all {len(clips)} clips: mean CPU s per clip of 16 frames, mtcnn {np.mean(totals['mtcnn']):.3f}, "
          f"every-frame cascade {np.mean(totals['every']):.3f}, haar {np.mean(totals['haar']):.3f}, "
          f"mtcnn/every = {np.mean(totals['mtcnn']) / np.mean(totals['every']):.2f}x, "
          f"mtcnn/haar = {np.mean(totals['mtcnn']) / np.mean(totals['haar']):.2f}x; boxes vs the every-frame cascade "
          f"on {len(every)} frames: centre mean {every[:, 0].mean():.3f} max {every[:, 0].max():.3f}, side mean "
          f"{every[:, 1].mean():.3f} max {every[:, 1].max():.3f}, eyes max {every[:, 2].max():.3f} (fractions of the side)")
    for name, counts in robust.items():
        print(f"face robustness {name}: found on {counts['mtcnn']}/{counts['total']} frames with mtcnn, "
              f"{counts['haar']}/{counts['total']} with haar")


if __name__ == "__main__":
    main()
