"""Recordings of any length as a stream of overlapping windows, in bounded memory.

`stream_windows` hands out one DecodedClip per window [start, start + window)
seconds of the recording (0 = its first video frame), each as decode_clip would
decode that segment: the frames the alignment chooses among the window's frames,
the window's duration D (alignment.video_duration of its frame times), its audio
with sample 0 at its first frame, face crops where asked. Two passes over the
file:

1. the video packets' timestamps only (no decoding): every window's frame choice;
2. one decoding pass over video and audio, front to back, that keeps only the
   chosen frames of windows still open and the audio from the earliest open
   window on. A window is handed out as soon as its last chosen frame and its
   audio are decoded, then forgotten.

Memory is therefore bounded by the windows open at once (window / hop of them),
not by the recording's length: only the timestamps (8 bytes a frame) grow with it.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from mmder_tf.errors import ClipTooShortError, ConfigError, CorruptMediaError, MediaError, NoAudioStreamError
from mmder_tf.media.decode import (
    DecodedClip,
    _AudioCollector,
    _av,
    _check_decoder,
    _checked_selection,
    _counts,
    check_finite_audio,
    _open,
    upright_rgb,
)


@dataclasses.dataclass(frozen=True)
class Window:
    """One window of a recording, seconds from its first video frame."""

    index: int
    start: float
    end: float


def plan_windows(duration: float, window: float, hop: float) -> list[Window]:
    """Windows of `window` s every `hop` s over [0, duration); a last one ends at the recording's end.

    A recording shorter than one window is one window over all of it.
    """
    if not (window > 0 and hop > 0):
        raise ConfigError(f"window and hop must be positive seconds, got {window} and {hop}")
    if duration <= window:
        return [Window(0, 0.0, float(duration))]
    count = int(math.floor((duration - window) / hop + 1e-9)) + 1
    starts = [k * hop for k in range(count)]
    if starts[-1] + window < duration - 1e-6:
        starts.append(duration - window)  # the tail is predicted too, by a window of full length
    return [Window(k, float(s), float(s + window)) for k, s in enumerate(starts)]


class _RollingAudio(_AudioCollector):
    """The collector's mono audio, kept only from a moving sample on."""

    def __init__(self, rate: int):
        super().__init__(rate)
        self.kept = np.zeros(0, np.float32)
        self.kept_from = 0  # index of kept[0] among all samples since the audio's start

    def take(self):
        """Move what the resampler has produced into `kept`."""
        parts = list(self.mono)
        if self.chunks:
            samples = np.concatenate(self.chunks).reshape(-1, self.channels)
            parts.append(samples[:, 0] if self.channels == 1 else samples.mean(axis=1, dtype=np.float32))
        self.mono, self.chunks = [], []
        if parts:
            self.kept = np.concatenate([self.kept, *[p.astype(np.float32, copy=False) for p in parts]])

    def finish_stream(self):
        self._flush()
        self.take()

    def seconds_decoded(self) -> float:
        if self.start_time is None:
            return -math.inf
        return self.start_time + (self.kept_from + len(self.kept)) / self.rate

    def drop_before(self, seconds: float):
        if self.start_time is None:
            return
        first = int(math.floor((seconds - self.start_time) * self.rate)) - 1
        drop = min(max(first - self.kept_from, 0), len(self.kept))
        if drop:
            self.kept = self.kept[drop:]
            self.kept_from += drop

    def segment(self, start: float, end: float) -> np.ndarray:
        """Samples [start, end) seconds as decode_clip aligns them (zeros before the audio, cut at its end)."""
        length = max(int(round((end - start) * self.rate)), 0)
        if self.start_time is None:
            return np.zeros(0, np.float32)
        first = int(round((start - self.start_time) * self.rate))
        out = np.zeros(length, np.float32)
        lo, hi = max(first, self.kept_from), min(first + length, self.kept_from + len(self.kept))
        if hi > lo:
            out[lo - first: hi - first] = self.kept[lo - self.kept_from: hi - self.kept_from]
        available = self.kept_from + len(self.kept) - first  # the audio ends here: like decode_clip, no padding
        return out[: max(min(length, available), 0)]


