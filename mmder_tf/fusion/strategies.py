"""The paper's six audio-visual fusion strategies (section III-B) and the single-modality inputs.

V are video frames and A spectrogram images, both uint8 [n, h, w, 3] at
`config.modality_size(strategy)`; every strategy returns uint8 [16, H, W, 3]
(16 = 2n for the sequence strategies, n for the others):

- cfas: X_i = V_i (h = H/2, top) over A_i (bottom).
- sfas: X_i = (Norm(V_i) + Norm(A_i)) / 2 scaled to 0..255, where Norm is a min-max
  of the whole frame (all pixels and channels) to [0, 1]; a constant frame -> 0.
  The mean keeps the sum in range without saturating. `official=True` instead
  adds the uint8 images with wrap-around (modulo 256), as the official code does.
- ffls: V_1..V_n, A_1..A_n.   fslf: A_1..A_n, V_1..V_n.
- ofos: V_1, A_1, V_2, A_2, ...: each 2-frame tubelet pairs V_i with A_i.
- rfas: the 2n frames of ffls in a permutation drawn from a stateless seed, so the
  same seed always gives the same order. The seed comes from the clip's identity,
  which is defined once, by `clip_identity`: a fingerprint of the clip's own video
  frames and spectrogram images. Every path (prepared cache, fuse_clip, predict,
  the SavedModel) computes the same images, hence the same identity and order,
  without a file name or key to agree on.
- video: V (n = 16).   audio: A (n = 16).

Pure TF ops with dynamic shapes: usable in Dataset.map and in SavedModel signatures.
"""
from __future__ import annotations

import tensorflow as tf

from mmder_tf.config import SEED_MIX, check_strategy
from mmder_tf.errors import ConfigError


def clip_identity(video, audio) -> tf.Tensor:
    """THE identity of a clip for RFAS: int64 farmhash fingerprint of its video frames and spectrogram images.

    Content, not a name: the cache, fuse_clip, predict and the SavedModel see the same
    uint8 images, so they agree without a client having to pass a key, renaming a
    file keeps its order, and two segments of one file get their own orders.
    """
    parts = [tf.reshape(tf.convert_to_tensor(x), [-1]) for x in (video, audio) if x is not None]
    data = tf.concat(parts, axis=0)[tf.newaxis]
    return tf.bitcast(tf.fingerprint(data, method="farmhash64")[0], tf.int64)


def rfas_seed(config, identity, epoch=0) -> tf.Tensor:
    """Stateless seed int64 [2] for one clip's RFAS permutation.

    `identity` is `clip_identity(video, audio)` (int64 scalar); `epoch` only counts
    when `config.rfas_per_epoch` (otherwise each clip keeps one permutation for the
    whole run, like the official code's offline shuffle).
    """
    identity = tf.cast(tf.convert_to_tensor(identity), tf.int64)
    epoch = tf.cast(epoch, tf.int64) if config.rfas_per_epoch else tf.constant(0, tf.int64)
    base = tf.constant(int(config.rfas_seed), tf.int64) * SEED_MIX
    return tf.stack([identity, base + epoch])


def rfas_permutation(size, seed) -> tf.Tensor:
    """int32 [size]: a permutation of 0..size-1 fixed by the stateless seed int [2]."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    keys = tf.random.stateless_uniform([size], seed=seed, dtype=tf.float32)
    return tf.argsort(keys, stable=True)


def frame_unit_range(frames: tf.Tensor) -> tf.Tensor:
    """Norm of SFAS: each frame min-max scaled to [0, 1] over all its pixels and channels (constant -> 0).

    float64 so that SFAS's halves (e.g. (v + a) / 2 for full-range frames) land
    exactly on .5 and round the same way everywhere (half to even).
    """
    frames = tf.convert_to_tensor(frames)
    # min / max on the integer frames (exact, and 1/8 of the memory traffic of float64)
    low = tf.cast(tf.reduce_min(frames, axis=[1, 2, 3], keepdims=True), tf.float64)
    span = tf.cast(tf.reduce_max(frames, axis=[1, 2, 3], keepdims=True), tf.float64) - low
    return tf.math.divide_no_nan(tf.cast(frames, tf.float64) - low, span)


def _as_frames(x, name):
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.uint8:
        raise ConfigError(f"{name} must be uint8 [n, h, w, 3], got dtype {x.dtype.name}")
    if x.shape.rank is not None and (x.shape.rank != 4 or x.shape[-1] not in (None, 3)):
        raise ConfigError(f"{name} must be uint8 [n, h, w, 3], got shape {x.shape}")
    return x


def _check_same(video, audio, axes, strategy):
    for axis in axes:
        v, a = video.shape[axis], audio.shape[axis]
        if v is not None and a is not None and v != a:
            raise ConfigError(
                f"{strategy}: video and audio differ on axis {axis} ({tuple(video.shape)} vs {tuple(audio.shape)})"
            )


def fuse(video, audio, strategy: str, *, seed=None, official: bool = False) -> tf.Tensor:
    """Fuse video frames and spectrogram images into the model input uint8 [16, H, W, 3].

    `audio` is ignored for "video" and `video` for "audio" (either may be None there).
    `seed` (int [2], see `rfas_seed`) is required for "rfas".
    """
    strategy = check_strategy(strategy)
    if strategy == "audio":
        return _as_frames(audio, "audio")
    video = _as_frames(video, "video")
    if strategy == "video":
        return video
    audio = _as_frames(audio, "audio")
    if strategy == "cfas":
        _check_same(video, audio, (0, 2), strategy)
        return tf.concat([video, audio], axis=1)
    _check_same(video, audio, (0, 1, 2), strategy)
    if strategy == "sfas":
        if official:
            wrapped = (tf.cast(video, tf.int32) + tf.cast(audio, tf.int32)) % 256
            return tf.cast(wrapped, tf.uint8)
        mean = (frame_unit_range(video) + frame_unit_range(audio)) / 2.0
        return tf.cast(tf.round(mean * 255.0), tf.uint8)
    if strategy == "ffls":
        return tf.concat([video, audio], axis=0)
    if strategy == "fslf":
        return tf.concat([audio, video], axis=0)
    if strategy == "ofos":
        pairs = tf.stack([video, audio], axis=1)
        shape = tf.shape(video)
        fused = tf.reshape(pairs, tf.concat([[2 * shape[0]], shape[1:]], axis=0))
        n = video.shape[0]
        fused.set_shape([2 * n if n is not None else None] + video.shape.as_list()[1:])
        return fused
    # rfas
    if seed is None:
        raise ConfigError("rfas needs a seed (int [2]); build one with rfas_seed(config, clip_identity(video, audio))")
    frames = tf.concat([video, audio], axis=0)
    return tf.gather(frames, rfas_permutation(tf.shape(frames)[0], seed))
