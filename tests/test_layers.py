"""VideoMAE layers against independent numpy references and the transformers position table."""
import math

import keras
import numpy as np
import pytest
from keras import ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.layers import (
    MLP,
    DropPath,
    InputNormalization,
    TransformerBlock,
    TubeletEmbedding,
    VideoMAEAttention,
    _sincos_position_table_ops,
    sincos_position_table,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("num, dim", [(32, 64), (392, 96), (1568, 48)])
def test_position_table_matches_transformers(num, dim):
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    reference = get_sinusoid_encoding_table(num, dim).numpy()[0]
    ours = sincos_position_table(num, dim)
    assert ours.shape == (num, dim) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)


def test_position_table_graph_fallback_is_close():
    ours = np.asarray(_sincos_position_table_ops(200, 48))
    np.testing.assert_allclose(ours, sincos_position_table(200, 48), atol=1e-4)


def test_tubelet_embedding_is_patchify_matmul_plus_table():
    layer = TubeletEmbedding(8, patch_size=4, tubelet_size=2)
    x = RNG.standard_normal((2, 4, 8, 12, 3)).astype("float32")
    out = np.asarray(layer(x))
    kernel = np.asarray(layer.proj.kernel)  # [2, 4, 4, 3, 8]
    bias = np.asarray(layer.proj.bias)
    # Tokens ordered time, height, width; each token is one 2x4x4x3 tubelet.
    patches = x.reshape(2, 2, 2, 2, 4, 3, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(2, 12, -1)
    expected = patches @ kernel.reshape(-1, 8) + bias + sincos_position_table(12, 8)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_tubelet_embedding_rejects_sizes_that_do_not_tile():
    layer = TubeletEmbedding(8, patch_size=4, tubelet_size=2)
    with pytest.raises(ConfigError, match="frames 3"):
        layer(np.zeros((1, 3, 8, 8, 3), "float32"))
    with pytest.raises(ConfigError, match="width 10"):
        layer(np.zeros((1, 2, 8, 10, 3), "float32"))


def _softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def test_attention_matches_numpy_with_q_and_v_bias():
    attn = VideoMAEAttention(12, 3)
    x = RNG.standard_normal((2, 5, 12)).astype("float32")
    attn.build(x.shape)
    q_bias, v_bias = RNG.standard_normal(12).astype("float32"), RNG.standard_normal(12).astype("float32")
    attn.q_bias.assign(q_bias)
    attn.v_bias.assign(v_bias)
    out = np.asarray(attn(x))

    qkv = x @ np.asarray(attn.qkv.kernel)
    q, k, v = qkv[..., :12] + q_bias, qkv[..., 12:24], qkv[..., 24:] + v_bias
    split = lambda t: t.reshape(2, 5, 3, 4).transpose(0, 2, 1, 3)  # noqa: E731
    weights = _softmax(split(q) @ split(k).transpose(0, 1, 3, 2) / 2.0)
    context = (weights @ split(v)).transpose(0, 2, 1, 3).reshape(2, 5, 12)
    expected = context @ np.asarray(attn.proj.kernel) + np.asarray(attn.proj.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert [w.name for w in attn.weights] == ["q_bias", "v_bias", "kernel", "kernel", "bias"]


def test_attention_without_bias_and_bad_heads():
    attn = VideoMAEAttention(8, 2, qkv_bias=False)
    attn(np.zeros((1, 3, 8), "float32"))
    assert not hasattr(attn, "q_bias")
    with pytest.raises(ConfigError, match="divisible"):
        VideoMAEAttention(10, 3)


def test_mlp_uses_exact_gelu():
    mlp = MLP(4, 16)
    x = 3 * RNG.standard_normal((3, 4)).astype("float32")
    out = np.asarray(mlp(x))
    h = x @ np.asarray(mlp.fc1.kernel) + np.asarray(mlp.fc1.bias)
    erf = np.vectorize(math.erf)
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    expected = h @ np.asarray(mlp.fc2.kernel) + np.asarray(mlp.fc2.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    tanh_gelu = np.asarray(mlp.fc2(ops.gelu(mlp.fc1(x), approximate=True)))
    assert np.abs(tanh_gelu - expected).max() > 1e-5  # the check above can tell the two apart


def test_drop_path_is_per_sample_and_rescaled():
    layer = DropPath(0.5, seed=1)
    x = np.ones((2000, 3, 4), "float32")
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(2000, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert (per_sample.min(1) == per_sample.max(1)).all()  # whole sample kept or dropped
    assert 0.45 < (per_sample[:, 0] > 0).mean() < 0.55
    with pytest.raises(ConfigError):
        DropPath(1.0)


def test_block_layer_scale_weights_and_identity():
    block = TransformerBlock(8, 2, layer_scale_init=0.1)
    x = RNG.standard_normal((2, 6, 8)).astype("float32")
    y = np.asarray(block(x))
    names = [w.path for w in block.weights]
    assert any(n.endswith("gamma_1") for n in names) and any(n.endswith("gamma_2") for n in names)
    np.testing.assert_allclose(np.asarray(block.gamma_1), 0.1)
    assert np.abs(y - x).max() > 1e-4
    block.gamma_1.assign(np.zeros(8, "float32"))
    block.gamma_2.assign(np.zeros(8, "float32"))
    np.testing.assert_allclose(np.asarray(block(x)), x, atol=1e-6)


def test_block_is_prenorm_residual():
    block = TransformerBlock(8, 2, layer_norm_epsilon=1e-6)
    x = RNG.standard_normal((1, 5, 8)).astype("float32")
    out = np.asarray(block(x))
    h = x + np.asarray(block.attn(block.norm1(x)))
    expected = h + np.asarray(block.mlp(block.norm2(h)))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert block.norm1.epsilon == 1e-6


def test_input_normalization_uint8_and_float():
    layer = InputNormalization()
    x = RNG.integers(0, 256, (2, 2, 4, 4, 3)).astype("uint8")
    expected = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(x.astype("float32"))), expected, atol=1e-5)
    official = InputNormalization(std=(0.225,) * 3)
    np.testing.assert_allclose(np.asarray(official(x))[..., 0], (x[..., 0] / 255 - 0.485) / 0.225, atol=1e-5)
    with pytest.raises(ConfigError, match="channels"):
        layer(np.zeros((1, 2, 4, 4, 1), "uint8"))
    with pytest.raises(ConfigError):
        InputNormalization(std=(0.2, 0.0, 0.2))


def test_input_normalization_casts_to_compute_dtype():
    layer = InputNormalization(dtype="mixed_bfloat16")
    out = layer(np.full((1, 2, 2, 2, 3), 255, "uint8"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(np.asarray(ops.cast(out, "float32"))[0, 0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-2)
