"""MAE-DFER's LGI-Former and HiCMAE's visual encoder against the upstream PyTorch code's own outputs.

../shared/golden/{mae_dfer,hicmae} (or $MMDER_GOLDEN/...) hold random-weight checkpoints in the upstream
layouts with every intermediate tensor the upstream code computed from them
(see their README.md). Bar: relative max error (max|ours - theirs| / max|theirs|)
<= 1e-5 in float32; the golden READMEs show that one wrong fact (LayerNorm eps,
GELU form, sine-cosine layout, region partition) costs >= 1.5e-5.
"""
import argparse
import json
import os

import keras
import numpy as np
import pytest

import torch
from conftest import golden_dir

from mmder_tf import EmotionClassifier, LGIFormerBackbone, convert_checkpoint, load_pretrained  # noqa: E402
from mmder_tf.errors import CheckpointError, ConfigError  # noqa: E402
from mmder_tf.models.convert import check_tensors, main, model_targets, read_checkpoint  # noqa: E402
from mmder_tf.models.layers import IMAGENET_MEAN, IMAGENET_STD, sincos_position_table  # noqa: E402
from mmder_tf.models.videomae.backbone import VideoMAEBackbone  # noqa: E402

GOLDEN = golden_dir()
MAE_DFER, HICMAE = GOLDEN / "mae_dfer", GOLDEN / "hicmae"
TOL = 1e-5
# Geometry of each golden folder (README table); heads are not recoverable from tensor shapes at these widths.
FT = {
    "ft_small_a": dict(num_frames=16, image_size=96, region_size=(2, 3, 6), num_heads=4),
    "ft_small_b": dict(num_frames=8, image_size=(64, 64), region_size=(2, 2, 2), num_heads=3),
}
PRETRAIN = dict(num_frames=16, image_size=96, region_size=(2, 3, 6), num_heads=4)


def rel(ours, theirs):
    theirs = np.asarray(theirs)
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def channels_last(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 4, 1))  # [B, 3, T, H, W] -> [B, T, H, W, 3]


def to_pixels(x):
    """The golden normalised input back to 0..255 pixels (what EmotionClassifier takes)."""
    return (channels_last(x) * np.array(IMAGENET_STD, np.float32) + np.array(IMAGENET_MEAN, np.float32)) * 255.0


@pytest.fixture(scope="module", params=sorted(FT))
def finetuned(request):
    folder = MAE_DFER / request.param
    return folder, np.load(folder / "io.npz"), FT[request.param]


def test_finetuned_every_tensor_matches_upstream(finetuned):
    folder, io, geometry = finetuned
    clf = load_pretrained(folder / "ckpt.pth", classifier=True, **geometry)
    assert isinstance(clf, EmotionClassifier) and isinstance(clf.backbone, LGIFormerBackbone)
    backbone = clf.backbone
    x = channels_last(io["x"])

    table = sincos_position_table(backbone.num_tokens, backbone.hidden_dim)
    assert rel(table, io["pos_embed"][0]) <= 1e-6
    embedded = np.asarray(backbone.patch_embed(x))
    assert rel(embedded - table, io["patch_embed_out"]) <= TOL
    tokens = backbone.region_tokens(embedded)
    assert rel(tokens, io["block0_in"]) <= TOL
    for k, block in enumerate(backbone.blocks):
        tokens = block(tokens)
        assert rel(tokens, io[f"block{k}_out"]) <= TOL, f"block {k}"
    assert rel(tokens, io["tokens_final"]) <= TOL

    # The proof bar: pixels 0..255 in, upstream logits out (and the pooled feature on the way).
    pooled, logits = keras.Model(clf.input, [clf.feature_extractor().output, clf.output])(to_pixels(io["x"]))
    assert rel(pooled, io["pooled_pre_fc_norm"]) <= TOL
    assert rel(clf.fc_norm(pooled), io["features"]) <= TOL
    assert rel(logits, io["logits"]) <= TOL

    # The other pooling choices, same weights (upstream's 'org' is our "local").
    for pooling, upstream in (("local", "org"), ("all", "all")):
        assert EmotionClassifier(backbone, clf.num_classes, pooling=pooling).pool.mode == pooling
        features = clf.fc_norm(backbone.pooling_layer(pooling)(tokens))
        assert rel(features, io[f"features_{upstream}"]) <= TOL
        assert rel(clf.head(features), io[f"logits_{upstream}"]) <= TOL


