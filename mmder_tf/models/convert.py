"""VideoMAE checkpoints (MCG-NJU .pth, Hugging Face directories) -> Keras `.weights.h5`.

Every supported layout is first renamed to the fine-tuned VideoMAE key names
(`patch_embed.proj.weight`, `blocks.N.attn.qkv.weight`, `fc_norm.weight`,
`head.weight`, ...); the architecture is read from the tensor shapes; then
every tensor is checked against the model before a single one is assigned, so
a checkpoint either loads completely or not at all.

    python -m mmder_tf.convert videomae_vit_l_k400.pth weights/vit_l.weights.h5 --allow-missing-head --num-classes 7
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.fileio import temp_path
from mmder_tf.models.videomae.presets import heads_for_width

HEAD_KEYS = ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")
# Pre-training extras that belong to the decoder, not the encoder.
_IGNORED_PREFIXES = ("decoder.", "encoder_to_decoder.", "decoder_embed.", "decoder_pred.", "decoder_norm.")
_IGNORED_KEYS = ("mask_token", "position_embeddings", "embeddings.position_embeddings", "decoder_pos_embed")
# Original VideoMAE uses eps 1e-6 everywhere; HF's fc_norm is a bare nn.LayerNorm (1e-5).
VIDEOMAE_EPS = 1e-6
HF_FC_NORM_EPS = 1e-5


class Checkpoint:
    """Tensors (numpy, float32) of one checkpoint, its Hugging Face config if any, and where it came from."""

    def __init__(self, path, state, hf_config=None):
        self.path, self.state, self.hf_config = str(path), state, hf_config


# ---------------------------------------------------------------- reading


def _to_numpy(tensor):
    if isinstance(tensor, np.ndarray):
        return tensor
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype.itemsize < 4:
        tensor = tensor.float()  # numpy has no bfloat16; half precision is widened too
    return tensor.numpy()


def _unwrap_state(obj, path):
    """The tensor dict inside a torch checkpoint: under "model", "module", "state_dict" or top level."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(obj).__name__}, not a dict of tensors)")
    for key in ("model", "module", "state_dict", "model_state"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(_is_tensor(v) for v in inner.values()):
            obj = inner
            break
    state = {str(k): v for k, v in obj.items() if _is_tensor(v)}
    if not state:
        raise CheckpointError(f"{path}: no tensors found (keys: {sorted(map(str, obj))[:10]})")
    return state


def _is_tensor(value):
    return isinstance(value, np.ndarray) or type(value).__name__ in ("Tensor", "Parameter")


def _import_torch(path):
    try:
        import torch
    except ImportError as exc:
        raise CheckpointError(f"{path}: reading PyTorch checkpoints needs torch (pip install torch)") from exc
    return torch


def _read_torch(path, trust_pickle=False):
    torch = _import_torch(path)
    import argparse as _argparse

    try:
        if trust_pickle:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            # MCG-NJU checkpoints store their argparse.Namespace next to the weights.
            with torch.serialization.safe_globals([_argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a non-checkpoint file
        hint = "" if trust_pickle else (
            " (if you trust the file and it pickles other objects: convert it once with "
            "`python -m mmder_tf.convert SRC DST.weights.h5 --trust-pickle` and use DST.weights.h5; "
            "from Python, trust_pickle=True)")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {type(exc).__name__}: {str(exc)[:300]}{hint}") from exc
    state = _unwrap_state(obj, path)
    return {k: _to_numpy(v) for k, v in state.items()}


def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    except ImportError as exc:
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package") from exc
    except TypeError:
        # numpy has no bfloat16: go through torch for such files.
        from safetensors.torch import load_file as load_torch

        _import_torch(path)
        return {k: _to_numpy(v) for k, v in load_torch(str(path)).items()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc


def _read_hf_dir(path, trust_pickle=False):
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: a directory checkpoint must be a Hugging Face model directory with config.json")
    try:
        hf_config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_file}: unreadable config.json: {exc}") from exc
    model_type = hf_config.get("model_type")
    if model_type not in (None, "videomae"):
        raise CheckpointError(f"{path}: model_type {model_type!r} is not videomae")
    if (path / "model.safetensors").is_file():
        state = _read_safetensors(path / "model.safetensors")
    elif (path / "model.safetensors.index.json").is_file():
        index = json.loads((path / "model.safetensors.index.json").read_text())
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(_read_safetensors(path / shard))
    elif (path / "pytorch_model.bin").is_file():
        state = _read_torch(path / "pytorch_model.bin", trust_pickle)
    else:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin next to config.json")
    return hf_config, state


def read_checkpoint(path, trust_pickle=False) -> Checkpoint:
    """Read any supported torch / safetensors / Hugging Face checkpoint into numpy arrays."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        hf_config, state = _read_hf_dir(path, trust_pickle)
        return Checkpoint(path, state, hf_config)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
        hf_config = None
        if (path.parent / "config.json").is_file():
            hf_config = json.loads((path.parent / "config.json").read_text())
        return Checkpoint(path, state, hf_config)
    return Checkpoint(path, _read_torch(path, trust_pickle))


# ---------------------------------------------------------------- renaming

_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def _detect_layout(keys, path):
    if any("lg_region_tokens" in k or ".first_attn." in k or ".third_attn" in k for k in keys):
        raise CheckpointError(
            f"{path}: this is an MAE-DFER (LGI-Former) checkpoint; its blocks use local/global region-token "
            "attention, not VideoMAE's joint attention, so it cannot be loaded into VideoMAEBackbone"
        )
    if any(k.startswith("videomae.") or k.startswith("embeddings.patch_embeddings") or k.startswith("encoder.layer.") for k in keys):
        return "huggingface"
    if any(k.startswith("encoder.patch_embed.") or k.startswith("encoder.blocks.") for k in keys):
        return "videomae_pretrain"
    if any(k.startswith("patch_embed.") or k.startswith("blocks.") for k in keys):
        return "videomae"
    shown = ", ".join(sorted(keys)[:8])
    raise CheckpointError(f"{path}: no VideoMAE encoder tensors found (first keys: {shown})")


def _ignorable(key):
    return key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES)


def canonical_state(ckpt: Checkpoint):
    """Rename to fine-tuned VideoMAE keys. Returns (tensors, layout, ignored keys, original name of each key)."""
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in ckpt.state.items()}
    layout = _detect_layout(state.keys(), ckpt.path)
    out, origin, ignored = {}, {}, []

    def put(new, old, value):
        out[new], origin[new] = value, old

    if layout == "huggingface":
        qkv = {}
        for key, value in state.items():
            name = key[len("videomae."):] if key.startswith("videomae.") else key
            m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", name)
            m_qkv = re.match(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value|q_bias|v_bias)(?:\.(weight|bias))?$", name)
            if m_qkv:
                i, part, kind = m_qkv.groups()
                if part in ("q_bias", "v_bias") or kind == "bias":
                    if part == "key":
                        if np.any(value != 0):
                            raise CheckpointError(f"{ckpt.path}: {key} is non-zero; VideoMAE attention has no key bias")
                        ignored.append(key)
                        continue
                    bias = part if part in ("q_bias", "v_bias") else part[0] + "_bias"
                    put(f"blocks.{i}.attn.{bias}", key, value)
                else:
                    qkv.setdefault(int(i), {})[part] = (key, value)
            elif m and m.group(2) in _HF_BLOCK:
                put(f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}.{m.group(3)}", key, value)
            elif name.startswith("embeddings.patch_embeddings.projection."):
                put("patch_embed.proj." + name.rsplit(".", 1)[1], key, value)
            elif name.startswith("layernorm."):
                put("norm." + name.rsplit(".", 1)[1], key, value)
            elif name.startswith("fc_norm."):
                put(name, key, value)
            elif name.startswith("classifier."):
                put("head." + name.rsplit(".", 1)[1], key, value)
            elif _ignorable(name):
                ignored.append(key)
            else:
                put(key, key, value)  # unknown: reported as unexpected
        for i, parts in sorted(qkv.items()):
            missing = [p for p in ("query", "key", "value") if p not in parts]
            if missing:
                # Leave the block's qkv absent so it is reported with the other missing tensors.
                origin[f"blocks.{i}.attn.qkv.weight"] = f"encoder.layer.{i}.attention.attention.{'/'.join(missing)}.weight"
                continue
            names = "/".join(parts[p][0] for p in ("query", "key", "value"))
            put(f"blocks.{i}.attn.qkv.weight", names, np.concatenate([parts[p][1] for p in ("query", "key", "value")], 0))
    else:
        for key, value in state.items():
            name = key
            if layout == "videomae_pretrain":
                if _ignorable(key):
                    ignored.append(key)
                    continue
                if not key.startswith("encoder."):
                    put(key, key, value)
                    continue
                name = key[len("encoder."):]
            if name == "pos_embed":
                _check_pos_embed(value, ckpt.path)
                ignored.append(key)
            elif _ignorable(name):
                ignored.append(key)
            else:
                put(name, key, value)
    return out, layout, ignored, origin


def _check_pos_embed(value, path):
    from mmder_tf.models.layers import sincos_position_table

    table = np.asarray(value).reshape(-1, value.shape[-1])
    if not np.allclose(table, sincos_position_table(*table.shape), atol=1e-4):
        raise CheckpointError(f"{path}: pos_embed is a learned position embedding; only VideoMAE's fixed sine-cosine table is supported")


# ---------------------------------------------------------------- architecture


def infer_backbone_config(tensors, hf_config=None, num_frames=None, image_size=None, path="checkpoint"):
    """VideoMAEBackbone kwargs from tensor shapes (and the HF config, which wins for heads, eps, sizes)."""
    hf_config = hf_config or {}
    patch = tensors.get("patch_embed.proj.weight")
    if patch is None or patch.ndim != 5:
        raise CheckpointError(f"{path}: missing patch_embed.proj.weight [D, 3, t, p, p] (the tubelet embedding)")
    hidden_dim, channels, tubelet, ph, pw = patch.shape
    if channels != 3 or ph != pw:
        raise CheckpointError(f"{path}: patch_embed.proj.weight has shape {patch.shape}; expected [D, 3, t, p, p]")
    indices = {int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not indices:
        raise CheckpointError(f"{path}: no transformer blocks (blocks.N.*) found")
    depth = max(indices) + 1
    fc1 = tensors.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / hidden_dim if fc1 is not None else 4.0
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (VideoMAE uses exact GELU)")
    for key, value in (("hidden_size", hidden_dim), ("num_hidden_layers", depth)):
        if key in hf_config and int(hf_config[key]) != value:
            raise CheckpointError(f"{path}: config.json {key}={hf_config[key]} but the tensors say {value}")
    if num_frames is None:
        num_frames = int(hf_config.get("num_frames", 16))
    if image_size is None:
        image_size = int(hf_config.get("image_size", 224))
    return {
        "hidden_dim": int(hidden_dim),
        "depth": depth,
        "num_heads": int(hf_config.get("num_attention_heads", heads_for_width(hidden_dim))),
        "mlp_ratio": float(mlp_ratio),
        "patch_size": int(ph),
        "tubelet_size": int(tubelet),
        "num_frames": int(num_frames),
        "image_size": image_size,
        "layer_norm_epsilon": float(hf_config.get("layer_norm_eps", VIDEOMAE_EPS)),
        # The stored gammas replace this value on load; it only decides that the weights exist.
        "layer_scale_init": 1.0 if "blocks.0.gamma_1" in tensors else None,
        "final_norm": "norm.weight" in tensors,
        "qkv_bias": "blocks.0.attn.q_bias" in tensors,
    }


# ---------------------------------------------------------------- assignment


def _conv(a):
    return np.transpose(a, (2, 3, 4, 1, 0))  # [out, in, t, h, w] -> [t, h, w, in, out]


def _linear(a):
    return np.transpose(a)


def _same(a):
    return a


def _dense(prefix, layer):
    return {f"{prefix}.weight": (layer.kernel, _linear), f"{prefix}.bias": (layer.bias, _same)}


def _norm(prefix, layer):
    return {f"{prefix}.weight": (layer.gamma, _same), f"{prefix}.bias": (layer.beta, _same)}


def model_targets(backbone, classifier=None):
    """Checkpoint key -> (Keras variable, torch->Keras transform) for every weight of the model."""
    embed = backbone.get_layer("patch_embed").proj
    targets = {"patch_embed.proj.weight": (embed.kernel, _conv), "patch_embed.proj.bias": (embed.bias, _same)}
    for i in range(backbone.depth):
        block = backbone.get_layer(f"block_{i}")
        p = f"blocks.{i}"
        targets.update(_norm(f"{p}.norm1", block.norm1))
        targets[f"{p}.attn.qkv.weight"] = (block.attn.qkv.kernel, _linear)
        if block.attn.qkv_bias:
            targets[f"{p}.attn.q_bias"] = (block.attn.q_bias, _same)
            targets[f"{p}.attn.v_bias"] = (block.attn.v_bias, _same)
        targets.update(_dense(f"{p}.attn.proj", block.attn.proj))
        targets.update(_norm(f"{p}.norm2", block.norm2))
        targets.update(_dense(f"{p}.mlp.fc1", block.mlp.fc1))
        targets.update(_dense(f"{p}.mlp.fc2", block.mlp.fc2))
        if block.layer_scale_init is not None:
            targets[f"{p}.gamma_1"] = (block.gamma_1, _same)
            targets[f"{p}.gamma_2"] = (block.gamma_2, _same)
    if backbone.final_norm is not None:
        targets.update(_norm("norm", backbone.final_norm))
    if classifier is not None:
        targets.update(_norm("fc_norm", classifier.fc_norm))
        targets.update(_dense("head", classifier.head))
    return targets


def load_tensors(model_targets_, tensors, origin=None, allow_missing_head=False, skip=(), path="checkpoint"):
    """Check every tensor against the model, then assign all of them; returns the keys left fresh.

    `skip`: checkpoint keys deliberately not used (a head when only the backbone is wanted).
    """
    origin = origin or {}
    missing, unexpected, mismatched, fresh = [], [], [], []
    for key, (variable, transform) in model_targets_.items():
        if key not in tensors:
            if allow_missing_head and key in HEAD_KEYS:
                fresh.append(key)
            else:
                missing.append(f"{origin.get(key, key)} (model shape {tuple(variable.shape)})")
            continue
        shape = transform(tensors[key]).shape
        if tuple(shape) != tuple(variable.shape):
            if allow_missing_head and key.startswith("head."):
                fresh.append(key)
                continue
            mismatched.append(
                f"{origin.get(key, key)}: checkpoint {tuple(tensors[key].shape)} is {tuple(shape)} in Keras layout, "
                f"model needs {tuple(variable.shape)}"
            )
    for key in tensors:
        if key not in model_targets_ and key not in skip:
            unexpected.append(f"{origin.get(key, key)} {tuple(tensors[key].shape)}")
    if missing or unexpected or mismatched:
        lines = [f"{path}: checkpoint does not fit the model; nothing was loaded."]
        if missing:
            lines.append(f"missing ({len(missing)}): " + "; ".join(missing))
            if all(k.split(" ")[0] in HEAD_KEYS for k in missing):
                lines.append("(an encoder-only checkpoint: use allow_missing_head=True / --allow-missing-head to leave the head fresh)")
        if unexpected:
            lines.append(f"unexpected ({len(unexpected)}): " + "; ".join(unexpected))
        if mismatched:
            lines.append(f"wrong shape ({len(mismatched)}): " + "; ".join(mismatched))
        raise CheckpointError("\n".join(lines))
    for key, (variable, transform) in model_targets_.items():
        if key not in fresh:
            variable.assign(np.ascontiguousarray(transform(tensors[key])).astype(variable.dtype))
    return fresh


# ---------------------------------------------------------------- public API


def _hf_class_names(hf_config, num_classes):
    labels = (hf_config or {}).get("id2label")
    if not labels or len(labels) != num_classes:
        return None
    return [str(labels[k]) for k in sorted(labels, key=int)]


def _sidecar(path: Path) -> Path:
    name = path.name
    stem = name[: -len(".weights.h5")] if name.endswith(".weights.h5") else path.stem
    return path.with_name(stem + ".config.json")


def _build_from_torch(
    ckpt, num_frames, image_size, classifier, num_classes, allow_missing_head, mode, dropout, class_names, dtype, overrides
):
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone
    from mmder_tf.models.classifier import EmotionClassifier

    tensors, layout, ignored, origin = canonical_state(ckpt)
    config = infer_backbone_config(tensors, ckpt.hf_config, num_frames, image_size, ckpt.path)
    config.update(overrides)
    backbone = VideoMAEBackbone(**config, dtype=dtype)
    model, skip = backbone, ()
    if classifier:
        if num_classes is None:
            if "head.weight" not in tensors:
                raise ConfigError(f"{ckpt.path} has no classification head: pass num_classes (and allow_missing_head=True)")
            num_classes = int(tensors["head.weight"].shape[0])
        if class_names is None:
            class_names = _hf_class_names(ckpt.hf_config, num_classes)
        fc_eps = HF_FC_NORM_EPS if layout == "huggingface" else VIDEOMAE_EPS
        model = EmotionClassifier(
            backbone, num_classes, mode=mode, dropout=dropout, fc_norm_epsilon=fc_eps, class_names=class_names, dtype=dtype
        )
    else:
        skip = HEAD_KEYS
    fresh = load_tensors(
        model_targets(backbone, model if classifier else None), tensors, origin, allow_missing_head, skip, ckpt.path
    )
    report = {
        "source": ckpt.path,
        "layout": layout,
        "model": type(model).__name__,
        "loaded": len(tensors) - len([k for k in skip if k in tensors]),
        "ignored": sorted(ignored) + [k for k in skip if k in tensors],
        "fresh": fresh,
        "backbone": backbone.get_config(),
    }
    return model, report


def _load_keras(path, num_frames, image_size, classifier, num_classes, allow_missing_head, mode, dropout, class_names, dtype, overrides):
    import keras

    from mmder_tf.models.classifier import EmotionClassifier

    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise CheckpointError(f"{path}: a .weights.h5 file needs its config {sidecar.name} beside it (written by convert_checkpoint)")
    try:
        meta = json.loads(sidecar.read_text())
        spec = meta["model"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{sidecar}: not an mmder_tf model config: {exc}") from exc
    backbone_spec = spec["config"]["backbone"] if spec.get("class_name") == "EmotionClassifier" else spec
    changes = dict(overrides)
    if num_frames is not None:
        changes["num_frames"] = int(num_frames)
    if image_size is not None:
        changes["image_size"] = image_size
    if dtype is not None:
        changes["dtype"] = dtype
    backbone_spec["config"].update(changes)
    try:
        saved = keras.saving.deserialize_keras_object(spec)
        saved.load_weights(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load weights: {exc}") from exc
    backbone = saved.backbone if isinstance(saved, EmotionClassifier) else saved
    if not classifier:
        return backbone
    if isinstance(saved, EmotionClassifier) and (num_classes is None or num_classes == saved.num_classes):
        saved.mode = mode
        if class_names is not None:
            saved.class_names = list(class_names)
        return saved
    if not allow_missing_head:
        what = "has no head" if not isinstance(saved, EmotionClassifier) else f"has a {saved.num_classes}-class head"
        raise CheckpointError(f"{path} {what}; pass allow_missing_head=True for a fresh {num_classes}-class head")
    if num_classes is None:
        raise ConfigError(f"{path} has no classification head: pass num_classes")
    model = EmotionClassifier(backbone, num_classes, mode=mode, dropout=dropout, class_names=class_names)
    if isinstance(saved, EmotionClassifier):
        model.fc_norm.set_weights(saved.fc_norm.get_weights())
    return model


def load_pretrained(
    path,
    num_frames=None,
    image_size=None,
    *,
    classifier=False,
    num_classes=None,
    allow_missing_head=False,
    mode="linear_probe",
    dropout=0.0,
    class_names=None,
    trust_pickle=False,
    dtype=None,
    **backbone_overrides,
):
    """A ready VideoMAEBackbone (or EmotionClassifier with `classifier=True`) from any supported checkpoint.

    `path`: a torch file (.pth/.pt/.bin), a .safetensors file, a Hugging Face
    VideoMAE directory, or a `.weights.h5` written by `convert_checkpoint`.
    Depth, width and MLP size come from the tensors; heads and LayerNorm eps
    from the HF config when there is one (else the ViT table and 1e-6).
    `num_frames` / `image_size` default to the checkpoint's config, else 16 / 224.
    `allow_missing_head`: leave fc_norm/head fresh when the checkpoint has none,
    or a head of another class count than `num_classes`.
    """
    path = Path(path)
    args = (num_frames, image_size, classifier, num_classes, allow_missing_head, mode, dropout, class_names, dtype, backbone_overrides)
    if path.name.endswith(".h5"):
        return _load_keras(path, *args)
    model, _ = _build_from_torch(read_checkpoint(path, trust_pickle), *args)
    return model


def convert_checkpoint(
    src,
    dst,
    *,
    num_frames=None,
    image_size=None,
    num_classes=None,
    allow_missing_head=False,
    backbone_only=False,
    class_names=None,
    trust_pickle=False,
):
    """Convert a torch / HF VideoMAE checkpoint to `dst` (.weights.h5) plus `<stem>.config.json` beside it.

    Writes an EmotionClassifier when the checkpoint has a head or `num_classes`
    is given (an encoder-only checkpoint then needs `allow_missing_head`),
    otherwise (or with `backbone_only`) a VideoMAEBackbone. Returns a report dict.
    """
    import keras

    dst = Path(dst)
    if not dst.name.endswith(".weights.h5"):
        raise ConfigError(f"destination must end with .weights.h5, got {dst}")
    ckpt = read_checkpoint(src, trust_pickle)
    has_head = any(k.removeprefix("module.") in ("head.weight", "classifier.weight") for k in ckpt.state)
    as_classifier = not backbone_only and (has_head or num_classes is not None or allow_missing_head)
    model, report = _build_from_torch(
        ckpt, num_frames, image_size, as_classifier, num_classes, allow_missing_head, "linear_probe", 0.0, class_names, None, {}
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    sidecar = _sidecar(dst)
    tmp_weights = temp_path(dst, suffix=".weights.h5")
    tmp_config = temp_path(sidecar)
    meta = {"format": "mmder_tf", "model": keras.saving.serialize_keras_object(model), **{k: report[k] for k in ("source", "layout")}}
    try:
        model.save_weights(str(tmp_weights))
        tmp_config.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_weights, dst)
        os.replace(tmp_config, sidecar)
    finally:
        for tmp in (tmp_weights, tmp_config):
            if tmp.exists():
                tmp.unlink()
    report.update(weights=str(dst), config=str(sidecar))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mmder_tf.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torch .pth/.pt/.bin, .safetensors, or a Hugging Face VideoMAE directory")
    parser.add_argument("dst", help="output .weights.h5 (a <stem>.config.json is written beside it)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: checkpoint config, else 16)")
    parser.add_argument("--image-size", type=int, default=None, help="square frame size (default: checkpoint config, else 224)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of the head (default: the checkpoint's head)")
    parser.add_argument("--class-names", default=None, help="comma-separated class names")
    parser.add_argument("--allow-missing-head", action="store_true", help="leave fc_norm/head fresh if absent or of another size")
    parser.add_argument("--backbone-only", action="store_true", help="write the encoder only")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickled objects in torch files")
    args = parser.parse_args(argv)
    try:
        report = convert_checkpoint(
            args.src,
            args.dst,
            num_frames=args.num_frames,
            image_size=args.image_size,
            num_classes=args.num_classes,
            allow_missing_head=args.allow_missing_head,
            backbone_only=args.backbone_only,
            class_names=args.class_names.split(",") if args.class_names else None,
            trust_pickle=args.trust_pickle,
        )
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    b = report["backbone"]
    print(
        f"{report['model']} ({report['layout']} layout, depth {b['depth']}, width {b['hidden_dim']}, heads {b['num_heads']}, "
        f"{b['num_frames']}x{b['image_size']}): {report['loaded']} tensors -> {report['weights']}"
        + (f"; fresh: {', '.join(report['fresh'])}" if report["fresh"] else "")
        + (f"; ignored {len(report['ignored'])}" if report["ignored"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
