"""HiCMAE's whole audio-visual model (two encoders, fusion, hierarchical head) against upstream's own outputs.

../shared/golden/hicmae holds random-weight checkpoints in the released layout
with every intermediate tensor the upstream PyTorch code computed from them
(its README.md). Bar: relative max error (max|ours - theirs| / max|theirs|) <= 1e-5.
`MMDER_GOLDEN` points at another golden folder (default REPO/../shared/golden).
"""
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

from mmder_tf import HiCMAEBackbone, HiCMAEClassifier, convert_checkpoint, load_pretrained
from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.models.convert import check_tensors, main
from mmder_tf.models.hicmae.convert import hicmae_state, model_targets
from mmder_tf.models.layers import sincos_position_table

GOLDEN = Path(os.environ.get("MMDER_GOLDEN") or Path(__file__).resolve().parents[1].parent / "shared" / "golden")
HICMAE = GOLDEN / "hicmae"
TOL = 1e-5



def rel(ours, theirs):
    theirs = np.asarray(theirs)
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def geometry(folder):
    """What the golden checkpoint cannot tell (it has no args): read from its config.json."""
    args = json.loads((HICMAE / folder / "config.json").read_text())["constructor_args"]
    heads = ("num_heads", "num_heads_audio", "fusion_num_heads") if "num_heads" in args else \
        ("encoder_num_heads", "encoder_num_heads_audio", "encoder_fusion_num_heads")
    return {"image_size": (args["img_size"],) * 2, "audio_length": args["img_size_audio"][0],
            "num_heads": args[heads[0]], "audio_num_heads": args[heads[1]], "fusion_num_heads": args[heads[2]]}


def inputs(io):
    return {"video": io["x_uint8"], "audio": io["x_audio"][:, 0]}


def intermediates(clf, x):
    """Every tensor the golden captures, from our layers (torch layouts: [B, N, L, C] for the layer stacks)."""
    b = clf.backbone
    names = {"video_patch_embed_out": b.patch_embed.output, "audio_patch_embed_out": b.audio_patch_embed.output}
    names.update({f"video_block{i}_out": blk.output for i, blk in enumerate(b.blocks)})
    names.update({f"audio_block{i}_out": blk.output for i, blk in enumerate(b.audio_blocks)})
    names.update({f"fusion_video_block{i}_out": blk.output for i, blk in enumerate(b.fusion_blocks)})
    names.update({f"fusion_audio_block{i}_out": blk.output for i, blk in enumerate(b.fusion_audio_blocks)})
    inner = keras.Model(b.input, {**names, **{f"tok_{k}": v for k, v in b.output.items()}})
    tokens = inner({"video": clf.normalize(x["video"]), "audio": keras.ops.convert_to_tensor(x["audio"])})
    got = {k: np.array(v) for k, v in tokens.items()}
    pre_norm, features = keras.Model(clf.input, [clf.fc_norm.input, clf.fc_norm.output])(x)
    got["final_feature_pre_norm"], got["features"] = np.asarray(pre_norm), np.asarray(features)
    for side, embed in (("video", b.patch_embed), ("audio", b.audio_patch_embed)):
        table = sincos_position_table(got[f"{side}_patch_embed_out"].shape[1], embed.hidden_dim)
        got[f"{side}_patch_embed_out"] -= table  # upstream captures the embedding before its table
        got[f"{side}_encoder_out"] = got.pop(f"tok_{side}_layers").transpose(0, 2, 1, 3)
        got[f"{side}_tokens_final"] = got[f"{side}_encoder_out"][:, :, -1]
        got[f"fusion_{side}_out"] = got.pop(f"tok_{side}")
    for side, pool in (("video", clf.video_pool), ("audio", clf.audio_pool)):
        got[f"{side}_layer_weights_softmax"] = np.asarray(keras.ops.softmax(pool.layer_weights))
    return got