def test_pretraining_encoder_with_and_without_mask():
    io = np.load(MAE_DFER / "pretrain_small" / "io.npz")
    backbone = load_pretrained(MAE_DFER / "pretrain_small" / "ckpt.pth", **PRETRAIN)
    assert isinstance(backbone, LGIFormerBackbone) and backbone.final_norm is not None
    x = channels_last(io["x"])
    table = sincos_position_table(backbone.num_tokens, backbone.hidden_dim)
    assert rel(table, io["pos_embed_encoder"][0]) <= 1e-6
    for name in ("all_visible", "part_window"):
        masked = io[f"mask_{name}"]
        visible = int((~masked[0]).sum()) // backbone.num_regions
        block0 = backbone.region_tokens(backbone.patch_embed(x), masked=masked, visible_per_region=visible)
        assert rel(block0, io[f"enc_block0_in_{name}"]) <= TOL, name
        tokens = np.asarray(backbone.encode_visible(x, masked))
        assert rel(tokens, io[f"enc_tokens_final_{name}"]) <= TOL, name
        # Upstream's encoder output: region tokens dropped, local tokens region-major, then the final norm.
        out = np.asarray(backbone.final_norm(tokens[:, :, 1:])).reshape(len(x), -1, backbone.hidden_dim)
        assert rel(out, io[f"enc_out_{name}"]) <= TOL, name
    # All visible: the functional model is the same computation.
    assert rel(np.asarray(backbone(x))[:, :, 1:].reshape(len(x), -1, backbone.hidden_dim), io["enc_out_all_visible"]) <= TOL


def test_uneven_mask_is_refused():
    backbone = LGIFormerBackbone.from_preset("mae-dfer-tiny", num_frames=4, image_size=64)
    masked = np.zeros((1, backbone.num_tokens), bool)
    masked[0, 0] = True
    with pytest.raises(ConfigError, match="same number of visible tokens"):
        backbone.encode_visible(np.zeros((1, 4, 64, 64, 3), "float32"), masked)


