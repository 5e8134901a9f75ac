"""VideoMAE masked-autoencoder pre-training in pure Keras 3 (keras.ops): tube masking, pixel targets, decoder.

The pieces are separate so that another encoder (MAE-DFER's LGI-Former) can reuse
the masking, the target and the decoder without the VideoMAE encoder:

- `tube_mask(noise, num_frames, ratio)`: which tokens are hidden. One spatial mask per
  clip, repeated over every tubelet-frame; `random_tube_mask` draws the noise.
- `mask_indices(mask, num_masked)`: a boolean mask -> (visible ids, masked ids), each in
  token order; `gather_tokens(tokens, ids)` picks those tokens.
- `pixel_targets(pixels, tubelet, patch)`: what is predicted (VideoMAE's normalised pixels,
  optionally MAE-DFER's frame-difference variant).
- `MAEDecoder`: visible tokens in decoder width + their ids -> predictions for the masked ones.
- `VideoMAEPretrainer`: a `VideoMAEBackbone` run on the visible tokens only, the
  `encoder_to_decoder` projection, an `MAEDecoder`, and the loss. Another encoder
  plugs in by subclassing it: `backbone_class`, `encode_visible` (tokens and the ids
  of their rows, in any order) and `mask_from_noise` (its masking rule).

Usage::

    model = VideoMAEPretrainer.from_preset("base", num_frames=16, image_size=224)   # random init
    model = mmder_tf.load_pretrained("videomae_base_pretrain.pth", pretraining=True)  # MCG-NJU / HF weights
    predictions, loss = model.reconstruct(pixels, mask)
        # pixels [B, T, H, W, 3] in 0..255 (uint8 or float); mask [B, N] bool, True = masked,
        # tokens in the encoder's (time, row, column) order, the same count of masked tokens
        # in every row. predictions [B, M, tubelet*patch*patch*3] for the masked tokens in
        # token order, values in (frame, row, column, channel) order, channel fastest:
        # exactly transformers' VideoMAEForPreTraining logits. loss: MSE against the targets.

Training hook (what `mmder-pretrain` uses; works in a custom step under tf.distribute,
with XLA, and through `stateless_call` on JAX)::

    loss = model.pretraining_loss(pixels, noise=noise)   # noise [B, h*w] uniform: the mask is
                                                         # tube_mask(noise, t, model.mask_ratio)
    loss = model.pretraining_loss(pixels, mask, num_masked=model.num_masked)  # a mask from the data
    loss = model.pretraining_loss(pixels)                # masks drawn from the model's seed generator

Inside a traced function (tf.function, jax.jit) the number of masked tokens must be
static, so a mask there needs `num_masked`; `noise` (seeded per clip in the data
pipeline, e.g. tf.random.stateless_uniform) is the simplest way to get masks that are
the same after a resume and different on every replica.

The encoder is `model.backbone` (a `VideoMAEBackbone`); `model.backbone.save_to_preset(DIR)`
writes it as the preset folder that `load_pretrained` and `mmder-finetune --weights` take;
`model.save_to_preset(DIR)` writes the whole model (`from_preset(DIR)` /
`load_pretrained(DIR, pretraining=True)` read it back).
`models.convert.save_videomae_pretraining(model, path)` exports the whole model to the
MCG-NJU layout (a torch state dict under "model").
"""
from __future__ import annotations

import numpy as np
import keras
from keras import layers, ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.preset_io import PresetIO
from mmder_tf.models.layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputNormalization,
    TransformerBlock,
    _cached_table,
    _pair,
    _sincos_position_table_ops,
    patchify,
)
from mmder_tf.models.videomae.backbone import VideoMAEBackbone
from mmder_tf.models.videomae.presets import BACKBONE_PRESETS, DECODER_PRESETS

# VideoMAE's ratio for Kinetics / SSv2 and MAE-DFER's for VoxCeleb2.
DEFAULT_MASK_RATIO = 0.9
_TARGET_EPS = 1e-6


# ---------------------------------------------------------------- masking


