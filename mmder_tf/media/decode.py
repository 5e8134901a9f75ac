"""Media files in and out with PyAV: `write_video` (real containers) and `decode_clip`.

Decoding reads the container once: video packets are kept compressed and their
timestamps give the frame times, so the alignment chooses frames before any
decoding. Then only the chosen frames are converted to RGB (converting all ~100
frames of a 720p clip adds ~50% to decoding them), frames nobody refers to and
nobody needs (most B-frames) are not decoded at all, and decoding stops at the
last chosen frame. Files whose packets lack timestamps, or whose decoder does not
reproduce them, are decoded twice instead (times first, then frames).
"""
from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from mmder_tf.errors import (
    ClipTooLongError,
    ClipTooShortError,
    ConfigError,
    CorruptMediaError,
    EmptyFileError,
    MediaError,
    NoAudioStreamError,
    NoVideoStreamError,
    UnsupportedCodecError,
)

# A clip must have at least this many decodable frames and this long a video
# timeline; shorter ones cannot show any change of expression, and below them
# frame selection would only repeat one or two images.
MIN_FRAMES = 2
MIN_DURATION = 0.2

# The longest clip decode_clip takes by default (seconds of the decoded span).
# The paper's audio windows grow with the clip (each is 2/(n+1) of it), so the
# memory of one clip grows with its length: docs/limits.md gives the measured peak
# (~1 GB above the model for a 10-minute clip). Raise it per call (max_seconds=,
# --max-clip-seconds); long recordings are better cut into utterances.
MAX_CLIP_SECONDS = 900.0

# A container that declares a duration must hold about that much: a file cut
# short (an interrupted download or copy) otherwise decodes as a shorter clip.
TRUNCATION_TOLERANCE_S = 0.25
TRUNCATION_TOLERANCE_FRACTION = 0.05

# x264's default preset is ~5x slower than veryfast for no benefit to tests or
# synthetic data; callers can override through video_options.
_DEFAULT_VIDEO_OPTIONS = {"libx264": {"preset": "veryfast"}}


def _av():
    # Imported lazily so that modules importing media (e.g. for DecodedClip) load
    # without PyAV where only cached tensors are used.
    import av

    return av


def upright_rgb(frame, path) -> np.ndarray:
    """A decoded video frame as uint8 RGB [h, w, 3], turned and mirrored as its display matrix says.

    Phones record portrait video as landscape frames plus a display matrix (the
    mp4 `tkhd` matrix, which FFmpeg hands to every decoded frame as side data);
    players apply it, and so does every path here (decode_clip, stream_windows),
    before face detection and cropping. The matrix maps a stored pixel (x, y) to
    (a x + c y, b x + d y) on screen: right angles and mirrors are exact index
    operations; any other angle is refused (CorruptMediaError naming `path`).
    """
    image = frame.to_ndarray(format="rgb24")
    matrix = next((np.frombuffer(bytes(data), np.int32) for data in frame.side_data
                   if data.type.name == "DISPLAYMATRIX"), None)
    if matrix is None or len(matrix) < 9:
        return image
    a, b, c, d = (int(v) for v in matrix[[0, 1, 3, 4]])
    if b == 0 and c == 0 and a and d:
        oriented = image[::-1 if d < 0 else 1, ::-1 if a < 0 else 1]
    elif a == 0 and d == 0 and b and c:
        oriented = image.transpose(1, 0, 2)[::-1 if b < 0 else 1, ::-1 if c < 0 else 1]
    else:
        angle = float(frame.rotation) if hasattr(frame, "rotation") else float("nan")
        raise CorruptMediaError(path, f"the display matrix turns the picture by {angle:g} degrees "
                                      f"(a={a} b={b} c={c} d={d}): only right angles and mirrors are supported")
    if oriented is image:
        return image
    return np.ascontiguousarray(oriented)


def _fps_fraction(fps) -> Fraction:
    if isinstance(fps, Fraction):
        value = fps
    else:
        value = Fraction(float(fps)).limit_denominator(1001)
    if value <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    return value


