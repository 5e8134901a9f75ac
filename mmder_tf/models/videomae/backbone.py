"""VideoMAE ViT encoder as a functional Keras 3 model (keras-hub style backbone)."""
from __future__ import annotations

import numpy as np
import keras
from keras import layers

from mmder_tf.errors import ConfigError
from mmder_tf.models.layers import TransformerBlock, TubeletEmbedding, _pair
from mmder_tf.models.videomae.presets import BACKBONE_PRESETS


@keras.saving.register_keras_serializable(package="mmder_tf")
class VideoMAEBackbone(keras.Model):
    """VideoMAE encoder: normalised video [B, T, H, W, 3] -> tokens [B, N, D], N = T/2 * H/16 * W/16.

    Joint space-time attention over all tubelets, fixed sine-cosine positions,
    pre-norm blocks. `final_norm=True` adds the LayerNorm of pre-training
    checkpoints (and Hugging Face `use_mean_pooling=False`); fine-tuned
    checkpoints normalise after pooling instead (the classifier's `fc_norm`).

    Layer names are stable for conversion: `patch_embed` (`proj`), `block_{i}`
    (`norm1`, `attn` (`qkv`, `q_bias`, `v_bias`, `proj`), `norm2`, `mlp`
    (`fc1`, `fc2`), `gamma_1`/`gamma_2` with layer scale), `final_norm`.
    """

    default_pooling = "mean"
    pooling_modes = ("mean",)

    def __init__(
        self,
        hidden_dim,
        depth,
        num_heads,
        mlp_ratio=4.0,
        patch_size=16,
        tubelet_size=2,
        num_frames=16,
        image_size=224,
        layer_norm_epsilon=1e-6,
        drop_path_rate=0.0,
        layer_scale_init=None,
        final_norm=False,
        qkv_bias=True,
        dtype=None,
        **kwargs,
    ):
        hidden_dim, depth, num_heads = int(hidden_dim), int(depth), int(num_heads)
        height, width = _pair(image_size, "image_size")
        if hidden_dim < 1 or depth < 1 or num_heads < 1:
            raise ConfigError(f"hidden_dim, depth and num_heads must be positive, got {hidden_dim}, {depth}, {num_heads}")
        if hidden_dim % num_heads:
            raise ConfigError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if num_frames < tubelet_size or num_frames % tubelet_size:
            raise ConfigError(f"num_frames {num_frames} is not a positive multiple of tubelet_size {tubelet_size}")
        if min(height, width) < patch_size or height % patch_size or width % patch_size:
            raise ConfigError(f"image_size {image_size} is not a positive multiple of patch_size {patch_size}")
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")

        # Layers first, then the graph: keras-hub's pattern for a serialisable functional subclass.
        patch_embed = TubeletEmbedding(hidden_dim, patch_size, tubelet_size, dtype=dtype, name="patch_embed")
        # Stochastic depth grows linearly with depth, as in timm / VideoMAE.
        rates = np.linspace(0.0, float(drop_path_rate), depth) if depth > 1 else [float(drop_path_rate)]
        blocks = [
            TransformerBlock(
                hidden_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                layer_norm_epsilon=layer_norm_epsilon,
                drop_path_rate=float(rate),
                layer_scale_init=layer_scale_init,
                qkv_bias=qkv_bias,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i, rate in enumerate(rates)
        ]
        norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm") if final_norm else None

        inputs = keras.Input(shape=(num_frames, height, width, 3), name="pixels")
        x = patch_embed(inputs)
        for block in blocks:
            x = block(x)
        if norm is not None:
            x = norm(x)
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)

        self.patch_embed, self.blocks, self.final_norm = patch_embed, blocks, norm
        self.hidden_dim, self.depth, self.num_heads = hidden_dim, depth, num_heads
        self.mlp_ratio = float(mlp_ratio)
        self.patch_size, self.tubelet_size = int(patch_size), int(tubelet_size)
        self.num_frames = int(num_frames)
        self.image_size = image_size if isinstance(image_size, int) else (height, width)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)
        self.use_final_norm = bool(final_norm)
        self.qkv_bias = bool(qkv_bias)

    @property
    def num_tokens(self) -> int:
        h, w = _pair(self.image_size, "image_size")
        return (self.num_frames // self.tubelet_size) * (h // self.patch_size) * (w // self.patch_size)

    def pooling_layer(self, mode=None, **kwargs) -> layers.Layer:
        """The layer that turns this backbone's tokens into one feature vector per clip: their mean."""
        mode = mode or self.default_pooling
        if mode not in self.pooling_modes:
            raise ConfigError(f"VideoMAE pooling must be one of {self.pooling_modes}, got {mode!r}")
        return layers.GlobalAveragePooling1D(**kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "hidden_dim": self.hidden_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "patch_size": self.patch_size,
            "tubelet_size": self.tubelet_size,
            "num_frames": self.num_frames,
            "image_size": self.image_size if isinstance(self.image_size, int) else list(self.image_size),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init": self.layer_scale_init,
            "final_norm": self.use_final_norm,
            "qkv_bias": self.qkv_bias,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VideoMAEBackbone":
        """A fresh (randomly initialised) backbone of a named size; weights come from `load_pretrained`."""
        key = str(name).lower()
        if key not in BACKBONE_PRESETS:
            raise ConfigError(f"unknown backbone preset {name!r}; choose one of {', '.join(BACKBONE_PRESETS)}")
        return cls(**{**BACKBONE_PRESETS[key], **overrides})
