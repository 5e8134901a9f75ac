"""Checkpoint conversion proven against Hugging Face transformers (an independent PyTorch VideoMAE).

Random-initialised HF models of two different shapes are saved offline, converted,
and compared on the same input: encoder tokens, pooled features and logits.
"""
import argparse
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the whole point of this file is the torch/HF reference
from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel  # noqa: E402

from mmder_tf import EmotionClassifier, VideoMAEBackbone, convert_checkpoint, load_pretrained  # noqa: E402
from mmder_tf.models.convert import main  # noqa: E402
from mmder_tf.errors import CheckpointError, ConfigError  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
TOL = 1e-4

CONFIGS = {
    "d2w64": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, num_frames=4, image_size=32, num_labels=3),
    "d3w96": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=3, intermediate_size=384, num_frames=8, image_size=48, num_labels=5),
}


def randomise(model, seed):
    """HF zero-initialises biases and sets LayerNorms to identity: perturb all so every tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def pixels(cfg, batch=2, seed=0):
    shape = (batch, cfg["num_frames"], cfg["image_size"], cfg["image_size"], 3)
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def hf_inputs(x):
    normalised = (x.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(normalised).permute(0, 1, 4, 2, 3)  # [B, T, C, H, W]


def to_videomae_keys(hf_state, prefix=""):
    """Rename HF tensors to MCG-NJU VideoMAE names (written independently of convert.py)."""
    out = {}
    for key, value in hf_state.items():
        key = key.removeprefix("videomae.")
        parts = key.split(".")
        if key.startswith("embeddings.patch_embeddings.projection."):
            out[f"{prefix}patch_embed.proj.{parts[-1]}"] = value
        elif key.startswith("encoder.layer."):
            i, rest = parts[2], ".".join(parts[3:])
            base = f"{prefix}blocks.{i}."
            if rest in ("attention.attention.query.weight", "attention.attention.key.weight", "attention.attention.value.weight"):
                continue
            names = {
                "attention.attention.query.bias": "attn.q_bias",
                "attention.attention.value.bias": "attn.v_bias",
                "attention.output.dense.weight": "attn.proj.weight",
                "attention.output.dense.bias": "attn.proj.bias",
                "intermediate.dense.weight": "mlp.fc1.weight",
                "intermediate.dense.bias": "mlp.fc1.bias",
                "output.dense.weight": "mlp.fc2.weight",
                "output.dense.bias": "mlp.fc2.bias",
                "layernorm_before.weight": "norm1.weight",
                "layernorm_before.bias": "norm1.bias",
                "layernorm_after.weight": "norm2.weight",
                "layernorm_after.bias": "norm2.bias",
            }
            out[base + names[rest]] = value
            if rest == "attention.output.dense.weight":
                q, k, v = (hf_state[f"videomae.encoder.layer.{i}.attention.attention.{n}.weight" if f"videomae.encoder.layer.{i}.attention.attention.{n}.weight" in hf_state else f"encoder.layer.{i}.attention.attention.{n}.weight"] for n in ("query", "key", "value"))
                out[base + "attn.qkv.weight"] = torch.cat([q, k, v], 0)
        elif key.startswith("layernorm."):
            out[f"{prefix}norm.{parts[-1]}"] = value
        elif key.startswith("fc_norm."):
            out[key] = value
        elif key.startswith("classifier."):
            out[f"head.{parts[-1]}"] = value
        else:
            raise AssertionError(key)
    return out


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_classifier(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    model = randomise(VideoMAEForVideoClassification(VideoMAEConfig(**cfg)), seed=len(request.param) + cfg["hidden_size"])
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    x = pixels(cfg)
    with torch.no_grad():
        tokens = model.videomae(hf_inputs(x)).last_hidden_state
        pooled = model.fc_norm(tokens.mean(1))
        logits = model.classifier(pooled)
    return dict(cfg=cfg, path=path, model=model, x=x, tokens=tokens.numpy(), pooled=pooled.numpy(), logits=logits.numpy())


def test_hf_classifier_parity(hf_classifier):
    ref = hf_classifier
    model = load_pretrained(ref["path"], classifier=True)
    assert isinstance(model, EmotionClassifier)
    b = model.backbone
    cfg = ref["cfg"]
    assert (b.depth, b.hidden_dim, b.num_heads, b.num_frames, b.image_size) == (
        cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_frames"], cfg["image_size"])
    assert b.layer_norm_epsilon == 1e-12  # HF's default eps is carried over, not VideoMAE's 1e-6
    assert model.fc_norm_epsilon == 1e-5 and model.num_classes == cfg["num_labels"]
    x = ref["x"]
    tokens = np.asarray(b(((x / 255.0 - MEAN) / STD).astype(np.float32)))
    assert np.abs(tokens - ref["tokens"]).max() <= TOL
    features = np.asarray(model.pooled_features(x))
    pooled = np.asarray(model.fc_norm(features))
    assert np.abs(pooled - ref["pooled"]).max() <= TOL
    assert np.abs(np.asarray(model(x)) - ref["logits"]).max() <= TOL
    assert np.abs(np.asarray(model.head_model()(features)) - ref["logits"]).max() <= TOL


def test_hf_convert_to_preset_and_back(hf_classifier, tmp_path):
    ref = hf_classifier
    dst = tmp_path / "out" / "model"
    report = convert_checkpoint(ref["path"], dst)
    assert report["model"] == "EmotionClassifier" and report["layout"] == "huggingface" and report["fresh"] == []
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    assert not [p for p in dst.parent.iterdir() if "tmp" in p.name]
    assert np.abs(np.asarray(EmotionClassifier.from_preset(dst)(ref["x"])) - ref["logits"]).max() <= TOL
    model = load_pretrained(dst, classifier=True)
    assert np.abs(np.asarray(model(ref["x"])) - ref["logits"]).max() <= TOL
    backbone = load_pretrained(dst)
    assert isinstance(backbone, VideoMAEBackbone) and backbone.layer_norm_epsilon == 1e-12
    # A fresh 7-class head on the converted encoder keeps the trained fc_norm.
    seven = load_pretrained(dst, classifier=True, num_classes=7, allow_missing_head=True)
    assert seven.num_classes == 7
    np.testing.assert_array_equal(np.asarray(seven.fc_norm.gamma), np.asarray(model.fc_norm.gamma))
    with pytest.raises(CheckpointError, match="allow_missing_head"):
        load_pretrained(dst, classifier=True, num_classes=7)


@pytest.fixture(scope="module")
def hf_encoder_final_norm(tmp_path_factory):
    """VideoMAEModel with use_mean_pooling=False: the pre-training layout's final LayerNorm."""
    cfg = dict(CONFIGS["d3w96"], use_mean_pooling=False, layer_norm_eps=1e-6)
    cfg.pop("num_labels")
    model = randomise(VideoMAEModel(VideoMAEConfig(**cfg)), seed=7)
    x = pixels(cfg, seed=3)
    with torch.no_grad():
        tokens = model(hf_inputs(x)).last_hidden_state.numpy()
    return dict(cfg=cfg, model=model, x=x, tokens=tokens, path=tmp_path_factory.mktemp("hf_enc"))


