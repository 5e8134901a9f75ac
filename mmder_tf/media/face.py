"""Faces found, tracked and cropped across one clip, the way the field crops them.

Detection: MTCNN (the `mtcnn` package: TensorFlow, MIT licence, its three small
networks' weights ship inside the wheel, nothing is downloaded); it gives a box, a
score and five landmarks per face. `detect` runs the whole cascade only on
keyframes: the first frame of the sequence (every frame, batched, when the first
has no face) and every frame where a followed face is lost. A keyframe's proposals come
from P-Net's image pyramid and R-Net on a copy ~COARSE_WIDTH wide (at DETECT_WIDTH
where that finds no face); each proposal then goes through `_refine` in a search
window cut from the full-resolution frame: R-Net on the proposal, its box squared
through O-Net, as the cascade's last stages treat proposals. On every other frame
each keyframe face is refined the same way where the keyframe saw it. A refinement
counts when R-Net and O-Net pass the cascade's thresholds (RNET_SCORE, MIN_SCORE)
and the box stays inside its window; a frame where one does not becomes a keyframe.
So every face reported is an O-Net box, landmarks and score at full resolution;
faces that appear after a keyframe are seen at the next keyframe. The cost is
~1/4 of the cascade on every frame (`detect(..., follow=False)`, kept as the
reference: benchmarks/face.py times both and reports how far their boxes are apart).
OpenCV's Haar cascade (`detector="haar"`, boxes only) stays for comparison.

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
# Keyframes look for faces on a copy COARSE_WIDTH wide (by a whole factor: 128 for
# 1280, 120 for 480) first: faces of at least ~1/6 of the frame width, a pyramid of
# 1/4 of DETECT_WIDTH's pixels (the faces of the real datasets are 1/4-1/3 of the
# width); at DETECT_WIDTH only where that finds none. Not a larger min_face_size
# instead: mtcnn 1.0.0's pyramid then goes below P-Net's 12 px and it reports no face.
COARSE_WIDTH = 120
MIN_SCORE = 0.9  # MTCNN confidence below this is treated as no face
# Refinement (module doc): the search window spans SEARCH x the face (at least),
# WINDOW px (the face at ~O-Net's 48 px input); the proposal is the known face box
# ((x shift, y shift, scale) of its side): a 3 x 3 grid of shifts by 0.2 side gave
# the same boxes on the real clips at 1.5x the cost, as R-Net's regression closes them.
SEARCH = 2.0
WINDOW = 96
PROPOSALS = ((0.0, 0.0, 1.0),)
RNET_SCORE = 0.7  # the cascade's own R-Net threshold
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
    """(the package's detector with traced networks, its (P-Net, R-Net, O-Net) Keras models)."""
    import tensorflow as tf
    from mtcnn import MTCNN

    detector = MTCNN(device="CPU:0")
    networks = tuple(stage._model for stage in detector.stages)
    # The package calls its three Keras networks eagerly: ~80 ms of per-call overhead
    # for a few ms of convolutions. Traced (shapes relaxed after the first ones), the
    # same networks give the same boxes at ~1/3 of the CPU time (benchmarks/face.py).
    for stage, network in zip(detector.stages, networks):
        stage._model = tf.function(lambda x, network=network: network(x, training=False),
                                   reduce_retracing=True, autograph=False)
    return detector, networks


class _PyramidStage:
    """The package's P-Net stage (same pyramid, thresholds and non-maximum suppression) with every
    level's resize and P-Net in one traced call per image size: on a keyframe copy ~100 px wide the
    package's per-level eager resizes and calls cost more than the convolutions."""

    id, name = 1, "P-Net pyramid"

    def __init__(self, network):
        self._network = network
        self._functions = {}

    def _pyramid(self, shape: tuple, scales: tuple):
        import tensorflow as tf

        if (shape, scales) not in self._functions:
            sizes = [(int(shape[0] * s), int(shape[1] * s)) for s in scales]  # the package's truncation

            @tf.function(input_signature=[tf.TensorSpec([None, *shape, 3], tf.float32)], autograph=False)
            def pyramid(images):
                return [self._network(tf.image.resize(images, size, method="area"), training=False)
                        for size in sizes]

            if len(self._functions) >= 16:  # one traced graph per frame size: keep the recent ones
                self._functions.pop(next(iter(self._functions)))
            self._functions[(shape, scales)] = pyramid
        return self._functions[(shape, scales)]

    def __call__(self, images_normalized, images_oshapes, min_face_size=MIN_FACE, scale_factor=0.709,
                 threshold_pnet=0.6, nms_pnet1=0.5, nms_pnet2=0.7, **kwargs):
        from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes
        from mtcnn.utils.images import build_scale_pyramid

        scales = max((build_scale_pyramid(shape[1], shape[0], min_face_size=min_face_size, scale_factor=scale_factor)
                      for shape in images_oshapes), key=len)
        batch = images_normalized.shape[0]
        outputs = self._pyramid(tuple(images_normalized.shape[1:3]), tuple(float(s) for s in scales))(
            np.asarray(images_normalized, np.float32))
        boxes = [smart_nms_from_bboxes(upscale_bboxes(generate_bounding_box(reg, cls, threshold_pnet),
                                                      np.asarray([scale] * batch)),
                                       threshold=nms_pnet1, method="union", initial_sort=False)
                 for (reg, cls), scale in zip(outputs, scales)]
        boxes = np.concatenate(boxes, axis=0) if boxes else np.empty((0, 6))
        return resize_to_square(smart_nms_from_bboxes(boxes, threshold=nms_pnet2, method="union", initial_sort=True))


@functools.lru_cache(maxsize=1)
def _proposer():
    """The cascade's first two stages (P-Net pyramid in one call, then R-Net), with _mtcnn's networks."""
    from mtcnn import MTCNN

    detector, (pnet, _, _) = _mtcnn()
    return MTCNN(stages=[_PyramidStage(pnet), detector.stages[1]], device="CPU:0")


def _adjusted(boxes, offsets):
    # the package's box regression (mtcnn.utils.bboxes.adjust_bboxes): x1 y1 x2 y2 moved by offsets x (w, h)
    import tensorflow as tf

    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * tf.stack([w, h, w, h], axis=-1)


def _squared(boxes):
    # mtcnn.utils.bboxes.resize_to_square: the longer edge, same centre
    import tensorflow as tf

    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = tf.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return tf.stack([x1, y1, x1 + side, y1 + side], axis=-1)


@functools.lru_cache(maxsize=1)
def _refine_function():
    """R-Net then O-Net on proposals in search windows, one traced call for all windows of a sequence.

    windows uint8 [m, WINDOW, WINDOW, 3], proposals float32 [m, p, 4] (x1 y1 x2 y2,
    window pixels) -> per window: O-Net box [4], landmarks [10] (x1..x5, y1..y5),
    O-Net score, the best R-Net score. Fixed window size: traced once.
    """
    import tensorflow as tf

    _, (_, rnet, onet) = _mtcnn()

    def crops(images, boxes, index, size):
        # mtcnn.utils.images.extract_patches: [y1 x1 y2 x2] / the image size
        normalised = tf.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3], boxes[:, 2]], axis=-1) / WINDOW
        return tf.image.crop_and_resize(images, normalised, index, (size, size))

    @tf.function(input_signature=[tf.TensorSpec([None, WINDOW, WINDOW, 3], tf.uint8),
                                  tf.TensorSpec([None, None, 4], tf.float32)], autograph=False)
    def refine(windows, proposals):
        images = (tf.cast(windows, tf.float32) - 127.5) / 128.0
        m, p = tf.shape(proposals)[0], tf.shape(proposals)[1]
        flat = tf.reshape(proposals, [-1, 4])
        index = tf.repeat(tf.range(m), p)
        offsets, scores = rnet(crops(images, flat, index, 24), training=False)
        boxes = tf.reshape(_adjusted(flat, offsets), [m, p, 4])
        scores = tf.reshape(scores[:, 1], [m, p])
        best = tf.argmax(scores, axis=1, output_type=tf.int32)
        chosen = _squared(tf.gather(boxes, best, batch_dims=1))
        offsets, landmarks, face = onet(crops(images, chosen, tf.range(m), 48), training=False)
        w = chosen[:, 2:3] - chosen[:, 0:1] + 1
        h = chosen[:, 3:4] - chosen[:, 1:2] + 1
        # mtcnn.utils.landmarks.adjust_landmarks
        landmarks = tf.concat([w * landmarks[:, :5] + chosen[:, 0:1] - 1, h * landmarks[:, 5:] + chosen[:, 1:2] - 1], -1)
        return _adjusted(chosen, offsets), landmarks, face[:, 1], tf.reduce_max(scores, axis=1)

    return refine


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