def test_pretraining_checkpoint_reports_the_decoder_and_feeds_a_classifier(tmp_path, capsys):
    path, dst = MAE_DFER / "pretrain_small" / "ckpt.pth", tmp_path / "clf"
    argv = [str(path), str(dst), "--num-classes", "7", "--allow-missing-head", "--num-frames", "16", "--image-size", "96",
            "--region-size", "2,3,6", "--num-heads", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "EmotionClassifier (mae_dfer_pretrain layout" in out
    assert "fresh: fc_norm.weight, fc_norm.bias, head.weight, head.bias" in out
    assert "dropped: pre-training decoder" in out
    # As MAE-DFER fine-tunes: encoder weights, fresh fc_norm and head, the pre-training final norm left out.
    assert "dropped: pre-training encoder norm (unused by fine-tuning) (2 tensors)" in out
    clf = load_pretrained(dst, classifier=True)
    assert clf.backbone.final_norm is None and clf.num_classes == 7
    # The fine-tuning model's last block equals the pre-training encoder's (upstream checked the same).
    io = np.load(MAE_DFER / "pretrain_small" / "io.npz")
    assert rel(clf.backbone(channels_last(io["x"])), io["enc_tokens_final_all_visible"]) <= TOL


def test_preset_round_trip_and_geometry_errors(tmp_path):
    folder, geometry = MAE_DFER / "ft_small_b", FT["ft_small_b"]
    io = np.load(folder / "io.npz")
    report = convert_checkpoint(folder / "ckpt.pth", tmp_path / "b", **geometry)
    assert report["model"] == "EmotionClassifier" and report["layout"] == "mae_dfer" and report["fresh"] == []
    clf = load_pretrained(tmp_path / "b", classifier=True)
    assert clf.backbone.region_size == (2, 2, 2) and clf.pooling == "region"
    assert rel(clf(to_pixels(io["x"])), io["logits"]) <= TOL
    np.testing.assert_array_equal(np.asarray(EmotionClassifier.from_preset(tmp_path / "b")(to_pixels(io["x"]))),
                                  np.asarray(clf(to_pixels(io["x"]))))
    # The released geometry is the default: 8 frames at 64 px do not fit (2, 5, 10) regions.
    with pytest.raises(ConfigError, match="does not divide the token grid"):
        load_pretrained(folder / "ckpt.pth", num_frames=8, image_size=64)
    # A geometry that divides but makes another number of regions than the checkpoint has.
    with pytest.raises(CheckpointError, match="8 region tokens.*makes 16 regions"):
        load_pretrained(folder / "ckpt.pth", num_frames=16, image_size=64, region_size=(2, 2, 2), num_heads=3)
    with pytest.raises(ConfigError, match="region_size applies to MAE-DFER"):
        load_pretrained(HICMAE / "ft_small" / "ckpt.pth", image_size=64, region_size=(2, 2, 2))


def test_head_count_is_read_from_args_or_refused_never_guessed(tmp_path, capsys):
    from mmder_tf.models.convert import resolve_heads

    # The golden checkpoints carry no args: 96 wide (3 heads) and a 48-wide decoder (3 heads) are no standard widths.
    ckpt = MAE_DFER / "ft_small_b" / "ckpt.pth"
    geometry = {k: v for k, v in FT["ft_small_b"].items() if k != "num_heads"}
    with pytest.raises(CheckpointError, match="96-wide encoder cannot be read.*num_heads="):
        load_pretrained(ckpt, classifier=True, **geometry)
    assert main([str(ckpt), str(tmp_path / "guess"), "--num-frames", "8", "--image-size", "64", "--region-size", "2,2,2"]) == 1
    assert "--num-heads" in capsys.readouterr().err and not (tmp_path / "guess").exists()
    with pytest.raises(CheckpointError, match="48-wide decoder cannot be read.*num_heads"):
        load_pretrained(MAE_DFER / "pretrain_small" / "ckpt.pth", pretraining=True, **PRETRAIN)

    # Saved args (upstream's names) give heads and geometry: nothing to pass.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    path = tmp_path / "with_args.pth"
    args = argparse.Namespace(model="vit_custom", num_frames=8, input_size=64, lg_region_size=[2, 2, 2], num_heads=3)
    torch.save({"model": state, "epoch": 9, "args": args}, path)
    clf = load_pretrained(path, classifier=True)
    assert (clf.backbone.num_heads, clf.backbone.num_frames, clf.backbone.image_size) == (3, 8, 64)
    assert rel(clf(to_pixels(np.load(MAE_DFER / "ft_small_b" / "io.npz")["x"])), np.load(MAE_DFER / "ft_small_b" / "io.npz")["logits"]) <= TOL
    # Upstream's args name only the model: its size fixes the heads when its width is the tensors'.
    assert resolve_heads(512, args={"model": "vit_base_dim512_no_depth_patch16_160"}) == 8
    assert resolve_heads(384, args={"model": "pretrain_videomae_base_dim512_no_depth_patch16_160"}, decoder=True) == 6
    assert resolve_heads(1024, args={"model": "vit_large_patch16_224"}) == 16
    with pytest.raises(CheckpointError, match="num_heads"):
        resolve_heads(96, args={"model": "vit_small_patch16_224"})  # the name says 384 wide: no evidence for 96


def test_pretraining_pth_round_trip_records_heads_and_geometry(tmp_path):
    model = load_pretrained(MAE_DFER / "pretrain_small" / "ckpt.pth", pretraining=True, decoder_overrides={"num_heads": 3},
                            **PRETRAIN)
    model.save_to_preset(tmp_path / "mae")
    assert main([str(tmp_path / "mae"), str(tmp_path / "mae.pth"), "--pretraining"]) == 0
    back = load_pretrained(tmp_path / "mae.pth", pretraining=True)  # 4 heads, 96 px, (2, 3, 6) regions: all recorded

    def config(layer):
        return {k: v for k, v in layer.get_config().items() if k != "name"}

    assert config(back.backbone) == config(model.backbone) and config(back.decoder) == config(model.decoder)
    for a, b in zip(back.weights, model.weights):
        if "seed" not in a.path:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert main([str(tmp_path / "mae.pth"), str(tmp_path / "again"), "--pretraining"]) == 0
    assert config(load_pretrained(tmp_path / "again", pretraining=True).backbone) == config(model.backbone)


def test_incomplete_mae_dfer_checkpoint_names_every_problem(tmp_path):
    state = torch.load(MAE_DFER / "ft_small_b" / "ckpt.pth", map_location="cpu", weights_only=True)["model"]
    del state["blocks.1.third_attn_norm1.weight"]
    state["blocks.0.second_attn.kv.weight"] = torch.zeros(96, 96)
    state["blocks.0.gamma_1"] = torch.zeros(96)
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path, classifier=True, **FT["ft_small_b"])
    message = str(err.value)
    assert "nothing was loaded" in message
    assert "missing (1): blocks.1.third_attn_norm1.weight" in message
    assert "unexpected (1): blocks.0.gamma_1" in message
    assert "wrong shape (1): blocks.0.second_attn.kv.weight" in message


