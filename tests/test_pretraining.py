"""VideoMAE pre-training model proven against transformers' VideoMAEForPreTraining (an independent PyTorch reference).

Random HF pre-training models of two different shapes are built offline; ours load
them (HF folder, and an MCG-NJU-layout torch file renamed here independently of
convert.py) and must give the same predictions and loss for the same mask.
"""
import numpy as np
import pytest

import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining  # noqa: E402

import mmder_tf  # noqa: E402
from mmder_tf import VideoMAEBackbone  # noqa: E402
from mmder_tf.errors import CheckpointError, ConfigError  # noqa: E402
from mmder_tf.models.convert import main as convert_main, save_videomae_pretraining, videomae_pretraining_state  # noqa: E402
from mmder_tf.models.videomae.pretraining import (  # noqa: E402
    MAEDecoder,
    VideoMAEPretrainer,
    pixel_targets,
    random_tube_mask,
    tube_mask,
)
from mmder_tf.models.videomae.presets import DECODER_PRESETS  # noqa: E402
from conftest import golden_dir  # noqa: E402
from test_convert import to_videomae_keys  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
PRED_TOL, LOSS_RTOL = 1e-4, 1e-5

CONFIGS = {
    # encoder 64/2/2 with its final norm, decoder 48 wide / 2 deep / 3 heads, 4 x 32 x 32, patch 16, ratio 0.75
    "a": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, num_frames=4, image_size=32,
              decoder_hidden_size=48, decoder_num_hidden_layers=2, decoder_num_attention_heads=3, decoder_intermediate_size=96,
              use_mean_pooling=False, layer_norm_eps=1e-6),
    # encoder 96/3/3 without final norm, decoder 64 / 1 / 2, 8 x 40 x 40 with 8 px patches, HF's default eps
    "b": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=3, intermediate_size=384, num_frames=8, image_size=40,
              patch_size=8, decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
              decoder_intermediate_size=256, use_mean_pooling=True),
}
RATIOS = {"a": 0.75, "b": 0.9}

def to_mcg_nju(hf_state):
    """HF VideoMAEForPreTraining tensors -> MCG-NJU pre-training names (test_convert's independent renaming, not convert.py)."""
    encoder = {k: v for k, v in hf_state.items() if k.startswith("videomae.")}
    # Decoder layers are VideoMAE layers: rename them as encoder layers, then prefix with decoder.
    decoder = {k.replace("decoder.decoder_layers.", "encoder.layer."): v for k, v in hf_state.items() if k.startswith("decoder.decoder_layers.")}
    out = {**to_videomae_keys(encoder, prefix="encoder."), **to_videomae_keys(decoder, prefix="decoder.")}
    for key, value in hf_state.items():
        if key.startswith(("decoder.norm.", "decoder.head.")) or key in ("encoder_to_decoder.weight", "mask_token"):
            out[key] = value
        else:
            assert key.startswith(("videomae.", "decoder.decoder_layers.")), key
    return out


