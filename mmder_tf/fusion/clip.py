"""One clip -> the fused model input uint8 [num_frames, H, W, 3].

The graph cores (`prepare_frames`, `spectrogram_frames`, `fuse_aligned`,
`fuse_media`) are plain TF ops: the prepared-cache pipeline maps them in tf.data,
the export wraps them in SavedModel signatures and `fuse_clip` runs them in a
cached tf.function, so training, serving and one-off calls compute the same thing.

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
from pathlib import Path

import numpy as np
import tensorflow as tf

from mmder_tf.fusion import alignment
from mmder_tf.config import FusionConfig, face_crop_mode, needs_audio, needs_video
from mmder_tf.errors import ConfigError, NoAudioStreamError
from mmder_tf.fusion.strategies import fuse, rfas_seed
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
    """uint8 [n, h, w, 3] of any size -> uint8 [n, H', W', 3] (default: config.modality_size)."""
    frames = tf.convert_to_tensor(frames)
    if frames.dtype != tf.uint8:
        raise ConfigError(f"frames must be uint8 [n, h, w, 3], got dtype {frames.dtype.name}")
    size = _size(config, size)
    if config.crop != "none":
        frames = _center_square(frames)
    out = _resize_uint8(frames, size)
    out.set_shape([frames.shape[0], size[0], size[1], 3])
    return out


def spectrogram_frames(waveform, duration, config: FusionConfig, size=None) -> tf.Tensor:
    """The clip's aligned audio windows as spectrogram images, uint8 [n, H', W', 3] (n = frames per modality)."""
    n = config.frames_per_modality
    windows = alignment.audio_windows(waveform, duration, n, config.sample_rate)
    images = spectrogram_images(windows, settings_from_config(config), _size(config, size))
    images.set_shape([n, *_size(config, size), 3])
    return images


def fuse_aligned(frames_n, waveform, duration, config: FusionConfig, seed=None) -> tf.Tensor:
    """Fuse the n already-chosen frames with the clip's audio: uint8 [num_frames, H, W, 3].

    `waveform` is mono float32 at config.sample_rate with sample 0 at the first
    frame's time; it may be empty for "video". `frames_n` is ignored for "audio".
    `seed` (int64 [2]) orders RFAS; None uses `rfas_seed(config, "")`.
    """
    strategy = config.strategy
    n = config.frames_per_modality
    video = audio = None
    if needs_video(strategy):
        frames_n = tf.convert_to_tensor(frames_n)
        if frames_n.shape.rank is not None and frames_n.shape[0] not in (None, n):
            raise ConfigError(f"{strategy} needs {n} frames per modality, got {frames_n.shape[0]}")
        video = tf.ensure_shape(prepare_frames(frames_n, config), [n, *config.modality_size, 3])
    if needs_audio(strategy):
        duration = tf.cast(duration, tf.float32)
        # a NaN or negative duration would size the window gather from garbage
        valid = tf.debugging.Assert(
            tf.logical_and(tf.math.is_finite(duration), duration > 0.0),
            ["clip duration must be finite and positive, got", duration],
        )
        with tf.control_dependencies([valid]):
            duration = tf.identity(duration)
        audio = spectrogram_frames(waveform, duration, config)
    if strategy == "rfas" and seed is None:
        seed = rfas_seed(config, "")
    fused = fuse(video, audio, strategy, seed=seed, official=config.official)
    fused.set_shape([config.num_frames, config.image_size, config.image_size, 3])
    return fused


def fuse_media(frames_all, timestamps, waveform, config: FusionConfig, seed=None) -> tf.Tensor:
    """From every decoded frame and its timestamp (seconds): select the frames in-graph, then fuse_aligned.

    Timestamps are taken relative to the first frame, as the decoder does; the
    duration is alignment.video_duration of them.
    """
    timestamps = tf.cast(tf.reshape(timestamps, [-1]), tf.float32)
    timestamps = timestamps - timestamps[0]
    duration = alignment.video_duration(timestamps)
    n = config.frames_per_modality
    frames = frames_all
    if needs_video(config.strategy):
        index = alignment.select_frame_indices(timestamps, n, duration, official=config.official)
        frames = tf.gather(frames_all, index)
    return fuse_aligned(frames, waveform, duration, config, seed)


