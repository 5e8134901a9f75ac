"""EmotionClassifier: pixels in, logits out; linear probe vs fine-tune; cached-feature training path."""
import json

import keras
import numpy as np
import pytest

from mmder_tf import EmotionClassifier, VideoMAEBackbone
from mmder_tf.errors import ConfigError

RNG = np.random.default_rng(0)
D, C = 64, 7


def make(mode="linear_probe", **kwargs):
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32)
    return EmotionClassifier(backbone, C, mode=mode, **kwargs)


def pixels(batch=2):
    return RNG.integers(0, 256, (batch, 4, 32, 32, 3)).astype("uint8")


def n_params(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def test_logits_from_uint8_and_float_pixels_agree():
    model = make()
    x = pixels()
    logits = np.asarray(model(x))
    assert logits.shape == (2, C)
    np.testing.assert_allclose(np.asarray(model(x.astype("float32"))), logits, atol=1e-6)


def test_forward_is_normalise_backbone_mean_fc_norm_head():
    model = make()
    x = pixels()
    normalised = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    tokens = np.asarray(model.backbone(normalised.astype("float32")))
    pooled = tokens.mean(1)
    mu, var = pooled.mean(-1, keepdims=True), pooled.var(-1, keepdims=True)
    normed = (pooled - mu) / np.sqrt(var + 1e-6) * np.asarray(model.fc_norm.gamma) + np.asarray(model.fc_norm.beta)
    expected = normed @ np.asarray(model.head.kernel) + np.asarray(model.head.bias)
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4)


def test_trainable_parameter_counts_by_mode():
    model = make("linear_probe")
    assert n_params(model.trainable_weights) == 2 * D + D * C + C
    model.mode = "finetune"
    assert n_params(model.trainable_weights) == model.count_params()
    assert n_params(make("finetune").trainable_weights) == model.count_params()
    with pytest.raises(ConfigError, match="mode"):
        make("frozen")


def test_linear_probe_fit_changes_only_the_head():
    model = make("linear_probe")
    model.compile(keras.optimizers.AdamW(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    before = [keras.ops.convert_to_numpy(w) for w in model.backbone.weights]
    head_before = keras.ops.convert_to_numpy(model.head.kernel)
    model.fit(pixels(4), np.array([0, 1, 2, 3]), epochs=1, batch_size=2, verbose=0)
    for old, new in zip(before, model.backbone.weights):
        np.testing.assert_array_equal(old, np.asarray(new))
    assert np.abs(np.asarray(model.head.kernel) - head_before).max() > 0


def test_finetune_fit_changes_the_backbone():
    model = make("finetune", dropout=0.1)
    model.compile(keras.optimizers.AdamW(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    qkv = model.backbone.get_layer("block_0").attn.qkv.kernel
    before = keras.ops.convert_to_numpy(qkv)
    model.fit(pixels(2), np.array([0, 1]), epochs=1, verbose=0)
    assert np.abs(np.asarray(qkv) - before).max() > 0


def test_cached_features_and_head_model_share_weights():
    model = make(dropout=0.5)
    x = pixels(3)
    features = np.asarray(model.pooled_features(x))
    assert features.shape == (3, D)
    np.testing.assert_allclose(np.asarray(model.feature_extractor()(x)), features, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.pooled_features(x, batch_size=2)), features, atol=1e-5)
    head = model.head_model()
    np.testing.assert_allclose(np.asarray(head(features)), np.asarray(model(x)), atol=1e-5)
    assert n_params(head.trainable_weights) == 2 * D + D * C + C
    # Training the small head model trains the classifier itself.
    head.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    head.fit(features, np.array([0, 1, 2]), epochs=2, verbose=0)
    np.testing.assert_allclose(np.asarray(head(features)), np.asarray(model(x)), atol=1e-5)
    assert head.get_layer("head") is model.head and head.get_layer("fc_norm") is model.fc_norm


def test_config_round_trip_with_class_names():
    names = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    model = make(class_names=names, dropout=0.2, std=(0.225, 0.225, 0.225), fc_norm_epsilon=1e-5)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, EmotionClassifier) and clone.class_names == names
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    x = pixels()
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-6)
    assert make().get_config()["class_names"] is None


def test_mixed_precision_logits_are_float32():
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32, dtype="mixed_bfloat16")
    model = EmotionClassifier(backbone, C)
    logits = model(pixels())
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(np.asarray(logits)).all()
    model.compile(keras.optimizers.AdamW(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    history = model.fit(pixels(), np.array([0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_bad_arguments():
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32)
    with pytest.raises(ConfigError, match="class_names"):
        EmotionClassifier(backbone, 3, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="num_classes"):
        EmotionClassifier(backbone, 0)
    with pytest.raises(ConfigError, match="VideoMAEBackbone"):
        EmotionClassifier(keras.Sequential([keras.layers.Dense(2)]), 3)