def hf_pixels(x):
    return torch.from_numpy(((x.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)).permute(0, 1, 4, 2, 3)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def reference(request, tmp_path_factory):
    name, cfg = request.param, CONFIGS[request.param]
    model = VideoMAEForPreTraining(VideoMAEConfig(**cfg))
    gen = torch.Generator().manual_seed(len(cfg) + cfg["hidden_size"])
    with torch.no_grad():  # HF zero-initialises biases and mask_token: perturb every tensor so each one matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.eval()
    path = tmp_path_factory.mktemp(f"hf_{name}")
    model.save_pretrained(path)
    patch = cfg.get("patch_size", 16)
    grid = (cfg["num_frames"] // 2, cfg["image_size"] // patch, cfg["image_size"] // patch)
    x = np.random.default_rng(5).integers(0, 256, (2, cfg["num_frames"], cfg["image_size"], cfg["image_size"], 3)).astype("uint8")
    mask = np.asarray(random_tube_mask(2, grid, RATIOS[name], seed=11))
    with torch.no_grad():
        out = model(hf_pixels(x), bool_masked_pos=torch.from_numpy(mask.copy()))
    return dict(name=name, cfg=cfg, path=path, model=model, x=x, mask=mask, logits=out.logits.numpy(), loss=float(out.loss))


def assert_matches(ours, ref):
    predictions, loss = ours.reconstruct(ref["x"], ref["mask"])
    predictions = np.asarray(predictions)
    assert predictions.shape == ref["logits"].shape
    assert np.abs(predictions - ref["logits"]).max() <= PRED_TOL
    assert abs(float(loss) - ref["loss"]) <= LOSS_RTOL * abs(ref["loss"])


def test_hf_folder_parity(reference):
    ours = mmder_tf.load_pretrained(reference["path"], pretraining=True)
    cfg = reference["cfg"]
    assert isinstance(ours, VideoMAEPretrainer)
    b, d = ours.backbone, ours.decoder
    assert (b.depth, b.hidden_dim, b.num_heads, b.num_frames, b.image_size, b.patch_size) == (
        cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_frames"], cfg["image_size"],
        cfg.get("patch_size", 16))
    assert (d.depth, d.hidden_dim, d.num_heads, d.norm_epsilon) == (
        cfg["decoder_num_hidden_layers"], cfg["decoder_hidden_size"], cfg["decoder_num_attention_heads"], 1e-5)
    assert b.use_final_norm == (not cfg["use_mean_pooling"])
    assert_matches(ours, reference)


def test_mcg_nju_checkpoint_parity_and_export_round_trip(reference, tmp_path):
    state = to_mcg_nju(reference["model"].state_dict())
    # MCG-NJU's torch.save layout: the state dict under "model" (and eps 1e-6 everywhere: set to match HF's here).
    path = tmp_path / "pretrain.pth"
    torch.save({"model": state, "epoch": 3}, path)
    # Without a config the sizes and the non-standard head counts are arguments; HF's eps are set to match it.
    cfg = reference["cfg"]
    eps = cfg.get("layer_norm_eps", 1e-12)
    ours = mmder_tf.load_pretrained(
        path, cfg["num_frames"], cfg["image_size"], pretraining=True, num_heads=cfg["num_attention_heads"], layer_norm_epsilon=eps,
        decoder_overrides=dict(num_heads=cfg["decoder_num_attention_heads"], layer_norm_epsilon=eps, norm_epsilon=1e-5))
    assert ours.decoder.norm_epsilon == 1e-5
    assert_matches(ours, reference)

    exported = videomae_pretraining_state(ours)
    assert sorted(exported) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
    again = tmp_path / "exported.pth"
    save_videomae_pretraining(ours, again)
    loaded = torch.load(again, weights_only=True)["model"]
    assert sorted(loaded) == sorted(state) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    back = mmder_tf.load_pretrained(again, cfg["num_frames"], cfg["image_size"], pretraining=True, num_heads=cfg["num_attention_heads"],
                                    decoder_overrides=dict(num_heads=cfg["decoder_num_attention_heads"]))
    for a, b in zip(back.weights, ours.weights):
        if "seed" not in a.path:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    # Without pretraining=True the same file gives its encoder, as before.
    assert isinstance(mmder_tf.load_pretrained(again), VideoMAEBackbone)


def test_strict_loading_names_every_problem(reference, tmp_path):
    state = to_mcg_nju(reference["model"].state_dict())
    broken = dict(state)
    del broken["decoder.blocks.0.mlp.fc2.bias"]
    broken["decoder.blocks.0.attn.proj.weight"] = broken["decoder.blocks.0.attn.proj.weight"][:, :8]
    broken["decoder.extra"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"module": broken}, path)
    cfg = reference["cfg"]
    with pytest.raises(CheckpointError) as err:
        mmder_tf.load_pretrained(path, cfg["num_frames"], cfg["image_size"], pretraining=True, num_heads=cfg["num_attention_heads"],
                                 decoder_overrides=dict(num_heads=cfg["decoder_num_attention_heads"]))
    text = str(err.value)
    assert "nothing was loaded" in text
    assert "missing (1): decoder.blocks.0.mlp.fc2.bias" in text
    assert "unexpected (1): decoder.extra (3,)" in text
    assert "wrong shape (1): decoder.blocks.0.attn.proj.weight" in text
    encoder_only = {k: v for k, v in state.items() if k.startswith("encoder.")}
    torch.save({"model": encoder_only}, tmp_path / "encoder.pth")
    with pytest.raises(CheckpointError, match="not a pre-training checkpoint.*encoder_to_decoder.weight.*from_encoder"):
        mmder_tf.load_pretrained(tmp_path / "encoder.pth", pretraining=True)
    # ... which still continues pre-training, from its encoder with a fresh decoder.
    encoder = mmder_tf.load_pretrained(tmp_path / "encoder.pth", cfg["num_frames"], cfg["image_size"], num_heads=cfg["num_attention_heads"])
    fresh = VideoMAEPretrainer.from_encoder(encoder, "tiny")
    assert fresh.backbone is encoder and fresh.decoder.hidden_dim == DECODER_PRESETS["tiny"]["hidden_dim"]
    assert fresh.decoder.output_dim == reference["logits"].shape[-1]


def test_normalised_target_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 4, 32, 48, 3)).astype("uint8")

    def reference_target(frames, diff):
        v = frames.astype(np.float64) / 255.0
        out = []
        for t in range(0, 4, 2):
            for r in range(0, 32, 16):
                for c in range(0, 48, 16):
                    tube = v[0, t:t + 2, r:r + 16, c:c + 16].reshape(2, -1, 3)  # frame x (row, col) x channel
                    flat = tube.reshape(-1, 3)
                    tube = (tube - flat.mean(0)) / (flat.std(0, ddof=1) + 1e-6)
                    if diff:  # upstream: normalise the tubelet first, then the second frame minus the first
                        tube[1] = tube[1] - tube[0]
                    out.append(tube.reshape(-1))  # channel fastest
        return np.stack(out)[None]

    for diff in (False, True):
        got = np.asarray(pixel_targets(x, 2, 16, frame_difference=diff))
        assert got.shape == (1, 2 * 2 * 3, 2 * 16 * 16 * 3)
        np.testing.assert_allclose(got, reference_target(x, diff), atol=2e-4)
    raw = np.asarray(pixel_targets(x, 2, 16, normalize=False))
    np.testing.assert_allclose(raw[0, 0, :3], x[0, 0, 0, 0] / 255.0, rtol=1e-6)