_SIGNATURE = (
    tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames"),
    tf.TensorSpec([None], tf.float32, name="waveform"),
    tf.TensorSpec([], tf.float32, name="duration"),
    tf.TensorSpec([2], tf.int64, name="seed"),
)


_NO_SEED = np.zeros(2, np.int64)


class _FuseAligned:
    # A callable object rather than a closure: tf.function counts traces per code
    # object, and one trace per config is expected, not the "retracing" it warns of.
    def __init__(self, config: FusionConfig):
        self.config = config

    def __call__(self, frames, waveform, duration, seed):
        return fuse_aligned(frames, waveform, duration, self.config, seed)


@functools.lru_cache(maxsize=16)
def fused_function(config: FusionConfig):
    """fuse_aligned for one config as a tf.function with a fixed input signature (traced once)."""
    return tf.function(_FuseAligned(config), input_signature=_SIGNATURE, autograph=False)


def resolve_config(strategy=None, config: FusionConfig | None = None, **options) -> FusionConfig:
    """`config` (default FusionConfig()) with `strategy` and any FusionConfig field in `options` replaced."""
    config = config if config is not None else FusionConfig()
    if strategy is not None:
        options["strategy"] = strategy
    try:
        return config.replace(**options) if options else config
    except TypeError as error:
        raise ConfigError(f"unknown option: {error}") from None


def fuse_clip(path, strategy: str | None = None, *, config: FusionConfig | None = None, key: str | None = None,
              max_seconds: float | None = None, **options) -> np.ndarray:
    """Decode one media file and fuse it: uint8 [num_frames, H, W, 3].

    `strategy` (default the config's, "fslf") and `options` (FusionConfig fields,
    e.g. image_size=160, crop="face") override `config`. `key` names the clip for
    the RFAS permutation (default: the file name). Decodes only the frames the
    alignment selects. Raises the decoder's typed MediaErrors, e.g.
    NoAudioStreamError when the strategy needs audio and the file has none, or
    ClipTooLongError past `max_seconds` (decode_clip's limit, MAX_CLIP_SECONDS by default).
    """
    config = resolve_config(strategy, config, **options)
    from mmder_tf.media.decode import decode_clip

    n = config.frames_per_modality
    clip = decode_clip(
        path, n, sample_rate=config.sample_rate, official=config.official,
        need_video=needs_video(config.strategy), need_audio=needs_audio(config.strategy),
        face_crop=face_crop_mode(config.crop), max_seconds=max_seconds,
    )
    return fuse_decoded(clip, config, Path(path).name if key is None else key)


def fuse_decoded(clip, config: FusionConfig, key: str = "") -> np.ndarray:
    """A DecodedClip (decode_clip's, or one window of media.stream.stream_windows) -> the fused input.

    The clip must hold config.frames_per_modality frames (face-cropped already
    where config.crop asks for it) and, for audio-visual strategies, a waveform.
    """
    n = config.frames_per_modality
    if needs_audio(config.strategy) and clip.waveform is None:
        raise NoAudioStreamError(clip.path, f"strategy {config.strategy!r} needs audio and the file has none")
    frames = clip.frames[n] if needs_video(config.strategy) else np.zeros((0, 1, 1, 3), np.uint8)
    waveform = clip.waveform if clip.waveform is not None else np.zeros((0,), np.float32)
    # the seed only matters (and its string hash is only worth an eager op) for rfas
    seed = rfas_seed(config, key) if config.strategy == "rfas" else _NO_SEED
    fused = fused_function(config)(
        frames, np.asarray(waveform, np.float32), np.float32(clip.duration), seed
    )
    return fused.numpy()
