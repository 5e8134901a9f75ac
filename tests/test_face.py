"""Faces detected (MTCNN), tracked and cropped: every real clip, and generated scenes for the edge cases.

The generated scenes paste a real face (a CREMA-D frame's face) onto a noise
background, so the detector sees a real face where the test puts it.
"""
import numpy as np
import pytest

from mmder_tf import errors
from mmder_tf.config import FusionConfig
from mmder_tf.media import face
from mmder_tf.media.decode import decode_clip

CREMAD = "1001_DFA_HAP_XX.flv"
JITTER_LIMIT = 0.015  # box moves < 1.5% of its side between chosen frames (measured: 0.003-0.009)


@pytest.fixture(scope="module")
def face_patch(realclips):
    """A real face, uint8 [s, s, 3] (the face crop of a CREMA-D frame)."""
    frames = decode_clip(realclips[CREMAD], 2, need_audio=False).frames[2][:1]
    crops, track = face.face_crops(frames, "face")
    assert track.source == ("detected",)
    return crops[0]


def scene(patch, placements, height=240, width=320, seed=0):
    """A frame of noise with `patch` resized to each (cx, cy, side) in `placements`."""
    import cv2

    rng = np.random.default_rng(seed)
    frame = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    for cx, cy, side in placements:
        resized = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
        x0, y0 = cx - side // 2, cy - side // 2
        xs, ys = slice(max(x0, 0), min(x0 + side, width)), slice(max(y0, 0), min(y0 + side, height))
        frame[ys, xs] = resized[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
    return frame


@pytest.mark.parametrize("name", ["01-01-01-01-01-01-01.mp4", "01-01-08-02-01-01-19.mp4", "1001_DFA_ANG_XX.flv",
                                  "1001_DFA_DIS_XX.flv", "1001_DFA_FEA_XX.flv", "1001_DFA_HAP_XX.flv",
                                  "1001_DFA_NEU_XX.flv", "1001_DFA_SAD_XX.flv"])
def test_face_found_on_every_chosen_frame_of_every_real_clip(realclips, name):
    clip = decode_clip(realclips[name], 16, need_audio=False, face_crop="face")
    track = clip.face_tracks[16]
    assert track.source == ("detected",) * 16
    assert track.jitter() < JITTER_LIMIT
    height, width = track.height, track.width
    # one actor facing the camera: the face is central and fills a good part of the frame height
    assert np.all(np.abs(track.centers[:, 0] - width / 2) < 0.2 * width)
    assert np.all((track.sides > 0.25 * height) & (track.sides < 0.9 * height))
    side = face.crop_size(track)
    assert clip.frames[16].shape == (16, side, side, 3)


def test_decode_crops_each_count_on_its_own_track_and_aligns_the_eyes(realclips):
    clip = decode_clip(realclips[CREMAD], (16, 8), need_audio=False, face_crop="aligned")
    alone = decode_clip(realclips[CREMAD], 16, need_audio=False, face_crop="aligned")
    assert clip.face_found is True and len(clip.face_tracks[8].source) == 8
    np.testing.assert_array_equal(clip.frames[16], alone.frames[16])  # not changed by the 8-frame selection
    # detecting again on the aligned crops finds the eyes where the template puts them
    side = clip.frames[16].shape[1]
    again = face.detect(clip.frames[16])
    eyes = np.array([max(d, key=lambda f: f.side).eyes for d in again])
    np.testing.assert_allclose(eyes.mean(0) / side, face.ALIGNED_EYES, atol=0.03)
    # and the eye line is level on every frame (rotation removed)
    tilt = np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))
    assert np.abs(tilt).max() < 4


def test_aligned_undoes_an_in_plane_rotation(realclips):
    import cv2

    frame = decode_clip(realclips[CREMAD], 2, need_audio=False).frames[2][0]
    centre = (frame.shape[1] / 2, frame.shape[0] / 2)
    tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D(centre, 20, 1.0), frame.shape[1::-1])
    crops, track = face.face_crops(np.stack([frame, tilted]), "aligned")
    assert track.source == ("detected", "detected")
    eyes = [max(d, key=lambda f: f.side).eyes for d in face.detect(crops)]
    tilt = [np.degrees(np.arctan2(e[1][1] - e[0][1], e[1][0] - e[0][0])) for e in eyes]
    assert abs(tilt[1]) < 5 and abs(tilt[1] - tilt[0]) < 5


def test_no_face_gives_the_centre_square():
    frames = np.stack([scene(np.zeros((8, 8, 3), np.uint8), [], seed=i) for i in range(4)])
    for mode in face.FACE_CROPS:
        crops, track = face.face_crops(frames, mode)
        assert not track.found and track.source == ("centre",) * 4
        np.testing.assert_array_equal(crops, frames[:, :, 40:280])  # pixel-exact, as crop="center"


def test_two_faces_keep_the_most_prominent_identity(face_patch):
    # a large face left of centre and a small one at the right; in the last frames the
    # other person comes closer and is larger: the track must not jump to them
    placements = [[(130, 120, 110), (260, 110, 60)]] * 5 + [[(130, 120, 110), (255, 115, 130)]] * 3
    frames = np.stack([scene(face_patch, p, seed=i) for i, p in enumerate(placements)])
    detections = face.detect(frames)
    assert all(len(d) == 2 for d in detections)
    track = face.track(detections, 240, 320)
    assert track.source == ("detected",) * 8
    assert np.all(np.abs(track.centers[:, 0] - 130) < 10)