def write_video(
    path,
    frames,
    fps=25,
    audio=None,
    sample_rate: int = 48000,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    channels: int | None = None,
    *,
    container_format: str | None = None,
    pix_fmt: str | None = None,
    video_options: dict | None = None,
    audio_bit_rate: int | None = None,
) -> Path:
    """Write a real media file: uint8 RGB frames [N, H, W, 3] and float audio [S] or [S, C] in -1..1.

    `frames=None` writes an audio-only file (e.g. .m4a with aac, .mp3 with mp3);
    `audio=None` a file without audio stream. The container comes from the file
    extension unless `container_format` is given. `channels` (1 or 2) defaults to
    the audio's own; mono audio is duplicated to stereo, stereo averaged to mono.
    The file appears atomically (written next to it, then renamed).
    """
    av = _av()
    path = Path(path)
    if frames is None and audio is None:
        raise ConfigError(f"{path}: nothing to write (no frames and no audio)")
    if frames is not None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ConfigError(
                f"{path}: frames must be uint8 [N>0, H, W, 3], got {frames.dtype} {list(frames.shape)}"
            )
        rate = _fps_fraction(fps)
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[1] not in (1, 2) or audio.shape[0] == 0:
            raise ConfigError(f"{path}: audio must be float [S>0] or [S>0, 1|2], got {list(audio.shape)}")
        channels = audio.shape[1] if channels is None else int(channels)
        if channels == 2 and audio.shape[1] == 1:
            audio = np.repeat(audio, 2, axis=1)
        elif channels == 1 and audio.shape[1] == 2:
            audio = audio.mean(axis=1, keepdims=True)
        elif channels not in (1, 2):
            raise ConfigError(f"{path}: channels must be 1 or 2, got {channels}")
        audio = np.clip(audio, -1.0, 1.0)
        if int(sample_rate) <= 0:
            raise ConfigError(f"{path}: sample_rate must be positive, got {sample_rate}")

    from mmder_tf.fileio import replacing

    try:
        # the temporary keeps the extension: the muxer is chosen from it
        with replacing(path, suffix=path.suffix) as tmp, av.open(str(tmp), mode="w", format=container_format) as out:
            video_stream = audio_stream = None
            if frames is not None:
                video_stream = out.add_stream(video_codec, rate=rate)
                height, width = frames.shape[1:3]
                video_stream.width, video_stream.height = width, height
                formats = [f.name for f in (video_stream.codec_context.codec.video_formats or [])]
                chosen = pix_fmt or ("yuv420p" if not formats or "yuv420p" in formats else formats[0])
                if chosen == "yuv420p" and (width % 2 or height % 2):
                    raise ConfigError(f"{path}: yuv420p needs even width and height, got {width}x{height}")
                video_stream.pix_fmt = chosen
                video_stream.codec_context.time_base = 1 / rate
                options = dict(_DEFAULT_VIDEO_OPTIONS.get(video_codec, {}))
                options.update(video_options or {})
                if options:
                    video_stream.codec_context.options = {k: str(v) for k, v in options.items()}
            if audio is not None:
                audio_stream = out.add_stream(audio_codec, rate=int(sample_rate))
                audio_stream.codec_context.layout = "stereo" if channels == 2 else "mono"
                if audio_bit_rate:
                    audio_stream.codec_context.bit_rate = int(audio_bit_rate)
            if video_stream is not None:
                for index, image in enumerate(frames):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                    frame.pts = index
                    frame.time_base = video_stream.codec_context.time_base
                    out.mux(video_stream.encode(frame))
                out.mux(video_stream.encode(None))
            if audio_stream is not None:
                layout = "stereo" if channels == 2 else "mono"
                chunk = 4096
                for start in range(0, audio.shape[0], chunk):
                    planar = np.ascontiguousarray(audio[start : start + chunk].T)
                    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
                    frame.sample_rate = int(sample_rate)
                    frame.pts = start
                    frame.time_base = Fraction(1, int(sample_rate))
                    out.mux(audio_stream.encode(frame))
                out.mux(audio_stream.encode(None))
    except ConfigError:
        raise
    except (av.FFmpegError, ValueError) as error:
        raise MediaError(path, f"cannot write ({video_codec if frames is not None else ''} "
                               f"{audio_codec if audio is not None else ''}): {error}") from error
    return path


