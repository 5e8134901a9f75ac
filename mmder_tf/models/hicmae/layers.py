"""HiCMAE's own layers: the cross-modal block of its fusion encoder and its hierarchical (layer-weighted) pooling.

Everything else HiCMAE uses is VideoMAE's (models.layers): both encoders are
stacks of `TransformerBlock` over `TubeletEmbedding` tokens (the audio one sees
the fbank as a one-frame, one-channel video), and the cross-attention is the
`CrossAttention` layout MAE-DFER shares.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from mmder_tf.models.layers import CrossAttention, DropPath, TransformerBlock


@keras.saving.register_keras_serializable(package="mmder_tf")
class CrossModalBlock(layers.Layer):
    """One stream of a fusion layer: x + cross_attn(cross_norm1(x), cross_norm2(context)), then a VideoMAE block.

    The context is the other modality's tokens (its own width); queries, keys
    and values are this stream's width. Layer names follow the checkpoint:
    `cross_norm1`, `cross_norm2`, `cross_attn` (`q`, `kv`, `q_bias`, `v_bias`,
    `proj`), and `block` (`norm1`, `attn`, `norm2`, `mlp`) for the self part.
    """

    def __init__(self, hidden_dim, num_heads, context_dim, mlp_ratio=4.0, layer_norm_epsilon=1e-6, drop_path_rate=0.0,
                 qkv_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads, self.context_dim = int(hidden_dim), int(num_heads), int(context_dim)
        self.mlp_ratio, self.layer_norm_epsilon = float(mlp_ratio), float(layer_norm_epsilon)
        self.drop_path_rate, self.qkv_bias = float(drop_path_rate), bool(qkv_bias)
        policy = self.dtype_policy
        self.cross_norm1 = layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=policy, name="cross_norm1")
        self.cross_norm2 = layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=policy, name="cross_norm2")
        self.cross_attn = CrossAttention(self.hidden_dim, self.num_heads, qkv_bias=self.qkv_bias,
                                         context_dim=self.context_dim, dtype=policy, name="cross_attn")
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")
        self.block = TransformerBlock(self.hidden_dim, self.num_heads, mlp_ratio=self.mlp_ratio,
                                      layer_norm_epsilon=self.layer_norm_epsilon, drop_path_rate=self.drop_path_rate,
                                      qkv_bias=self.qkv_bias, dtype=policy, name="block")

    def build(self, x_shape, context_shape):
        self.cross_norm1.build(x_shape)
        self.cross_norm2.build(context_shape)
        self.cross_attn.build(x_shape, context_shape)
        self.block.build(x_shape)

    def call(self, x, context, training=None):
        y = self.cross_attn(self.cross_norm1(x), self.cross_norm2(context))
        x = x + self.drop_path(y, training=training)
        return self.block(x, training=training)

    def compute_output_shape(self, x_shape, context_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "context_dim": self.context_dim, "mlp_ratio": self.mlp_ratio,
                "layer_norm_epsilon": self.layer_norm_epsilon, "drop_path_rate": self.drop_path_rate,
                "qkv_bias": self.qkv_bias}


@keras.saving.register_keras_serializable(package="mmder_tf")
class LayerWeightedPooling(layers.Layer):
    """[B, L, N, C] normed tokens of every encoder layer -> [B, C]: sum_l softmax(w)_l * mean over tokens.

    HiCMAE's hierarchical pooling: one learned weight per layer (`layer_weights`,
    the checkpoint's `video_layer_weights` / `audio_layer_weights`), starting
    equal. The weights and the softmax stay float32 under mixed precision.
    """

    def build(self, input_shape):
        self.num_layers = int(input_shape[1])
        self.layer_weights = self.add_weight(name="layer_weights", shape=(self.num_layers,), initializer="zeros",
                                             dtype="float32")

    def call(self, x):
        per_layer = ops.mean(x, axis=2)  # the mean commutes with the weighted sum: pool first, [B, L, C]
        weights = ops.cast(ops.softmax(self.layer_weights), per_layer.dtype)
        return ops.einsum("blc,l->bc", per_layer, weights)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])