def test_released_checkpoint_layout_loads_without_executing_pickles(tmp_path):
    """Upstream saves model, optimizer, epoch, scaler and its argparse.Namespace: readable with weights_only."""
    state = torch.load(MAE_DFER / "ft_small_b" / "ckpt.pth", map_location="cpu", weights_only=True)["model"]
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    args = argparse.Namespace(model="vit_base_dim512_no_depth_patch16_160", lg_region_size=[2, 2, 2], input_size=64,
                              window_size=(4, 4, 4), mean=(0.485, 0.456, 0.406), opt_betas=None, lr=1e-3, save_ckpt=True)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0}
    path = tmp_path / "released.pth"
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "epoch": 99, "scaler": scaler, "args": args}, path)
    assert sorted(read_checkpoint(path).state) == sorted(state)

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.pth"
    torch.save({"model": state, "args": Payload()}, evil)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        read_checkpoint(evil)
    assert not marker.exists()


# ---------------------------------------------------------------- HiCMAE's visual encoder


@pytest.mark.parametrize("folder", ["ft_small", "pretrain_small"])
def test_hicmae_visual_encoder_matches_upstream(folder, tmp_path):
    io = np.load(HICMAE / "ft_small" / "io.npz")  # both folders share the input and the visual encoder geometry
    report = convert_checkpoint(HICMAE / folder / "ckpt.pth", tmp_path / "v", image_size=64, num_heads=4,
                                backbone_only=True)
    assert report["layout"] == "hicmae" and report["model"] == "VideoMAEBackbone"
    dropped = report["dropped"]
    assert dropped["audio encoder"] > 0 and dropped["audio-visual fusion encoder"] > 0
    if folder == "ft_small":
        assert dropped["audio-visual classifier (pooling weights, fc_norm, head)"] == 6
        reference = {f"block_{k}": io[f"video_block{k}_out"] for k in range(3)}
        final = io["video_tokens_final"]
    else:
        assert dropped["pre-training decoder"] > 0
        pre = np.load(HICMAE / "pretrain_small" / "io.npz")
        reference = {f"block_{k}": pre[f"enc_block{k}_out_all_visible"] for k in range(3)}
        final = pre["enc_out_all_visible"]
    backbone = load_pretrained(tmp_path / "v")
    assert isinstance(backbone, VideoMAEBackbone) and (backbone.hidden_dim, backbone.depth, backbone.num_heads) == (64, 3, 4)
    x = channels_last(io["x"])
    assert rel(backbone(x), final) <= TOL
    outputs = [backbone.get_layer(name).output for name in reference]
    for (name, expected), got in zip(reference.items(), keras.Model(backbone.input, outputs)(x)):
        assert rel(got, expected) <= TOL, name
    if folder == "ft_small":
        # Every block's normed output, what HiCMAE's fine-tuning pools over.
        for k, got in enumerate(keras.Model(backbone.input, outputs)(x)):
            assert rel(backbone.final_norm(got), io["video_encoder_out"][:, :, k]) <= TOL
        # With a classifier it is the whole audio-visual model (tests/test_hicmae.py): its other sizes are asked for.
        with pytest.raises(ConfigError, match="pass audio_num_heads=, fusion_num_heads=, audio_length="):
            load_pretrained(HICMAE / folder / "ckpt.pth", classifier=True, image_size=64, num_heads=4)