def masked_per_frame(tokens_per_frame: int, ratio: float) -> int:
    """Masked tokens in each tubelet-frame: int(ratio * tokens), as VideoMAE's tube masking generator."""
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"mask ratio must be in (0, 1), got {ratio}")
    count = int(ratio * int(tokens_per_frame))
    if count < 1 or count >= tokens_per_frame:
        raise ConfigError(
            f"mask ratio {ratio} masks {count} of {tokens_per_frame} tokens per frame; "
            "at least one token must be masked and one visible"
        )
    return count


def tube_mask(noise, num_frames: int, ratio: float = DEFAULT_MASK_RATIO):
    """Tube mask [B, num_frames * S] (True = masked) from uniform noise [B, S] over the S tokens of one frame.

    In each row the int(ratio * S) positions of the smallest noise are masked in
    every tubelet-frame (MAE's argsort-of-noise draw). The randomness is the
    caller's: seeded noise gives reproducible masks.
    """
    spatial = noise.shape[-1]
    if len(noise.shape) != 2 or spatial is None:
        raise ConfigError(f"noise must be [batch, tokens per frame] with a static size, got shape {tuple(noise.shape)}")
    count = masked_per_frame(spatial, ratio)
    ranks = ops.argsort(ops.argsort(noise, axis=-1), axis=-1)
    frame_mask = ranks < count
    return ops.reshape(ops.tile(frame_mask[:, None, :], (1, int(num_frames), 1)), (-1, int(num_frames) * spatial))


def random_tube_mask(batch_size, grid, ratio: float = DEFAULT_MASK_RATIO, seed=None):
    """A random tube mask [B, t*h*w] for a token grid (t, h, w); `seed` an int or a keras.random.SeedGenerator."""
    t, h, w = (int(g) for g in grid)
    noise = keras.random.uniform((batch_size, h * w), seed=seed)
    return tube_mask(noise, t, ratio)


def mask_indices(mask, num_masked: int):
    """Boolean mask [B, N] with `num_masked` True per row -> (visible ids [B, N-M], masked ids [B, M]).

    Both keep token order (VideoMAE keeps x[~mask] and x[mask] in raster order).
    """
    n = mask.shape[-1]
    if n is None:
        raise ConfigError("the mask needs a static number of tokens")
    # Unique sort keys (visible first, then masked, each by position) make the order exact on every backend.
    keys = ops.cast(mask, "int32") * n + ops.arange(n, dtype="int32")[None, :]
    order = ops.argsort(keys, axis=-1)
    return order[:, : n - num_masked], order[:, n - num_masked :]


def gather_tokens(tokens, ids):
    """tokens [B, N, D], ids [B, K] -> [B, K, D] (one flat gather: cheap forward and backward on every backend)."""
    n, dim = tokens.shape[1], tokens.shape[2]
    n = ops.shape(tokens)[1] if n is None else n
    batch = ops.shape(tokens)[0]
    offsets = ops.arange(batch, dtype=ids.dtype)[:, None] * ops.cast(n, ids.dtype)
    return ops.take(ops.reshape(tokens, (-1, dim)), ids + offsets, axis=0)


def check_mask(mask, num_tokens: int, batch_size=None) -> int:
    """Validate a concrete mask; returns the masked count per row. Raises ConfigError on a mask that cannot work."""
    values = np.asarray(mask)
    if values.ndim != 2 or values.shape[1] != num_tokens or (batch_size is not None and values.shape[0] != batch_size):
        want = f"[{batch_size if batch_size is not None else 'batch'}, {num_tokens}]"
        raise ConfigError(f"mask must be {want} (True = masked, one row per clip), got shape {values.shape}")
    if values.dtype != np.bool_:
        if not np.isin(values, (0, 1)).all():
            raise ConfigError(f"mask must be boolean (or 0/1), got values {np.unique(values)[:5]}")
        values = values.astype(bool)
    counts = values.sum(axis=1)
    if (counts == 0).any():
        raise ConfigError(f"mask rows {np.flatnonzero(counts == 0).tolist()} are all visible: nothing to reconstruct")
    if (counts == num_tokens).any():
        raise ConfigError(f"mask rows {np.flatnonzero(counts == num_tokens).tolist()} are all masked: the encoder sees nothing")
    if (counts != counts[0]).any():
        raise ConfigError(f"every row of the mask must hide the same number of tokens, got {sorted(set(counts.tolist()))}")
    return int(counts[0])