@dataclasses.dataclass
class DecodedClip:
    """What the decoder hands to the graph code: selected frames, their times, the mono waveform."""

    path: str
    frames: dict  # n -> uint8 [n, h, w, 3] RGB (empty when need_video=False)
    frame_times: dict  # n -> float64 [n] seconds from the first frame
    frame_indices: dict  # n -> int64 [n] into the clip's video frames (presentation order)
    num_video_frames: int
    duration: float  # alignment.video_duration of all frame times (audio length if no video)
    waveform: np.ndarray | None  # float32 [S] mono, sample 0 = video time 0; None without audio
    sample_rate: int
    fps: float
    face_found: bool | None = None  # None when no face crop was asked
    face_tracks: dict | None = None  # n -> face.FaceTrack through the n chosen frames


def _counts(num_frames) -> tuple[int, ...]:
    values = (num_frames,) if np.isscalar(num_frames) else tuple(num_frames)
    counts = []
    for value in values:
        if int(value) != value or int(value) < 1:
            raise ConfigError(f"frame counts must be positive integers, got {num_frames!r}")
        counts.append(int(value))
    if not counts:
        raise ConfigError("at least one frame count is needed")
    return tuple(dict.fromkeys(counts))


def _open(path: Path):
    av = _av()
    if not path.exists():
        raise MediaError(path, "no such file")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "file is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except PermissionError as error:
        raise MediaError(path, f"cannot read: {error}") from error
    except av.FFmpegError as error:
        raise CorruptMediaError(path, f"not a readable media container ({error.strerror or error})") from error


def _check_decoder(path: Path, stream, kind: str):
    if stream.codec_context is None:
        raise UnsupportedCodecError(
            path, f"no decoder for the {kind} stream (codec tag {getattr(stream, 'codec_tag', None) or 'unknown'!r})"
        )


def _seek(container, stream, seconds: float):
    # backward=True lands on the keyframe at or before `seconds`; frames before
    # it are decoded and dropped by time, so the cut is frame-exact.
    target = int(seconds / stream.time_base) if stream.time_base else int(seconds * 1_000_000)
    container.seek(max(target, 0), backward=True, any_frame=False, stream=stream)


def _declared_duration(container) -> float | None:
    """The container's own duration in seconds (header, index or metadata), or None where it has none."""
    duration = container.duration
    if duration is None or duration <= 0:
        return None
    return float(duration) / 1_000_000  # AV_TIME_BASE


def _check_length(path: Path, seconds: float, max_seconds: float, how: str):
    if seconds > max_seconds:
        raise ClipTooLongError(
            path, f"{how} {seconds:.1f} s, more than the limit of {max_seconds:g} s per clip (memory grows with "
                  "the clip's length); raise max_seconds / --max-clip-seconds to decode it, or cut it into "
                  "shorter clips")