def test_frame_difference_target_matches_upstream_golden():
    """MAE-DFER's target as upstream computes it (golden README addendum): normalise, then difference."""
    golden = np.load(golden_dir() / "mae_dfer" / "frame_diff_target.npz")
    got = np.asarray(pixel_targets(golden["pixels_uint8"], 2, 16, normalize=True, frame_difference=True))
    assert got.shape == golden["target"].shape
    np.testing.assert_allclose(got, golden["target"], atol=1e-4)
    with pytest.raises(ConfigError, match="even tubelet size"):
        pixel_targets(golden["pixels_uint8"][:, :3], 3, 16, frame_difference=True)


def test_golden_data_has_an_environment_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MMDER_GOLDEN", str(tmp_path))
    assert golden_dir() == tmp_path  # as MMDER_REALCLIPS for the clips: no fixed ../shared/golden


def test_tube_mask_is_seeded_and_repeats_over_time():
    a = np.asarray(random_tube_mask(3, (4, 14, 14), 0.9, seed=7))
    b = np.asarray(random_tube_mask(3, (4, 14, 14), 0.9, seed=7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 4 * 196) and (a.sum(1) == 4 * 176).all()  # int(0.9 * 196) = 176 per frame, as VideoMAE
    frames = a.reshape(3, 4, 196)
    assert (frames == frames[:, :1]).all() and not (frames[0] == frames[1]).all()
    noise = np.array([[0.5, 0.1, 0.9, 0.3]], np.float32)
    np.testing.assert_array_equal(np.asarray(tube_mask(noise, 2, 0.5)), [[False, True, False, True] * 2])
    with pytest.raises(ConfigError, match="at least one token must be masked and one visible"):
        tube_mask(noise, 2, 0.1)


@pytest.fixture(scope="module")
def tiny():
    return VideoMAEPretrainer.from_preset("tiny", num_frames=4, image_size=32, mask_ratio=0.75, seed=0)


def test_bad_masks_are_clear_errors(tiny):
    x = np.zeros((2, 4, 32, 32, 3), "uint8")
    good = np.asarray(random_tube_mask(2, tiny.token_grid, 0.75, seed=1))
    with pytest.raises(ConfigError, match=r"mask must be \[2, 8\].*got shape \(2, 7\)"):
        tiny.reconstruct(x, good[:, :7])
    with pytest.raises(ConfigError, match=r"mask must be \[2, 8\]"):
        tiny.reconstruct(x, good[:1])
    with pytest.raises(ConfigError, match="all visible"):
        tiny.reconstruct(x, np.zeros((2, 8), bool))
    with pytest.raises(ConfigError, match="all masked"):
        tiny.reconstruct(x, np.ones((2, 8), bool))
    uneven = good.copy()
    uneven[0] = [True] * 5 + [False] * 3
    with pytest.raises(ConfigError, match="same number of tokens"):
        tiny.reconstruct(x, uneven)
    with pytest.raises(ConfigError, match="boolean"):
        tiny.reconstruct(x, good.astype(int) * 2)
    with pytest.raises(ConfigError, match="needs a mask"):
        tiny.reconstruct(x, None)


def test_training_hook_traced_step_and_encoder_export(tiny, tmp_path):
    import keras
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).integers(0, 256, (2, 4, 32, 32, 3)).astype("float32"))
    noise = tf.random.stateless_uniform((2, 4), seed=(1, 2))
    opt = keras.optimizers.AdamW(1e-3)

    def step(pixels, noise):  # eager: tracing a whole train step costs ~30 s on the CI machine; i13b's loop traces it
        with tf.GradientTape() as tape:
            loss = tiny.pretraining_loss(pixels, noise=noise)
        grads = tape.gradient(loss, tiny.trainable_variables)
        assert all(g is not None for g in grads)  # every weight (encoder, decoder, mask token) gets a gradient
        opt.apply_gradients(zip(grads, tiny.trainable_variables))
        return loss

    mask = tube_mask(noise, 2, 0.75)
    before = float(tiny.reconstruct(x, mask)[1])
    assert float(step(x, noise)) == pytest.approx(before, rel=1e-5)
    step(x, noise)
    assert float(tiny.reconstruct(x, mask)[1]) < before

    @tf.function
    def traced(pixels, mask, noise):
        return (tiny.pretraining_loss(pixels, mask, num_masked=tiny.num_masked, training=False),
                tiny.pretraining_loss(pixels, noise=noise, training=False))

    after = float(tiny.reconstruct(x, mask)[1])
    with_mask, with_noise = traced(x, mask, noise)
    assert float(with_mask) == pytest.approx(after, rel=1e-6) and float(with_noise) == pytest.approx(after, rel=1e-6)
    with pytest.raises(ConfigError, match="num_masked"):
        tf.function(lambda p, m: tiny.pretraining_loss(p, m), autograph=False)(x, mask)

    # The encoder goes to fine-tuning as it is; the whole model round-trips through a preset.
    tiny.backbone.save_to_preset(tmp_path / "encoder")
    classifier = mmder_tf.load_pretrained(tmp_path / "encoder", classifier=True, num_classes=7, allow_missing_head=True)
    for a, b in zip(classifier.backbone.weights, tiny.backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tiny.save_to_preset(tmp_path / "mae")
    again = mmder_tf.load_pretrained(tmp_path / "mae", pretraining=True)
    assert isinstance(again, VideoMAEPretrainer) and again.mask_ratio == 0.75
    np.testing.assert_allclose(np.asarray(again.reconstruct(x, mask)[0]), np.asarray(tiny.reconstruct(x, mask)[0]), atol=1e-6)
    same = VideoMAEPretrainer.from_preset(tmp_path / "mae")
    np.testing.assert_array_equal(np.asarray(same.reconstruct(x, mask)[0]), np.asarray(again.reconstruct(x, mask)[0]))
    assert isinstance(mmder_tf.load_pretrained(tmp_path / "mae"), VideoMAEBackbone)
    assert isinstance(VideoMAEBackbone.from_preset(tmp_path / "mae"), VideoMAEBackbone)
    # The command line exports a pre-training run to the MCG-NJU layout, which loads back to the same model.
    assert convert_main([str(tmp_path / "mae"), str(tmp_path / "mae.pth"), "--pretraining"]) == 0
    assert "encoder_to_decoder.weight" in torch.load(tmp_path / "mae.pth", weights_only=True)["model"]
    # It records what the tensors cannot tell (heads, input size): nothing to pass to load it back.
    back = mmder_tf.load_pretrained(tmp_path / "mae.pth", pretraining=True)
    def architecture(model):  # the config but its auto-numbered layer name
        return {k: v for k, v in model.get_config().items() if k != "name"}

    assert architecture(back.backbone) == architecture(tiny.backbone) and back.decoder.num_heads == tiny.decoder.num_heads
    np.testing.assert_allclose(np.asarray(back.reconstruct(x, mask)[0]), np.asarray(tiny.reconstruct(x, mask)[0]), atol=1e-6)
    assert convert_main([str(tmp_path / "mae"), str(tmp_path / "mae.npz"), "--pretraining"]) == 1
    with pytest.raises(CheckpointError, match="no decoder"):
        mmder_tf.load_pretrained(tmp_path / "encoder", pretraining=True)


def test_presets_match_videomae_and_parameter_counts():
    assert {k: (v["hidden_dim"], v["num_heads"], v["depth"]) for k, v in DECODER_PRESETS.items() if k != "tiny"} == {
        "small": (192, 3, 4), "base": (384, 6, 4), "large": (512, 8, 12), "huge": (640, 8, 12)}
    decoder = MAEDecoder.from_preset("base", 1536)
    decoder.build()
    # 4 blocks of 384 (qkv 3*384^2 + q/v bias + proj + 2 norms + MLP 2*384*1536 + biases), norm, head 384 -> 1536, mask token
    block = 3 * 384 * 384 + 2 * 384 + 384 * 384 + 384 + 4 * 384 + 384 * 1536 + 1536 + 1536 * 384 + 384
    assert decoder.count_params() == 4 * block + 2 * 384 + 384 * 1536 + 1536 + 384


def test_mixed_precision_reaches_every_layer_and_survives_saving(tmp_path):
    model = VideoMAEPretrainer.from_preset("tiny", num_frames=4, image_size=32, dtype="mixed_bfloat16", mask_ratio=0.5)
    layers = [model.normalize, model.encoder_to_decoder, model.backbone.blocks[0], model.decoder.blocks[0], model.decoder.norm]
    assert [layer.compute_dtype for layer in layers] == ["bfloat16"] * 5
    x = np.random.default_rng(2).integers(0, 256, (1, 4, 32, 32, 3)).astype("uint8")
    mask = random_tube_mask(1, model.token_grid, 0.5, seed=3)
    predictions, loss = model.reconstruct(x, mask)
    assert predictions.dtype == "float32" and loss.dtype == "float32" and np.isfinite(float(loss))
    model.save_to_preset(tmp_path / "mixed")
    again = mmder_tf.load_pretrained(tmp_path / "mixed", pretraining=True)
    assert again.backbone.blocks[0].compute_dtype == again.decoder.blocks[0].compute_dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(again.reconstruct(x, mask)[0]), np.asarray(predictions))
    single = mmder_tf.load_pretrained(tmp_path / "mixed", pretraining=True, dtype="float32")
    assert single.backbone.blocks[0].compute_dtype == single.decoder.blocks[0].compute_dtype == "float32"


def test_decoder_places_encoder_tokens_by_id_so_other_encoders_can_reorder_them(tiny):
    """The plug-in contract for other encoders (LGI-Former keeps its visible tokens region-major)."""

    class Reordering(VideoMAEPretrainer):
        def encode_visible(self, pixels, mask, visible_ids, training=None):
            tokens, ids = super().encode_visible(pixels, mask, visible_ids, training)
            return tokens[:, ::-1], ids[:, ::-1]

    reordering = Reordering(tiny.backbone, tiny.decoder, mask_ratio=tiny.mask_ratio)
    reordering.encoder_to_decoder.set_weights(tiny.encoder_to_decoder.get_weights())
    x = np.random.default_rng(4).integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8")
    mask = random_tube_mask(2, tiny.token_grid, 0.5, seed=5)
    expected, loss = tiny.reconstruct(x, mask)
    got, got_loss = reordering.reconstruct(x, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)
    assert float(got_loss) == pytest.approx(float(loss), rel=1e-5)
