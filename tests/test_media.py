"""decode_clip and write_video on real files: the real clips, and real containers written by PyAV."""
import os

import av
import numpy as np
import pytest

from mmder_tf import errors
from mmder_tf.media import decode as media
from mmder_tf.media.decode import MIN_DURATION, decode_clip, write_video

NO_AUDIO_CLIP = "01-01-08-02-01-01-19.mp4"
BIT_BLOCK = 16  # frame index written as 8 black/white 16x16 blocks: survives lossy coding


def coded_frames(count, height=64, width=128):
    """Frames whose top row of blocks spells their index in binary."""
    frames = np.full((count, height, width, 3), 96, np.uint8)
    for index in range(count):
        for bit in range(8):
            value = 255 if (index >> bit) & 1 else 0
            frames[index, :BIT_BLOCK, bit * BIT_BLOCK : (bit + 1) * BIT_BLOCK] = value
    return frames


def read_index(frame):
    bits = [frame[:BIT_BLOCK, b * BIT_BLOCK : (b + 1) * BIT_BLOCK].mean() > 128 for b in range(8)]
    return sum(int(bit) << b for b, bit in enumerate(bits))


def tone_burst(duration, sample_rate, start, length, channels=2, freq=1000.0):
    t = np.arange(int(round(duration * sample_rate))) / sample_rate
    signal = np.where((t >= start) & (t < start + length), 0.5 * np.sin(2 * np.pi * freq * t), 0.0)
    return np.repeat(signal[:, None], channels, axis=1).astype(np.float32)


def onset(waveform, threshold=0.05):
    return int(np.argmax(np.abs(waveform) > threshold))