# ---------------------------------------------------------------- released configurations (shapes only)


def _torch_layout_zeros(shape):
    return np.broadcast_to(np.zeros((), np.float32), tuple(shape))  # no memory: only shapes are checked


def test_mae_dfer_preset_is_the_released_model():
    released = json.loads((MAE_DFER / "full_config.json").read_text())
    # One build serves both layouts: the pre-training encoder is the fine-tuning one plus its final norm.
    backbone = LGIFormerBackbone.from_preset("mae-dfer", final_norm=True)
    clf = EmotionClassifier(backbone, 7)
    norm_params = 2 * 512
    assert clf.count_params() - norm_params == released["finetune"]["num_parameters"] == 84_878_343
    assert backbone.count_params() == released["pretrain"]["encoder_num_parameters"] == 84_874_752
    targets = model_targets(backbone, clf)
    finetune = {key: _torch_layout_zeros(shape) for key, shape in released["finetune"]["state_dict"]}
    assert len(finetune) == released["finetune"]["num_state_dict_tensors"] == 519
    finetune_targets = {k: v for k, v in targets.items() if not k.startswith("norm.")}
    assert sorted(finetune_targets) == sorted(finetune)
    check_tensors(finetune_targets, finetune)  # every shape, in Keras layout
    encoder = {key[len("encoder."):]: _torch_layout_zeros(shape) for key, shape in released["pretrain"]["state_dict"]
               if key.startswith("encoder.")}
    check_tensors({k: v for k, v in targets.items() if not k.startswith(("fc_norm.", "head."))}, encoder)


def test_hicmae_visual_encoder_is_the_released_model():
    released = json.loads((HICMAE / "full_config.json").read_text())
    backbone = VideoMAEBackbone(512, 10, 8, num_frames=16, image_size=160, final_norm=True)
    for part in ("finetune", "pretrain"):
        encoder = {key[len("encoder."):]: _torch_layout_zeros(shape) for key, shape, *_ in released[part]["state_dict"]
                   if key.startswith("encoder.")}
        check_tensors(model_targets(backbone), encoder)
    assert backbone.count_params() == released["finetune"]["visual_encoder_only"]["params"] == 32_306_688


def test_layer_decay_groups_follow_the_blocks():
    """MAE-DFER's recipe decays the learning rate per LGI-Former block: embedding 0, block i -> i + 1, rest on top."""
    from mmder_tf.training.recipes import layer_id

    backbone = LGIFormerBackbone.from_preset("mae-dfer-tiny", num_frames=4, image_size=64)
    clf = EmotionClassifier(backbone, 3)
    groups = {v.path: layer_id(v.path, backbone.depth) for v in clf.weights}
    assert groups["patch_embed/proj/kernel"] == 0
    assert groups["block_0/third_attn/kv/kernel"] == 1 and groups["block_1/mlp/fc2/bias"] == 2
    assert groups["region_tokens/region_tokens"] == groups["head/kernel"] == backbone.depth + 1
    assert set(groups.values()) == {0, 1, 2, 3}


