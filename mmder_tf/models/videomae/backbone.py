"""VideoMAE ViT encoder as a functional Keras 3 model (keras-hub style backbone)."""
from __future__ import annotations

import keras
from keras import layers

from mmder_tf.errors import ConfigError
from mmder_tf.models.backbone import VideoBackbone
from mmder_tf.models.layers import TransformerBlock, TubeletEmbedding, _pair
from mmder_tf.models.videomae.presets import BACKBONE_PRESETS


@keras.saving.register_keras_serializable(package="mmder_tf")
class VideoMAEBackbone(VideoBackbone):
    """VideoMAE encoder: normalised video [B, T, H, W, 3] -> tokens [B, N, D], N = T/2 * H/16 * W/16.

    Joint space-time attention over all tubelets, fixed sine-cosine positions,
    pre-norm blocks. `final_norm=True` adds the LayerNorm of pre-training
    checkpoints (and Hugging Face `use_mean_pooling=False`); fine-tuned
    checkpoints normalise after pooling instead (the classifier's `fc_norm`).

    Layer names are stable for conversion: `patch_embed` (`proj`), `block_{i}`
    (`norm1`, `attn` (`qkv`, `q_bias`, `v_bias`, `proj`), `norm2`, `mlp`
    (`fc1`, `fc2`), `gamma_1`/`gamma_2` with layer scale), `final_norm`.
    """

    presets = BACKBONE_PRESETS
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
        num_frames, patch_size, tubelet_size = int(num_frames), int(patch_size), int(tubelet_size)
        self.check_geometry(hidden_dim, depth, num_heads, num_frames, tubelet_size, image_size, patch_size, drop_path_rate)
        height, width = _pair(image_size, "image_size")

        # Layers first, then the graph: keras-hub's pattern for a serialisable functional subclass.
        patch_embed = TubeletEmbedding(hidden_dim, patch_size, tubelet_size, dtype=dtype, name="patch_embed")
        rates = self.drop_path_rates(drop_path_rate, depth)
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
        self._remember(
            hidden_dim=hidden_dim, depth=depth, num_heads=num_heads, mlp_ratio=float(mlp_ratio), patch_size=patch_size,
            tubelet_size=tubelet_size, num_frames=num_frames,
            image_size=image_size if isinstance(image_size, int) else (height, width),
            layer_norm_epsilon=float(layer_norm_epsilon), drop_path_rate=float(drop_path_rate),
            layer_scale_init=None if layer_scale_init is None else float(layer_scale_init),
            final_norm=bool(final_norm), qkv_bias=bool(qkv_bias),
        )

    def pooling_layer(self, mode=None, **kwargs) -> layers.Layer:
        """The layer that turns this backbone's tokens into one feature vector per clip: their mean."""
        mode = mode or self.default_pooling
        if mode not in self.pooling_modes:
            raise ConfigError(f"VideoMAE pooling must be one of {self.pooling_modes}, got {mode!r}")
        return layers.GlobalAveragePooling1D(**kwargs)