def test_finetuning_model_matches_upstream(tmp_path):
    io = np.load(HICMAE / "ft_small" / "io.npz")
    clf = load_pretrained(HICMAE / "ft_small" / "ckpt.pth", classifier=True, **geometry("ft_small"))
    assert isinstance(clf, HiCMAEClassifier) and clf.num_classes == 6
    config = json.loads((HICMAE / "ft_small" / "config.json").read_text())
    assert clf.count_params() == config["param_count"]["total"]
    logits = clf(inputs(io), training=False)
    assert rel(logits, io["logits"]) <= TOL
    # float pixels 0..255 give the same as uint8
    assert rel(clf({"video": io["x_uint8"].astype("float32"), "audio": io["x_audio"][:, 0]}), io["logits"]) <= TOL
    got = intermediates(clf, inputs(io))
    checked = []
    for key in io.files:
        if key in ("x_uint8", "x", "x_audio", "logits", "video_pos_embed", "audio_pos_embed"):
            continue
        assert key in got, key
        assert rel(got[key], io[key]) <= TOL, key
        checked.append(key)
    for side in ("video", "audio"):
        table = sincos_position_table(*io[f"{side}_pos_embed"].shape[1:])
        np.testing.assert_allclose(table, io[f"{side}_pos_embed"][0], atol=1e-6)
    assert len(checked) >= 20


def test_finetuning_checkpoint_round_trips(tmp_path):
    ckpt = HICMAE / "ft_small" / "ckpt.pth"
    io = np.load(HICMAE / "ft_small" / "io.npz")
    report = convert_checkpoint(ckpt, tmp_path / "preset", **geometry("ft_small"))
    assert report["model"] == "HiCMAEClassifier" and report["layout"] == "hicmae" and report["fresh"] == []
    clf = load_pretrained(tmp_path / "preset", classifier=True)
    assert rel(clf(inputs(io)), io["logits"]) <= TOL
    np.testing.assert_array_equal(np.asarray(HiCMAEClassifier.from_preset(tmp_path / "preset")(inputs(io))),
                                  np.asarray(clf(inputs(io))))
    # Back to the released layout: the same keys, shapes and values as the original.
    original = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    state = hicmae_state(clf)
    assert sorted(state) == sorted(original)
    for key, value in original.items():
        np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)
    assert main([str(tmp_path / "preset"), str(tmp_path / "back.pth")]) == 0
    again = torch.load(tmp_path / "back.pth", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_pretraining_checkpoint_gives_the_encoders(tmp_path):
    pre = np.load(HICMAE / "pretrain_small" / "io.npz")
    ckpt = HICMAE / "pretrain_small" / "ckpt.pth"
    with pytest.raises(ConfigError, match="pass num_classes"):
        load_pretrained(ckpt, classifier=True, **geometry("pretrain_small"))
    with pytest.raises(CheckpointError, match="allow_missing_head"):
        load_pretrained(ckpt, classifier=True, num_classes=6, **geometry("pretrain_small"))
    clf = load_pretrained(ckpt, classifier=True, num_classes=6, allow_missing_head=True, **geometry("pretrain_small"))
    got = intermediates(clf, inputs(pre))
    assert rel(got["video_tokens_final"], pre["enc_out_all_visible"]) <= TOL
    assert rel(got["audio_tokens_final"], pre["enc_audio_out_all_visible"]) <= TOL
    # return_intermediate_features (0, 1): the normed outputs of blocks 0 and 1
    assert rel(got["video_encoder_out"][:, :, :2].transpose(0, 2, 1, 3), pre["enc_inter_all_visible"]) <= TOL
    assert rel(got["audio_encoder_out"][:, :, :2].transpose(0, 2, 1, 3), pre["enc_audio_inter_all_visible"]) <= TOL
    for i in range(3):
        assert rel(got[f"video_block{i}_out"], pre[f"enc_block{i}_out_all_visible"]) <= TOL
    for i in range(2):
        assert rel(got[f"audio_block{i}_out"], pre[f"enc_audio_block{i}_out_all_visible"]) <= TOL
    assert rel(got["video_patch_embed_out"], pre["enc_patch_embed_out"]) <= TOL
    # Layer weights start equal, as upstream's fine-tuning initialises them.
    np.testing.assert_allclose(got["video_layer_weights_softmax"], 1 / 3, rtol=1e-6)


def test_missing_geometry_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"num_heads=, audio_num_heads=, fusion_num_heads=, image_size=, audio_length="):
        load_pretrained(HICMAE / "ft_small" / "ckpt.pth", classifier=True)
    g = geometry("ft_small")
    with pytest.raises(ConfigError, match=r"pass fusion_num_heads=$"):
        load_pretrained(HICMAE / "ft_small" / "ckpt.pth", classifier=True,
                        **{k: v for k, v in g.items() if k != "fusion_num_heads"})