def test_hf_encoder_with_final_norm_parity(hf_encoder_final_norm):
    ref = hf_encoder_final_norm
    ref["model"].save_pretrained(ref["path"])
    backbone = load_pretrained(ref["path"])
    assert backbone.final_norm is not None and backbone.depth == 3
    x = ((ref["x"] / 255.0 - MEAN) / STD).astype(np.float32)
    assert np.abs(np.asarray(backbone(x)) - ref["tokens"]).max() <= TOL
    with pytest.raises(CheckpointError, match="(?s)fc_norm.weight.*allow_missing_head"):
        load_pretrained(ref["path"], classifier=True, num_classes=4)


def test_videomae_pretraining_layout_parity(hf_encoder_final_norm, tmp_path):
    ref = hf_encoder_final_norm
    state = to_videomae_keys(ref["model"].state_dict(), prefix="encoder.")
    d = ref["cfg"]["hidden_size"]
    # What an MCG-NJU pre-training checkpoint also carries: decoder and mask token (ignored).
    state.update({
        "mask_token": torch.zeros(1, 1, 48),
        "encoder_to_decoder.weight": torch.randn(48, d),
        "decoder.blocks.0.attn.qkv.weight": torch.randn(144, 48),
        "decoder.norm.weight": torch.ones(48),
        "decoder.head.weight": torch.randn(1536, 48),
    })
    path = tmp_path / "pretrain.pth"
    torch.save({"model": state, "epoch": 800, "args": argparse.Namespace(model="pretrain_videomae_small")}, path)
    # No config, and the args' model name ("small": 384 wide) does not match the 96-wide tensors: heads unknown.
    with pytest.raises(CheckpointError, match="head count of its 96-wide encoder cannot be read.*num_heads="):
        load_pretrained(path, num_frames=8, image_size=48)
    backbone = load_pretrained(path, num_frames=8, image_size=48, num_heads=3)
    x = ((ref["x"] / 255.0 - MEAN) / STD).astype(np.float32)
    assert np.abs(np.asarray(backbone(x)) - ref["tokens"]).max() <= TOL
    report = convert_checkpoint(path, tmp_path / "enc", num_frames=8, image_size=48, num_heads=3)
    assert report["model"] == "VideoMAEBackbone" and report["layout"] == "videomae_pretrain"
    assert "mask_token" in report["ignored"] and "decoder.norm.weight" in report["ignored"]