def test_face_leaving_the_frame_holds_the_last_box_and_entering_starts_from_the_centre(face_patch):
    # frames 0-1: no face (centre); 2-5: a face walks right; 6-7: it has left (previous box held)
    xs = [None, None, 110, 140, 170, 200, None, None]
    frames = np.stack([scene(face_patch, [] if x is None else [(x, 120, 100)], seed=i) for i, x in enumerate(xs)])
    crops, track = face.face_crops(frames, "face")
    assert track.source == ("centre",) * 2 + ("detected",) * 4 + ("previous",) * 2
    np.testing.assert_array_equal(track.centers[6], track.centers[5])
    np.testing.assert_array_equal(track.centers[7], track.centers[5])
    assert track.centers[5][0] > track.centers[2][0] + 45  # smoothed, it still follows the 90 px walk
    size = face.crop_size(track)
    assert crops.shape == (8, size, size, 3)
    # centre frames: the centre square (240 x 240 at x=40) scaled to the crop size
    import cv2

    np.testing.assert_allclose(crops[0].astype(float),
                               cv2.resize(frames[0][:, 40:280], (size, size), interpolation=cv2.INTER_LINEAR),
                               atol=60)


def test_face_box_near_the_border_is_shifted_inside(face_patch):
    frames = np.stack([scene(face_patch, [(40, 120, 110)], seed=i) for i in range(3)])
    crops, track = face.face_crops(frames, "face")
    assert track.found
    side = face.crop_size(track)
    # the 1.3 x 110 px box would start left of the frame: it is shifted to x=0, a pixel-exact window
    y = int(round(min(max(track.centers[0][1] - side / 2, 0), 240 - side)))
    np.testing.assert_array_equal(crops[0], frames[0][y: y + side, :side])


def test_haar_detector_boxes_only(face_patch):
    frames = np.stack([scene(face_patch, [(160, 120, 120)], seed=i) for i in range(2)])
    crops, track = face.face_crops(frames, "face", detector="haar")
    assert track.source == ("detected",) * 2 and np.all(np.abs(track.centers[:, 0] - 160) < 12)
    with pytest.raises(errors.ConfigError, match="landmarks"):
        face.face_crops(frames, "aligned", detector="haar")


def test_bad_arguments():
    with pytest.raises(errors.ConfigError):
        face.detect(np.zeros((0, 10, 10, 3), np.uint8))
    with pytest.raises(errors.ConfigError):
        face.detect(np.zeros((2, 10, 10), np.uint8))
    with pytest.raises(errors.ConfigError):
        face.detect(np.zeros((2, 10, 10, 3), np.uint8), detector="dlib")
    frames = np.zeros((2, 10, 10, 3), np.uint8)
    track = face.track([[], []], 10, 10)
    with pytest.raises(errors.ConfigError):
        face.crop_frames(frames, "centre", track)
    with pytest.raises(errors.ConfigError):
        face.crop_frames(frames, "face", track, margin=0)
    with pytest.raises(errors.ConfigError):
        face.crop_frames(frames[:1], "face", track)
    assert FusionConfig(crop="aligned").crop == "aligned"
    with pytest.raises(errors.ConfigError):
        FusionConfig(crop="openface")


def test_prepare_fuse_clip_and_the_default_crop_share_the_face_crops(realclips, tmp_path):
    from mmder_tf.data import prepare as prep
    from mmder_tf.data.datasets import ClipRecord, Manifest
    from mmder_tf.fusion.clip import fuse_clip, prepare_frames

    config = FusionConfig(strategy="video", image_size=64, crop="aligned")
    path = realclips[CREMAD]
    manifest = Manifest(records=(ClipRecord(str(path), 0, "happy", "1001", key="clip"),), class_names=("happy",))
    prep.prepare(manifest, tmp_path / "cache", config, shard_size=1, progress=False, frame_format="raw")
    from mmder_tf.data.pipeline import make_dataset

    cached = next(iter(make_dataset(tmp_path / "cache", None, config, 1, training=False)))[0].numpy()[0]
    fused = fuse_clip(path, config=config)
    np.testing.assert_array_equal(cached, fused)
    crops = decode_clip(path, 16, need_audio=False, face_crop="aligned").frames[16]
    np.testing.assert_array_equal(fused, prepare_frames(crops, config).numpy())
    assert prep.default_crop("cremad") == prep.REAL_DATASET_CROP
    assert prep.default_crop("csv") == "center"
    (tmp_path / "synthetic.json").write_text("{}")
    assert prep.default_crop("ravdess", tmp_path) == "center"


def test_refined_boxes_agree_with_the_full_cascade_on_every_frame(realclips):
    # detect() runs the full cascade on keyframes only and refines elsewhere; the
    # reference runs it on every frame (the boxes differ by the cascade's own noise)
    frames = decode_clip(realclips["1001_DFA_SAD_XX.flv"], 8, need_audio=False).frames[8]
    followed, full = face.detect(frames), face.detect(frames, follow=False)
    for ours, reference in zip(followed, full):
        assert len(ours) == len(reference) == 1
        (a,), (b,) = ours, reference
        assert np.hypot(a.cx - b.cx, a.cy - b.cy) < 0.06 * b.side and abs(a.side / b.side - 1) < 0.1
        assert np.abs(np.subtract(a.eyes, b.eyes)).max() < 0.05 * b.side