def test_checkpoint_args_supply_heads_and_geometry(tmp_path):
    """A real upstream checkpoint stores its argparse Namespace: geometry from it; a registered model name fixes
    the heads only for the 512-wide model it names."""
    import argparse

    state = torch.load(HICMAE / "ft_small" / "ckpt.pth", map_location="cpu", weights_only=True)["model"]
    args = argparse.Namespace(model="avit_dim512_patch16_160_a256", input_size=64, input_size_audio=64, num_frames=16)
    torch.save({"model": state, "args": args, "epoch": 3}, tmp_path / "with_args.pth")
    with pytest.raises(CheckpointError, match="512 wide"):
        load_pretrained(tmp_path / "with_args.pth", classifier=True)
    args.model = "my_avit_small"
    torch.save({"model": state, "args": args}, tmp_path / "with_args.pth")
    with pytest.raises(ConfigError, match="pass num_heads=, audio_num_heads=, fusion_num_heads=$"):
        load_pretrained(tmp_path / "with_args.pth", classifier=True)
    clf = load_pretrained(tmp_path / "with_args.pth", classifier=True, num_heads=4, audio_num_heads=4,
                          fusion_num_heads=4)
    io = np.load(HICMAE / "ft_small" / "io.npz")
    assert clf.backbone.image_size == 64 and clf.backbone.audio_length == 64
    assert rel(clf(inputs(io)), io["logits"]) <= TOL


def test_released_configuration():
    released = json.loads((HICMAE / "full_config.json").read_text())["finetune"]
    clf = HiCMAEClassifier.from_preset("hicmae-crema-d")
    assert clf.count_params() == released["param_count"]["total"] == 80_792_602
    state = {key: np.broadcast_to(np.zeros((), np.float32), tuple(shape)) for key, shape, *_ in released["state_dict"]}
    assert len(state) == released["param_count"]["state_dict_tensors"]
    targets = model_targets(clf)
    assert sorted(targets) == sorted(state)
    check_tensors(targets, state)  # every shape, in Keras layout
    assert HiCMAEClassifier.from_preset("hicmae-mafw").num_classes == 11


def test_visual_encoder_alone_still_loads():
    """Without a classifier a HiCMAE checkpoint gives its visual encoder (for the fused strategies)."""
    io = np.load(HICMAE / "ft_small" / "io.npz")
    backbone = load_pretrained(HICMAE / "ft_small" / "ckpt.pth", image_size=64, num_heads=4)
    assert not isinstance(backbone, HiCMAEBackbone)
    x = np.ascontiguousarray(io["x"].transpose(0, 2, 3, 4, 1))
    assert rel(backbone(x), io["video_tokens_final"]) <= TOL


def test_finetune_trains_the_visual_encoder_of_a_hicmae_checkpoint(tmp_path):
    """`mmder-finetune --weights HICMAE.pth` trains the fused strategies on HiCMAE's visual encoder, fresh head."""
    from mmder_tf import EmotionClassifier, finetune
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone
    from mmder_tf.training.model import build_classifier

    (tmp_path / "clips").mkdir()
    # The golden checkpoint stores no args, and a 64-wide encoder's head count cannot be read from its
    # tensors (refused, never guessed): save it with the args a training run records.
    ckpt = tmp_path / "with_heads.pth"
    torch.save({"model": torch.load(HICMAE / "ft_small" / "ckpt.pth", map_location="cpu", weights_only=True)["model"],
                "args": {"num_heads": 4}}, ckpt)
    config = finetune.config_from_argv(["--dataset", "ravdess", "--data-dir", str(tmp_path / "clips"), "--out",
                                        str(tmp_path / "run"), "--weights", str(ckpt), "--image-size", "64"])
    model = build_classifier(config, 7)
    assert isinstance(model, EmotionClassifier) and isinstance(model.backbone, VideoMAEBackbone)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    np.testing.assert_array_equal(np.asarray(model.backbone.get_layer("block_2").mlp.fc2.bias),
                                  state["encoder.blocks.2.mlp.fc2.bias"].numpy())