class _AudioCollector:
    """Decodes audio packets to float mono at `rate`, each frame placed at its timestamp.

    Samples are laid out on the audio timeline from the first frame's time: where
    packets are missing (damaged, dropped, a timestamp gap) the gap is filled with
    silence, so the audio after it stays aligned with its video instead of sliding
    earlier by the gap's length.
    """

    def __init__(self, rate: int):
        self.rate = rate
        self.resampler = None
        self.source = None  # (format, layout, rate) the resampler was made for
        self.chunks: list[np.ndarray] = []  # interleaved float samples of the current source
        self.channels = 1
        self.mono: list[np.ndarray] = []
        self.start_time = None
        self.expected = None  # where the next frame should start if no packet is missing (seconds)
        self.errors = 0
        self.gaps = 0  # silences inserted for missing audio

    def add(self, packet):
        av = _av()
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            self.errors += 1  # a damaged audio packet leaves a gap; the next frame's timestamp places it
            return
        for frame in decoded:
            self._resample(frame)

    def _resample(self, frame):
        av = _av()
        time = float(frame.time) if frame.time is not None else None
        length = frame.samples / frame.sample_rate if frame.sample_rate else 0.0
        # Timestamps jitter by a rounding step (1 ms in FLV); a missing packet leaves a whole frame.
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if (time is not None and self.expected is not None and source == self.source
                and time - self.expected > max(0.002, 0.5 * length)):
            self._silence(frame, int(round((time - self.expected) * frame.sample_rate)))
        if source != self.source:
            # first frame, or a stream that changes channels or rate midway (broadcast recordings)
            self._flush()
            if self.start_time is None and time is not None:
                self.start_time = time
            # Resample keeping the channels, then average them: swresample's own
            # stereo->mono matrix scales by 1/sqrt(2) instead of taking the mean.
            # Packed "flt": one array per frame (planar output is vstacked per frame by PyAV).
            self.resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=self.rate)
            self.source = source
            self.channels = len(frame.layout.channels)
        self.chunks += [out.to_ndarray().reshape(-1) for out in self.resampler.resample(frame)]
        if time is not None:
            self.expected = time + length
        elif self.expected is not None:
            self.expected += length

    def _silence(self, like, samples: int):
        """Feed `samples` of silence in the source's own format through the resampler, which keeps the
        audio after the gap on the sample grid it would have had without the gap."""
        av = _av()
        silence = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=samples)
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        silence.sample_rate = like.sample_rate
        self.chunks += [out.to_ndarray().reshape(-1) for out in self.resampler.resample(silence)]
        self.gaps += 1

    def _flush(self):
        if self.resampler is None:
            return
        self.chunks += [out.to_ndarray().reshape(-1) for out in self.resampler.resample(None)]
        if self.chunks:
            samples = np.concatenate(self.chunks).reshape(-1, self.channels)
            self.mono.append(samples[:, 0] if self.channels == 1 else samples.mean(axis=1, dtype=np.float32))
        self.chunks = []

    def finish(self) -> np.ndarray | None:
        self._flush()
        return np.concatenate(self.mono).astype(np.float32, copy=False) if self.mono else None


def check_finite_audio(path, waveform):
    """Refuse audio with NaN or infinite samples (float PCM can hold them): the spectrogram of such a clip
    would silently be that of silence, and the prediction made from it would look like any other."""
    if waveform is not None and waveform.size and not np.isfinite(waveform).all():
        bad = int(np.count_nonzero(~np.isfinite(waveform)))
        raise CorruptMediaError(path, f"the audio holds {bad} NaN or infinite sample(s) of {waveform.size} "
                                      "(damaged float PCM); no spectrogram can be made of it")
    return waveform