@pytest.fixture(scope="module")
def clip_25fps(tmp_path_factory):
    """3.4 s, 25 fps (85 frames), 48 kHz stereo AAC with a 1 kHz burst over 1.0-1.2 s."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_video(path, coded_frames(85), 25, tone_burst(3.4, 48000, 1.0, 0.2), 48000)
    return path


# ---------------------------------------------------------------- write_video


def test_write_video_writes_h264_aac_mp4(clip_25fps):
    with av.open(str(clip_25fps)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (128, 64)
        assert audio.codec_context.name == "aac"
        assert audio.codec_context.sample_rate == 48000
        assert audio.codec_context.channels == 2
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 85
    assert [read_index(frame) for frame in decoded] == list(range(85))


@pytest.mark.parametrize(
    "name, video_codec, audio_codec, decoder",
    [("clip.avi", "mpeg4", "mp3", "mpeg4"), ("clip.flv", "flv", "mp3", "flv"), ("clip.mkv", "libx264", "flac", "h264")],
)
def test_write_video_other_codecs(tmp_path, name, video_codec, audio_codec, decoder):
    path = write_video(
        tmp_path / name, coded_frames(20), 25, tone_burst(0.8, 44100, 0.2, 0.1, 1), 44100,
        video_codec=video_codec, audio_codec=audio_codec,
    )
    clip = decode_clip(path, 8)
    assert clip.num_video_frames == 20
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == decoder
        assert container.streams.audio[0].codec_context.channels == 1


def test_write_video_is_atomic_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.mp4"
    write_video(target, coded_frames(10), 25)
    first = target.read_bytes()
    with pytest.raises(errors.ConfigError):
        write_video(target, np.zeros((3, 63, 64, 3), np.uint8), 25)  # odd height: no yuv420p
    assert target.read_bytes() == first  # the old file survives a failed rewrite
    with pytest.raises(errors.MediaError, match="out.mp4"):
        write_video(target, coded_frames(10), 25, audio=np.zeros(4800), sample_rate=44100, audio_codec="libopus")
    assert target.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_write_video_rejects_bad_arrays(tmp_path):
    with pytest.raises(errors.ConfigError):
        write_video(tmp_path / "a.mp4", np.zeros((3, 64, 64, 3), np.float32), 25)
    with pytest.raises(errors.ConfigError):
        write_video(tmp_path / "a.mp4", np.zeros((3, 64, 64), np.uint8), 25)
    with pytest.raises(errors.ConfigError):
        write_video(tmp_path / "a.mp4", None, 25, audio=None)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- real clips


def test_every_real_clip_decodes(realclips):
    assert len(realclips) == 8
    for name, path in realclips.items():
        has_audio = name != NO_AUDIO_CLIP
        clip = decode_clip(path, (16, 8), need_audio=has_audio)
        assert clip.num_video_frames > 50, name
        with av.open(str(path)) as container:  # counted from packets: must equal what a decoder shows
            assert clip.num_video_frames == sum(1 for _ in container.decode(video=0)), name
        assert 1.5 < clip.duration < 4.5, name
        for n in (16, 8):
            frames, times, indices = clip.frames[n], clip.frame_times[n], clip.frame_indices[n]
            assert frames.dtype == np.uint8 and frames.shape[0] == n and frames.shape[-1] == 3, name
            assert frames.std() > 10, name  # real pictures, not blank buffers
            assert np.all(np.diff(times) > 0), name
            assert np.all(np.diff(indices) > 0), name
            assert 0 < times[0] and times[-1] < clip.duration, name
            # nearest frame to T_i: never more than half a frame interval away
            expected = np.arange(1, n + 1) * clip.duration / (n + 1)
            assert np.all(np.abs(times - expected) <= 0.5 / clip.fps + 1e-3), name
        if has_audio:
            assert clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
            assert abs(len(clip.waveform) / clip.sample_rate - clip.duration) < 0.15, name
            assert np.abs(clip.waveform).max() > 0.01, name  # someone speaks
        else:
            assert clip.waveform is None


def test_real_ravdess_clip_geometry(realclips):
    clip = decode_clip(realclips["01-01-01-01-01-01-01.mp4"], 16, sample_rate=16000)
    assert clip.frames[16].shape == (16, 720, 1280, 3)
    # 99 frames are stored; the edit list hides the last one, as every player does
    assert clip.num_video_frames == 98
    assert clip.fps == pytest.approx(30000 / 1001, rel=1e-3)
    assert clip.duration == pytest.approx(98 * 1001 / 30000, abs=1e-3)


def test_real_clip_without_audio_stream(realclips):
    path = realclips[NO_AUDIO_CLIP]
    with pytest.raises(errors.NoAudioStreamError, match=NO_AUDIO_CLIP):
        decode_clip(path, 16)
    clip = decode_clip(path, 16, need_audio=False)
    assert clip.waveform is None and clip.frames[16].shape == (16, 720, 720, 3)


@pytest.mark.parametrize("name", ["1001_DFA_NEU_XX.flv", "01-01-01-01-01-01-01.mp4", "01-01-08-02-01-01-19.mp4"])
def test_frames_match_a_full_decode(realclips, monkeypatch, name):
    """The selected frames, decoded skipping unneeded B-frames and jumping to keyframes,
    are exactly those of a plain decode (the second RAVDESS clip has a keyframe every 12 frames)."""
    path = realclips[name]
    monkeypatch.setattr(media, "_decode_file", None)  # the one-pass path must serve real files
    clip = decode_clip(path, (16, 8), need_audio=False)
    monkeypatch.undo()
    needed = set(clip.frame_indices[16].tolist() + clip.frame_indices[8].tolist())
    with av.open(str(path)) as container:
        everything = [frame.to_ndarray(format="rgb24") if i in needed else None
                      for i, frame in enumerate(container.decode(video=0))]
    assert clip.num_video_frames == len(everything)
    for n in (16, 8):
        np.testing.assert_array_equal(clip.frames[n], np.stack([everything[i] for i in clip.frame_indices[n]]))


def test_keyframe_jumps_give_the_frames_of_a_plain_decode(tmp_path, monkeypatch):
    """Short GOPs with B-frames: decoding restarts at keyframes between chosen frames, exactly."""
    path = write_video(tmp_path / "gop5.mp4", coded_frames(60), 25, video_options={"g": "5", "bf": "2"})
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert sum(p.is_keyframe for p in packets) >= 10
    runs = []
    real_runs = media._decode_runs
    monkeypatch.setattr(media, "_decode_runs", lambda *a: runs.extend(real_runs(*a)) or runs)
    monkeypatch.setattr(media, "_decode_file", None)  # the one-pass path must serve it
    clip = decode_clip(path, (16, 8), need_audio=False)
    assert len(runs) > 1 and sum(last - first + 1 for first, last in runs) < len(packets)
    for n in (16, 8):
        assert [read_index(f) for f in clip.frames[n]] == clip.frame_indices[n].tolist()
    with av.open(str(path)) as container:
        everything = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    np.testing.assert_array_equal(clip.frames[8], np.stack([everything[i] for i in clip.frame_indices[8]]))


# ---------------------------------------------------------------- alignment on known clips


def test_known_clip_frames_and_times(clip_25fps):
    clip = decode_clip(clip_25fps, (16, 8))
    assert clip.num_video_frames == 85
    assert clip.duration == pytest.approx(3.4, abs=1e-4)
    assert clip.fps == pytest.approx(25.0)
    # T_i = (i+1) * 3.4 / 17 = 0.2 (i+1) s: frame 5 (i+1) exactly
    assert clip.frame_indices[16].tolist() == [5 * (i + 1) for i in range(16)]
    np.testing.assert_allclose(clip.frame_times[16], 0.2 * np.arange(1, 17), atol=1e-6)
    # T_i = (i+1) * 3.4 / 9 = 0.3778 (i+1) s -> frames 9.44, 18.89, 28.33, ... rounded by hand
    assert clip.frame_indices[8].tolist() == [9, 19, 28, 38, 47, 57, 66, 76]
    assert [read_index(f) for f in clip.frames[16]] == clip.frame_indices[16].tolist()
    assert [read_index(f) for f in clip.frames[8]] == clip.frame_indices[8].tolist()


def test_official_frame_choice(clip_25fps):
    clip = decode_clip(clip_25fps, (16, 8), official=True)
    assert clip.frame_indices[16].tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45]
    assert clip.frame_indices[8].tolist() == [0, 6, 12, 18, 24, 30, 36, 42]
    assert [read_index(f) for f in clip.frames[16]] == clip.frame_indices[16].tolist()
    assert clip.duration == pytest.approx(3.4, abs=1e-4)  # the whole clip is still measured


@pytest.mark.parametrize("rate", [16000, 44100])
def test_audio_aligned_to_video_time(clip_25fps, rate):
    clip = decode_clip(clip_25fps, 16, sample_rate=rate)
    assert clip.sample_rate == rate
    # the mp4 edit list removes AAC's 1024 priming samples: the burst is exactly at 1.0 s
    assert abs(onset(clip.waveform) - rate) <= 0.002 * rate
    # AAC pads the last frame: at most 1024 samples at 48 kHz beyond the video
    assert 3.4 * rate <= len(clip.waveform) <= (3.4 + 1024 / 48000) * rate + 2
    # stereo is averaged: a 0.5 amplitude tone in both channels stays 0.5
    assert np.abs(clip.waveform).max() == pytest.approx(0.5, abs=0.03)


def test_audio_aligned_in_flv_with_mp3(tmp_path):
    """FLV shifts video by the MP3 encoder delay; aligning to video time undoes it."""
    path = write_video(
        tmp_path / "clip.flv", coded_frames(50), 25, tone_burst(2.0, 44100, 0.8, 0.2, 1), 44100,
        video_codec="flv", audio_codec="mp3",
    )
    with av.open(str(path)) as container:
        assert container.streams.video[0].start_time > 0  # the delay is really there
    clip = decode_clip(path, 16, sample_rate=16000)
    assert abs(onset(clip.waveform) - 0.8 * 16000) <= 0.003 * 16000


def test_stereo_channels_are_averaged(tmp_path):
    audio = tone_burst(1.0, 48000, 0.0, 1.0, 2)
    audio[:, 1] = 0.0
    path = write_video(tmp_path / "left.mp4", coded_frames(25), 25, audio, 48000)
    clip = decode_clip(path, 8)
    assert np.abs(clip.waveform[1000:-1000]).max() == pytest.approx(0.25, abs=0.02)


def test_silent_clip(tmp_path):
    path = write_video(tmp_path / "silent.mp4", coded_frames(50), 25, np.zeros((96000, 2)), 48000)
    clip = decode_clip(path, 16)
    assert np.all(np.isfinite(clip.waveform))
    assert np.abs(clip.waveform).max() < 1e-4
    assert len(clip.waveform) >= 2.0 * 16000


def test_clip_shorter_than_the_window_repeats_nearest_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", coded_frames(10), 25, tone_burst(0.4, 48000, 0.1, 0.1), 48000)
    clip = decode_clip(path, 16)
    assert clip.duration == pytest.approx(0.4, abs=1e-4)
    # T_i = (i+1) 0.4/17 s; frame k is at 0.04 k s, so the nearest is round((i+1) 10/17), ties to the earlier
    expected = [int(np.floor((i + 1) * 10 / 17 + 0.5 - 1e-9)) for i in range(16)]
    assert clip.frame_indices[16].tolist() == expected
    assert [read_index(f) for f in clip.frames[16]] == expected
    assert len(set(expected)) < 16  # some frames really repeat


def test_segment_decoding(tmp_path):
    """start/end cut an utterance out of a longer recording (IEMOCAP)."""
    path = write_video(tmp_path / "session.mp4", coded_frames(100), 25, tone_burst(4.0, 48000, 2.0, 0.2), 48000)
    clip = decode_clip(path, 8, start=1.0, end=3.0)
    assert clip.num_video_frames == 50
    assert clip.duration == pytest.approx(2.0, abs=1e-4)
    # times count from the segment's first frame: the burst at 2.0 s is at 1.0 s
    assert abs(onset(clip.waveform) - 16000) <= 0.002 * 16000
    assert len(clip.waveform) == 2 * 16000
    assert [read_index(f) for f in clip.frames[8]] == (clip.frame_indices[8] + 25).tolist()


@pytest.mark.parametrize(
    "name, options, slow_path",
    [
        # no timestamps at all: decoded twice, frames spaced at the nominal rate
        ("raw.h264", {"container_format": "h264"}, True),
        ("bframes.avi", {"video_codec": "mpeg4", "video_options": {"bf": "2"}}, False),  # packed B-frames
        ("offset.ts", {}, False),  # MPEG-TS: the first frame is at 0.08 s, not 0
    ],
)
def test_awkward_timestamps(tmp_path, monkeypatch, name, options, slow_path):
    path = write_video(tmp_path / name, coded_frames(40), 25, **options)
    calls = []
    real = media._decode_file
    monkeypatch.setattr(media, "_decode_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    clip = decode_clip(path, 8, need_audio=False)
    assert bool(calls) == slow_path
    assert clip.num_video_frames == 40
    assert clip.duration == pytest.approx(1.6, abs=1e-4)
    # T_i = (i+1) 1.6/9 s, frames every 0.04 s: 4.44, 8.89, 13.33, ... -> nearest by hand
    assert clip.frame_indices[8].tolist() == [4, 9, 13, 18, 22, 27, 31, 36]
    assert [read_index(f) for f in clip.frames[8]] == [4, 9, 13, 18, 22, 27, 31, 36]
    np.testing.assert_allclose(clip.frame_times[8], 0.04 * clip.frame_indices[8], atol=1e-6)


def test_audio_only_decoding_when_video_not_needed(tmp_path):
    path = write_video(tmp_path / "voice.m4a", None, audio=tone_burst(1.5, 48000, 0.5, 0.2), sample_rate=48000)
    with pytest.raises(errors.NoVideoStreamError, match="voice.m4a.*audio streams only"):
        decode_clip(path, 16)
    clip = decode_clip(path, 16, need_video=False)
    assert clip.frames == {} and clip.num_video_frames == 0
    assert clip.duration == pytest.approx(1.5, abs=0.03)
    assert abs(onset(clip.waveform) - 8000) <= 0.002 * 16000


def test_video_times_without_decoding_video(clip_25fps):
    clip = decode_clip(clip_25fps, 16, need_video=False)
    assert clip.frames == {}
    assert clip.frame_indices[16].tolist() == [5 * (i + 1) for i in range(16)]
    assert clip.duration == pytest.approx(3.4, abs=1e-4)


# ---------------------------------------------------------------- bad input


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(errors.EmptyFileError, match="empty.mp4"):
        decode_clip(path)


def test_missing_file(tmp_path):
    with pytest.raises(errors.MediaError, match="nothere.mp4"):
        decode_clip(tmp_path / "nothere.mp4")


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(20000), b"just some text\n" * 200])
def test_not_a_media_file(tmp_path, content):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(content)
    with pytest.raises(errors.CorruptMediaError, match="garbage.mp4"):
        decode_clip(path)


def test_truncated_mp4_without_index(clip_25fps, tmp_path):
    # our writer puts the index (moov) at the end: a cut file has none
    path = tmp_path / "cut.mp4"
    data = clip_25fps.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.CorruptMediaError, match="cut.mp4"):
        decode_clip(path)


def test_truncated_mp4_with_index_first(realclips, tmp_path):
    # the RAVDESS file has its index first: a cut file still opens, its frames are missing
    path = tmp_path / "cut_ravdess.mp4"
    data = realclips["01-01-01-01-01-01-01.mp4"].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.CorruptMediaError, match="cut_ravdess.mp4.*truncated"):
        decode_clip(path)


def test_video_without_audio_track(tmp_path):
    path = write_video(tmp_path / "mute.mp4", coded_frames(30), 25)
    with pytest.raises(errors.NoAudioStreamError, match="mute.mp4"):
        decode_clip(path, 16)
    assert decode_clip(path, 16, need_audio=False).waveform is None


def test_audio_only_mp3(tmp_path):
    path = write_video(tmp_path / "voice.mp3", None, audio=tone_burst(1.0, 44100, 0.2, 0.2, 1), sample_rate=44100,
                       audio_codec="mp3")
    with pytest.raises(errors.NoVideoStreamError, match="voice.mp3"):
        decode_clip(path, 16)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_too_short_clips(tmp_path, count):
    # 1, 2 or 3 frames at 25 fps: 0.04 to 0.12 s, all under MIN_DURATION
    assert count / 25 < MIN_DURATION
    path = write_video(tmp_path / "blink.mp4", coded_frames(count), 25, tone_burst(count / 25, 48000, 0, 0.01), 48000)
    with pytest.raises(errors.ClipTooShortError, match="blink.mp4"):
        decode_clip(path, 16)


def test_shortest_accepted_clip(tmp_path):
    path = write_video(tmp_path / "five.mp4", coded_frames(5), 25)
    clip = decode_clip(path, 16, need_audio=False)
    assert clip.duration == pytest.approx(MIN_DURATION, abs=1e-4)
    assert clip.frames[16].shape[0] == 16


def test_unsupported_codec(tmp_path):
    """An AVI whose video fourcc no decoder knows: the container reads, the codec does not."""
    good = write_video(tmp_path / "good.avi", coded_frames(20), 25, tone_burst(0.8, 44100, 0.1, 0.1, 1), 44100,
                       video_codec="mpeg4", audio_codec="mp3")
    data = good.read_bytes()
    assert data.count(b"FMP4") == 2  # stream header and bitmap header
    path = tmp_path / "alien.avi"
    path.write_bytes(data.replace(b"FMP4", b"QZX9"))
    with pytest.raises(errors.UnsupportedCodecError, match="alien.avi"):
        decode_clip(path, 16)
    # the audio alone is still usable
    assert decode_clip(path, 16, need_video=False).waveform is not None


def test_bad_arguments(clip_25fps):
    with pytest.raises(errors.ConfigError):
        decode_clip(clip_25fps, 0)
    with pytest.raises(errors.ConfigError):
        decode_clip(clip_25fps, 16, start=2.0, end=1.0)
    with pytest.raises(errors.ConfigError):
        decode_clip(clip_25fps, 16, sample_rate=0)


def test_no_file_descriptor_leak(clip_25fps):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        decode_clip(clip_25fps, 8)
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def _drop_audio_packets(source, target, start, stop):
    """Remux `source` without the audio packets whose time is in [start, stop): a clip with an audio gap."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        dropped = 0
        for packet in inp.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio" and start <= float(packet.pts * packet.time_base) < stop:
                dropped += 1
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dropped


