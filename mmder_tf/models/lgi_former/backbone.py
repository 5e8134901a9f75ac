"""MAE-DFER's LGI-Former encoder as a functional Keras 3 model (keras-hub style backbone)."""
from __future__ import annotations

import keras
from keras import layers

from mmder_tf.models.backbone import VideoBackbone
from mmder_tf.models.layers import TubeletEmbedding, _pair
from mmder_tf.models.lgi_former.layers import POOLING_MODES, LGIFormerBlock, RegionPooling, RegionTokens, region_layout
from mmder_tf.models.lgi_former.layers import visible_per_region as visible_per_region_of
from mmder_tf.models.lgi_former.presets import BACKBONE_PRESETS


@keras.saving.register_keras_serializable(package="mmder_tf")
class LGIFormerBackbone(VideoBackbone):
    """LGI-Former: normalised video [B, T, H, W, 3] -> tokens [B, n, 1 + S, C].

    The tubelet tokens (VideoMAE's embedding and fixed sine-cosine table) are
    cut into n regions of `region_size` = (t, h, w) tubelets, S = t*h*w tokens
    each, in front of which sits one learned region token (index 0 of axis 2).
    Each block attends inside regions, across region tokens, and from local
    tokens to region tokens (`LGIFormerBlock`), which costs far less than
    joint attention over all tokens. `final_norm=True` adds the LayerNorm of
    pre-training checkpoints; fine-tuned ones normalise after pooling (the
    classifier's `fc_norm`).

    Layer names are stable for conversion: `patch_embed`, `region_tokens`,
    `block_{i}` (see `LGIFormerBlock`), `final_norm`.
    """

    presets = BACKBONE_PRESETS
    default_pooling = "region"
    pooling_modes = POOLING_MODES

    def __init__(
        self,
        hidden_dim,
        depth,
        num_heads,
        region_size=(2, 5, 10),
        mlp_ratio=4.0,
        patch_size=16,
        tubelet_size=2,
        num_frames=16,
        image_size=160,
        layer_norm_epsilon=1e-6,
        drop_path_rate=0.0,
        final_norm=False,
        qkv_bias=True,
        dtype=None,
        **kwargs,
    ):
        hidden_dim, depth, num_heads = int(hidden_dim), int(depth), int(num_heads)
        num_frames, patch_size, tubelet_size = int(num_frames), int(patch_size), int(tubelet_size)
        grid = self.check_geometry(hidden_dim, depth, num_heads, num_frames, tubelet_size, image_size, patch_size,
                                   drop_path_rate)
        height, width = _pair(image_size, "image_size")
        region_size = tuple(int(r) for r in region_size)
        region_layout(grid, region_size)  # refuses sizes that do not divide the grid

        patch_embed = TubeletEmbedding(hidden_dim, patch_size, tubelet_size, dtype=dtype, name="patch_embed")
        region_tokens = RegionTokens(grid, region_size, dtype=dtype, name="region_tokens")
        rates = self.drop_path_rates(drop_path_rate, depth)
        blocks = [
            LGIFormerBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, layer_norm_epsilon=layer_norm_epsilon,
                           drop_path_rate=float(rate), qkv_bias=qkv_bias, dtype=dtype, name=f"block_{i}")
            for i, rate in enumerate(rates)
        ]
        norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm") if final_norm else None

        inputs = keras.Input(shape=(num_frames, height, width, 3), name="pixels")
        x = region_tokens(patch_embed(inputs))
        for block in blocks:
            x = block(x)
        if norm is not None:
            x = norm(x)
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)

        self.patch_embed, self.region_tokens, self.blocks, self.final_norm = patch_embed, region_tokens, blocks, norm
        self.grid = grid
        self._remember(
            hidden_dim=hidden_dim, depth=depth, num_heads=num_heads, region_size=region_size, mlp_ratio=float(mlp_ratio),
            patch_size=patch_size, tubelet_size=tubelet_size, num_frames=num_frames,
            image_size=image_size if isinstance(image_size, int) else (height, width),
            layer_norm_epsilon=float(layer_norm_epsilon), drop_path_rate=float(drop_path_rate),
            final_norm=bool(final_norm), qkv_bias=bool(qkv_bias),
        )

    @property
    def num_regions(self) -> int:
        return self.region_tokens.num_regions

    @property
    def region_length(self) -> int:
        """Local tokens per region (S)."""
        return self.region_tokens.region_length

    def pooling_layer(self, mode=None, **kwargs) -> RegionPooling:
        """The layer that turns this backbone's output into one feature vector per clip."""
        return RegionPooling(mode or self.default_pooling, **kwargs)

    def encode_visible(self, pixels, masked, visible_per_region=None, training=False):
        """Tokens [B, n, 1 + V, C] of the last block (before `final_norm`) seeing only the unmasked tubelets.

        `masked`: bool [B, N], True = hidden, N in raster (t, h, w) order; every
        region must keep the same number V of visible tokens (MAE-DFER's
        window masking guarantees it). V is read from the mask when not given
        (eager only). The local tokens stay in region-major order.
        """
        if visible_per_region is None:
            visible_per_region = visible_per_region_of(masked, self.grid, self.region_size)
        x = self.region_tokens(self.patch_embed(pixels), masked=masked, visible_per_region=visible_per_region)
        for block in self.blocks:
            x = block(x, training=training)
        return x
