"""Face box on real faces (RAVDESS, CREMA-D) and the centre fallback on frames without one."""
import numpy as np
import pytest

from mmder_tf import errors
from mmder_tf.media import face
from mmder_tf.media.decode import decode_clip, write_video

RAVDESS = "01-01-01-01-01-01-01.mp4"


@pytest.fixture(scope="module")
def ravdess_frames(realclips):
    return decode_clip(realclips[RAVDESS], 16, need_audio=False).frames[16]


def assert_inside(box, height, width):
    assert box.x >= 0 and box.y >= 0 and box.size > 0
    assert box.x + box.size <= width and box.y + box.size <= height


def test_face_found_on_ravdess(ravdess_frames):
    height, width = ravdess_frames.shape[1:3]
    box = face.face_box(ravdess_frames)
    assert box.found
    assert_inside(box, height, width)
    # the actor faces the camera, centred; his head fills about half the frame height
    assert abs(box.x + box.size / 2 - width / 2) < 0.1 * width
    assert 0.4 * height < box.size < 0.95 * height
    # the box is the cascade's face enlarged by the margin
    tight = face.face_box(ravdess_frames, margin=1.0)
    assert box.size == pytest.approx(tight.size * face.DEFAULT_MARGIN, abs=2)
    assert abs((box.x + box.size / 2) - (tight.x + tight.size / 2)) <= 1


def test_decode_clip_face_crop(realclips):
    clip = decode_clip(realclips["1001_DFA_HAP_XX.flv"], (16, 8), face_crop=True)
    assert clip.face_found is True
    side = clip.frames[16].shape[1]
    assert clip.frames[16].shape == (16, side, side, 3)
    assert clip.frames[8].shape == (8, side, side, 3)  # one box for the whole clip
    assert 100 < side < 360
    plain = decode_clip(realclips["1001_DFA_HAP_XX.flv"], 16, need_audio=False)
    assert plain.face_found is None
    # crops are pixel-exact windows of the plain frames (motion is kept, nothing resampled)
    box = face.face_box(plain.frames[16])
    np.testing.assert_array_equal(clip.frames[16], face.crop(plain.frames[16], box))
    shared = np.intersect1d(clip.frame_indices[16], clip.frame_indices[8])
    for index in shared:
        np.testing.assert_array_equal(
            clip.frames[16][list(clip.frame_indices[16]).index(index)],
            clip.frames[8][list(clip.frame_indices[8]).index(index)],
        )


def test_box_near_the_border_is_shifted_inside(ravdess_frames):
    # cut the frame so the face touches the left edge: the enlarged box would stick out
    frames = np.ascontiguousarray(ravdess_frames[:, :, 400:])
    height, width = frames.shape[1:3]
    box = face.face_box(frames)
    assert box.found
    assert box.x == 0
    assert_inside(box, height, width)


def test_no_face_falls_back_to_centre(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    frames = np.stack([
        np.clip(np.stack([xx * 0.7 + 3 * i, yy, 128 + 0 * xx], -1) + rng.normal(0, 4, (240, 320, 3)), 0, 255)
        for i in range(20)
    ]).astype(np.uint8)
    path = write_video(tmp_path / "landscape.mp4", frames, 25)
    clip = decode_clip(path, 8, need_audio=False, face_crop=True)
    assert clip.face_found is False
    plain = decode_clip(path, 8, need_audio=False)
    np.testing.assert_array_equal(clip.frames[8], plain.frames[8][:, :, 40:280])
    assert face.face_box(frames) == face.FaceBox(x=40, y=0, size=240, found=False)


def test_center_box_portrait():
    assert face.center_box(300, 200) == face.FaceBox(x=0, y=50, size=200, found=False)


def test_bad_arguments():
    with pytest.raises(errors.ConfigError):
        face.face_box(np.zeros((0, 10, 10, 3), np.uint8))
    with pytest.raises(errors.ConfigError):
        face.face_box(np.zeros((2, 10, 10), np.uint8))
    with pytest.raises(errors.ConfigError):
        face.face_box(np.zeros((2, 10, 10, 3), np.uint8), margin=0)