def _align_audio(waveform: np.ndarray, audio_start: float, video_start: float, rate: int, end=None):
    """Shift so that sample 0 is at `video_start` (zeros where audio starts late), cut at `end`."""
    offset = int(round((audio_start - video_start) * rate))
    if offset > 0:
        waveform = np.concatenate([np.zeros(offset, np.float32), waveform])
    elif offset < 0:
        waveform = waveform[-offset:]
    if end is not None:
        waveform = waveform[: max(int(round((end - video_start) * rate)), 0)]
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _scan(path: Path, container, video, audio, start, end, audio_rate, max_seconds, timing_audio=None):
    """The one demux pass: video packets kept (compressed, cheap) with their timestamps, audio decoded.

    Returns (video packets, the sorted pts of the frames shown, or None when some
    packet has no pts; waveform; audio start time; the end time of the last packet
    of any stream read). `timing_audio` is an audio stream only read for that end
    time (not decoded). A span longer than `max_seconds` stops the pass.
    """
    av = _av()
    packets, times, usable, counted = [], [], True, 0
    collector = _AudioCollector(audio_rate) if audio is not None else None
    streams = [s for s in (video, audio if audio is not None else timing_audio) if s is not None]
    first_time, stream_end = None, 0.0
    bases = {s.index: float(s.time_base) if s.time_base else 0.0 for s in streams}
    if start is not None:
        _seek(container, video if video is not None else audio, start)
    video_done = video is None
    # float time bases: Fraction arithmetic per packet costs more than the demuxing
    video_tb = float(video.time_base) if video is not None else 0.0
    audio_tb = float(audio.time_base) if audio is not None and audio.time_base else None
    try:
        for packet in container.demux(streams):
            base = bases[packet.stream.index]
            if packet.pts is not None and packet.size and base:
                t = packet.pts * base
                stream_end = max(stream_end, t + (packet.duration or 0) * base)
                if first_time is None and (start is None or t >= start - 1e-6):
                    first_time = t
                # the timeline a container does not declare (or declares falsely) is bounded here
                if first_time is not None and t - first_time > max_seconds + 1.0:
                    _check_length(path, t - first_time, max_seconds, "the clip runs past")
            if packet.stream is timing_audio and audio is None:
                continue
            if packet.stream is video:
                if video_done:
                    continue
                if packet.size == 0:
                    continue  # the end-of-stream marker; the decoder is flushed explicitly
                if end is not None and packet.dts is not None and packet.dts * video_tb >= end:
                    video_done = True  # pts >= dts: no later packet shows a frame before `end`
                    if collector is None:
                        break
                    continue
                packets.append(packet)
                if packet.is_discard:
                    continue  # outside the edit list: decoded for reference, never shown
                counted += 1
                if packet.pts is None:
                    usable = False  # e.g. raw elementary streams: only decoding gives times
                    continue
                t = packet.pts * video_tb
                if (start is None or t >= start - 1e-6) and (end is None or t < end):
                    times.append(packet.pts)
            elif collector is not None:
                if packet.size == 0:
                    continue
                if end is not None and packet.pts is not None and audio_tb and packet.pts * audio_tb >= end:
                    if video_done:
                        break
                    continue
                collector.add(packet)
    except av.FFmpegError as error:
        raise CorruptMediaError(path, f"container damaged while reading packets ({error.strerror or error})") from error
    waveform = collector.finish() if collector is not None else None
    audio_start = collector.start_time if collector is not None else None
    # Muxers round the declared count (AVI counts a packed B-frame's two frames): allow 5 %.
    if (video is not None and start is None and end is None and video.frames
            and counted < video.frames - max(1, TRUNCATION_TOLERANCE_FRACTION * video.frames)):
        raise CorruptMediaError(path, f"truncated: the container declares {video.frames} video frames, "
                                      f"the file holds {counted}")
    video_pts = np.unique(np.asarray(times, np.int64)) if usable and video is not None else None
    return packets, video_pts, waveform, audio_start, stream_end


def _decode_frames(path: Path, packets, stream, start, end, wanted: set, stop_after: int | None):
    """Decode packets in order; frames come out in presentation order, numbered from 0.

    Converts to RGB only the positions in `wanted` and stops after position
    `stop_after` (frames past the last one needed are never decoded). Returns
    (times of the frames decoded, {position: rgb}).
    """
    av = _av()
    codec = stream.codec_context
    # frame.time is NaN for frames returned by the flush (no packet carries a
    # time base there), so times come from pts and the stream's time base.
    time_base = float(stream.time_base)
    # Raw elementary streams carry no timestamps at all: frames are then spaced
    # at the stream's nominal rate, as players do.
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    step = 1.0 / float(rate) if rate else 0.0
    images, times, errors = {}, [], 0
    position = 0

    def take(frames):
        nonlocal position
        for frame in frames:
            t = frame.pts * time_base if frame.pts is not None else (times[-1] + step if times else 0.0)
            if start is not None and t < start - 1e-6:
                continue  # decoded from the keyframe before `start`, only as a reference
            if end is not None and t >= end:
                return True
            times.append(t)
            if position in wanted:
                images[position] = upright_rgb(frame, path)
            position += 1
            if stop_after is not None and position > stop_after:
                return True
        return False

    finished = False
    for packet in packets:
        try:
            decoded = codec.decode(packet)
        except av.FFmpegError:
            errors += 1  # a damaged packet drops its frame; the rest still decodes
            continue
        if take(decoded):
            finished = True
            break
    if not finished:
        try:
            take(codec.decode(None))  # frames still held for reordering or by decoder threads
        except av.FFmpegError:
            errors += 1
    if not times:
        raise CorruptMediaError(path, f"no video frame could be decoded ({errors} damaged packets)")
    return np.asarray(times, np.float64), images


