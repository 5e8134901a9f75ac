"""One square face box per clip (OpenCV's bundled Haar cascade), centre square as fallback.

The same box crops every frame of a clip: per-frame boxes would jitter and turn
head motion, which carries emotion, into zoom noise.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from mmder_tf.errors import ConfigError

DEFAULT_MARGIN = 1.4  # face boxes from the cascade are tight; keep forehead, chin and some context
DETECT_FRAMES = 4  # frames spread over the clip; the median box ignores one bad detection
DETECT_WIDTH = 240  # detection on a downscaled copy (~25 ms/frame instead of ~300 ms at 720p); faces stay >= 24 px


@dataclasses.dataclass(frozen=True)
class FaceBox:
    """Square crop box in pixels: rows y..y+size, columns x..x+size."""

    x: int
    y: int
    size: int
    found: bool


@functools.lru_cache(maxsize=1)
def _cascade():
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        # OpenCV 5 dropped the Haar cascades (class and data files) from its wheels.
        raise ConfigError(
            f"face crop needs OpenCV 4.x (opencv-python-headless<5) for its bundled Haar cascade; "
            f"installed OpenCV is {cv2.__version__}"
        )
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ConfigError(f"OpenCV could not load its bundled face cascade {path}")
    return cascade


def center_box(height: int, width: int) -> FaceBox:
    size = min(height, width)
    return FaceBox(x=(width - size) // 2, y=(height - size) // 2, size=size, found=False)


def _detect(image: np.ndarray):
    """Largest face in one RGB frame as (cx, cy, side) in full-resolution pixels, or None."""
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, DETECT_WIDTH / width)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(min(gray.shape) * 0.15))
    faces = _cascade().detectMultiScale(gray, scaleFactor=1.15, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return ((x + w / 2) / scale, (y + h / 2) / scale, max(w, h) / scale)


def face_box(frames: np.ndarray, margin: float = DEFAULT_MARGIN, detect_frames: int = DETECT_FRAMES) -> FaceBox:
    """One box for all `frames` (uint8 [n, h, w, 3]): median of detections, enlarged, squared, clamped.

    Falls back to the centre square (found=False) when no frame shows a face.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ConfigError(f"frames must be [n>0, h, w, 3], got {list(frames.shape)}")
    if margin <= 0:
        raise ConfigError(f"margin must be positive, got {margin}")
    height, width = frames.shape[1:3]
    picks = np.unique(np.linspace(0, len(frames) - 1, min(detect_frames, len(frames))).round().astype(int))
    found = [d for d in (_detect(frames[i]) for i in picks) if d is not None]
    if not found:
        return center_box(height, width)
    cx, cy, side = np.median(np.asarray(found, np.float64), axis=0)
    size = int(round(min(side * margin, height, width)))
    # Shift rather than shrink at the borders so every clip keeps the same framing.
    x = int(round(min(max(cx - size / 2, 0), width - size)))
    y = int(round(min(max(cy - size / 2, 0), height - size)))
    return FaceBox(x=x, y=y, size=size, found=True)


def crop(frames: np.ndarray, box: FaceBox) -> np.ndarray:
    return np.ascontiguousarray(frames[:, box.y : box.y + box.size, box.x : box.x + box.size])


def crop_clip(frames_by_count: dict) -> tuple[dict, bool]:
    """Crop every selection of one clip with one box found on the largest selection."""
    if not frames_by_count:
        return frames_by_count, False
    largest = max(frames_by_count, key=lambda n: len(frames_by_count[n]))
    box = face_box(frames_by_count[largest])
    return {n: crop(f, box) for n, f in frames_by_count.items()}, box.found