def _concrete(value):
    """A numpy view of an eager tensor or array; None for a symbolic (traced) one."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(ops.convert_to_numpy(value))
    except Exception:  # tf.function / jax.jit tracers cannot be read: the caller gives num_masked instead
        return None


# ---------------------------------------------------------------- target


def pixel_targets(pixels, tubelet_size: int = 2, patch_size: int = 16, normalize: bool = True, frame_difference: bool = False):
    """Reconstruction targets [B, N, tubelet*patch*patch*C] (float32) from pixels [B, T, H, W, C] in 0..255.

    VideoMAE's norm_pix_loss: per tubelet and per channel over its tubelet*patch*patch
    values, (x - mean) / (sqrt(unbiased variance) + 1e-6), on pixels scaled to 0..1;
    channel fastest. `frame_difference=True` is MAE-DFER's target, in upstream's order:
    every tubelet is normalised FIRST, then every second frame is replaced by itself
    minus the frame before it (both already normalised), so the difference half of a
    token is (f1 - f0) / s with the tubelet's own s, not a normalised raw difference.
    """
    x = ops.cast(pixels, "float32") / 255.0
    ts, p = int(tubelet_size), int(patch_size)
    if frame_difference and ts % 2:
        # frame pairs (0, 1), (2, 3), ... must not straddle two tubelets
        raise ConfigError(f"the frame-difference target needs an even tubelet size, got {ts}")
    patches = patchify(x, ts, p)
    channels = int(x.shape[-1])
    values = ts * p * p
    num = ops.shape(patches)[1] if patches.shape[1] is None else patches.shape[1]
    grouped = ops.reshape(patches, (-1, num, values, channels))  # values in (frame, row, column) order
    if normalize:
        mean = ops.mean(grouped, axis=-2, keepdims=True)
        var = ops.sum(ops.square(grouped - mean), axis=-2, keepdims=True) / float(values - 1)
        grouped = (grouped - mean) / (ops.sqrt(var) + _TARGET_EPS)
    if frame_difference:
        pairs = ops.reshape(grouped, (-1, num, ts // 2, 2, p * p, channels))
        even, odd = pairs[:, :, :, 0], pairs[:, :, :, 1]
        grouped = ops.stack([even, odd - even], axis=3)
    return ops.reshape(grouped, (-1, num, values * channels))


# ---------------------------------------------------------------- decoder


@keras.saving.register_keras_serializable(package="mmder_tf")
class MAEDecoder(layers.Layer):
    """MAE decoder: visible tokens [B, V, D] (decoder width) + ids -> predictions [B, M, output_dim] for the masked ids.

    Adds the fixed sine-cosine table (decoder width, all N = V + M tokens) to the
    visible tokens and to `mask_token` at the masked positions, runs the blocks on
    [visible, masked] (positions carry the order, so nothing is unshuffled), keeps
    the last M, then `norm` and `head` (float32 output). Weight names follow the
    MCG-NJU checkpoints: `mask_token`, `block_{i}`, `norm`, `head`.
    """

    def __init__(
        self,
        hidden_dim,
        depth,
        num_heads,
        output_dim,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        norm_epsilon=1e-6,
        layer_scale_init=None,
        qkv_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim, self.depth, self.num_heads = int(hidden_dim), int(depth), int(num_heads)
        self.output_dim = int(output_dim)
        if min(self.hidden_dim, self.depth, self.num_heads, self.output_dim) < 1:
            raise ConfigError(f"decoder sizes must be positive, got width {hidden_dim}, depth {depth}, heads {num_heads}, outputs {output_dim}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"decoder hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon, self.norm_epsilon = float(layer_norm_epsilon), float(norm_epsilon)
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)
        self.qkv_bias = bool(qkv_bias)
        policy = self.dtype_policy
        self.blocks = [
            TransformerBlock(
                self.hidden_dim,
                self.num_heads,
                mlp_ratio=self.mlp_ratio,
                layer_norm_epsilon=self.layer_norm_epsilon,
                layer_scale_init=self.layer_scale_init,
                qkv_bias=self.qkv_bias,
                dtype=policy,
                name=f"block_{i}",
            )
            for i in range(self.depth)
        ]
        self.norm = layers.LayerNormalization(epsilon=self.norm_epsilon, dtype=policy, name="norm")
        # Predictions in float32: the loss compares them with float32 targets.
        self.head = layers.Dense(self.output_dim, dtype="float32", name="head")

    @classmethod
    def from_preset(cls, preset: str, output_dim: int, **overrides) -> "MAEDecoder":
        key = str(preset).lower()
        if key not in DECODER_PRESETS:
            raise ConfigError(f"unknown decoder preset {preset!r}; choose one of {', '.join(DECODER_PRESETS)}")
        return cls(**{**DECODER_PRESETS[key], "output_dim": output_dim, **overrides})

    def build(self, input_shape=None):
        shape = (None, None, self.hidden_dim)
        # Truncated normal (std 0.02) as MCG-NJU initialises it.
        self.mask_token = self.add_weight(
            name="mask_token", shape=(1, 1, self.hidden_dim), initializer=keras.initializers.TruncatedNormal(stddev=0.02)
        )
        for block in self.blocks:
            block.build(shape)
        self.norm.build(shape)
        self.head.build(shape)
        self.built = True

    def call(self, visible, visible_ids, masked_ids, training=None):
        num_visible, num_masked = visible_ids.shape[1], masked_ids.shape[1]
        if num_visible is not None and num_masked is not None:
            table = ops.convert_to_tensor(_cached_table(num_visible + num_masked, self.hidden_dim))
        else:
            table = _sincos_position_table_ops(ops.shape(visible_ids)[1] + ops.shape(masked_ids)[1], self.hidden_dim)
        table = ops.cast(table, visible.dtype)
        masked = ops.cast(self.mask_token, visible.dtype) + ops.take(table, masked_ids, axis=0)
        x = ops.concatenate([visible + ops.take(table, visible_ids, axis=0), masked], axis=1)
        for block in self.blocks:
            x = block(x, training=training)
        x = x[:, -(num_masked if num_masked is not None else ops.shape(masked_ids)[1]) :]
        return self.head(self.norm(x))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "output_dim": self.output_dim,
            "mlp_ratio": self.mlp_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "norm_epsilon": self.norm_epsilon,
            "layer_scale_init": self.layer_scale_init,
            "qkv_bias": self.qkv_bias,
        }


# ---------------------------------------------------------------- the pre-training model


@keras.saving.register_keras_serializable(package="mmder_tf")
class VideoMAEPretrainer(keras.Model, PresetIO):
    """VideoMAE masked autoencoder: pixels 0..255 + tube mask -> predictions for the masked tokens, and the loss.

    `backbone` is used as it is (its patch embedding, blocks and final norm, on
    the visible tokens only), so the pre-trained encoder IS `self.backbone`.
    See the module docstring for the API.
    """

    # The encoder family this model drives; a subclass for another one overrides it and `encode_visible`.
    backbone_class = VideoMAEBackbone

    def __init__(
        self,
        backbone,
        decoder,
        mask_ratio=DEFAULT_MASK_RATIO,
        norm_pix_loss=True,
        frame_difference=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        if not isinstance(backbone, self.backbone_class):
            raise ConfigError(f"backbone must be a {self.backbone_class.__name__}, got {type(backbone).__name__}")
        if not isinstance(decoder, MAEDecoder):
            raise ConfigError(f"decoder must be an MAEDecoder, got {type(decoder).__name__}")
        outputs = backbone.tubelet_size * backbone.patch_size ** 2 * 3
        if decoder.output_dim != outputs:
            raise ConfigError(f"decoder predicts {decoder.output_dim} values per token; tubelet {backbone.tubelet_size} x "
                              f"patch {backbone.patch_size}^2 x 3 channels needs {outputs}")
        # The layers' policy: a functional model reports float32 for itself even when its layers run mixed.
        dtype = dtype if dtype is not None else backbone.patch_embed.dtype_policy
        super().__init__(dtype=dtype, **kwargs)
        self.backbone, self.decoder = backbone, decoder
        self.normalize = InputNormalization(mean, std, dtype=self.dtype_policy, name="normalize")
        self.encoder_to_decoder = layers.Dense(decoder.hidden_dim, use_bias=False, dtype=self.dtype_policy, name="encoder_to_decoder")
        height, width = _pair(backbone.image_size, "image_size")
        self.token_grid = (backbone.num_frames // backbone.tubelet_size, height // backbone.patch_size, width // backbone.patch_size)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss, self.frame_difference = bool(norm_pix_loss), bool(frame_difference)
        self.seed = seed
        self.mask_seed = keras.random.SeedGenerator(seed, name="mask_seed")
        # Build everything now: weights can be loaded, counted and exported before any call.
        self.encoder_to_decoder.build((None, None, backbone.hidden_dim))
        if not decoder.built:
            decoder.build()
        self.built = True

    @property
    def input_dtype(self):
        return "float32"  # pixels stay exact under mixed precision; InputNormalization casts after scaling

    @property
    def mask_ratio(self) -> float:
        return self._mask_ratio

    @mask_ratio.setter
    def mask_ratio(self, value):
        t, h, w = self.token_grid
        masked_per_frame(h * w, value)  # refuses a ratio that masks nothing or everything
        self._mask_ratio = float(value)

    @property
    def num_masked(self) -> int:
        """Masked tokens per clip of the model's own tube masks (static: what traced steps pass as num_masked)."""
        t, h, w = self.token_grid
        return t * masked_per_frame(h * w, self.mask_ratio)

    @property
    def num_tokens(self) -> int:
        return self.backbone.num_tokens

    @classmethod
    def from_builtin(cls, preset, num_frames=16, image_size=224, decoder=None, dtype=None, backbone_overrides=None,
                     **kwargs):
        """A pre-training model with RANDOM weights: encoder preset `preset` (with the final norm of the
        pre-training checkpoints) and the decoder preset of the same name unless `decoder` names another."""
        key = str(preset).lower()
        if key not in BACKBONE_PRESETS:
            raise ConfigError(f"unknown backbone preset {preset!r}; choose one of {', '.join(BACKBONE_PRESETS)}")
        overrides = {"final_norm": True, **(backbone_overrides or {})}
        backbone = VideoMAEBackbone.from_preset(key, num_frames=num_frames, image_size=image_size, dtype=dtype, **overrides)
        return cls.from_encoder(backbone, decoder or key, **kwargs)

    @classmethod
    def from_encoder(cls, backbone, decoder="base", **kwargs):
        """A pre-training model around an existing (e.g. loaded) encoder with a fresh decoder of preset `decoder`:
        continue pre-training from an encoder-only checkpoint, such as the released ViT-H (which has no decoder)
        or a fine-tuned Kinetics encoder: `from_encoder(mmder_tf.load_pretrained("vit_h.pth"), "huge")`."""
        if not isinstance(backbone, cls.backbone_class):
            raise ConfigError(f"backbone must be a {cls.backbone_class.__name__}, got {type(backbone).__name__}")
        outputs = backbone.tubelet_size * backbone.patch_size ** 2 * 3
        dec = MAEDecoder.from_preset(decoder, outputs, dtype=backbone.patch_embed.dtype_policy, name="decoder")
        return cls(backbone, dec, **kwargs)

    # ------------------------------------------------------------ forward

    def encode_visible(self, pixels, mask, visible_ids, training=None):
        """(encoder tokens [B, V, D] of the visible tubelets only, their token ids [B, V]).

        Positions are added before the masked tubelets are dropped. The ids say
        which token each output row is, so an encoder that reorders its visible
        tokens (LGI-Former keeps them region-major) plugs in by overriding this
        method (and `backbone_class`); the decoder places them by id.
        """
        tokens = self.backbone.patch_embed(self.normalize(pixels))
        x = gather_tokens(tokens, visible_ids)
        for block in self.backbone.blocks:
            x = block(x, training=training)
        if self.backbone.final_norm is not None:
            x = self.backbone.final_norm(x)
        return x, visible_ids

    def mask_from_noise(self, noise, grid):
        """(mask [B, N], masked count per row) from uniform noise [B, h*w] for token grid (t, h, w): the
        model's masking rule (VideoMAE's tube mask). MAE-DFER's per-window masking overrides it."""
        t, h, w = grid
        return tube_mask(noise, t, self.mask_ratio), t * masked_per_frame(h * w, self.mask_ratio)

    def _mask_and_count(self, pixels, token_mask, noise, num_masked):
        t, h, w = grid = self._grid(pixels)
        if token_mask is None:
            if noise is None:
                noise = keras.random.uniform((ops.shape(pixels)[0], h * w), seed=self.mask_seed)
            return self.mask_from_noise(noise, grid)
        values = _concrete(token_mask)
        if values is not None:
            count = check_mask(values, t * h * w, _concrete_batch(pixels))
            if num_masked is not None and int(num_masked) != count:
                raise ConfigError(f"num_masked={num_masked} but the mask hides {count} tokens per row")
            return ops.convert_to_tensor(values.astype(bool)), count
        if num_masked is None:
            raise ConfigError("inside a traced function the masked count must be static: pass num_masked "
                              "(model.num_masked for masks drawn with the model's ratio) or noise instead of a mask")
        if token_mask.shape[-1] is not None and token_mask.shape[-1] != t * h * w:
            raise ConfigError(f"mask must be [batch, {t * h * w}], got shape {tuple(token_mask.shape)}")
        return token_mask, int(num_masked)

    def _grid(self, pixels):
        shape = tuple(pixels.shape)
        if len(shape) != 5 or None in shape[1:4]:
            raise ConfigError(f"pixels must be [batch, frames, height, width, 3] with static sizes, got {shape}")
        b = self.backbone
        for size, step, what in zip(shape[1:4], (b.tubelet_size, b.patch_size, b.patch_size), ("frames", "height", "width")):
            if size % step:
                raise ConfigError(f"{what} {size} is not a multiple of {step}")
        return shape[1] // b.tubelet_size, shape[2] // b.patch_size, shape[3] // b.patch_size

    def call(self, pixels, token_mask=None, noise=None, num_masked=None, training=None):
        """(predictions [B, M, K] float32, loss scalar float32); see the module docstring."""
        mask, count = self._mask_and_count(pixels, token_mask, noise, num_masked)
        visible_ids, masked_ids = mask_indices(mask, count)
        tokens, token_ids = self.encode_visible(pixels, mask, visible_ids, training=training)
        predictions = self.decoder(self.encoder_to_decoder(tokens), token_ids, masked_ids, training=training)
        targets = pixel_targets(pixels, self.backbone.tubelet_size, self.backbone.patch_size,
                                normalize=self.norm_pix_loss, frame_difference=self.frame_difference)
        targets = ops.stop_gradient(gather_tokens(targets, masked_ids))
        loss = ops.mean(ops.square(ops.cast(predictions, "float32") - targets))
        return predictions, loss

    def reconstruct(self, pixels, mask, num_masked=None, training=False):
        """(predictions, loss) for a given mask [B, N] (True = masked); bad masks raise ConfigError."""
        if mask is None:
            raise ConfigError("reconstruct needs a mask [batch, num_tokens] (True = masked); use random_tube_mask to draw one")
        return self(pixels, token_mask=mask, num_masked=num_masked, training=training)

    def pretraining_loss(self, pixels, mask=None, noise=None, num_masked=None, training=True):
        """The scalar loss of one batch, for a custom train step (mask, or noise [B, h*w], or the model's own draw)."""
        if mask is not None and noise is not None:
            raise ConfigError("pass a mask or noise, not both")
        return self(pixels, token_mask=mask, noise=noise, num_masked=num_masked, training=training)[1]

    def get_config(self):
        return {
            **self._base_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "mask_ratio": self.mask_ratio,
            "norm_pix_loss": self.norm_pix_loss,
            "frame_difference": self.frame_difference,
            "mean": list(self.normalize.mean),
            "std": list(self.normalize.std),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**cls._from_config_arguments(config, nested=("backbone", "decoder"), dtype_to_nested=True))


def _concrete_batch(pixels):
    return None if pixels.shape[0] is None else int(pixels.shape[0])