def _video_times(path: Path, container, video) -> np.ndarray:
    """Presentation times (seconds, sorted) of the frames the video shows, from packets alone."""
    av = _av()
    pts = []
    try:
        for packet in container.demux(video):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts is None:
                raise MediaError(path, "video packets carry no timestamps (a raw stream?): remux it into a "
                                       "container (e.g. ffmpeg -i IN -c copy OUT.mp4) for --timeline")
            pts.append(packet.pts)
    except av.FFmpegError as error:
        raise CorruptMediaError(path, f"container damaged while reading packets ({error.strerror or error})") from error
    return np.unique(np.asarray(pts, np.int64)) * float(video.time_base)


def recording_length(path) -> float:
    """Seconds from the first to one interval past the last video frame (packet timestamps only)."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream: the timeline needs one")
        video = container.streams.video[0]
        times = _video_times(path, container, video)
    if len(times) < 2:
        raise ClipTooShortError(path, f"{len(times)} video frame(s)")
    return float(times[-1] - times[0] + np.median(np.diff(times)))


@dataclasses.dataclass(frozen=True)
class _Plan:
    window: Window
    first: int  # index (among all the recording's frames) of the window's first frame
    clip_times: np.ndarray  # absolute times of the window's frames
    selection: dict  # n -> indices into clip_times
    duration: float
    wanted: frozenset  # indices (among all frames) of the chosen frames
    last_frame_time: float  # absolute time of the last chosen frame


def stream_windows(path, window: float, hop: float, num_frames=16, *, sample_rate: int = 16000,
                   official: bool = False, need_video: bool = True, need_audio: bool = True,
                   face_crop: str | None = None):
    """Yield (Window, DecodedClip) for every window of the recording, in order (see the module doc).

    A window whose frames span less than MIN_DURATION or hold fewer than
    MIN_FRAMES frames (the decoder's rules) is yielded as (Window, ClipTooShortError); one whose frames
    cannot be decoded or whose audio is not finite as (Window, CorruptMediaError).
    """
    path = Path(path)
    counts = _counts(num_frames)
    sample_rate = int(sample_rate)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream: the timeline needs one")
        video = container.streams.video[0]
        if need_audio and not container.streams.audio:
            raise NoAudioStreamError(path, "no audio stream, but audio is needed (use a video-only strategy)")
        times = _video_times(path, container, video)
    if len(times) < 2:
        raise ClipTooShortError(path, f"{len(times)} video frame(s)")
    origin = float(times[0])
    relative = times - origin
    length = float(relative[-1] + np.median(np.diff(relative)))
    plans, pending = [], {}
    for w in plan_windows(length, window, hop):
        inside = np.flatnonzero((relative >= w.start - 1e-6) & (relative < w.end - 1e-6))
        try:
            duration, selection = _checked_selection(path, times[inside], counts, official)
        except ClipTooShortError as error:
            plans.append((w, error))
            continue
        wanted = frozenset(int(inside[i]) for idx in selection.values() for i in idx)
        plans.append((w, _Plan(w, int(inside[0]), times[inside], selection, duration, wanted,
                               float(times[max(wanted)]))))
        for frame in wanted if need_video else ():
            pending[frame] = pending.get(frame, 0) + 1
    yield from _decode_pass(path, plans, pending, times, origin, sample_rate, need_video, need_audio, face_crop)


def _decode_pass(path, plans, pending, times, origin, sample_rate, need_video, need_audio, face_crop):
    av = _av()
    index_of = {round(t * 1e6): i for i, t in enumerate(times)}
    images: dict = {}
    with _open(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if need_audio else None
        streams = [video] + ([audio] if audio is not None else [])
        if need_video:
            _check_decoder(path, video, "video")
            video.thread_type = "AUTO"
        if audio is not None:
            _check_decoder(path, audio, "audio")
        collector = _RollingAudio(sample_rate) if audio is not None else None
        time_base = float(video.time_base)
        decoded_until = -math.inf  # video time reached by the decoder
        next_plan = 0

        def ready(item, finished):
            if finished or isinstance(item, Exception):
                return True
            video_done = not need_video or decoded_until >= item.last_frame_time
            audio_done = collector is None or collector.seconds_decoded() >= origin + item.window.end
            return video_done and audio_done

        def release(finished=False):
            nonlocal next_plan
            while next_plan < len(plans) and ready(plans[next_plan][1], finished):
                window, item = plans[next_plan]
                next_plan += 1
                if isinstance(item, Exception):
                    yield window, item
                    continue
                try:
                    clip = _window_clip(path, item, origin, images, collector, sample_rate, need_video, face_crop)
                except CorruptMediaError as error:  # this window only: the others are still predicted
                    clip = error
                for frame in item.wanted if need_video else ():
                    pending[frame] -= 1
                    if pending[frame] == 0:
                        images.pop(frame, None)
                if collector is not None and next_plan < len(plans):
                    upcoming = plans[next_plan]
                    keep = upcoming[1].clip_times[0] if isinstance(upcoming[1], _Plan) else origin + upcoming[0].start
                    collector.drop_before(keep)
                yield window, clip

        codec = video.codec_context
        flushed = False
        try:
            for packet in container.demux(streams):
                if packet.stream is video:
                    if not need_video:
                        if packet.pts is not None:
                            decoded_until = max(decoded_until, packet.pts * time_base)
                        yield from release()
                        continue
                    flushed = flushed or not packet.size  # the end-of-stream packet flushes the decoder
                    try:
                        frames = codec.decode(packet if packet.size else None)
                    except av.FFmpegError:
                        continue  # a damaged packet drops its frame; the rest still decodes
                    for frame in frames:
                        if frame.pts is None:
                            continue
                        t = frame.pts * time_base
                        decoded_until = max(decoded_until, t)
                        index = index_of.get(round(t * 1e6))
                        if index is not None and pending.get(index):
                            images[index] = upright_rgb(frame, path)
                elif collector is not None and packet.size:
                    collector.add(packet)
                    collector.take()
                yield from release()
            if need_video and not flushed:
                for frame in codec.decode(None):
                    if frame.pts is not None:
                        index = index_of.get(round(frame.pts * time_base * 1e6))
                        if index is not None and pending.get(index):
                            images[index] = upright_rgb(frame, path)
        except av.FFmpegError as error:
            raise CorruptMediaError(path, f"container damaged while reading ({error.strerror or error})") from error
        if collector is not None:
            collector.finish_stream()
        decoded_until = math.inf
        yield from release(finished=True)


def _window_clip(path, item: _Plan, origin, images, collector, sample_rate, need_video, face_crop) -> DecodedClip:
    frames, tracks, found = {}, None, None
    if need_video:
        chosen = {int(i) for idx in item.selection.values() for i in idx}
        missing = [i for i in chosen if item.first + i not in images]
        if missing:
            raise CorruptMediaError(path, f"window {item.window.start:.1f}-{item.window.end:.1f} s: "
                                          f"{len(missing)} chosen frame(s) could not be decoded")
        window_images = {i: images[item.first + i] for i in chosen}
        if face_crop:
            from mmder_tf.media import face

            frames, tracks = face.crop_selections(window_images, item.selection, face_crop)
            found = any(t.found for t in tracks.values())
        else:
            frames = {n: np.stack([window_images[int(i)] for i in idx]) for n, idx in item.selection.items()}
    start_time = float(item.clip_times[0])
    # as decode_clip(start, end) aligns a segment's audio: sample 0 at its first frame, cut at `end`
    waveform = collector.segment(start_time, origin + item.window.end) if collector is not None else None
    check_finite_audio(f"{path}@{item.window.start:.3f}-{item.window.end:.3f}s", waveform)
    relative = item.clip_times - start_time
    diffs = np.diff(relative)
    return DecodedClip(
        path=f"{path}@{item.window.start:.3f}-{item.window.end:.3f}s",
        frames=frames,
        frame_times={n: relative[idx] for n, idx in item.selection.items()},
        frame_indices=item.selection,
        num_video_frames=len(relative),
        duration=item.duration,
        waveform=waveform,
        sample_rate=sample_rate,
        fps=float(1.0 / np.median(diffs)) if len(diffs) and np.median(diffs) > 0 else 0.0,
        face_found=found,
        face_tracks=tracks,
    )