def test_region_tokens_are_not_decayed():
    """MAE-DFER excludes lg_region_tokens from weight decay, as norms and biases; 2-D kernels still decay."""
    from mmder_tf.training import recipes

    backbone = LGIFormerBackbone.from_preset("mae-dfer-tiny", num_frames=4, image_size=64)
    clf = EmotionClassifier(backbone, 3, mode="finetune")
    variables = clf.trainable_variables
    for recipe in ("mae-dfer",):  # (the paper recipe decays every trainable weight, as the official code)
        settings = {**recipes.recipe_settings(recipe, 8), "cosine": False}  # full lr on the first step
        optimizer = recipes.make_optimizer(settings, 10, 1, backbone.depth)
        before = {v.path: np.array(v) for v in variables}
        # Zero gradients: Adam's step is 0, so only the decoupled weight decay can move a weight.
        optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
        moved = {v.path for v in variables if not np.array_equal(np.asarray(v), before[v.path])}
        assert "region_tokens/region_tokens" not in moved, recipe
        assert "block_0/mlp/fc1/kernel" in moved, recipe


# ---------------------------------------------------------------- downstream: finetune, feature cache, export


def test_finetune_picks_the_input_size_the_encoder_needs(tmp_path):
    from mmder_tf import finetune

    data = tmp_path / "clips"
    data.mkdir()
    base = ["--dataset", "ravdess", "--data-dir", str(data), "--out", str(tmp_path / "run")]
    # MAE-DFER's regions fit 16 x 160 x 160 only: the fused input follows the checkpoint.
    config = finetune.config_from_argv(base + ["--weights", str(MAE_DFER / "pretrain_small" / "ckpt.pth")])
    assert config.fusion.image_size == 160 and config.fusion.num_frames == 16
    assert finetune.config_from_argv(base + ["--weights", str(HICMAE / "ft_small" / "ckpt.pth")]).fusion.image_size == 160
    scratch = base + ["--from-scratch", "--mode", "linear_probe"]  # no weights: a random encoder on purpose
    assert finetune.config_from_argv(scratch + ["--preset", "mae-dfer"]).fusion.image_size == 160
    assert finetune.config_from_argv(scratch + ["--preset", "large"]).fusion.image_size == 224
    assert finetune.config_from_argv(scratch + ["--preset", "mae-dfer", "--image-size", "96"]).fusion.image_size == 96


def test_lgi_former_linear_probe_run_and_export(small_dataset, small_cache, tmp_path):
    """The cached-feature linear probe and the SavedModel export (which rebuilds the run's model) with an LGI-Former."""
    from mmder_tf import finetune
    from mmder_tf.serving.export import export_run, read_metadata
    from mmder_tf.serving.export import preset_modality_dropout as export_preset_dropout

    out = tmp_path / "probe"
    results = finetune.run(dataset="ravdess", data_dir=small_dataset, out=out, preset="mae-dfer-tiny", image_size=32,
                           from_scratch=True,
                           batch_size=4, verbose=0, strategy="fslf", workers=1, cache=small_cache,
                           mode="linear_probe", epochs=2, num_folds=2, folds="2", select="last")
    fold = results["folds"]["2"]
    assert results["run"]["feature_cache"] is True and fold["weights_kind"] == "head"
    exported = export_run(out, tmp_path / "export", fold=2)
    assert read_metadata(exported)["preset"] == "mae-dfer-tiny"
    # The export records its dataset (it read a run.json key that does not exist): --timeline's window is RAVDESS's.
    from mmder_tf.serving.timeline import DATASET_CLIP_SECONDS, default_window

    assert read_metadata(exported)["dataset"] == "ravdess"
    assert default_window(read_metadata(exported)) == DATASET_CLIP_SECONDS["ravdess"]
    # The trained fold as a preset: the same logits, the run's fusion settings as its preprocessing.
    from mmder_tf.training.model import load_fold

    trained = load_fold(out, 2)
    again = EmotionClassifier.from_preset(trained.save_to_preset(tmp_path / "fold_2_preset"))
    size = (trained.fusion.num_frames, trained.fusion.image_size, trained.fusion.image_size, 3)
    x = np.random.default_rng(0).integers(0, 256, (1, *size)).astype("uint8")
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(trained.model(x)))
    assert again.preprocessing == trained.fusion and again.class_names == list(trained.class_names)
    assert export_preset_dropout(tmp_path / "fold_2_preset") == trained.config.modality_dropout


