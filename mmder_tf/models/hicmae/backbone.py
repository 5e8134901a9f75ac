"""HiCMAE's audio-visual encoder as a functional Keras 3 model: two ViTs and a cross-modal fusion encoder."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.backbone import VideoBackbone
from mmder_tf.models.hicmae.layers import CrossModalBlock
from mmder_tf.models.hicmae.presets import BACKBONE_PRESETS
from mmder_tf.models.layers import TransformerBlock, TubeletEmbedding, _pair


def _encoder_layers(prefix, hidden_dim, depth, num_heads, mlp_ratio, eps, drop_path_rate, layer_scale_init, qkv_bias,
                    dtype):
    rates = VideoBackbone.drop_path_rates(drop_path_rate, depth)
    blocks = [TransformerBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, layer_norm_epsilon=eps, drop_path_rate=rate,
                               layer_scale_init=layer_scale_init, qkv_bias=qkv_bias, dtype=dtype,
                               name=f"{prefix}block_{i}")
              for i, rate in enumerate(rates)]
    norm = layers.LayerNormalization(epsilon=eps, dtype=dtype, name=f"{prefix}norm")
    return blocks, norm


@keras.saving.register_keras_serializable(package="mmder_tf")
class HiCMAEBackbone(VideoBackbone):
    """{"video": normalised [B, T, H, W, 3], "audio": normalised fbank [B, Ta, F]} -> token dict.

    Visual encoder: VideoMAE's (tubelet embedding with the fixed sine-cosine
    table, `depth` pre-norm blocks, a final LayerNorm). Audio encoder: the same
    over the fbank seen as one frame of Ta x F one-channel pixels, patches of
    `audio_patch_size`^2, tokens time-major. Each encoder's final norm is
    applied to EVERY block output (HiCMAE pools over all of them). Fusion
    encoder: `fusion_depth` layers in which both streams update at once from
    the previous layer's values, each by cross-attending to the other stream
    and then self-attending (`CrossModalBlock`); then one LayerNorm per stream.

    Outputs: "video_layers" [B, depth, N, C] and "audio_layers" [B, audio_depth,
    Na, Ca] (normed block outputs, the last one is what fusion reads), "video"
    [B, N, C] and "audio" [B, Na, Ca] (the fusion encoder's normed outputs).

    Layer names are stable for conversion: `patch_embed`, `block_{i}`, `norm`;
    `audio_patch_embed`, `audio_block_{i}`, `audio_norm`; `fusion_block_{i}`,
    `fusion_audio_block_{i}`, `fusion_norm`, `fusion_audio_norm`.
    """

    presets = BACKBONE_PRESETS

    def __init__(
        self,
        hidden_dim,
        depth,
        num_heads,
        audio_hidden_dim,
        audio_depth,
        audio_num_heads,
        fusion_depth,
        fusion_num_heads,
        mlp_ratio=4.0,
        patch_size=16,
        tubelet_size=2,
        num_frames=16,
        image_size=160,
        audio_patch_size=16,
        audio_length=256,
        num_mel_bins=128,
        layer_norm_epsilon=1e-6,
        drop_path_rate=0.0,
        fusion_drop_path_rate=0.0,
        layer_scale_init=None,
        qkv_bias=True,
        dtype=None,
        **kwargs,
    ):
        hidden_dim, depth, num_heads = int(hidden_dim), int(depth), int(num_heads)
        audio_hidden_dim, audio_depth, audio_num_heads = int(audio_hidden_dim), int(audio_depth), int(audio_num_heads)
        fusion_depth, fusion_num_heads = int(fusion_depth), int(fusion_num_heads)
        num_frames, patch_size, tubelet_size = int(num_frames), int(patch_size), int(tubelet_size)
        audio_patch_size, audio_length, num_mel_bins = int(audio_patch_size), int(audio_length), int(num_mel_bins)
        check = VideoBackbone.check_geometry
        check(hidden_dim, depth, num_heads, num_frames, tubelet_size, image_size, patch_size, drop_path_rate)
        # The fbank is one "frame" of audio_length x num_mel_bins: the same checks, named for audio.
        try:
            check(audio_hidden_dim, audio_depth, audio_num_heads, 1, 1, (audio_length, num_mel_bins), audio_patch_size,
                  fusion_drop_path_rate)
        except ConfigError as error:
            raise ConfigError(f"audio encoder: {error} (audio_length x num_mel_bins, audio_hidden_dim, audio_depth, "
                              "audio_num_heads, fusion_drop_path_rate)") from None
        if fusion_depth < 1 or fusion_num_heads < 1 or hidden_dim % fusion_num_heads or audio_hidden_dim % fusion_num_heads:
            raise ConfigError(f"fusion_depth {fusion_depth} and fusion_num_heads {fusion_num_heads} must be positive, and "
                              f"the heads must divide both widths ({hidden_dim}, {audio_hidden_dim})")
        height, width = _pair(image_size, "image_size")
        eps = float(layer_norm_epsilon)
        common = dict(mlp_ratio=mlp_ratio, eps=eps, layer_scale_init=layer_scale_init, qkv_bias=qkv_bias, dtype=dtype)

        patch_embed = TubeletEmbedding(hidden_dim, patch_size, tubelet_size, dtype=dtype, name="patch_embed")
        blocks, norm = _encoder_layers("", hidden_dim, depth, num_heads, drop_path_rate=drop_path_rate, **common)
        audio_embed = TubeletEmbedding(audio_hidden_dim, audio_patch_size, 1, dtype=dtype, name="audio_patch_embed")
        audio_blocks, audio_norm = _encoder_layers("audio_", audio_hidden_dim, audio_depth, audio_num_heads,
                                                   drop_path_rate=drop_path_rate, **common)
        rates = VideoBackbone.drop_path_rates(fusion_drop_path_rate, fusion_depth)
        fusion = dict(mlp_ratio=mlp_ratio, layer_norm_epsilon=eps, qkv_bias=qkv_bias, dtype=dtype)
        fusion_blocks = [CrossModalBlock(hidden_dim, fusion_num_heads, audio_hidden_dim, drop_path_rate=rate, **fusion,
                                         name=f"fusion_block_{i}") for i, rate in enumerate(rates)]
        fusion_audio_blocks = [CrossModalBlock(audio_hidden_dim, fusion_num_heads, hidden_dim, drop_path_rate=rate,
                                               **fusion, name=f"fusion_audio_block_{i}") for i, rate in enumerate(rates)]
        fusion_norm = layers.LayerNormalization(epsilon=eps, dtype=dtype, name="fusion_norm")
        fusion_audio_norm = layers.LayerNormalization(epsilon=eps, dtype=dtype, name="fusion_audio_norm")

        inputs = {"video": keras.Input(shape=(num_frames, height, width, 3), name="video"),
                  "audio": keras.Input(shape=(audio_length, num_mel_bins), name="audio")}

        def encode(x, stack, final_norm):
            normed = []
            for block in stack:
                x = block(x)
                normed.append(final_norm(x))
            return normed

        video = encode(patch_embed(inputs["video"]), blocks, norm)
        spectrogram = ops.reshape(inputs["audio"], (-1, 1, audio_length, num_mel_bins, 1))
        audio = encode(audio_embed(spectrogram), audio_blocks, audio_norm)
        v, a = video[-1], audio[-1]
        for video_block, audio_block in zip(fusion_blocks, fusion_audio_blocks):
            v, a = video_block(v, a), audio_block(a, v)
        outputs = {"video_layers": ops.stack(video, axis=1), "audio_layers": ops.stack(audio, axis=1),
                   "video": fusion_norm(v), "audio": fusion_audio_norm(a)}
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.patch_embed, self.blocks, self.norm = patch_embed, blocks, norm
        self.audio_patch_embed, self.audio_blocks, self.audio_norm = audio_embed, audio_blocks, audio_norm
        self.fusion_blocks, self.fusion_audio_blocks = fusion_blocks, fusion_audio_blocks
        self.fusion_norm, self.fusion_audio_norm = fusion_norm, fusion_audio_norm
        self._remember(
            hidden_dim=hidden_dim, depth=depth, num_heads=num_heads, audio_hidden_dim=audio_hidden_dim,
            audio_depth=audio_depth, audio_num_heads=audio_num_heads, fusion_depth=fusion_depth,
            fusion_num_heads=fusion_num_heads, mlp_ratio=float(mlp_ratio), patch_size=patch_size,
            tubelet_size=tubelet_size, num_frames=num_frames,
            image_size=image_size if isinstance(image_size, int) else (height, width),
            audio_patch_size=audio_patch_size, audio_length=audio_length, num_mel_bins=num_mel_bins,
            layer_norm_epsilon=eps, drop_path_rate=float(drop_path_rate),
            fusion_drop_path_rate=float(fusion_drop_path_rate),
            layer_scale_init=None if layer_scale_init is None else float(layer_scale_init), qkv_bias=bool(qkv_bias))

    @property
    def feature_dim(self) -> int:
        """Width of the classifier's feature: pooled video, pooled audio, fused video, fused audio."""
        return 2 * (self.hidden_dim + self.audio_hidden_dim)