def _decode_runs(packets, wanted_pts: dict) -> list[tuple[int, int]]:
    """The (first, last) packet ranges, in decode order, that give every wanted frame.

    A wanted frame needs the packets from the last keyframe before it: the latest
    keyframe at or before its packet whose pts is not after the frame's (leading
    pictures of an open GOP refer to the GOP before). Overlapping or adjacent
    ranges merge; the packets between two runs are never decoded.
    """
    ranges, keyframes = [], []  # keyframes: (packet index, pts) of those seen so far
    for index, packet in enumerate(packets):
        if packet.is_keyframe and packet.pts is not None:
            keyframes.append((index, packet.pts))
        if packet.pts in wanted_pts:
            keyframe = next((i for i, pts in reversed(keyframes) if pts <= packet.pts), 0)
            ranges.append((keyframe, index))
    runs = []
    for first, last in sorted(ranges):
        if runs and first <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    return runs


def _decode_selected(path: Path, packets, stream, wanted_pts: dict):
    """Decode stored packets and convert the frames whose pts is in `wanted_pts` (pts -> position).

    Only the packets of _decode_runs are decoded: between two runs the decoder is
    drained and reset, and the next run starts at a keyframe (the RAVDESS clips
    have one every 12 or 29 frames, so the P-frames between a chosen frame and the
    next keyframe are never decoded). Inside a run, packets of frames that are not
    wanted are decoded with skip_frame=NONREF: the decoder skips them when no other
    frame refers to them (the B-frames of H.264 / MPEG-4, 60 of 98 frames in the
    RAVDESS clip). Returns {position: rgb}, or None when some wanted frame never
    came out (the caller then decodes the file plainly).
    """
    av = _av()
    codec = stream.codec_context
    images = {}

    def take(frames):
        for frame in frames:
            position = wanted_pts.get(frame.pts)
            if position is not None and position not in images:
                images[position] = upright_rgb(frame, path)

    try:
        for run, (first, last) in enumerate(_decode_runs(packets, wanted_pts)):
            if run:
                codec.skip_frame = "DEFAULT"
                take(codec.decode(None))  # frames held for reordering, before the jump
                codec.flush_buffers()
            skipping = None
            for packet in packets[first:last + 1]:
                skip = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
                if skip != skipping:
                    codec.skip_frame = skipping = skip
                try:
                    take(codec.decode(packet))
                except av.FFmpegError:
                    continue  # a damaged packet: if its frame was wanted, the check below sees it
                if len(images) == len(wanted_pts):
                    return images
        codec.skip_frame = "DEFAULT"
        take(codec.decode(None))  # frames still held for reordering or by decoder threads
    except av.FFmpegError:
        return None
    return images if len(images) == len(wanted_pts) else None


def _decode_file(path: Path, video_index: int, start, end, wanted: set, stop_after: int | None):
    """_decode_frames on a fresh demux of the file (the path for files whose packets lack timestamps)."""
    with _open(path) as container:
        stream = container.streams.video[video_index]
        stream.thread_type = "AUTO"
        if start is not None:
            _seek(container, stream, start)
        packets = (p for p in container.demux(stream) if p.size)
        return _decode_frames(path, packets, stream, start, end, wanted, stop_after)


@functools.lru_cache(maxsize=64)
def _alignment_function(counts: tuple, official: bool):
    """alignment's duration and frame choice as one traced graph: eager calls cost ~30 ms a clip."""
    import tensorflow as tf

    from mmder_tf.fusion import alignment

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)], autograph=False)
    def select(times):
        duration = alignment.video_duration(times)
        return duration, [alignment.select_frame_indices(times, n, duration, official) for n in counts]

    return select