# ---------------------------------------------------------------- masked-autoencoder pre-training (MAE-DFER)


def test_pretrainer_encodes_the_upstream_window_mask_like_upstream():
    from mmder_tf.models.lgi_former.pretraining import LGIFormerPretrainer, window_mask
    from mmder_tf.models.videomae.pretraining import mask_indices

    io = np.load(MAE_DFER / "pretrain_small" / "io.npz")
    # The whole released layout, decoder included (strict: every tensor used).
    model = load_pretrained(MAE_DFER / "pretrain_small" / "ckpt.pth", pretraining=True, decoder_overrides={"num_heads": 3},
                            **PRETRAIN)
    assert isinstance(model, LGIFormerPretrainer) and model.frame_difference and model.window == (3, 6)
    assert (model.decoder.hidden_dim, model.decoder.depth, model.decoder.output_dim) == (48, 1, 1536)
    model.mask_ratio = 0.5  # the golden mask's ratio
    masked = io["mask_part_window"]
    visible_ids, _ = mask_indices(masked, int(masked[0].sum()))
    tokens, ids = model.encode_visible(to_pixels(io["x"]), masked, visible_ids)
    assert rel(tokens, io["enc_out_part_window"]) <= TOL
    # The ids follow the tokens (region-major), so the decoder adds each token's own position.
    ids = np.asarray(ids)
    assert sorted(ids[0]) == sorted(np.flatnonzero(~masked[0])) and not masked[np.arange(2)[:, None], ids].any()

    # The model's own masks have upstream's shape: per frame and window, the same count hidden, in every frame.
    mask = np.asarray(window_mask(np.random.default_rng(0).uniform(size=(2, 36)), (8, 6, 6), (3, 6), 0.5))
    frames = mask.reshape(2, 8, 2, 18)
    assert (frames.sum(-1) == 9).all() and (frames == frames[:, :1]).all()
    pixels = to_pixels(io["x"])
    # HiCMAE's decoders are cross-attention stacks of its own: its pre-training model is not ours.
    with pytest.raises(CheckpointError, match="a hicmae checkpoint"):
        load_pretrained(HICMAE / "pretrain_small" / "ckpt.pth", pretraining=True, image_size=64)
    predictions, loss = model(pixels, noise=np.random.default_rng(1).uniform(size=(2, 36)).astype("float32"))
    assert predictions.shape == (2, model.num_masked, 1536) and np.isfinite(float(loss))
    predictions, _ = model(pixels, token_mask=masked)
    assert predictions.shape == (2, int(masked[0].sum()), 1536)
    # Same count per clip, but the first region loses a visible token to the last one.
    uneven = masked.copy()
    for row in uneven:
        first_visible, last_hidden = np.flatnonzero(~row)[0], np.flatnonzero(row)[-1]
        row[first_visible], row[last_hidden] = True, False
    with pytest.raises(ConfigError, match="same number of visible tokens"):
        model(pixels, token_mask=uneven)
