"""One clip -> the fused model input uint8 [num_frames, H, W, 3].

`fuse_aligned` is THE clip -> input function: the n frames the alignment chose,
the mono waveform and the clip's duration become the fused input. Every path
calls it with the same arithmetic:

- `fuse_clip` / `mmder-predict`: on the frames and waveform decode_clip returns;
- the prepared cache (data/prepare.py) stores exactly what it reads, losslessly:
  the chosen frames after its first stage (`prepare_frames`, cropped and resized
  to the modality size; at that size the stage is the identity) and the float32
  waveform; the training and evaluation pipeline (data/pipeline.py) maps it over them;
- every SavedModel signature that takes media (`from_media`, `preprocess`) runs
  `fuse_media`, which selects the frames in-graph as the decoder does and calls it.

Nothing else turns media into model input: extend this function (or its stages)
rather than adding a path beside it. RFAS orders a clip by `clip_identity`, a
fingerprint of its own images, so the order needs no key from any caller.

Frames: crop "center" takes the centred square and resizes it to the modality
size (for CFAS, 112 x 224 squeezes that square vertically, as the paper's
V in R^{16x112x224} does); "face" and "aligned" frames arrive as square face
crops from the decoder (media/face.py: detected, tracked and cropped on the
client, outside the graph) and get the same centred square, a no-op on them;
"none" stretches the whole frame. Resizing is
bilinear, rounded to uint8, and skipped when the frames already have the target
size (cached frames); it is antialiased only where an axis shrinks by more than 2
(e.g. CFAS's 360 -> 112 rows), plain half-pixel bilinear otherwise (360 -> 224).

`official=True` reproduces: the official frame indices (alignment, via the
decoder or `fuse_media`), the wrapped uint8 addition of SFAS, and the official
MFCC recipe (spectrogram.py lists what of it is and is not reproduced). It does
not reproduce the official JPEG round trip of spectrograms, 44.1 kHz audio, or the
resize of whole frames without cropping (use crop="none" for that).
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from mmder_tf.fusion import alignment
from mmder_tf.config import (
    PLACEHOLDER_RGB, FusionConfig, check_modalities, face_crop_mode, needs_audio, needs_video,
)
from mmder_tf.errors import ConfigError, NoAudioStreamError
from mmder_tf.fusion.strategies import clip_identity, fuse, rfas_seed
from mmder_tf.fusion.resize import resize_bilinear
from mmder_tf.fusion.spectrogram import settings_from_config, spectrogram_images


def _size(config: FusionConfig, size):
    height, width = config.modality_size if size is None else size
    return int(height), int(width)


def _center_square(frames: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(frames)
    side = tf.minimum(shape[1], shape[2])
    top = (shape[1] - side) // 2
    left = (shape[2] - side) // 2
    return frames[:, top: top + side, left: left + side, :]


def _resize_uint8(frames: tf.Tensor, size) -> tf.Tensor:
    """Bilinear resize of uint8 frames, antialiased only where an axis shrinks by more than 2.

    At factors >= 0.5 (e.g. 360 -> 224) plain half-pixel bilinear reads the uint8
    frames directly at ~1/4 of the antialiased cost per core. Every frame goes
    through this one function (fuse_clip, fuse_media, the prepared cache, serving),
    so they all agree.
    """
    return resize_bilinear(frames, size, antialias_above=2.0)


def prepare_frames(frames, config: FusionConfig, size=None) -> tf.Tensor:
    """uint8 [n, h, w, 3] of any size -> uint8 [n, H', W', 3] (default: config.modality_size).

    Frames already at (H', W') are returned as they are: this stage ran on them
    (the prepared cache stores its output), and running it again would crop a
    non-square frame (CFAS's S/2 x S) once more.
    """
    frames = tf.convert_to_tensor(frames)
    if frames.dtype != tf.uint8:
        raise ConfigError(f"frames must be uint8 [n, h, w, 3], got dtype {frames.dtype.name}")
    size = _size(config, size)

    def crop_and_resize():
        cropped = _center_square(frames) if config.crop != "none" else frames
        return _resize_uint8(cropped, size)

    static = frames.shape
    if static[1] is not None and static[2] is not None:
        out = frames if (static[1], static[2]) == size else crop_and_resize()
    else:
        shape = tf.shape(frames)
        same = tf.logical_and(tf.equal(shape[1], size[0]), tf.equal(shape[2], size[1]))
        out = tf.cond(same, lambda: tf.identity(frames), crop_and_resize)
    out.set_shape([frames.shape[0], size[0], size[1], 3])
    return out


def spectrogram_frames(waveform, duration, config: FusionConfig, size=None) -> tf.Tensor:
    """The clip's aligned audio windows as spectrogram images, uint8 [n, H', W', 3] (n = frames per modality)."""
    n = config.frames_per_modality
    windows = alignment.audio_windows(waveform, duration, n, config.sample_rate)
    images = spectrogram_images(windows, settings_from_config(config), _size(config, size))
    images.set_shape([n, *_size(config, size), 3])
    return images


def placeholder_images(n: int, size, strategy: str = "fslf") -> tf.Tensor:
    """The stand-in for a missing modality: n uniform PLACEHOLDER_RGB images, uint8 [n, h, w, 3].

    SFAS adds the two images, so its placeholder is black: a uniform image min-max
    normalises to 0 and adds 0 to the official wrapped sum, so the missing modality
    contributes nothing and the input is the present one's alone.
    """
    height, width = size
    colour = tf.constant((0, 0, 0) if strategy == "sfas" else PLACEHOLDER_RGB, tf.uint8)
    return tf.broadcast_to(colour, [n, int(height), int(width), 3])


def presence(modalities=None):
    """(video present, audio present), each a Python bool or a scalar bool tensor.

    `modalities`: None (both), names ("video", "audio", "audio_video", ("video",), ...)
    or a bool tensor [2] (video, audio) decided in-graph, as the export's signatures do.
    """
    if modalities is None:
        return True, True
    if isinstance(modalities, (str, tuple, list)) and all(isinstance(m, str) for m in
                                                         ([modalities] if isinstance(modalities, str) else modalities)):
        names = check_modalities(modalities)
        return "video" in names, "audio" in names
    flags = tf.reshape(tf.cast(modalities, tf.bool), [2])
    return flags[0], flags[1]


def _or_placeholder(present, make, n, size, strategy):
    """make() where the modality is present, else the placeholder; one branch runs (tf.cond in graphs)."""
    if present is True:
        return make()
    if present is False:
        return placeholder_images(n, size, strategy)
    out = tf.cond(present, make, lambda: placeholder_images(n, size, strategy))
    out.set_shape([n, *size, 3])
    return out


def modality_images(frames_n, waveform, duration, config: FusionConfig, modalities=None):
    """First stage of fuse_aligned: (video, audio) uint8 [n, h, w, 3] at the modality size (None where unused).

    A modality absent from `modalities` (see `presence`) is the placeholder image;
    its input (frames_n or waveform) is then not read and may be empty.
    """
    strategy = config.strategy
    n = config.frames_per_modality
    size = config.modality_size
    has_video, has_audio = presence(modalities)
    for name, flag, needed in (("video", has_video, needs_video(strategy)), ("audio", has_audio, needs_audio(strategy))):
        if flag is False and needed and strategy in ("video", "audio"):
            raise ConfigError(f"strategy {strategy!r} is its {name} alone: it cannot take an input without {name}")
    video = audio = None
    if needs_video(strategy):
        frames_n = tf.convert_to_tensor(frames_n)
        if has_video is True and frames_n.shape.rank is not None and frames_n.shape[0] not in (None, n):
            raise ConfigError(f"{strategy} needs {n} frames per modality, got {frames_n.shape[0]}")

        def make_video():
            if frames_n.shape.rank is not None and frames_n.shape[0] not in (None, n):
                # only reachable with an in-graph presence flag (e.g. an empty frames input traced as such)
                failed = tf.debugging.Assert(False, [f"video is present but the input has {frames_n.shape[0]} "
                                                     f"frames, not {n}"])
                with tf.control_dependencies([failed]):
                    return tf.identity(placeholder_images(n, size, strategy))
            return tf.ensure_shape(prepare_frames(frames_n, config), [n, *size, 3])

        video = _or_placeholder(has_video, make_video, n, size, strategy)
    if needs_audio(strategy):
        def make_audio():
            seconds = tf.cast(duration, tf.float32)
            # a NaN or negative duration would size the window gather from garbage
            valid = tf.debugging.Assert(
                tf.logical_and(tf.math.is_finite(seconds), seconds > 0.0),
                ["clip duration must be finite and positive, got", seconds],
            )
            with tf.control_dependencies([valid]):
                seconds = tf.identity(seconds)
            return spectrogram_frames(waveform, seconds, config)

        audio = _or_placeholder(has_audio, make_audio, n, size, strategy)
    return video, audio


def fuse_aligned(frames_n, waveform, duration, config: FusionConfig, epoch=0, modalities=None) -> tf.Tensor:
    """THE clip -> model input function: uint8 [num_frames, H, W, 3].

    `frames_n` are the n frames the alignment chose (any size; already at the
    modality size they are used as they are), `waveform` is mono float32 at
    config.sample_rate with sample 0 at the first frame's time (may be empty for
    "video"); `frames_n` is ignored for "audio". `epoch` changes the RFAS order only
    with config.rfas_per_epoch.

    `modalities` (default both; see `presence`): a missing modality's images are
    replaced by the placeholder image BEFORE fusion, so every strategy places it
    where that modality's images go (CFAS's band, FSLF's half, OFOS's pair slots,
    RFAS's shuffled frames) and SFAS's sum gets nothing from it (its placeholder
    is black, see `placeholder_images`).
    """
    video, audio = modality_images(frames_n, waveform, duration, config, modalities)
    seed = None
    if config.strategy == "rfas":
        seed = rfas_seed(config, clip_identity(video, audio), epoch)
    fused = fuse(video, audio, config.strategy, seed=seed, official=config.official)
    fused.set_shape([config.num_frames, config.image_size, config.image_size, 3])
    return fused


def fuse_media(frames_all, timestamps, waveform, config: FusionConfig, modalities=None) -> tf.Tensor:
    """From every decoded frame and its timestamp (seconds): select the frames in-graph, then fuse_aligned.

    Timestamps are taken relative to the first frame, as the decoder does; the
    duration is alignment.video_duration of them. Without video (`modalities`, see
    `presence`) the duration is the waveform's length, as the decoder gives it for
    an audio-only file, and the frames are not read.
    """
    has_video, _ = presence(modalities)
    n = config.frames_per_modality
    waveform = tf.convert_to_tensor(waveform, tf.float32)

    def from_video():
        times = tf.cast(tf.reshape(timestamps, [-1]), tf.float32)
        times = times - times[0]
        duration = alignment.video_duration(times)
        frames = frames_all
        if needs_video(config.strategy):
            index = alignment.select_frame_indices(times, n, duration, official=config.official)
            frames = tf.gather(frames_all, index)
        return frames, duration

    def from_audio():
        seconds = tf.cast(tf.size(waveform), tf.float32) / float(config.sample_rate)
        return tf.zeros([n, 1, 1, 3], tf.uint8), seconds

    if has_video is True:
        frames, duration = from_video()
    elif has_video is False:
        frames, duration = from_audio()
    else:
        frames, duration = tf.cond(has_video, from_video, from_audio)
    return fuse_aligned(frames, waveform, duration, config, modalities=modalities)


_SIGNATURE = (
    tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames"),
    tf.TensorSpec([None], tf.float32, name="waveform"),
    tf.TensorSpec([], tf.float32, name="duration"),
)


class _FuseAligned:
    # A callable object rather than a closure: tf.function counts traces per code
    # object, and one trace per config is expected, not the "retracing" it warns of.
    def __init__(self, config: FusionConfig):
        self.config = config

    def __call__(self, frames, waveform, duration, present=None):
        return fuse_aligned(frames, waveform, duration, self.config, modalities=present)


@functools.lru_cache(maxsize=32)
def fused_function(config: FusionConfig, with_presence: bool = False):
    """fuse_aligned for one config as a tf.function with a fixed input signature (traced once); with
    `with_presence`, a fourth input bool [2] says which of (video, audio) is present."""
    signature = _SIGNATURE + ((tf.TensorSpec([2], tf.bool, name="present"),) if with_presence else ())
    return tf.function(_FuseAligned(config), input_signature=signature, autograph=False)


def resolve_config(strategy=None, config: FusionConfig | None = None, **options) -> FusionConfig:
    """`config` (default FusionConfig()) with `strategy` and any FusionConfig field in `options` replaced."""
    config = config if config is not None else FusionConfig()
    if strategy is not None:
        options["strategy"] = strategy
    try:
        return config.replace(**options) if options else config
    except TypeError as error:
        raise ConfigError(f"unknown option: {error}") from None


def fuse_clip(path, strategy: str | None = None, *, config: FusionConfig | None = None,
              max_seconds: float | None = None, allow_missing: bool = False, with_modalities: bool = False,
              **options):
    """Decode one media file and fuse it: uint8 [num_frames, H, W, 3] (with `with_modalities`, also the
    modalities it holds, e.g. ("video",)).

    `strategy` (default the config's, "fslf") and `options` (FusionConfig fields,
    e.g. image_size=160, crop="face") override `config`. Decodes only the frames the
    alignment selects. Raises the decoder's typed MediaErrors, e.g.
    NoAudioStreamError when the strategy needs audio and the file has none, or
    ClipTooLongError past `max_seconds` (decode_clip's limit, MAX_CLIP_SECONDS by default).

    `allow_missing` (a model trained with modality dropout): a file without an audio
    stream is video-only, an audio-only file (wav, mp3, m4a, flac, ...) or a video in
    which the face crop finds no face is audio-only; the missing modality becomes the
    placeholder (fuse_aligned).
    """
    config = resolve_config(strategy, config, **options)
    clip = decode_for(path, config, max_seconds=max_seconds, allow_missing=allow_missing)
    modalities = clip_modalities(clip, config, allow_missing)
    fused = fuse_decoded(clip, config, modalities=modalities)
    return (fused, modalities) if with_modalities else fused


def decode_for(path, config: FusionConfig, *, max_seconds: float | None = None, allow_missing: bool = False):
    """decode_clip with what `config` needs; with `allow_missing`, a missing stream is no error for an
    audio-visual strategy (the DecodedClip then has no waveform, or no frames)."""
    from mmder_tf.errors import NoVideoStreamError
    from mmder_tf.media.decode import decode_clip

    def decode(need_video, need_audio):
        return decode_clip(
            path, config.frames_per_modality, sample_rate=config.sample_rate, official=config.official,
            need_video=need_video, need_audio=need_audio, face_crop=face_crop_mode(config.crop) if need_video else None,
            max_seconds=max_seconds,
        )

    need_video, need_audio = needs_video(config.strategy), needs_audio(config.strategy)
    if not (allow_missing and need_video and need_audio):
        return decode(need_video, need_audio)
    try:
        return decode(True, True)
    except NoAudioStreamError:
        return decode(True, False)
    except NoVideoStreamError:
        return decode(False, True)


def clip_modalities(clip, config: FusionConfig, allow_missing: bool = False) -> tuple[str, ...]:
    """The modalities of a DecodedClip the model gets: ("video", "audio"), ("video",) or ("audio",).

    Video counts when frames were decoded and, with a face crop, a face was found on
    at least one chosen frame (`face_found`; only with `allow_missing`: a model without
    modality dropout keeps the centre-crop fallback it was trained with).
    """
    has_video = needs_video(config.strategy) and config.frames_per_modality in clip.frames
    if allow_missing and has_video and clip.face_found is False:
        has_video = False
    has_audio = needs_audio(config.strategy) and clip.waveform is not None
    present = tuple(m for m, flag in (("video", has_video), ("audio", has_audio)) if flag)
    if not present:
        raise NoAudioStreamError(clip.path, "neither a usable video (no face found) nor an audio stream")
    return present


def fuse_decoded(clip, config: FusionConfig, modalities=None) -> np.ndarray:
    """A DecodedClip (decode_clip's, or one window of media.stream.stream_windows) -> the fused input.

    The clip must hold config.frames_per_modality frames (face-cropped already
    where config.crop asks for it) and, for audio-visual strategies, a waveform,
    unless `modalities` (names) leaves that modality out: it is then the placeholder.
    """
    n = config.frames_per_modality
    has_video, has_audio = presence(modalities)
    if needs_audio(config.strategy) and has_audio and clip.waveform is None:
        raise NoAudioStreamError(clip.path, f"strategy {config.strategy!r} needs audio and the file has none; a model "
                                            "trained with --modality-dropout can classify it from its video alone")
    frames = clip.frames[n] if needs_video(config.strategy) and has_video else np.zeros((0, 1, 1, 3), np.uint8)
    waveform = clip.waveform if clip.waveform is not None and has_audio else np.zeros((0,), np.float32)
    duration = np.float32(clip.duration)
    if modalities is None or (has_video and has_audio):
        fused = fused_function(config)(frames, np.asarray(waveform, np.float32), duration)
    else:
        fused = fused_function(config, True)(frames, np.asarray(waveform, np.float32), duration,
                                             tf.constant([has_video, has_audio]))
    return fused.numpy()
