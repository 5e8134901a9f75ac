"""Portrait phone videos: the display matrix (mp4 `tkhd`) is applied to every decoded frame.

The files are real H.264 mp4s written with PyAV; the rotation is set the way
phones set it, by the 3x3 matrix of the video track's `tkhd` box (ISO/IEC
14496-12: a b u c d v x y w, a-d in 16.16 fixed point), patched into the bytes,
or by PyAV's own writer (`set_display_rotation`). Same encoded pictures, so the
upright decode must equal np.rot90 of the plain decode exactly.
"""
import struct

import numpy as np
import pytest

from mmder_tf import errors
from mmder_tf.media.decode import decode_clip, upright_rgb, write_video
from mmder_tf.media.stream import stream_windows

ONE = 0x00010000  # 1.0 in 16.16
# (a, b, c, d) of tkhd -> np.rot90 turns (counter-clockwise) and mirror of the plain frame
MATRICES = {
    "phone portrait (90 clockwise)": ((0, ONE, -ONE, 0), -1, False),
    "upside down (180)": ((-ONE, 0, 0, -ONE), 2, False),
    "270": ((0, -ONE, ONE, 0), 1, False),
    "mirrored": ((-ONE, 0, 0, ONE), 0, True),
}


def pattern(count=10, height=48, width=64):
    """Frames no turn or mirror maps onto themselves: a white block top left, a red one bottom right."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[:, :12, :20] = 255
    frames[:, 30:, 48:] = (255, 0, 0)
    frames[:, 20:28, 30:34] = np.arange(count, dtype=np.uint8)[:, None, None, None] * 20  # frames differ
    return frames


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("rotation") / "plain.mp4"
    t = np.arange(int(0.4 * 16000)) / 16000
    write_video(path, pattern(), 25, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    return path


def with_matrix(plain, path, a, b, c, d):
    data = bytearray(plain.read_bytes())
    box = data.index(b"tkhd")
    version = data[box + 4]
    matrix = box + 4 + 4 + (32 if version == 1 else 20) + 8 + 8  # version/flags, times + ids, reserved, layer..volume
    assert struct.unpack(">9i", data[matrix: matrix + 36])[:5] == (ONE, 0, 0, 0, ONE)
    data[matrix: matrix + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def expected(frames, turns, mirrored):
    frames = frames[:, :, ::-1] if mirrored else frames
    return np.rot90(frames, turns, axes=(1, 2))


@pytest.mark.parametrize("name", list(MATRICES))
def test_the_display_matrix_turns_decoded_frames_upright(plain, tmp_path, name):
    (a, b, c, d), turns, mirrored = MATRICES[name]
    rotated = with_matrix(plain, tmp_path / "rotated.mp4", a, b, c, d)
    reference = decode_clip(plain, 4, need_audio=False).frames[4]
    clip = decode_clip(rotated, 4, need_audio=False)
    np.testing.assert_array_equal(clip.frames[4], expected(reference, turns, mirrored))
    if turns % 2:
        assert clip.frames[4].shape[1:3] == (64, 48)  # portrait
    if not mirrored:  # the plain-PyAV client of docs/serving.md turns frames the same way
        import av

        with av.open(str(rotated)) as container:
            for frame in container.decode(video=0):
                np.testing.assert_array_equal(np.rot90(frame.to_ndarray(format="rgb24"), round(frame.rotation / 90)),
                                              upright_rgb(frame, rotated))


def test_streamed_windows_and_pyav_written_rotation_agree(plain, tmp_path):
    import av

    reference = decode_clip(plain, 4, need_audio=False).frames[4]
    # PyAV's writer stores the same matrix a phone does (set_display_rotation(-90): clockwise)
    path = tmp_path / "pyav.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        stream.set_display_rotation(-90)
        for image in pattern():
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    upright = decode_clip(path, 4, need_audio=False).frames[4]
    assert upright.shape == (4, 64, 48, 3)
    plain_pyav = np.rot90(upright, 1, axes=(1, 2))  # undo: the white block is back at the top left
    assert plain_pyav[:, :12, :20].min() > 200 and plain_pyav[:, 30:, 48:, 0].min() > 200
    rotated = with_matrix(plain, tmp_path / "phone.mp4", 0, ONE, -ONE, 0)
    (_, clip), = list(stream_windows(rotated, 0.4, 0.4, 4, need_audio=False))
    np.testing.assert_array_equal(clip.frames[4], np.rot90(reference, -1, axes=(1, 2)))


def test_a_matrix_that_is_not_a_right_angle_is_refused(plain, tmp_path):
    turned = with_matrix(plain, tmp_path / "45.mp4", 46341, 46341, -46341, 46341)  # 45 degrees
    with pytest.raises(errors.CorruptMediaError, match="right angles"):
        decode_clip(turned, 4, need_audio=False)
