"""LGI-Former layers: region partition with learned region tokens, the four-step block, pooling.

Tokens inside the encoder are held as [B, n, 1 + S, C]: n regions of S local
tokens each, the region's own token at index 0 (MAE-DFER's own layout is the
same tensor flattened to [B * n, 1 + S, C]). Weight names follow the MAE-DFER
checkpoints (`first_attn_norm0`, `third_attn.kv`, ...).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.layers import MLP, CrossAttention, DropPath

POOLING_MODES = ("region", "local", "all")


def region_layout(grid, region_size):
    """(regions per axis, n, S) for a (t, h, w) token grid cut into (t, h, w) regions; exact division only."""
    grid, region_size = tuple(int(g) for g in grid), tuple(int(r) for r in region_size)
    if len(region_size) != 3 or min(region_size) < 1:
        raise ConfigError(f"region_size must be three positive tubelet counts (t, h, w), got {region_size}")
    if any(g % r for g, r in zip(grid, region_size)):
        raise ConfigError(
            f"region size {region_size} does not divide the token grid {grid} (frames/tubelet, height/patch, "
            "width/patch): choose num_frames, image_size and region_size together"
        )
    counts = tuple(g // r for g, r in zip(grid, region_size))
    return counts, int(np.prod(counts)), int(np.prod(region_size))


def partition_regions(x, grid, region_size):
    """[B, N, ...] in raster (t, h, w) order -> [B, n, S, ...]: regions ordered (t, h, w), tokens inside too."""
    (nt, nh, nw), n, s = region_layout(grid, region_size)
    t, h, w = region_size
    rest = tuple(x.shape[2:])
    x = ops.reshape(x, (-1, nt, t, nh, h, nw, w) + rest)
    tail = tuple(range(7, 7 + len(rest)))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4, 6) + tail)
    return ops.reshape(x, (-1, n, s) + rest)


def visible_per_region(masked, grid, region_size) -> int:
    """Visible tokens each region keeps under a concrete mask [B, N] (True = hidden); the same for all, or ConfigError."""
    hidden = np.asarray(ops.convert_to_numpy(masked)).astype("int32").reshape(-1, int(np.prod(grid)))
    per_region = ops.convert_to_numpy(ops.sum(partition_regions(ops.convert_to_tensor(hidden), grid, region_size), axis=-1))
    kept = np.unique(int(np.prod(region_size)) - per_region)
    if kept.size != 1:
        raise ConfigError(f"every region must keep the same number of visible tokens; the mask keeps {kept.tolist()}")
    return int(kept[0])


@keras.saving.register_keras_serializable(package="mmder_tf")
class RegionTokens(layers.Layer):
    """Patch tokens [B, N, C] (raster order) -> [B, n, 1 + S, C] with one learned token in front of each region.

    `call(tokens, masked=..., visible_per_region=V)` keeps only the visible
    tokens (`masked` bool [B, N], True = hidden) of each region in their
    in-region order, for masked-autoencoder pre-training: every region of
    every sample must then keep the same number V of tokens.
    """

    def __init__(self, grid, region_size, **kwargs):
        super().__init__(**kwargs)
        self.grid = tuple(int(g) for g in grid)
        self.region_size = tuple(int(r) for r in region_size)
        _, self.num_regions, self.region_length = region_layout(self.grid, self.region_size)

    def build(self, input_shape):
        self.hidden_dim = int(input_shape[-1])
        # Bounds +-std as MAE-DFER's pre-training encoder draws them (initialisation only).
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.region_tokens = self.add_weight(name="region_tokens", shape=(self.num_regions, self.hidden_dim), initializer=init)

    def call(self, tokens, masked=None, visible_per_region=None):
        x = partition_regions(tokens, self.grid, self.region_size)
        length = self.region_length
        if masked is not None:
            if visible_per_region is None:
                raise ConfigError("visible_per_region is needed with a mask (the same count for every region)")
            length = int(visible_per_region)
            hidden = ops.cast(partition_regions(ops.cast(masked, "int32"), self.grid, self.region_size), "int32")
            # Visible tokens first, each group in its original order: the keys are unique, so any sort agrees.
            keys = hidden * self.region_length + ops.arange(self.region_length, dtype="int32")
            keep = ops.argsort(keys, axis=-1)[:, :, :length]
            x = ops.take_along_axis(x, keep[..., None], axis=2)
        regions = ops.cast(self.region_tokens, x.dtype)
        regions = ops.broadcast_to(regions[None, :, None, :], (ops.shape(x)[0], self.num_regions, 1, self.hidden_dim))
        return ops.concatenate([regions, x], axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_regions, 1 + self.region_length, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": list(self.grid), "region_size": list(self.region_size)}


@keras.saving.register_keras_serializable(package="mmder_tf")
class LGIFormerBlock(layers.Layer):
    """One LGI-Former block on [B, n, 1 + S, C], pre-norm residual steps in MAE-DFER's order:

    1. each region's token and local tokens attend to each other (`first_attn`);
    2. the n region tokens of a clip attend to each other (`second_attn`);
    3. every local token attends to the n updated region tokens (`third_attn`,
       query norm `third_attn_norm0`, context norm `third_attn_norm1`);
    4. the MLP on all tokens (`norm2`, `mlp`).
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, layer_norm_epsilon=1e-6, drop_path_rate=0.0,
                 qkv_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads = int(hidden_dim), int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.drop_path_rate = float(drop_path_rate)
        self.qkv_bias = bool(qkv_bias)
        policy, eps = self.dtype_policy, self.layer_norm_epsilon

        def norm(name):
            return layers.LayerNormalization(epsilon=eps, dtype=policy, name=name)

        def attention(name):
            return CrossAttention(self.hidden_dim, self.num_heads, qkv_bias=self.qkv_bias, dtype=policy, name=name)

        self.first_attn_norm0, self.first_attn = norm("first_attn_norm0"), attention("first_attn")
        self.second_attn_norm0, self.second_attn = norm("second_attn_norm0"), attention("second_attn")
        self.third_attn_norm0, self.third_attn_norm1 = norm("third_attn_norm0"), norm("third_attn_norm1")
        self.third_attn = attention("third_attn")
        self.norm2 = norm("norm2")
        self.mlp = MLP(self.hidden_dim, int(round(self.hidden_dim * self.mlp_ratio)), dtype=policy, name="mlp")
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        token_shape = (None, None, self.hidden_dim)
        for layer in (self.first_attn_norm0, self.second_attn_norm0, self.third_attn_norm0, self.third_attn_norm1,
                      self.norm2, self.first_attn, self.second_attn, self.mlp):
            layer.build(token_shape)
        self.third_attn.build(token_shape, token_shape)

    def call(self, x, training=None):
        n, length, dim = x.shape[1], x.shape[2], self.hidden_dim
        # 1. Inside each region; like MAE-DFER, stochastic depth here drops per region ([B * n, ...]).
        local = ops.reshape(x, (-1, length, dim))
        local = local + self.drop_path(self.first_attn(self.first_attn_norm0(local)), training=training)
        x = ops.reshape(local, (-1, n, length, dim))
        # 2. Across the region tokens of one clip.
        regions = x[:, :, 0]
        regions = regions + self.drop_path(self.second_attn(self.second_attn_norm0(regions)), training=training)
        # 3. Every local token of a clip reads the updated region tokens; the region tokens are not changed.
        tokens = ops.reshape(x[:, :, 1:], (-1, n * (length - 1), dim))
        context = self.third_attn_norm1(regions)
        tokens = tokens + self.drop_path(self.third_attn(self.third_attn_norm0(tokens), context), training=training)
        x = ops.concatenate([regions[:, :, None], ops.reshape(tokens, (-1, n, length - 1, dim))], axis=2)
        # 4. MLP on every token.
        return x + self.drop_path(self.mlp(self.norm2(x)), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "drop_path_rate": self.drop_path_rate,
            "qkv_bias": self.qkv_bias,
        }


@keras.saving.register_keras_serializable(package="mmder_tf")
class RegionPooling(layers.Layer):
    """[B, n, 1 + S, C] -> [B, C]: mean of the region tokens ("region", MAE-DFER's released choice),
    of the local tokens ("local", upstream's 'org') or of all tokens ("all")."""

    def __init__(self, mode="region", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ConfigError(f"LGI-Former pooling must be one of {POOLING_MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        if self.mode == "region":
            return ops.mean(x[:, :, 0], axis=1)
        if self.mode == "local":
            return ops.mean(x[:, :, 1:], axis=(1, 2))
        return ops.mean(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