def _downscaled(frames: np.ndarray, width: int = DETECT_WIDTH, whole: bool = False) -> tuple[list, float]:
    """Copies `width` px wide (never enlarged); `whole`: by a whole factor, at least `width` wide
    (OpenCV's area resize is ~4x cheaper by whole factors: 1280 -> 128 instead of 120)."""
    import cv2

    height, frame_width = frames.shape[1:3]
    scale = min(1.0, width / frame_width) if not whole else 1.0 / max(1, frame_width // width)
    if scale == 1.0:
        return list(frames), 1.0
    size = (round(frame_width * scale), round(height * scale))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames], scale


def _detect_mtcnn(small: list, scale: float, proposals_only: bool = False) -> list:
    """The full cascade on each (downscaled) image, or P-Net + R-Net only; unrounded, in frame pixels."""
    detector = _proposer() if proposals_only else _mtcnn()[0]
    # rows: image, x1, y1, w, h, score[, landmarks x1..x5, y1..y5 (eyes first)]
    rows = np.asarray(detector.detect_faces(small, min_face_size=MIN_FACE, output_type="numpy"), np.float64)
    frames = [[] for _ in small]
    for row in rows.reshape(-1, rows.shape[-1] if rows.ndim == 2 and len(rows) else 16):
        if not proposals_only and row[5] < MIN_SCORE:
            continue
        x, y, w, h = row[1:5] / scale
        eyes = None if proposals_only else tuple(sorted(((row[6] / scale, row[11] / scale),
                                                          (row[7] / scale, row[12] / scale))))
        frames[int(row[0])].append(Detection(x + w / 2, y + h / 2, max(w, h), float(row[5]), eyes))
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