def test_videomae_finetuned_layout_under_module_key(tmp_path):
    cfg = dict(CONFIGS["d2w64"], layer_norm_eps=1e-6)
    model = randomise(VideoMAEForVideoClassification(VideoMAEConfig(**cfg)), seed=11)
    model.fc_norm.eps = 1e-6  # VideoMAE's own fc_norm eps (HF uses nn.LayerNorm's 1e-5)
    x = pixels(cfg, seed=5)
    with torch.no_grad():
        logits = model(hf_inputs(x)).logits.numpy()
    state = {"module." + k: v for k, v in to_videomae_keys(model.state_dict()).items()}
    path = tmp_path / "finetuned.pth"
    torch.save({"module": state}, path)
    # A bare .pth has no config: 64 wide would mean 1 head by the ViT table, so say 2.
    clf = load_pretrained(path, num_frames=4, image_size=32, classifier=True, num_heads=2)
    assert clf.num_classes == 3 and clf.fc_norm_epsilon == 1e-6 and clf.backbone.layer_norm_epsilon == 1e-6
    assert np.abs(np.asarray(clf(x)) - logits).max() <= TOL


# ---------------------------------------------------------------- bad checkpoints


@pytest.fixture()
def good_state():
    model = randomise(VideoMAEForVideoClassification(VideoMAEConfig(**CONFIGS["d2w64"])), seed=1)
    return to_videomae_keys(model.state_dict())


def save(tmp_path, state, name="ckpt.pth"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_missing_tensor_is_named(tmp_path, good_state):
    del good_state["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing \(1\): blocks\.1\.mlp\.fc2\.bias") as err:
        load_pretrained(save(tmp_path, good_state), classifier=True, num_heads=2)
    assert "nothing was loaded" in str(err.value)


def test_unexpected_tensor_is_named(tmp_path, good_state):
    good_state["blocks.0.attn.relative_position_bias_table"] = torch.zeros(10, 2)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): blocks\.0\.attn\.relative_position_bias_table \(10, 2\)"):
        load_pretrained(save(tmp_path, good_state), classifier=True, num_heads=2)


def test_wrong_shape_is_named_and_nothing_loads(tmp_path, good_state):
    good_state["blocks.1.attn.proj.weight"] = torch.zeros(64, 32)
    with pytest.raises(CheckpointError, match=r"wrong shape \(1\): blocks\.1\.attn\.proj\.weight: checkpoint \(64, 32\)"):
        load_pretrained(save(tmp_path, good_state), classifier=True, num_heads=2)


