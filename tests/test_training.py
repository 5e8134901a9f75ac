"""Training machinery: precision/jit choice, layer-wise lr decay, schedule, mixup/cutmix,
resumable checkpoints, and the feature-cache linear probe writing its head back."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.training import engine as T
from mmder_tf.training import recipes as R
from mmder_tf.models.videomae.backbone import VideoMAEBackbone
from mmder_tf.models.classifier import EmotionClassifier
from mmder_tf.errors import ConfigError


def test_precision_and_jit_resolution():
    assert T.resolve_precision("auto", "tpu") == "mixed_bfloat16"
    assert T.resolve_precision("auto", "gpu") == "mixed_float16"
    assert T.resolve_precision("auto", "cpu") == "float32"
    assert T.resolve_precision("mixed_float16", "cpu") == "mixed_float16"
    assert T.resolve_jit("auto", "gpu") and T.resolve_jit("auto", "tpu") and not T.resolve_jit("auto", "cpu")
    assert T.resolve_jit("on", "cpu") and not T.resolve_jit("off", "gpu")
    with pytest.raises(ConfigError):
        T.resolve_precision("fp8")
    with pytest.raises(ConfigError):
        T.make_strategy("horovod")


def test_layer_ids_follow_block_depth():
    assert R.layer_id("emotion_classifier/videomae_backbone/patch_embed/proj/kernel", 12) == 0
    assert R.layer_id("emotion_classifier/videomae_backbone/block_0/attn/qkv/kernel", 12) == 1
    assert R.layer_id("videomae_backbone/block_11/mlp/fc2/bias", 12) == 12
    assert R.layer_id("emotion_classifier/head/kernel", 12) == 13
    assert R.layer_id("emotion_classifier/fc_norm/gamma", 12) == 13


def test_layer_decay_scales_each_variables_step():
    keras.utils.set_random_seed(0)
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32)
    model = EmotionClassifier(backbone, 3, mode="finetune")
    optimizer = R.make_layer_decay_adamw(1e-2, 0.0, depth=backbone.depth, layer_decay=0.5)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(0, 255, (4, 2, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 0])
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.train_on_batch(x, y)
    # Adam's first step moves every coordinate with a non-zero gradient by lr * scale (sign of the gradient).
    for v in model.trainable_variables:
        step = np.abs(v.numpy() - before[v.path]).max()
        expected = 1e-2 * 0.5 ** (backbone.depth + 1 - R.layer_id(v.path, backbone.depth))
        assert step == pytest.approx(expected, rel=1e-3), v.path
    assert optimizer.lr_scale(model.head.kernel) == 1.0
    assert optimizer.lr_scale(backbone.patch_embed.weights[0]) == pytest.approx(0.5 ** 3)


def test_decoupled_weight_decay_uses_scaled_rate_and_skips_1d():
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="head", kernel_initializer="ones", bias_initializer="ones")(
        keras.layers.Dense(3, name="block_0", kernel_initializer="ones", bias_initializer="ones")(inputs))
    model = keras.Model(inputs, outputs)
    optimizer = R.make_layer_decay_adamw(0.1, 0.5, depth=1, layer_decay=0.5, no_decay_1d=True)
    optimizer.build(model.trainable_variables)
    zero = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply(zero, model.trainable_variables)
    values = {v.path: float(v.numpy().ravel()[0]) for v in model.trainable_variables}
    assert values["block_0/kernel"] == pytest.approx(1 - 0.5 * 0.1 * 0.5)
    assert values["head/kernel"] == pytest.approx(1 - 0.5 * 0.1)
    assert values["block_0/bias"] == 1.0 and values["head/bias"] == 1.0


def test_warmup_cosine_schedule():
    schedule = R.warmup_cosine(1.0, total_steps=100, warmup_steps=10, min_lr=0.0)
    lr = [float(schedule(s)) for s in (0, 4, 9, 10, 55, 100)]
    assert lr[0] == pytest.approx(0.1) and lr[1] == pytest.approx(0.5) and lr[2] == pytest.approx(1.0)
    assert lr[3] == pytest.approx(1.0) and lr[4] == pytest.approx(0.5) and lr[5] == pytest.approx(0.0, abs=1e-6)


def test_recipe_scales_lr_by_batch():
    assert R.recipe_settings("mae-dfer", 64)["lr"] == pytest.approx(1e-3 * 64 / 256)
    paper = R.recipe_settings("paper", 64)
    assert paper["lr"] == 1e-2 and paper["weight_decay"] == 0.05 and paper["mixup"] == 0
    assert R.recipe_settings("paper", 8, lr=3e-4)["lr"] == 3e-4


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mix_batch_targets_match_pixels(mixup, cutmix):
    # Each clip a constant grey level, so the mixed pixels reveal lambda exactly.
    levels = np.array([0, 200, 40, 120], np.float32)
    x = np.broadcast_to(levels[:, None, None, None, None], (4, 2, 16, 16, 3)).astype(np.uint8)
    y = np.array([0, 1, 2, 1])
    for step in range(5):
        mixed, target = R.mix_batch(tf.constant(x), tf.constant(y), [7, step], 3, mixup, cutmix, 0.1)
        mixed, target = mixed.numpy(), target.numpy()
        np.testing.assert_allclose(target.sum(1), 1.0, atol=1e-6)
        # Clip 0 mixes with clip 3 (the batch reversed): its mean pixel gives lambda.
        lam = 1 - mixed[0].mean() / levels[3]
        off = 0.1 / 3
        expected = np.full(3, off)
        expected[0] += lam * (1 - 0.1)
        expected[1] += (1 - lam) * (1 - 0.1)
        np.testing.assert_allclose(target[0], expected, atol=1e-4)
        if cutmix and not mixup:  # cutmix keeps every pixel from exactly one clip
            assert set(np.unique(mixed[0])) <= {0.0, 120.0}
    again, _ = R.mix_batch(tf.constant(x), tf.constant(y), [7, 0], 3, mixup, cutmix, 0.1)
    first, _ = R.mix_batch(tf.constant(x), tf.constant(y), [7, 0], 3, mixup, cutmix, 0.1)
    np.testing.assert_array_equal(again.numpy(), first.numpy())  # stateless: same seed, same batch


def _data(n=24, size=32, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 2, size, size, 3)).astype(np.uint8)
    for c in range(3):  # a class-specific bright stripe: learnable in a few epochs
        x[y == c, :, c * 8:(c + 1) * 8] = 250
    return x, y


def _tiny(mode="finetune"):
    keras.utils.set_random_seed(1)
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32)
    return EmotionClassifier(backbone, 3, mode=mode)


def _epochs(x, y, batch):
    def epoch_dataset(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(batch)
    return epoch_dataset


def test_fit_resumable_resumes_best_and_history(tmp_path):
    x, y = _data(16)
    val = tf.data.Dataset.from_tensor_slices((x[:8], y[:8])).batch(8)

    def run(epochs, out):
        model = _tiny()
        loss, metrics = R.make_loss_and_metrics(False)
        model.compile(optimizer=R.make_optimizer(R.recipe_settings("paper", 8, lr=1e-3), 2, 3, 2), loss=loss,
                      metrics=metrics, jit_compile=False)
        info = T.fit_resumable(model, fold_dir=out, epoch_dataset=_epochs(x, y, 8), steps_per_epoch=2,
                               epochs=epochs, val_data=val, monitor="val_loss", verbose=0, tensorboard=False)
        return model, info

    full, info_full = run(3, tmp_path / "full")
    run(1, tmp_path / "part")  # the "killed" run stopped after epoch 1
    resumed, info = run(3, tmp_path / "part")
    assert info["resumed_from"] == 1
    assert [h["epoch"] for h in info["history"]] == [0, 1, 2]
    losses = [h["val_loss"] for h in info["history"]]
    assert info["best_epoch"] == int(np.argmin(losses))
    assert info["selected_epoch"] == info["best_epoch"] + 1
    np.testing.assert_allclose([h["loss"] for h in info["history"]],
                               [h["loss"] for h in info_full["history"]], rtol=1e-5)
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "part" / "best.weights.h5").exists() and (tmp_path / "part" / "last.weights.h5").exists()
    state = json.loads((tmp_path / "part" / "state.json").read_text())
    assert state["best_epoch"] == info["best_epoch"]


def test_cached_linear_probe_writes_head_into_classifier(tmp_path):
    x, y = _data()
    classifier = _tiny("linear_probe")
    features = np.asarray(classifier.feature_extractor().predict(x, verbose=0))
    direct = np.asarray(classifier.pooled_features(x[:4]))
    np.testing.assert_allclose(features[:4], direct, rtol=1e-5, atol=1e-5)
    head = classifier.head_model()
    loss, metrics = R.make_loss_and_metrics(False)
    head.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.05), loss=loss, metrics=metrics,
                 jit_compile=False)
    frozen = [w.copy() for w in classifier.backbone.get_weights()]

    def feature_epochs(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((features[order], y[order])).batch(8)

    info = T.fit_resumable(head, fold_dir=tmp_path, epoch_dataset=feature_epochs, steps_per_epoch=3, epochs=15,
                           val_data=None, verbose=0, tensorboard=False)
    assert info["epoch_policy"].startswith("last")
    # The trained head IS the classifier's: full-model logits equal head(cached features).
    logits_full = np.asarray(classifier.predict(x, verbose=0))
    logits_head = np.asarray(head.predict(features, verbose=0))
    np.testing.assert_allclose(logits_full, logits_head, rtol=1e-4, atol=1e-4)
    assert np.mean(logits_full.argmax(1) == y) > 0.8  # it learned
    for a, b in zip(frozen, classifier.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_fingerprint_tracks_values():
    a = _tiny()
    fp = T.weights_fingerprint(a.backbone.weights)
    assert fp == T.weights_fingerprint(_tiny().backbone.weights)  # same seed, same weights
    a.backbone.weights[0].assign(a.backbone.weights[0] + 1.0)
    assert T.weights_fingerprint(a.backbone.weights) != fp


def test_predict_keeps_order_and_keys():
    x, y = _data(10)
    model = _tiny()
    keys, labels, logits = T.predict(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(3))
    np.testing.assert_array_equal(labels, y)
    assert keys == [] and logits.shape == (10, 3) and logits.dtype == np.float32
    names = np.array([f"clip{i}" for i in range(10)])
    keyed = T.predict(model, tf.data.Dataset.from_tensor_slices((x, y, names)).batch(4))
    assert keyed.keys == list(names)
    np.testing.assert_allclose(keyed.outputs, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_optimizer_and_schedule_deserialise_by_name():
    optimizer = R.make_layer_decay_adamw(R.warmup_cosine(1e-3, 100, 10), 0.05, depth=2, layer_decay=0.75,
                                         no_decay_1d=True)
    rebuilt = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(rebuilt) is R.LayerDecayAdamW and type(rebuilt.learning_rate) is not float
    assert (rebuilt.depth, rebuilt.layer_decay, rebuilt.no_decay_1d, rebuilt.decoupled_weight_decay) == \
        (2, 0.75, True, 0.05)
    schedule = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(R.warmup_cosine(1.0, 100, 10)))
    assert isinstance(schedule, R.WarmupCosine) and float(schedule(5)) == pytest.approx(0.6)


@pytest.mark.parametrize("strategy", ["cfas", "sfas", "ffls", "fslf", "ofos", "rfas", "video", "audio"])
@pytest.mark.parametrize("mixup, cutmix", [(0.0, 1.0), (0.8, 0.0)])
def test_mixing_gives_each_modality_the_label_share(strategy, mixup, cutmix):
    """The partner clip's share of each modality's pixels equals its share of the label, for every strategy
    (CFAS: V over A in one frame; RFAS: the two clips' frames in different orders)."""
    from mmder_tf.config import FusionConfig
    from mmder_tf.fusion.strategies import clip_identity, fuse, rfas_seed

    config = FusionConfig(strategy=strategy, image_size=32)
    n, (h, w) = config.frames_per_modality, config.modality_size
    masks = []
    for clip in range(2):  # modality of every pixel of the fused input: 1 video, 2 audio
        video, audio = np.full((n, h, w, 3), 1, np.uint8), np.full((n, h, w, 3), 2, np.uint8)
        video[0, 0, 0, 0] = 10 + clip  # two clips, two contents: two RFAS orders
        seed = rfas_seed(config, clip_identity(video, audio)) if strategy == "rfas" else None
        masks.append(fuse(video, audio, strategy, seed=seed).numpy())
    if strategy == "rfas":
        assert not np.array_equal(masks[0][..., 1], masks[1][..., 1])
    # mixing clip a (all 0) with b (all 1) gives the weight of b at every pixel
    x = np.stack([np.zeros_like(masks[0]), np.ones_like(masks[1])])
    for step in range(6):
        mixed, target = R.mix_batch(tf.constant(x), tf.constant([0, 1]), [3, step], 2, mixup, cutmix,
                                    strategy=strategy)
        weight_b = mixed.numpy()[0]  # row 0 = a mixed with the reversed batch's b
        share_b = float(target.numpy()[0, 1])
        for modality in (1, 2):
            where = masks[1][..., 1] == modality if strategy != "sfas" else np.ones(masks[1].shape[:-1], bool)
            where = where & (masks[1][..., 1] > 0)
            if not where.any():
                continue  # single-modality strategies
            assert weight_b[..., 0][where].mean() == pytest.approx(share_b, abs=1e-6), (modality, step)