def _search_window(frame: np.ndarray, face: Detection) -> tuple[np.ndarray, int, int, int]:
    """WINDOW x WINDOW pixels of `frame` around `face`, black outside the frame: (window, k, left, top).

    Window pixel (i, j) is the mean of the k x k frame pixels from (left + k j, top + k i),
    k the smallest integer making the window span at least SEARCH x the face: an
    integer factor keeps OpenCV's area resize on its fast path (a 720p frame's
    window costs ~0.5 ms instead of ~2 ms).
    """
    import cv2

    height, width = frame.shape[:2]
    k = max(1, int(np.ceil(SEARCH * face.side / WINDOW)))
    span = WINDOW * k
    left, top = int(round(face.cx - span / 2)), int(round(face.cy - span / 2))
    window = np.zeros((WINDOW, WINDOW, 3), np.uint8)
    # whole window pixels inside the frame: [first, last) in window coordinates, per axis
    first_x, first_y = max(0, -(left // k)), max(0, -(top // k))
    last_x, last_y = min(WINDOW, (width - left) // k), min(WINDOW, (height - top) // k)
    if last_x > first_x and last_y > first_y:
        region = frame[top + first_y * k: top + last_y * k, left + first_x * k: left + last_x * k]
        window[first_y:last_y, first_x:last_x] = region if k == 1 else cv2.resize(
            region, (last_x - first_x, last_y - first_y), interpolation=cv2.INTER_AREA)
    return window, k, left, top


def _refine(frames: np.ndarray, targets: list) -> list:
    """Each (frame index, keyframe face) refined in its search window: a Detection, or None when lost."""
    import tensorflow as tf

    if not targets:
        return []
    height, width = frames.shape[1:3]
    grid = np.asarray(PROPOSALS, np.float64)
    windows, places, proposals = [], [], []
    for t, face in targets:
        window, k, left, top = _search_window(frames[t], face)
        windows.append(window)
        places.append((1.0 / k, float(left), float(top)))
        # the keyframe face, shifted and scaled by the grid, in window pixels
        centres = (np.array([face.cx - left, face.cy - top]) + face.side * grid[:, :2]) / k
        half = face.side * grid[:, 2:3] / (2 * k)
        proposals.append(np.concatenate([centres - half, centres + half], -1))
    boxes, landmarks, scores, rnet_scores = (v.numpy() for v in _refine_function()(
        tf.constant(np.stack(windows)), tf.constant(np.asarray(proposals, np.float32))))
    found = []
    for (scale, x0, y0), box, points, score, rnet_score in zip(places, boxes, landmarks, scores, rnet_scores):
        inside = box[0] >= 0 and box[1] >= 0 and box[2] <= WINDOW and box[3] <= WINDOW
        if score < MIN_SCORE or rnet_score < RNET_SCORE or not inside:
            found.append(None)
            continue
        # back to frame pixels, clipped to the frame as the package clips its boxes
        x1, x2 = np.clip(box[[0, 2]] / scale + x0, 0, width - 1)
        y1, y2 = np.clip(box[[1, 3]] / scale + y0, 0, height - 1)
        xs, ys = points[:5] / scale + x0, points[5:] / scale + y0
        eyes = sorted(((float(xs[0]), float(ys[0])), (float(xs[1]), float(ys[1]))))
        found.append(Detection(float(x1 + x2) / 2, float(y1 + y2) / 2, float(max(x2 - x1, y2 - y1)), float(score),
                               tuple(eyes)))
    return found


def _distinct(faces: list) -> list:
    """Faces by descending score, without the lower-scored copies of one face (two proposals refined to it)."""
    kept = []
    for face in sorted(faces, key=lambda f: -f.score):
        if not any(_same_face(other, face) for other in kept):
            kept.append(face)
    return kept


def _keyframe_faces(frames: np.ndarray, times: list) -> dict:
    """{t: faces of frames[t]}, the full cascade: P-Net + R-Net proposals on the COARSE_WIDTH copy (at
    DETECT_WIDTH where that gives no face), each refined by `_refine` (its O-Net stage) in place."""
    found = {t: [] for t in times}
    pending = list(times)
    for width in (COARSE_WIDTH, DETECT_WIDTH):
        if not pending:
            break
        proposals = _detect_mtcnn(*_downscaled(frames[pending], width, whole=True), proposals_only=True)
        targets = [(t, face) for t, faces in zip(pending, proposals) for face in faces]
        for (t, _), refined in zip(targets, _refine(frames, targets)):
            if refined is not None:
                found[t].append(refined)
        pending = [t for t in pending if not found[t]]
    return {t: _distinct(faces) for t, faces in found.items()}


def _detect_followed(frames: np.ndarray) -> list:
    """MTCNN on keyframes, refinement elsewhere (module doc); a list (per frame) of Detections."""
    n = len(frames)
    detections = [_keyframe_faces(frames, [0])[0]] + [[] for _ in range(n - 1)]
    if not detections[0]:  # no face to follow: every frame is a keyframe, in one batch
        found = _keyframe_faces(frames, list(range(1, n)))
        return [detections[0]] + [found[t] for t in range(1, n)]
    targets = [(u, face) for u in range(1, n) for face in detections[0]]
    refined = _refine(frames, targets)
    for (u, _), r in zip(targets, refined):
        if r is not None:
            detections[u].append(r)
    lost = sorted({u for (u, _), r in zip(targets, refined) if r is None})
    if lost:  # keyframes again: every face of these frames from the full cascade
        for u, faces in _keyframe_faces(frames, lost).items():
            detections[u] = faces
    return detections


def detect(frames, detector: str = "mtcnn", follow: bool = True) -> list:
    """Faces in each RGB frame (uint8 [n, h, w, 3], time order): a list (per frame) of Detections, frame pixels.

    With MTCNN and `follow` (the default), the full cascade runs on keyframes and the
    keyframe's faces are refined on the other frames (module doc); `follow=False`
    runs the full cascade on every frame (the reference benchmarks/face.py compares with).
    """
    frames = _check_frames(frames)
    if detector not in DETECTORS:
        raise ConfigError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if detector == "mtcnn" and follow:
        return _detect_followed(frames)
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
    order). Each selection is detected (keyframes and refinement follow its own
    frames), tracked and cropped on its own, so its crops do not depend on the
    other selections.
    """
    crops, tracks = {}, {}
    for n, indices in selection.items():
        crops[n], tracks[n] = face_crops(np.stack([images[int(i)] for i in indices]), mode, detector, margin)
    return crops, tracks