def _checked_selection(path: Path, times_abs: np.ndarray, counts, official: bool):
    """(duration, {n: indices}) for frame times; ClipTooShortError below MIN_FRAMES / MIN_DURATION."""
    if len(times_abs) == 0:
        raise ClipTooShortError(path, "no video frame in the requested segment")
    times_rel = times_abs - times_abs[0]
    duration, indices = _alignment_function(tuple(counts), bool(official))(times_rel.astype(np.float32))
    duration = float(duration) if len(times_rel) > 1 else 0.0
    # The tolerance keeps a clip of exactly MIN_DURATION (e.g. 5 frames at 25 fps)
    # from failing on float32 rounding of its timestamps.
    if len(times_rel) < MIN_FRAMES or duration < MIN_DURATION - 1e-3:
        raise ClipTooShortError(
            path,
            f"{len(times_rel)} video frame(s) over {duration:.3f} s; at least {MIN_FRAMES} frames "
            f"and {MIN_DURATION} s are needed",
        )
    return duration, {n: np.asarray(idx, np.int64) for n, idx in zip(counts, indices)}


def _wanted(selection: dict) -> set:
    return {int(i) for idx in selection.values() for i in idx}


def decode_clip(
    path,
    num_frames: int | Sequence[int] = 16,
    *,
    sample_rate: int = 16000,
    official: bool = False,
    need_video: bool = True,
    need_audio: bool = True,
    start: float | None = None,
    end: float | None = None,
    face_crop: str | bool | None = None,
    max_seconds: float | None = None,
) -> DecodedClip:
    """Decode one clip: the frames alignment selects (for each count in `num_frames`) and the audio.

    Frame times are presentation timestamps relative to the first frame (with
    `start`, the first frame at or after `start`); D = alignment.video_duration
    of all of them; frames are chosen by alignment.select_frame_indices (nearest
    to T_i = (i+1) D / (n+1), or the official indices with `official=True`).
    Clips with fewer frames than requested repeat the nearest frames. Frames
    hidden by an mp4 edit list are not frames of the clip (players skip them too).
    Frames come out as players show them: turned and mirrored by the stream's
    display matrix (portrait phone videos; `upright_rgb`).

    Audio: every channel, averaged to mono, resampled to `sample_rate`, shifted
    so that sample 0 is video time 0 (zeros where the audio starts later, trimmed
    where it starts earlier); it runs to the end of the audio stream (or `end`).
    Each decoded audio frame is placed at its timestamp: missing or damaged
    packets become silence of their length, so later audio keeps its alignment.
    `waveform` is None when need_audio=False. With need_video=False, frame
    times and indices are still computed (from packet timestamps, no decoding)
    but `frames` is empty.

    `start`/`end` (seconds on the file's timeline) decode only that segment.
    `face_crop` ("face" or "aligned"; True means "face") replaces every selected
    frame by its face crop (media/face.py): faces are detected once on the distinct
    chosen frames, then each count's frames are tracked and cropped on their own,
    so the n-frame crops are the same whatever other counts are decoded with them.
    `max_seconds` (default MAX_CLIP_SECONDS, 900 s) bounds the decoded span, and
    with it the memory: a longer clip raises ClipTooLongError before any decoding
    when the container declares its duration, else as soon as the demuxing passes it.

    Raises (each naming the file): MediaError (missing file), EmptyFileError,
    CorruptMediaError (not media, nothing decodable, or truncated: fewer frames
    than an mp4 declares, or a stream that ends more than 5 % / 0.25 s before the
    duration the container declares), ClipTooLongError (see `max_seconds`),
    UnsupportedCodecError (no decoder for a needed stream), NoVideoStreamError
    (need_video and no video), NoAudioStreamError (need_audio and no audio),
    ClipTooShortError when the video has fewer than MIN_FRAMES (2) frames or a
    timeline shorter than MIN_DURATION (0.2 s); without video (need_video=False
    on an audio-only file) the audio must last MIN_DURATION.
    """
    path = Path(path)
    counts = _counts(num_frames)
    if start is not None and start < 0:
        raise ConfigError(f"{path}: start must be >= 0, got {start}")
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"{path}: end ({end}) must be after start ({start})")
    if int(sample_rate) <= 0:
        raise ConfigError(f"{path}: sample_rate must be positive, got {sample_rate}")
    sample_rate = int(sample_rate)
    max_seconds = MAX_CLIP_SECONDS if max_seconds is None else float(max_seconds)
    if not max_seconds > 0:
        raise ConfigError(f"{path}: max_seconds must be positive, got {max_seconds}")

    selection = None
    images: dict = {}
    with _open(path) as container:
        videos = list(container.streams.video)
        audios = list(container.streams.audio)
        video = videos[0] if videos else None
        audio = audios[0] if audios else None
        if video is None and (need_video or audio is None):
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no"
            raise NoVideoStreamError(path, f"no video stream ({kinds} streams only)")
        if need_audio and audio is None:
            raise NoAudioStreamError(path, "no audio stream, but audio is needed (use a video-only strategy)")
        if need_video:
            _check_decoder(path, video, "video")
            video.thread_type = "AUTO"  # must be set before the first decode opens the decoder
        if need_audio:
            _check_decoder(path, audio, "audio")
        video_index = videos.index(video) if video is not None else None
        declared = _declared_duration(container)
        if start is not None and end is not None:
            _check_length(path, end - start, max_seconds, "the segment lasts")
        elif declared is not None:
            _check_length(path, declared - (start or 0.0), max_seconds, "the container declares")
        packets, packet_pts, waveform, audio_start, stream_end = _scan(
            path, container, video, audio if need_audio else None, start, end, sample_rate, max_seconds,
            timing_audio=audio,
        )
        if start is None and end is None and declared is not None:
            # Both streams' packets were read: the file ends where its longest stream ends.
            origin = max(float(container.start_time or 0) / 1_000_000, 0.0)
            missing = declared - (stream_end - origin)
            if missing > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared):
                raise CorruptMediaError(path, f"truncated: the container declares {declared:.2f} s, its streams "
                                              f"end after {stream_end - origin:.2f} s")
        if need_audio and waveform is None:
            raise CorruptMediaError(path, "the audio stream holds no decodable audio")
        check_finite_audio(path, waveform)
        if video is None:
            duration = 0.0 if waveform is None else len(waveform) / sample_rate
            if duration < MIN_DURATION - 1e-3:
                raise ClipTooShortError(path, f"audio lasts {duration:.3f} s, at least {MIN_DURATION} s are needed")
            return DecodedClip(str(path), {}, {}, {}, 0, duration, waveform, sample_rate, 0.0, None)
        if packet_pts is not None:
            times_abs = packet_pts * float(video.time_base)
            duration, selection = _checked_selection(path, times_abs, counts, official)
            if need_video:
                wanted = {int(packet_pts[i]): i for i in _wanted(selection)}
                images = _decode_selected(path, packets, video, wanted)
                # Packet timestamps are the frames' timestamps in all but broken
                # files; a decoder that drops or retimes frames sends us to the
                # slow path below, which takes times from decoded frames.
                if images is None:
                    selection = None
        del packets

    if selection is None:
        if not need_video:
            _check_decoder(path, video, "video")
        times_abs, _ = _decode_file(path, video_index, start, end, set(), None)
        duration, selection = _checked_selection(path, times_abs, counts, official)
        if need_video:
            wanted = _wanted(selection)
            _, images = _decode_file(path, video_index, start, end, wanted, max(wanted))
            if len(images) < len(wanted):
                raise CorruptMediaError(path, "the decoder gives different frames on each pass")

    video_start = float(times_abs[0])
    times_rel = times_abs - video_start
    if waveform is not None:
        waveform = _align_audio(
            waveform, audio_start if audio_start is not None else video_start, video_start, sample_rate, end
        )
    face_found = face_tracks = None
    if face_crop and need_video:
        from mmder_tf.media import face

        frames, face_tracks = face.crop_selections(images, selection, "face" if face_crop is True else face_crop)
        face_found = any(track.found for track in face_tracks.values())
    else:
        frames = {n: np.stack([images[int(i)] for i in idx]) for n, idx in selection.items()} if need_video else {}
    diffs = np.diff(times_rel)
    fps = float(1.0 / np.median(diffs)) if len(diffs) and np.median(diffs) > 0 else 0.0
    return DecodedClip(
        path=str(path),
        frames=frames,
        frame_times={n: times_rel[idx] for n, idx in selection.items()},
        frame_indices=selection,
        num_video_frames=int(len(times_rel)),
        duration=duration,
        waveform=waveform,
        sample_rate=sample_rate,
        fps=fps,
        face_found=face_found,
        face_tracks=face_tracks,
    )
