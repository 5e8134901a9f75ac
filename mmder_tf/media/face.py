"""Faces found, tracked and cropped across one clip, the way the field crops them.

Detection: MTCNN (the `mtcnn` package: TensorFlow, MIT licence, its three small
networks' weights ship inside the wheel, nothing is downloaded) on a copy of each
chosen frame downscaled to DETECT_WIDTH; it gives a box, a score and five
landmarks per face. OpenCV's Haar cascade (`detector="haar"`, boxes only) stays
for comparison: benchmarks/face.py measures both on the real clips.

Tracking (`track`): one identity per clip. The anchor is the most prominent face
of the clip (largest, most central, over all frames); from the anchor's frame the
track follows, forwards and backwards, the detection nearest the last tracked
face (centre within half a face, size within 2x); other faces are ignored, so a
second person never takes over. The tracked centres, sizes and eye positions are
smoothed over time (median of 3, then a Gaussian over the found frames, sigma one
frame). A frame where the tracked face is not found keeps the previous frame's
face; before the first found frame, and in clips without any face, the crop is
the centre square (`FaceTrack.source` says which, per frame).

Crops (`crop_frames`), all square and all the same size within a clip (S pixels:
the median tracked face side times the margin, so faces keep their native
resolution; the plain centre square when no face was found):
- "face": a square of side `margin` x the tracked face around the tracked centre,
  shifted (not shrunk) to stay inside the frame.
- "aligned": a similarity transform (rotation, uniform scale, shift) that puts the
  tracked eye centres at fixed points (ALIGNED_EYES) of the S x S crop, as
  OpenFace's similarity-aligned crops do; the mouth and brows are left free, so
  expressions are not normalised away. Outside the frame is black.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from mmder_tf.errors import ConfigError

FACE_CROPS = ("face", "aligned")  # FusionConfig.crop values that need a face track
DETECTORS = ("mtcnn", "haar")
DEFAULT_MARGIN = 1.3  # crop side / tracked face side (MTCNN's box height: brows to chin)
DETECT_WIDTH = 240  # faces of a 720p frame stay >= ~40 px at this width; MTCNN's cost grows with pixels
MIN_FACE = 20  # px at DETECT_WIDTH (MTCNN's own default)
MIN_SCORE = 0.9  # MTCNN confidence below this is treated as no face
# Eye centres in an aligned crop, as fractions of its side: the mean positions in a
# "face" crop measured on the real clips (eye distance 0.33 x box height, eyes
# 0.39 of the box height from its top), so "face" and "aligned" frame alike.
ALIGNED_EYES = ((0.375, 0.415), (0.625, 0.415))
SMOOTH_SIGMA = 1.0  # frames


@dataclasses.dataclass(frozen=True)
class Detection:
    """One face in one frame, full-resolution pixels: centre, side (the box's longer edge), eyes or None."""

    cx: float
    cy: float
    side: float
    score: float
    eyes: tuple | None = None  # ((x, y) of the eye on the image's left, (x, y) of the other)


@dataclasses.dataclass(frozen=True)
class FaceTrack:
    """One face through the frames of a clip (arrays over frames, in time order)."""

    centers: np.ndarray  # float64 [n, 2] (x, y)
    sides: np.ndarray  # float64 [n]
    eyes: np.ndarray  # float64 [n, 2, 2]; NaN where unknown (Haar, centre fallback)
    source: tuple  # per frame: "detected", "previous" (held) or "centre"
    height: int
    width: int

    @property
    def found(self) -> bool:
        return "detected" in self.source

    @property
    def detected(self) -> np.ndarray:
        return np.array([s == "detected" for s in self.source])

    def jitter(self) -> float:
        """Box jitter: mean |frame-to-frame change| of the box centre (x and y) and side, / the mean side.

        0 for a fixed box; 0.01 means the crop moves by 1% of its size between chosen frames.
        """
        if len(self.sides) < 2:
            return 0.0
        steps = np.abs(np.diff(np.column_stack([self.centers, self.sides]), axis=0))
        return float(steps.mean() / self.sides.mean())


@functools.lru_cache(maxsize=1)
def _mtcnn():
    import tensorflow as tf
    from mtcnn import MTCNN

    detector = MTCNN(device="CPU:0")
    # The package calls its three Keras networks eagerly: ~80 ms of per-call overhead
    # for a few ms of convolutions. Traced (shapes relaxed after the first ones), the
    # same networks give the same boxes at ~1/3 of the CPU time (benchmarks/face.py).
    for stage in detector.stages:
        network = stage._model
        stage._model = tf.function(lambda x, network=network: network(x, training=False),
                                   reduce_retracing=True, autograph=False)
    return detector


@functools.lru_cache(maxsize=1)
def _cascade():
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        # OpenCV 5 dropped the Haar cascades (class and data files) from its wheels.
        raise ConfigError(
            f"the Haar detector needs OpenCV 4.x (opencv-python-headless<5); installed OpenCV is {cv2.__version__}"
        )
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ConfigError(f"OpenCV could not load its bundled face cascade {path}")
    return cascade


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0 or frames.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 [n>0, h, w, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def _downscaled(frames: np.ndarray) -> tuple[list, float]:
    import cv2

    height, width = frames.shape[1:3]
    scale = min(1.0, DETECT_WIDTH / width)
    if scale == 1.0:
        return list(frames), 1.0
    size = (round(width * scale), round(height * scale))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames], scale


def _detect_mtcnn(small: list, scale: float) -> list:
    results = _mtcnn().detect_faces(small, min_face_size=MIN_FACE)
    if len(small) == 1 and (not results or isinstance(results[0], dict)):
        results = [results]  # the package unwraps one-image batches
    frames = []
    for faces in results:
        found = []
        for face in faces:
            if face["confidence"] < MIN_SCORE:
                continue
            x, y, w, h = (float(v) / scale for v in face["box"])
            points = face["keypoints"]
            eyes = sorted((tuple(float(v) / scale for v in points[k]) for k in ("left_eye", "right_eye")))
            found.append(Detection(x + w / 2, y + h / 2, max(w, h), float(face["confidence"]), tuple(eyes)))
        frames.append(found)
    return frames


def _detect_haar(small: list, scale: float) -> list:
    import cv2

    frames = []
    for image in small:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        min_side = max(24, int(min(gray.shape) * 0.15))
        faces = _cascade().detectMultiScale(gray, scaleFactor=1.15, minNeighbors=5, minSize=(min_side, min_side))
        # the cascade's square box is wider and shorter than MTCNN's; its side x 1.15
        # spans brows to chin the same way, so one margin fits both
        frames.append([Detection((x + w / 2) / scale, (y + h / 2) / scale, 1.15 * max(w, h) / scale, 1.0)
                       for x, y, w, h in faces])
    return frames


def detect(frames, detector: str = "mtcnn") -> list:
    """Faces in each RGB frame (uint8 [n, h, w, 3]): a list (per frame) of Detections, full-resolution pixels."""
    frames = _check_frames(frames)
    if detector not in DETECTORS:
        raise ConfigError(f"detector must be one of {DETECTORS}, got {detector!r}")
    small, scale = _downscaled(frames)
    return _detect_mtcnn(small, scale) if detector == "mtcnn" else _detect_haar(small, scale)


def _prominence(face: Detection, height: int, width: int) -> float:
    # size counts, and so does being central: a face of half the size at the centre
    # outranks one at the border
    off_centre = np.hypot(face.cx - width / 2, face.cy - height / 2) / np.hypot(width / 2, height / 2)
    return face.side / min(height, width) * (1.0 - 0.5 * off_centre)


def _same_face(previous: Detection, face: Detection) -> bool:
    near = np.hypot(face.cx - previous.cx, face.cy - previous.cy) < 0.5 * previous.side
    return bool(near and 0.5 < face.side / previous.side < 2.0)


def _follow(detections: list, anchor: int, face: Detection, order) -> dict:
    chosen = {}
    last = face
    for t in order:
        candidates = [d for d in detections[t] if _same_face(last, d)]
        if candidates:
            last = min(candidates, key=lambda d: np.hypot(d.cx - last.cx, d.cy - last.cy))
            chosen[t] = last
    return chosen


def _smooth(values: np.ndarray) -> np.ndarray:
    """Median of 3, then a Gaussian (SMOOTH_SIGMA frames) over the rows of `values` [k, d] (found frames only)."""
    k = len(values)
    if k < 3:
        return values.copy()
    padded = np.concatenate([values[:1], values, values[-1:]])
    median = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    offsets = np.arange(k)[:, None] - np.arange(k)[None, :]
    weights = np.exp(-0.5 * (offsets / SMOOTH_SIGMA) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ median


def track(detections: list, height: int, width: int) -> FaceTrack:
    """One face through a clip's frames (time order) from per-frame `detect` results; see the module doc."""
    n = len(detections)
    if n == 0:
        raise ConfigError("a face track needs at least one frame")
    faces = [(_prominence(d, height, width), t, d) for t, frame in enumerate(detections) for d in frame]
    chosen = {}
    if faces:
        _, anchor, face = max(faces, key=lambda item: item[0])
        chosen = {anchor: face}
        chosen.update(_follow(detections, anchor, face, range(anchor + 1, n)))
        chosen.update(_follow(detections, anchor, face, range(anchor - 1, -1, -1)))
    found = sorted(chosen)
    values = np.full((n, 7), np.nan)
    if found:
        rows = []
        for t in found:
            d = chosen[t]
            eyes = np.asarray(d.eyes, np.float64).reshape(4) if d.eyes is not None else np.full(4, np.nan)
            rows.append([d.cx, d.cy, d.side, *eyes])
        values[found] = _smooth(np.asarray(rows))
    source = []
    last = None
    for t in range(n):
        if t in chosen:
            source.append("detected")
            last = t
        elif last is not None:
            source.append("previous")
            values[t] = values[last]
        else:
            source.append("centre")
            values[t, :3] = (width / 2, height / 2, min(height, width))
    return FaceTrack(centers=values[:, :2], sides=values[:, 2], eyes=values[:, 3:].reshape(n, 2, 2),
                     source=tuple(source), height=height, width=width)


def crop_size(track: FaceTrack, margin: float = DEFAULT_MARGIN) -> int:
    """Side S of every crop of the clip: median tracked face x margin (native resolution), or the centre square."""
    limit = min(track.height, track.width)
    if not track.found:
        return limit
    return int(np.clip(round(float(np.median(track.sides[track.detected])) * margin), 16, limit))


def _box_transform(center, side: float, height: int, width: int, size: int) -> np.ndarray:
    side = int(round(min(side, height, width)))
    # shift rather than shrink at the borders so every frame keeps the same framing
    x = int(round(min(max(center[0] - side / 2, 0), width - side)))
    y = int(round(min(max(center[1] - side / 2, 0), height - side)))
    scale = size / side
    return np.array([[scale, 0.0, -x * scale], [0.0, scale, -y * scale]])


def _eye_transform(eyes: np.ndarray, size: int) -> np.ndarray:
    source = eyes[1] - eyes[0]
    target = (np.asarray(ALIGNED_EYES[1]) - np.asarray(ALIGNED_EYES[0])) * size
    scale = np.hypot(*target) / max(np.hypot(*source), 1e-6)
    angle = np.arctan2(source[1], source[0])
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line to horizontal, scales
    shift = (np.asarray(ALIGNED_EYES).mean(0) * size) - linear @ eyes.mean(0)
    return np.column_stack([linear, shift])


def crop_frames(frames, mode: str, face_track: FaceTrack, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The clip's crops, uint8 [n, S, S, 3] (`mode` "face" or "aligned"; see the module doc)."""
    import cv2

    frames = _check_frames(frames)
    if mode not in FACE_CROPS:
        raise ConfigError(f"face crop mode must be one of {FACE_CROPS}, got {mode!r}")
    if margin <= 0:
        raise ConfigError(f"margin must be positive, got {margin}")
    if len(frames) != len(face_track.source):
        raise ConfigError(f"{len(frames)} frames but a track of {len(face_track.source)}")
    height, width = frames.shape[1:3]
    size = crop_size(face_track, margin)
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for t, frame in enumerate(frames):
        eyes = face_track.eyes[t]
        if face_track.source[t] == "centre":
            matrix = _box_transform(face_track.centers[t], face_track.sides[t], height, width, size)
        elif mode == "aligned":
            if np.isnan(eyes).any():
                raise ConfigError("aligned crops need eye landmarks: use the mtcnn detector")
            matrix = _eye_transform(eyes, size)
        else:
            matrix = _box_transform(face_track.centers[t], face_track.sides[t] * margin, height, width, size)
        if np.allclose(matrix[:, :2], np.eye(2)) and np.allclose(matrix[:, 2], np.round(matrix[:, 2])):
            x, y = int(round(-matrix[0, 2])), int(round(-matrix[1, 2]))
            out[t] = frame[y: y + size, x: x + size]  # a pixel-exact window: nothing resampled
        else:
            out[t] = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def face_crops(frames, mode: str, detector: str = "mtcnn", margin: float = DEFAULT_MARGIN):
    """Detect, track and crop one clip's frames (time order): (uint8 [n, S, S, 3], FaceTrack)."""
    frames = _check_frames(frames)
    face_track = track(detect(frames, detector), *frames.shape[1:3])
    return crop_frames(frames, mode, face_track, margin), face_track


def crop_selections(images: dict, selection: dict, mode: str, detector: str = "mtcnn", margin: float = DEFAULT_MARGIN):
    """Face crops of several frame selections of one clip: ({n: uint8 [n, S_n, S_n, 3]}, {n: FaceTrack}).

    `images` maps frame index -> frame, `selection` count -> frame indices (time
    order). Faces are detected once per distinct frame; each selection is tracked
    and cropped on its own, so its crops do not depend on the other selections.
    """
    order = sorted({int(i) for indices in selection.values() for i in indices})
    frames = _check_frames(np.stack([images[i] for i in order]))
    found = dict(zip(order, detect(frames, detector)))
    crops, tracks = {}, {}
    for n, indices in selection.items():
        chosen = np.stack([images[int(i)] for i in indices])
        tracks[n] = track([found[int(i)] for i in indices], *frames.shape[1:3])
        crops[n] = crop_frames(chosen, mode, tracks[n], margin)
    return crops, tracks
