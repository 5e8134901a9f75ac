"""VideoMAEBackbone: shapes, names, serialisation, presets and the paper's parameter count."""
import json

import keras
import numpy as np
import pytest

from mmder_tf import BACKBONE_PRESETS, VideoMAEBackbone
from mmder_tf.errors import ConfigError

RNG = np.random.default_rng(0)


def vit_params(dim, depth, mlp_ratio=4, final_norm=False):
    """Independent count: tubelet conv + per block (qkv, q/v bias, proj, 2 norms, MLP)."""
    hidden = dim * mlp_ratio
    block = 2 * dim + 3 * dim * dim + 2 * dim + dim * dim + dim + 2 * dim + dim * hidden + hidden + hidden * dim + dim
    return 3 * 2 * 16 * 16 * dim + dim + depth * block + (2 * dim if final_norm else 0)


def small_video(batch=2, frames=4, size=32):
    return RNG.standard_normal((batch, frames, size, size, 3)).astype("float32")


def test_tiny_forward_shape_and_token_count():
    model = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=(32, 48))
    x = RNG.standard_normal((2, 4, 32, 48, 3)).astype("float32")
    out = np.asarray(model(x))
    assert out.shape == (2, 2 * 2 * 3, 64) == (2, model.num_tokens, model.hidden_dim)
    assert np.isfinite(out).all()


def test_stable_layer_names():
    model = VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32, final_norm=True, layer_scale_init=0.1)
    names = [layer.name for layer in model.layers]
    assert names == ["pixels", "patch_embed", "block_0", "block_1", "final_norm"]
    paths = {w.path for w in model.weights}
    for expected in (
        "patch_embed/proj/kernel",
        "block_1/norm1/gamma",
        "block_1/attn/qkv/kernel",
        "block_1/attn/q_bias",
        "block_1/attn/v_bias",
        "block_1/attn/proj/bias",
        "block_1/norm2/beta",
        "block_1/mlp/fc1/kernel",
        "block_1/mlp/fc2/bias",
        "block_1/gamma_1",
        "block_1/gamma_2",
        "final_norm/gamma",
    ):
        assert expected in paths, expected
    assert model.get_layer("patch_embed").proj.kernel.shape == (2, 16, 16, 3, 64)


def test_config_round_trip_gives_same_outputs():
    model = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32, layer_norm_epsilon=1e-12, final_norm=True)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, VideoMAEBackbone)
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    x = small_video()
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-6)


def test_same_weights_serve_another_size():
    small = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32)
    big = VideoMAEBackbone.from_preset("tiny", num_frames=8, image_size=48)
    big.set_weights(small.get_weights())
    assert np.asarray(big(small_video(1, 8, 48))).shape == (1, 4 * 3 * 3, 64)


def test_drop_path_schedule_and_training_noise():
    model = VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32, depth=3, drop_path_rate=0.3)
    assert [b.drop_path.rate for b in model.blocks] == pytest.approx([0.0, 0.15, 0.3])
    x = small_video(8, 2, 32)
    eval_out = np.asarray(model(x, training=False))
    np.testing.assert_array_equal(eval_out, np.asarray(model(x)))
    assert np.abs(np.asarray(model(x, training=True)) - eval_out).max() > 1e-3


def test_mixed_precision_policy():
    model = VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32, dtype="mixed_bfloat16")
    out = model(small_video(1, 2, 32))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"num_heads": 3}, "divisible"),
        ({"num_frames": 3}, "num_frames"),
        ({"image_size": 40}, "image_size"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"depth": 0}, "positive"),
    ],
)
def test_bad_configs_raise_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        VideoMAEBackbone.from_preset("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="tiny, small, base, large, huge"):
        VideoMAEBackbone.from_preset("gigantic")


def test_preset_table():
    assert {k: (v["hidden_dim"], v["depth"], v["num_heads"]) for k, v in BACKBONE_PRESETS.items()} == {
        "tiny": (64, 2, 2),
        "small": (384, 12, 6),
        "base": (768, 12, 12),
        "large": (1024, 24, 16),
        "huge": (1280, 32, 16),
    }


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_param_count_matches_formula(preset):
    model = VideoMAEBackbone.from_preset(preset, num_frames=2, image_size=32)
    cfg = BACKBONE_PRESETS[preset]
    assert model.count_params() == vit_params(cfg["hidden_dim"], cfg["depth"])


@pytest.fixture(scope="module")
def large():
    return VideoMAEBackbone.from_preset("large")


def test_large_has_the_papers_parameter_count(large):
    assert large.count_params() == 303_858_688 == vit_params(1024, 24)
    assert len(large.blocks) == 24 and large.num_tokens == 1568


@pytest.mark.slow
def test_large_full_size_forward(large):
    # predict() runs a compiled graph on every backend; eager TF is several times slower here.
    out = large.predict(RNG.standard_normal((1, 16, 224, 224, 3)).astype("float32"), verbose=0)
    assert out.shape == (1, 1568, 1024)
    assert np.isfinite(out).all() and out.std() > 0.1