def test_audio_after_a_gap_stays_aligned_and_the_gap_is_silence(tmp_path):
    """Audio packets missing for 0.5 s: silence there, and the audio after the gap stays at its time
    (without the fix it slid 0.5 s earlier than its video and the clip's audio ended 0.5 s early)."""
    sr = 48000
    t = np.arange(int(2.0 * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * (300 + 400 * t) * t)).astype(np.float32)  # a chirp: no periodic look-alikes
    whole = write_video(tmp_path / "whole.mp4", coded_frames(50), fps=25, audio=audio, sample_rate=sr)
    gapped = tmp_path / "gapped.mp4"
    assert _drop_audio_packets(whole, gapped, 0.6, 1.1) >= 20  # ~23 AAC packets of 21 ms
    rate = 16000
    reference = decode_clip(whole, 8, sample_rate=rate).waveform
    waveform = decode_clip(gapped, 8, sample_rate=rate).waveform
    assert abs(len(waveform) - len(reference)) <= rate // 100
    assert not waveform[int(0.65 * rate): int(1.05 * rate)].any()  # the gap is exact silence
    # after the decoder has recovered (AAC frames overlap), the same samples at the same times
    after = slice(int(1.3 * rate), int(1.9 * rate))
    errors = {lag: np.abs(waveform[after.start + lag: after.stop + lag] - reference[after]).max()
              for lag in range(-40, 41)}
    assert min(errors, key=errors.get) == 0 and errors[0] < 1e-3, errors[0]