def test_several_problems_reported_together(tmp_path, good_state):
    del good_state["blocks.0.norm1.weight"]
    good_state["extra.weight"] = torch.zeros(3)
    good_state["blocks.1.mlp.fc1.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(save(tmp_path, good_state), classifier=True, num_heads=2)
    message = str(err.value)
    assert "blocks.0.norm1.weight" in message and "extra.weight" in message and "blocks.1.mlp.fc1.bias" in message


def test_encoder_only_needs_allow_missing_head(tmp_path, good_state):
    for key in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"):
        del good_state[key]
    path = save(tmp_path, good_state)
    with pytest.raises(CheckpointError, match="(?s)head.weight.*allow_missing_head"):
        convert_checkpoint(path, tmp_path / "x", num_frames=4, image_size=32, num_classes=7, num_heads=2)
    report = convert_checkpoint(path, tmp_path / "x", num_frames=4, image_size=32, num_classes=7, allow_missing_head=True,
                                num_heads=2)
    assert report["model"] == "EmotionClassifier" and sorted(report["fresh"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert load_pretrained(tmp_path / "x", classifier=True).num_classes == 7
    with pytest.raises(ConfigError, match="num_classes"):
        load_pretrained(path, classifier=True, allow_missing_head=True, num_heads=2)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_pretrained(text)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.bin: empty file"):
        load_pretrained(empty)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, other)
    with pytest.raises(CheckpointError, match="resnet.pth: no VideoMAE or MAE-DFER encoder tensors"):
        load_pretrained(other)
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(tmp_path / "absent.pth")
    (tmp_path / "hfdir").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_pretrained(tmp_path / "hfdir")


def test_cli(hf_classifier, tmp_path, capsys):
    dst = tmp_path / "cli"
    assert main([str(hf_classifier["path"]), str(dst), "--backbone-only"]) == 0
    out = capsys.readouterr().out
    assert "VideoMAEBackbone" in out and "huggingface" in out and str(dst) in out
    meta = json.loads((dst / "metadata.json").read_text())
    assert meta["format"] == "mmder_tf.preset" and meta["class_name"] == "VideoMAEBackbone"
    assert "huggingface layout" in meta["source"]
    bad = tmp_path / "bad.pth"
    bad.write_text("nope")
    assert main([str(bad), str(tmp_path / "bad")]) == 1
    assert "bad.pth" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # The destination is a folder: a file name of the old two-file format is refused before any work.
    assert main([str(hf_classifier["path"]), str(tmp_path / "x.weights.h5")]) == 1
    assert "must be a preset folder" in capsys.readouterr().err


def test_two_file_model_of_earlier_versions_converts_once(hf_classifier, tmp_path, capsys):
    """The earlier X.weights.h5 + X.config.json pair: refused where models load (with the command that
    converts it), converted by that command to a preset that gives the same logits."""
    import keras

    ref = hf_classifier
    model = load_pretrained(ref["path"], classifier=True)
    old = tmp_path / "old.weights.h5"
    model.save_weights(str(old))
    (tmp_path / "old.config.json").write_text(json.dumps(
        {"format": "mmder_tf", "model": keras.saving.serialize_keras_object(model), "source": "x", "layout": "y"}))
    with pytest.raises(CheckpointError, match=r"two-file format of earlier mmder_tf versions.*python -m mmder_tf.convert"):
        load_pretrained(old, classifier=True)
    assert main([str(old), str(tmp_path / "new")]) == 0
    assert "mmder_tf two-file" in capsys.readouterr().out
    again = EmotionClassifier.from_preset(tmp_path / "new")
    np.testing.assert_array_equal(np.asarray(again(ref["x"])), np.asarray(model(ref["x"])))
    with pytest.raises(CheckpointError, match="bare .weights.h5 holds no architecture"):
        load_pretrained(tmp_path / "new" / "model.weights.h5")
