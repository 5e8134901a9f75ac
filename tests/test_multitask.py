"""Regression heads beside the category, and the multi-task loss (uncertainty-weighted or fixed)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf import EmotionClassifier, VideoMAEBackbone
from mmder_tf.errors import ConfigError
from mmder_tf.models.multitask import MultiTaskModel, target_statistics

C, TARGETS = 3, ("valence", "arousal")


def make(targets=TARGETS, mode="finetune"):
    keras.utils.set_random_seed(0)
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32)
    return EmotionClassifier(backbone, C, mode=mode, targets=targets)


def pixels(batch=6, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, 4, 32, 32, 3)).astype("float32")


def test_heads_share_the_pooled_features_and_predict_in_target_units():
    model = make()
    x = pixels()
    out = model(x)
    assert set(out) == {"category", *TARGETS} and out["category"].shape == (6, C) and out["valence"].shape == (6,)
    features = np.asarray(model.dropout(model.fc_norm(model.feature_extractor()(x))))
    z = features @ np.asarray(model.dimension_head.kernel) + np.asarray(model.dimension_head.bias)
    model.target_scaling.set_statistics([3.0, -1.0], [0.5, 2.0])
    out = model(x)
    np.testing.assert_allclose(np.asarray(out["valence"]), z[:, 0] * 0.5 + 3.0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["arousal"]), z[:, 1] * 2.0 - 1.0, rtol=1e-4, atol=1e-4)
    head = model.head_model()(model.feature_extractor()(x))
    np.testing.assert_allclose(np.asarray(head["arousal"]), np.asarray(out["arousal"]), atol=1e-5)
    again = EmotionClassifier.from_config(model.get_config())
    assert again.targets == TARGETS
    # without targets the model is the plain classifier, logits out
    assert make(targets=()).output.shape == (None, C)
    with pytest.raises(ConfigError):
        make(targets=("valence", "valence"))


def _losses(trainer, y, x):
    with tf.GradientTape() as tape:
        out = trainer(x, training=False)
        total = trainer.compute_loss(x, y, out, training=False)
    return total, out, tape


def test_missing_targets_are_masked_not_zero():
    trainer = MultiTaskModel(make(), TARGETS, weighting="fixed")
    x = pixels()
    labels = np.array([0, 1, 2, 0, 1, 2])
    valence = np.array([0.5, np.nan, -0.3, np.nan, 1.0, 0.2], "float32")
    y = {"category": labels, "valence": valence, "arousal": np.zeros(6, "float32")}
    out = trainer(x)
    per_task = trainer.task_losses(y, out)
    known = ~np.isnan(valence)
    expected = np.mean((np.asarray(out["valence"])[known] - valence[known]) ** 2)
    assert float(per_task[1][0]) == pytest.approx(expected, rel=1e-5)
    zeros = dict(y, valence=np.nan_to_num(valence))  # reading missing as 0 would give another loss
    assert float(trainer.task_losses(zeros, out)[1][0]) != pytest.approx(expected, rel=1e-3)
    # no gradient reaches the predictions of the missing targets
    prediction = tf.Variable(np.asarray(out["valence"]))
    with tf.GradientTape() as tape:
        loss = trainer.task_losses(y, dict(out, valence=prediction))[1][0]
    grad = tape.gradient(loss, prediction).numpy()
    assert np.all(grad[~known] == 0) and np.all(grad[known] != 0)
    # a batch where a dimension is entirely unknown adds nothing for it
    none = dict(y, valence=np.full(6, np.nan, "float32"))
    loss, present = trainer.task_losses(none, out)[1]
    assert float(present) == 0.0 and float(loss) == 0.0


def test_fixed_weights_and_uncertainty_optimum():
    x = pixels()
    y = {"category": np.array([0, 1, 2, 0, 1, 2]), "valence": np.linspace(-1, 1, 6).astype("float32"),
         "arousal": np.linspace(1, -1, 6).astype("float32")}
    fixed = MultiTaskModel(make(), TARGETS, weighting="fixed", task_weights={"category": 1.0, "valence": 2.0,
                                                                            "arousal": 0.5})
    out = fixed(x)
    ce, mse_v, mse_a = (float(loss) for loss, _ in fixed.task_losses(y, out))
    assert float(fixed.compute_loss(x, y, out)) == pytest.approx(ce + 2.0 * mse_v + 0.5 * mse_a, rel=1e-5)
    assert fixed.uncertainty_report()["valence"] == {"weight": 2.0}
    with pytest.raises(ConfigError, match="unknown task"):
        MultiTaskModel(make(), TARGETS, weighting="fixed", task_weights={"dominance": 1.0})
    # Uncertainty weighting: the loss is stationary in s exactly at s_c = log(2 CE), s_t = log(MSE_t)
    trainer = MultiTaskModel(make(), TARGETS)
    out = trainer(x)
    ce, mse_v, mse_a = (float(loss) for loss, _ in trainer.task_losses(y, out))
    trainer.log_variances.assign(np.log([2 * ce, mse_v, mse_a]).astype("float32"))
    with tf.GradientTape() as tape:
        loss = trainer.compute_loss(x, y, trainer(x))
    grad = tape.gradient(loss, trainer.log_variances.value).numpy()
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)
    report = trainer.uncertainty_report()
    assert report["valence"]["sigma"] == pytest.approx(np.sqrt(mse_v), rel=1e-5)
    assert report["category"]["weight"] == pytest.approx(1 / (2 * ce), rel=1e-5)


def test_joint_training_learns_a_dimension_and_the_weights_follow_the_noise():
    """Two dimensions read off the same features, one clean and one half noise: both fit, and the
    learned log-variance of the noisy one ends higher (its loss is weighted down)."""
    rng = np.random.default_rng(1)
    model = make(mode="finetune")
    features = model.feature_extractor()(pixels(48, seed=2))
    head = model.head_model()
    keras.utils.set_random_seed(1)
    direction = rng.normal(size=features.shape[1]).astype("float32")
    signal = np.asarray(features) @ direction
    signal = (signal - signal.mean()) / signal.std()
    y = {"category": (signal > 0).astype("int64") + (signal > 1).astype("int64"),
         "valence": (2.0 + 0.5 * signal).astype("float32"),
         "arousal": (signal + rng.normal(scale=1.0, size=48)).astype("float32")}
    table = np.stack([y["valence"], y["arousal"]], 1)
    model.target_scaling.set_statistics(*target_statistics(table))
    trainer = MultiTaskModel(head, TARGETS)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-2))
    repeats = 150  # one epoch of 150 full-batch steps: per-epoch overhead would dominate otherwise
    trainer.fit(np.tile(np.asarray(features), (repeats, 1)), {k: np.tile(v, repeats) for k, v in y.items()},
                epochs=1, batch_size=48, shuffle=False, verbose=0)
    out = trainer(np.asarray(features))
    from mmder_tf.reports.metrics import ccc

    assert ccc(y["valence"], np.asarray(out["valence"])) > 0.95
    report = trainer.uncertainty_report()
    assert report["arousal"]["log_variance"] > report["valence"]["log_variance"] + 1.0
    assert np.isfinite([r["log_variance"] for r in report.values()]).all()
