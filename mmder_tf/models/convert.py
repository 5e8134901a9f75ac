"""VideoMAE checkpoints (MCG-NJU .pth, Hugging Face directories) -> Keras presets (models.preset_io).

Every supported layout is first renamed to the fine-tuned VideoMAE key names
(`patch_embed.proj.weight`, `blocks.N.attn.qkv.weight`, `fc_norm.weight`,
`head.weight`, ...); the architecture is read from the tensor shapes; then
every tensor is checked against the model before a single one is assigned, so
a checkpoint either loads completely or not at all. The result is written as a
preset folder (config, weights, metadata) that `load_pretrained`, `from_preset`
and `mmder-finetune --weights` read:

    python -m mmder_tf.convert videomae_vit_l_k400.pth weights/vit_l --allow-missing-head --num-classes 7

With `--pretraining` the whole masked autoencoder (encoder and decoder) converts, in
either direction: to a preset folder (what `load_pretrained(..., pretraining=True)` and
`mmder-pretrain --weights` read), or to a `.pth` in the MCG-NJU pre-training layout
(what VideoMAE / MAE-DFER / HiCMAE code loads), e.g. from a pre-training run:

    python -m mmder_tf.convert RUN/pretraining videomae_pretrain.pth --pretraining

Files of the two-file format of earlier versions (`X.weights.h5` + `X.config.json`)
are read here only, to convert them once: `python -m mmder_tf.convert X.weights.h5 X`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.fileio import replacing
from mmder_tf.models.preset_io import (
    ENCODER_PRESET,
    PRETRAINING_PRESET,
    input_geometry,
    is_preset,
    load_preset,
    load_weights_strict,
    register_model_classes,
    save_preset,
)
from mmder_tf.models.videomae.presets import DECODER_HEADS_BY_WIDTH, HEADS_BY_WIDTH

HEAD_KEYS = ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")
# Pre-training extras that belong to the decoder, not the encoder.
_IGNORED_PREFIXES = ("decoder.", "encoder_to_decoder.", "decoder_embed.", "decoder_pred.", "decoder_norm.")
_IGNORED_KEYS = ("mask_token", "position_embeddings", "embeddings.position_embeddings", "decoder_pos_embed")
# Original VideoMAE uses eps 1e-6 everywhere; HF's fc_norm is a bare nn.LayerNorm (1e-5).
VIDEOMAE_EPS = 1e-6
HF_FC_NORM_EPS = 1e-5
# HiCMAE's released models see 16 frames of 160 x 160 faces.
HICMAE_IMAGE_SIZE = 160


class Checkpoint:
    """Tensors (numpy, float32) of one checkpoint, its Hugging Face config if any, the training
    arguments saved beside the weights if any (`args`, as a dict), and where it came from."""

    def __init__(self, path, state, hf_config=None, args=None):
        self.path, self.state, self.hf_config, self.args = str(path), state, hf_config, dict(args or {})


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


def _load_torch_state(path, trust_pickle=False, mmap=False):
    """The tensor dict of a torch file, unpickled without running code unless `trust_pickle`."""
    return _unwrap_state(_load_torch_object(path, trust_pickle, mmap), path)


def _load_torch_object(path, trust_pickle=False, mmap=False):
    torch = _import_torch(path)
    import argparse as _argparse

    try:
        if trust_pickle:
            obj = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            # VideoMAE, MAE-DFER and HiCMAE checkpoints store their argparse.Namespace next to the weights;
            # torch's weights-only unpickler admits it (plus tensors and plain containers), nothing else.
            with torch.serialization.safe_globals([_argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many kinds for a non-checkpoint file
        hint = "" if trust_pickle else (
            " (if you trust the file and it pickles other objects: convert it once with "
            "`python -m mmder_tf.convert SRC DST --trust-pickle` and use the preset folder DST; "
            "from Python, trust_pickle=True)")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {type(exc).__name__}: {str(exc)[:300]}{hint}") from exc
    return obj


def _read_torch(path, trust_pickle=False):
    obj = _load_torch_object(path, trust_pickle)
    return {k: _to_numpy(v) for k, v in _unwrap_state(obj, path).items()}, _recorded_args(obj)


def _recorded_args(obj) -> dict:
    """The training arguments upstream saves next to the weights (`args`: a Namespace, or a dict); {} if none."""
    args = obj.get("args") if isinstance(obj, dict) else None
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return dict(args) if isinstance(args, dict) else {}


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
        state = _read_torch(path / "pytorch_model.bin", trust_pickle)[0]
    else:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin next to config.json")
    return hf_config, state


def read_checkpoint(path, trust_pickle=False) -> Checkpoint:
    """Read any supported torch / safetensors / Hugging Face checkpoint into numpy arrays."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        if is_preset(path):
            raise CheckpointError(f"{path}: already an mmder_tf preset; load it with from_preset or load_pretrained")
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
    obj = _load_torch_object(path, trust_pickle)
    return Checkpoint(path, {k: _to_numpy(v) for k, v in _unwrap_state(obj, path).items()}, args=_recorded_args(obj))


def run_folder_weights(path, pretraining: bool = False) -> Path:
    """A pre-training run folder (`mmder-pretrain --out`) -> its encoder preset (or, with `pretraining`,
    the whole model's); any other path as it is."""
    path = Path(path)
    if path.is_dir() and not is_preset(path) and is_preset(path / ENCODER_PRESET):
        return path / (PRETRAINING_PRESET if pretraining else ENCODER_PRESET)
    return path


def _legacy_config(path: Path) -> Path | None:
    """The `X.config.json` beside an `X.weights.h5` of the earlier two-file format, if there is one."""
    if not path.name.endswith(".weights.h5"):
        return None
    config = path.with_name(path.name[: -len(".weights.h5")] + ".config.json")
    return config if config.is_file() else None


def _refuse_weights_file(path: Path):
    if _legacy_config(path) is not None:
        raise CheckpointError(
            f"{path}: a model in the two-file format of earlier mmder_tf versions; convert it once to a preset "
            f"folder with `python -m mmder_tf.convert {path} {path.parent / path.name[: -len('.weights.h5')]}` "
            "and use that folder")
    raise CheckpointError(f"{path}: a bare .weights.h5 holds no architecture; pass a preset folder "
                          "(save_to_preset, `python -m mmder_tf.convert`), a run folder or an upstream checkpoint")


def read_legacy(path):
    """The model of an `X.weights.h5` + `X.config.json` pair written by earlier versions (loaded strictly):
    only for converting it to a preset."""
    import keras

    from mmder_tf.fileio import read_json

    register_model_classes()
    path = Path(path)
    config = _legacy_config(path)
    if config is None:
        raise CheckpointError(f"{path}: no {path.name[: -len('.weights.h5')]}.config.json beside it")
    meta = read_json(config, CheckpointError, "model config")
    if not isinstance(meta, dict) or meta.get("format") != "mmder_tf" or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{config}: not an mmder_tf model config")
    try:
        model = keras.saving.deserialize_keras_object(meta["model"])
    except Exception as exc:
        raise CheckpointError(f"{config}: cannot build the model it describes ({type(exc).__name__}: {exc})") from None
    return load_weights_strict(model, path)


def checkpoint_input(path, trust_pickle=False) -> dict:
    """The clip size a checkpoint's encoder was made for, {"num_frames": T, "image_size": S}; {} when unknown.

    Cheap (a torch file is memory-mapped, nothing is converted): callers pick
    the input size of the data before building the model, e.g. fusion at
    160 px for MAE-DFER, whose regions only fit that token grid.
    """
    path = run_folder_weights(path)
    if is_preset(path):
        return input_geometry(path)
    if path.name.endswith(".h5"):
        _refuse_weights_file(path)
    if path.is_dir() or path.suffix == ".safetensors":
        hf_dir = path if path.is_dir() else path.parent
        try:
            hf_config = json.loads((hf_dir / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return {k: hf_config[k] for k in ("num_frames", "image_size") if k in hf_config}
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or directory")
    obj = _load_torch_object(path, trust_pickle, mmap=True)
    keys = {k.removeprefix("module.") for k in _unwrap_state(obj, path)}
    layout = _detect_layout(keys, path)
    recorded = recorded_geometry(_recorded_args(obj))
    if layout == "mae_dfer":
        from mmder_tf.models.lgi_former.convert import RELEASED_GEOMETRY

        return {k: recorded.get(k, RELEASED_GEOMETRY[k]) for k in ("num_frames", "image_size")}
    if layout == "hicmae":
        return {"num_frames": 16, "image_size": HICMAE_IMAGE_SIZE}
    return {}


def is_hicmae_checkpoint(path, trust_pickle=False) -> bool:
    """True for a HiCMAE torch checkpoint (audio and fusion encoders beside the visual one); cheap (memory-mapped)."""
    from mmder_tf.models.hicmae.convert import is_hicmae

    path = run_folder_weights(path)
    if is_preset(path) or path.is_dir() or not path.is_file() or path.suffix in (".safetensors", ".h5"):
        return False
    return is_hicmae(_load_torch_state(path, trust_pickle, mmap=True))


# ---------------------------------------------------------------- renaming

_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def _detect_layout(keys, path):
    from mmder_tf.models.lgi_former.convert import is_mae_dfer

    if is_mae_dfer(keys):
        return "mae_dfer"  # refined to fine-tuned / pre-training by the LGI-Former converter
    if any(k.startswith(("encoder_audio.", "encoder_fusion.")) for k in keys):
        return "hicmae"
    if any(k.startswith("videomae.") or k.startswith("embeddings.patch_embeddings") or k.startswith("encoder.layer.") for k in keys):
        return "huggingface"
    if any(k.startswith("encoder.patch_embed.") or k.startswith("encoder.blocks.") for k in keys):
        return "videomae_pretrain"
    if any(k.startswith("patch_embed.") or k.startswith("blocks.") for k in keys):
        return "videomae"
    shown = ", ".join(sorted(keys)[:8])
    raise CheckpointError(f"{path}: no VideoMAE or MAE-DFER encoder tensors found (first keys: {shown})")


# What a report calls each group of tensors a checkpoint holds but the video encoder does not use.
_DROPPED_PARTS = (
    ("encoder_audio.", "audio encoder"),
    ("encoder_fusion.", "audio-visual fusion encoder"),
    (("decoder.", "decoder_audio.", "encoder_to_decoder", "mask_token", "decoder_embed.", "decoder_pred.", "decoder_norm.",
      "decoder_pos_embed"), "pre-training decoder"),
    (("video_layer_weights", "audio_layer_weights", "fc_norm.", "head."), "audio-visual classifier (pooling weights, fc_norm, head)"),
    ("encoder.norm.", "pre-training encoder norm (unused by fine-tuning)"),
)


def dropped_parts(ignored) -> dict:
    """Ignored checkpoint keys counted by the part of the upstream model they belong to."""
    counts = {}
    for key in ignored:
        part = next((name for prefixes, name in _DROPPED_PARTS if key.startswith(prefixes)), "other")
        counts[part] = counts.get(part, 0) + 1
    return counts


def _ignorable(key, keep_decoder=False):
    if keep_decoder and key.startswith(("decoder.", "encoder_to_decoder.", "mask_token")):
        return False  # loading the decoder: an unknown decoder tensor is unexpected, not ignorable
    return key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES)


# Pre-training tensors outside the encoder, named as in MCG-NJU checkpoints (HF uses the same names
# except decoder.decoder_layers for decoder.blocks).
PRETRAINING_KEYS = ("encoder_to_decoder.weight", "mask_token")
_HF_LAYER = re.compile(r"(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")


def _keep_for_pretraining(key):
    return key in PRETRAINING_KEYS or key.startswith(("decoder.blocks.", "decoder.norm.", "decoder.head."))


def canonical_state(ckpt: Checkpoint, keep_final_norm=True, keep_decoder=False):
    """Rename to fine-tuned VideoMAE (or MAE-DFER) keys. Returns (tensors, layout, ignored keys, original name of each key).

    `keep_final_norm=False`: leave out an MAE-DFER pre-training encoder's final norm, as its fine-tuning does.
    `keep_decoder`: keep a VideoMAE pre-training decoder under its MCG-NJU names (`decoder.blocks.N.*`,
    `decoder.norm.*`, `decoder.head.*`, `encoder_to_decoder.weight`, `mask_token`) instead of ignoring it.
    """
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in ckpt.state.items()}
    layout = _detect_layout(state.keys(), ckpt.path)
    if layout == "mae_dfer":
        from mmder_tf.models.lgi_former import convert as lgi_convert

        return lgi_convert.canonical_state(state, ckpt.path, keep_final_norm, keep_decoder)
    out, origin, ignored = {}, {}, []

    def put(new, old, value):
        out[new], origin[new] = value, old

    if layout == "hicmae":
        # The visual encoder is VideoMAE's pre-training encoder under the same names; the rest is dropped.
        for key, value in state.items():
            if key.startswith("encoder.") and key != "encoder.pos_embed":
                put(key[len("encoder."):], key, value)
            else:
                ignored.append(key)
    elif layout == "huggingface":
        qkv = {}
        for key, value in state.items():
            name = key[len("videomae."):] if key.startswith("videomae.") else key
            layer = _HF_LAYER.match(name)
            if layer and layer.group(1) == "decoder.decoder_layers" and not keep_decoder:
                ignored.append(key)
                continue
            prefix = "blocks" if not layer or layer.group(1) == "encoder.layer" else "decoder.blocks"
            m = layer and re.match(r"(.+)\.(weight|bias)$", layer.group(3))
            m_qkv = layer and re.match(r"attention\.attention\.(query|key|value|q_bias|v_bias)(?:\.(weight|bias))?$", layer.group(3))
            if m_qkv:
                i, (part, kind) = layer.group(2), m_qkv.groups()
                if part in ("q_bias", "v_bias") or kind == "bias":
                    if part == "key":
                        if np.any(value != 0):
                            raise CheckpointError(f"{ckpt.path}: {key} is non-zero; VideoMAE attention has no key bias")
                        ignored.append(key)
                        continue
                    bias = part if part in ("q_bias", "v_bias") else part[0] + "_bias"
                    put(f"{prefix}.{i}.attn.{bias}", key, value)
                else:
                    qkv.setdefault((prefix, int(i)), {})[part] = (key, value)
            elif m and m.group(1) in _HF_BLOCK:
                put(f"{prefix}.{layer.group(2)}.{_HF_BLOCK[m.group(1)]}.{m.group(2)}", key, value)
            elif keep_decoder and _keep_for_pretraining(name):
                put(name, key, value)
            elif name.startswith("embeddings.patch_embeddings.projection."):
                put("patch_embed.proj." + name.rsplit(".", 1)[1], key, value)
            elif name.startswith("layernorm."):
                put("norm." + name.rsplit(".", 1)[1], key, value)
            elif name.startswith("fc_norm."):
                put(name, key, value)
            elif name.startswith("classifier."):
                put("head." + name.rsplit(".", 1)[1], key, value)
            elif _ignorable(name, keep_decoder):
                ignored.append(key)
            else:
                put(key, key, value)  # unknown: reported as unexpected
        for (prefix, i), parts in sorted(qkv.items()):
            missing = [p for p in ("query", "key", "value") if p not in parts]
            if missing:
                # Leave the block's qkv absent so it is reported with the other missing tensors.
                hf_prefix = "encoder.layer" if prefix == "blocks" else "decoder.decoder_layers"
                origin[f"{prefix}.{i}.attn.qkv.weight"] = f"{hf_prefix}.{i}.attention.attention.{'/'.join(missing)}.weight"
                continue
            names = "/".join(parts[p][0] for p in ("query", "key", "value"))
            put(f"{prefix}.{i}.attn.qkv.weight", names, np.concatenate([parts[p][1] for p in ("query", "key", "value")], 0))
    else:
        for key, value in state.items():
            name = key
            if layout == "videomae_pretrain":
                if keep_decoder and _keep_for_pretraining(key):
                    put(key, key, value)
                    continue
                if _ignorable(key, keep_decoder):
                    ignored.append(key)
                    continue
                if not key.startswith("encoder."):
                    put(key, key, value)
                    continue
                name = key[len("encoder."):]
            if name == "pos_embed":
                check_pos_embed(value, ckpt.path)
                ignored.append(key)
            elif _ignorable(name, keep_decoder):
                ignored.append(key)
            else:
                put(name, key, value)
    return out, layout, ignored, origin


def check_pos_embed(value, path):
    from mmder_tf.models.layers import sincos_position_table

    table = np.asarray(value).reshape(-1, value.shape[-1])
    if not np.allclose(table, sincos_position_table(*table.shape), atol=1e-4):
        raise CheckpointError(f"{path}: pos_embed is a learned position embedding; only VideoMAE's fixed sine-cosine table is supported")


# ---------------------------------------------------------------- what the tensors cannot tell

# Upstream's args name the model only (`--model`), not its heads: the size in that name gives
# (encoder width, heads, decoder width, decoder heads) as the VideoMAE / MAE-DFER model functions fix them.
_UPSTREAM_SIZES = {"small": (384, 6, 192, 3), "base": (768, 12, 384, 6), "large": (1024, 16, 512, 8),
                   "huge": (1280, 16, 640, 8), "base_dim512": (512, 8, 384, 6)}


def recorded_geometry(args) -> dict:
    """num_frames / image_size / region_size as the checkpoint's saved args record them (upstream's names)."""
    out = {}
    if args.get("num_frames") is not None:
        out["num_frames"] = int(args["num_frames"])
    size = args.get("input_size")
    if size is not None:
        out["image_size"] = int(size) if np.ndim(size) == 0 else tuple(int(v) for v in size)
    if args.get("lg_region_size") is not None:
        out["region_size"] = tuple(int(v) for v in args["lg_region_size"])
    return out


def _recorded_heads(args, width, decoder):
    for key in ("decoder_num_heads",) if decoder else ("num_heads", "encoder_num_heads"):
        if args.get(key) is not None:
            return int(args[key])
    m = re.search(r"_(small|base|large|huge)(_dim512)?(?:_|$)", str(args.get("model", "")))
    size = _UPSTREAM_SIZES.get(m.group(1) + (m.group(2) or "")) if m else None
    if size is not None and size[2 if decoder else 0] == width:  # a name that disagrees with the tensors is no evidence
        return size[3 if decoder else 1]
    return None


def resolve_heads(width, given=None, args=None, config_value=None, decoder=False, path="checkpoint"):
    """Attention heads of a `width`-wide encoder (decoder): the caller's, else the saved args', else the
    HF config's, else a standard width's; refused when none of them can tell."""
    what = "decoder" if decoder else "encoder"
    heads = next((int(v) for v in (given, _recorded_heads(args or {}, width, decoder), config_value) if v is not None), None)
    if heads is None:
        heads = (DECODER_HEADS_BY_WIDTH if decoder else HEADS_BY_WIDTH).get(int(width))
    if heads is None:
        how = ("decoder_overrides={'num_heads': N} (mmder-convert --decoder-num-heads N)" if decoder
               else "num_heads=N (mmder-convert --num-heads N)")
        raise CheckpointError(f"{path}: the head count of its {width}-wide {what} cannot be read (no saved args or config "
                              f"name it, and {width} is not a standard width): pass {how}")
    if heads < 1 or width % heads:
        raise ConfigError(f"{path}: num_heads {heads} does not divide the {what} width {width}")
    return heads


# ---------------------------------------------------------------- architecture


def infer_backbone_config(tensors, hf_config=None, num_frames=None, image_size=None, path="checkpoint", num_heads=None,
                          args=None):
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
        "num_heads": resolve_heads(hidden_dim, num_heads, args, hf_config.get("num_attention_heads"), path=path),
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


def conv3d_weight(a):
    return np.transpose(a, (2, 3, 4, 1, 0))  # [out, in, t, h, w] -> [t, h, w, in, out]


def linear_weight(a):
    return np.transpose(a)


def identity(a):
    return a


def dense_targets(prefix, layer):
    return {f"{prefix}.weight": (layer.kernel, linear_weight), f"{prefix}.bias": (layer.bias, identity)}


def norm_targets(prefix, layer):
    return {f"{prefix}.weight": (layer.gamma, identity), f"{prefix}.bias": (layer.beta, identity)}


def classifier_targets(classifier) -> dict:
    if classifier is None:
        return {}
    return {**norm_targets("fc_norm", classifier.fc_norm), **dense_targets("head", classifier.head)}


def block_targets(p, block):
    """Checkpoint keys of one VideoMAE block (`TransformerBlock`) under prefix `p`."""
    targets = norm_targets(f"{p}.norm1", block.norm1)
    targets[f"{p}.attn.qkv.weight"] = (block.attn.qkv.kernel, linear_weight)
    if block.attn.qkv_bias:
        targets[f"{p}.attn.q_bias"] = (block.attn.q_bias, identity)
        targets[f"{p}.attn.v_bias"] = (block.attn.v_bias, identity)
    targets.update(dense_targets(f"{p}.attn.proj", block.attn.proj))
    targets.update(norm_targets(f"{p}.norm2", block.norm2))
    targets.update(dense_targets(f"{p}.mlp.fc1", block.mlp.fc1))
    targets.update(dense_targets(f"{p}.mlp.fc2", block.mlp.fc2))
    if block.layer_scale_init is not None:
        targets[f"{p}.gamma_1"] = (block.gamma_1, identity)
        targets[f"{p}.gamma_2"] = (block.gamma_2, identity)
    return targets


def decoder_targets(pretrainer):
    """The decoder side of a pre-training model under MCG-NJU's names (`decoder.blocks.N.*`, `decoder.norm.*`,
    `decoder.head.*`, `encoder_to_decoder.weight`, `mask_token`); encoder-independent."""
    decoder = pretrainer.decoder
    targets = {
        "encoder_to_decoder.weight": (pretrainer.encoder_to_decoder.kernel, linear_weight),
        "mask_token": (decoder.mask_token, identity),
    }
    for i, block in enumerate(decoder.blocks):
        targets.update(block_targets(f"decoder.blocks.{i}", block))
    targets.update(norm_targets("decoder.norm", decoder.norm))
    targets.update(dense_targets("decoder.head", decoder.head))
    return targets


def pretraining_targets(pretrainer):
    """model_targets for a VideoMAEPretrainer: the encoder under its fine-tuned names plus `decoder_targets`."""
    return {**model_targets(pretrainer.backbone), **decoder_targets(pretrainer)}


def model_targets(backbone, classifier=None):
    """Checkpoint key -> (Keras variable, torch->Keras transform) for every weight of the model."""
    from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone

    if isinstance(backbone, LGIFormerBackbone):
        from mmder_tf.models.lgi_former.convert import model_targets as lgi_targets

        return lgi_targets(backbone, classifier)
    embed = backbone.get_layer("patch_embed").proj
    targets = {"patch_embed.proj.weight": (embed.kernel, conv3d_weight), "patch_embed.proj.bias": (embed.bias, identity)}
    for i in range(backbone.depth):
        targets.update(block_targets(f"blocks.{i}", backbone.get_layer(f"block_{i}")))
    if backbone.final_norm is not None:
        targets.update(norm_targets("norm", backbone.final_norm))
    targets.update(classifier_targets(classifier))
    return targets


def check_tensors(model_targets_, tensors, origin=None, allow_missing_head=False, skip=(), path="checkpoint"):
    """Check every tensor against the model without assigning; returns the keys to leave fresh.

    Raises CheckpointError naming every missing, unexpected and mis-shaped tensor.
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
    return fresh


def load_tensors(model_targets_, tensors, origin=None, allow_missing_head=False, skip=(), path="checkpoint"):
    """Check every tensor against the model, then assign all of them; returns the keys left fresh."""
    fresh = check_tensors(model_targets_, tensors, origin, allow_missing_head, skip, path)
    for key, (variable, transform) in model_targets_.items():
        if key not in fresh:
            variable.assign(np.ascontiguousarray(transform(tensors[key])).astype(variable.dtype))
    return fresh


_TO_TORCH = {
    conv3d_weight: lambda a: np.transpose(a, (4, 3, 0, 1, 2)),
    linear_weight: np.transpose,
    identity: identity,
}


def videomae_pretraining_state(pretrainer):
    """The pre-training model as an MCG-NJU state dict (numpy float32, torch layouts): `encoder.*`, `decoder.*`,
    `encoder_to_decoder.weight`, `mask_token`; what MCG-NJU / MAE-DFER / HiCMAE pre-training code loads."""
    import keras

    state = {}
    for key, (variable, transform) in pretraining_targets(pretrainer).items():
        name = key if key.startswith("decoder.") or key in PRETRAINING_KEYS else f"encoder.{key}"
        value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        state[name] = np.ascontiguousarray(_TO_TORCH[transform](value))
    return state


def pretraining_args(pretrainer) -> dict:
    """What the tensors cannot tell (heads, input geometry) under upstream's argument names; a plain dict, not
    upstream's Namespace, so that `torch.load(weights_only=True)` reads the file without an allow-list."""
    b = pretrainer.backbone
    args = {"num_frames": int(b.num_frames), "input_size": b.image_size if np.ndim(b.image_size) == 0 else list(b.image_size),
            "tubelet_size": int(b.tubelet_size), "encoder_num_heads": int(b.num_heads),
            "decoder_num_heads": int(pretrainer.decoder.num_heads)}
    if getattr(b, "region_size", None) is not None:
        args["lg_region_size"] = [int(v) for v in b.region_size]
    return args


def save_videomae_pretraining(pretrainer, path):
    """torch.save the MCG-NJU state dict (torch tensors under "model") and the heads and input geometry
    (under "args", where upstream saves its own) to `path`, atomically. Returns the path."""
    path = Path(path)
    torch = _import_torch(path)
    state = {k: torch.from_numpy(v) for k, v in videomae_pretraining_state(pretrainer).items()}
    with replacing(path) as tmp:
        torch.save({"model": state, "args": pretraining_args(pretrainer)}, tmp)
    return path


# ---------------------------------------------------------------- architecture of the decoder


def infer_decoder_config(tensors, hf_config=None, layout="videomae_pretrain", path="checkpoint", num_heads=None, args=None):
    """MAEDecoder kwargs from the decoder tensors (and the HF config, which wins for heads and eps)."""
    hf_config = hf_config or {}
    missing = [k for k in ("encoder_to_decoder.weight", "decoder.head.weight") if k not in tensors]
    if missing:
        raise CheckpointError(
            f"{path}: not a pre-training checkpoint: missing {', '.join(missing)} (an encoder-only checkpoint has no "
            "decoder; start one fresh with VideoMAEPretrainer.from_encoder(load_pretrained(path), decoder=PRESET))"
        )
    width = int(tensors["encoder_to_decoder.weight"].shape[0])
    indices = {int(m.group(1)) for k in tensors if (m := re.match(r"decoder\.blocks\.(\d+)\.", k))}
    if not indices:
        raise CheckpointError(f"{path}: the decoder has no blocks (decoder.blocks.N.* / decoder.decoder_layers.N.*)")
    depth = max(indices) + 1
    fc1 = tensors.get("decoder.blocks.0.mlp.fc1.weight")
    for key, value in (("decoder_hidden_size", width), ("decoder_num_hidden_layers", depth)):
        if key in hf_config and int(hf_config[key]) != value:
            raise CheckpointError(f"{path}: config.json {key}={hf_config[key]} but the tensors say {value}")
    hf = layout == "huggingface"
    return {
        "hidden_dim": width,
        "depth": depth,
        "num_heads": resolve_heads(width, num_heads, args, hf_config.get("decoder_num_attention_heads"), decoder=True, path=path),
        "output_dim": int(tensors["decoder.head.weight"].shape[0]),
        "mlp_ratio": fc1.shape[0] / width if fc1 is not None else 4.0,
        "layer_norm_epsilon": float(hf_config.get("layer_norm_eps", VIDEOMAE_EPS)),
        # HF's decoder norm is a bare nn.LayerNorm; MCG-NJU's uses 1e-6 like every other norm.
        "norm_epsilon": HF_FC_NORM_EPS if hf else VIDEOMAE_EPS,
        "layer_scale_init": 1.0 if "decoder.blocks.0.gamma_1" in tensors else None,
        "qkv_bias": "decoder.blocks.0.attn.q_bias" in tensors,
    }


# ---------------------------------------------------------------- public API


def _hf_class_names(hf_config, num_classes):
    labels = (hf_config or {}).get("id2label")
    if not labels or len(labels) != num_classes:
        return None
    return [str(labels[k]) for k in sorted(labels, key=int)]


def _build_from_torch(
    ckpt, num_frames, image_size, classifier, num_classes, allow_missing_head, mode, dropout, class_names, dtype, overrides
):
    """`classifier=None`: an EmotionClassifier when the checkpoint has a head or a head is asked for, else a backbone."""
    from mmder_tf.models.classifier import EmotionClassifier

    overrides = dict(overrides)
    num_heads = overrides.pop("num_heads", None)
    recorded = recorded_geometry(ckpt.args)
    num_frames = recorded.get("num_frames") if num_frames is None else num_frames
    image_size = recorded.get("image_size") if image_size is None else image_size
    region_size = overrides.pop("region_size", None)
    layout = _detect_layout({k.removeprefix("module.") for k in ckpt.state}, ckpt.path)
    if region_size is None and layout == "mae_dfer":
        region_size = recorded.get("region_size")
    lgi_former = layout == "mae_dfer"
    if region_size is not None and not lgi_former:
        raise ConfigError(f"region_size applies to MAE-DFER (LGI-Former) checkpoints; {ckpt.path} is a {layout} checkpoint")
    if classifier is None:
        has_head = any(k.removeprefix("module.") in ("head.weight", "classifier.weight") for k in ckpt.state)
        classifier = has_head or num_classes is not None or allow_missing_head
    if layout == "hicmae" and classifier:
        # The whole audio-visual model; without a classifier, HiCMAE gives its visual encoder (below).
        from mmder_tf.models.hicmae.convert import build_from_tensors

        geometry = {k: v for k, v in (("num_frames", num_frames), ("image_size", image_size), ("num_heads", num_heads))
                    if v is not None}
        return build_from_tensors(ckpt.state, ckpt.args, ckpt.path, classifier=True, num_classes=num_classes,
                                  allow_missing_head=allow_missing_head, mode=mode, dropout=dropout,
                                  class_names=class_names, dtype=dtype, overrides={**geometry, **overrides})
    # MAE-DFER's fine-tuning leaves the pre-training encoder's final norm out (only the pooled feature is
    # normalised, by fc_norm); a bare backbone keeps it, so it returns what the pre-training encoder returns.
    tensors, layout, ignored, origin = canonical_state(ckpt, keep_final_norm=not classifier)
    if lgi_former:
        from mmder_tf.models.lgi_former import convert as lgi_convert
        from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone

        config = lgi_convert.infer_backbone_config(tensors, num_frames, image_size, region_size, ckpt.path, num_heads, ckpt.args)
        backbone_class = LGIFormerBackbone
    else:
        from mmder_tf.models.videomae.backbone import VideoMAEBackbone

        if layout == "hicmae" and image_size is None:
            image_size = HICMAE_IMAGE_SIZE
        config = infer_backbone_config(tensors, ckpt.hf_config, num_frames, image_size, ckpt.path, num_heads, ckpt.args)
        backbone_class = VideoMAEBackbone
    config.update(overrides)
    try:
        backbone = backbone_class(**config, dtype=dtype)
    except TypeError as exc:
        raise ConfigError(f"{ckpt.path}: {backbone_class.__name__} does not take these arguments: {exc}") from exc
    model, skip = backbone, ()
    if classifier:
        if num_classes is None:
            if "head.weight" not in tensors:
                raise ConfigError(f"{ckpt.path} has no video classification head: pass num_classes (and allow_missing_head=True)")
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
    ignored = sorted(ignored) + [k for k in skip if k in tensors]
    report = {
        "source": ckpt.path,
        "layout": layout,
        "model": type(model).__name__,
        "loaded": len(tensors) - len([k for k in skip if k in tensors]),
        "ignored": ignored,
        "dropped": dropped_parts(origin.get(k, k) if k in skip else k for k in ignored),
        "fresh": fresh,
        "backbone": backbone.get_config(),
    }
    return model, report


def _build_pretrainer_from_torch(ckpt, num_frames, image_size, dtype, overrides, decoder_overrides=None):
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone
    from mmder_tf.models.videomae.pretraining import MAEDecoder, VideoMAEPretrainer

    overrides, decoder_overrides = dict(overrides), dict(decoder_overrides or {})
    num_heads, decoder_heads = overrides.pop("num_heads", None), decoder_overrides.pop("num_heads", None)
    recorded = recorded_geometry(ckpt.args)
    num_frames = recorded.get("num_frames") if num_frames is None else num_frames
    image_size = recorded.get("image_size") if image_size is None else image_size
    region_size = overrides.pop("region_size", None)
    tensors, layout, ignored, origin = canonical_state(ckpt, keep_decoder=True)
    if region_size is None and layout == "mae_dfer_pretrain":
        region_size = recorded.get("region_size")
    if layout not in ("videomae_pretrain", "huggingface", "mae_dfer_pretrain"):
        raise CheckpointError(f"{ckpt.path}: a {layout} checkpoint; pretraining=True reads VideoMAE pre-training checkpoints "
                              "(MCG-NJU encoder.*/decoder.* or a Hugging Face VideoMAEForPreTraining directory) and "
                              "MAE-DFER's")
    if region_size is not None and layout != "mae_dfer_pretrain":
        raise ConfigError(f"region_size applies to MAE-DFER (LGI-Former) checkpoints; {ckpt.path} is a {layout} checkpoint")
    # First: an encoder-only checkpoint is told so, whatever else it lacks.
    decoder_config = {**infer_decoder_config(tensors, ckpt.hf_config, layout, ckpt.path, decoder_heads, ckpt.args),
                      **decoder_overrides}
    if layout == "mae_dfer_pretrain":
        from mmder_tf.models.lgi_former import convert as lgi_convert
        from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
        from mmder_tf.models.lgi_former.pretraining import LGIFormerPretrainer

        config = lgi_convert.infer_backbone_config(tensors, num_frames, image_size, region_size, ckpt.path, num_heads, ckpt.args)
        backbone_class, pretrainer_class, settings = LGIFormerBackbone, LGIFormerPretrainer, {}
    else:
        config = infer_backbone_config(tensors, ckpt.hf_config, num_frames, image_size, ckpt.path, num_heads, ckpt.args)
        norm_pix_loss = bool((ckpt.hf_config or {}).get("norm_pix_loss", True))
        backbone_class, pretrainer_class, settings = VideoMAEBackbone, VideoMAEPretrainer, {"norm_pix_loss": norm_pix_loss}
    config.update(overrides)
    backbone = backbone_class(**config, dtype=dtype)
    decoder = MAEDecoder(**decoder_config, dtype=backbone.patch_embed.dtype_policy, name="decoder")
    model = pretrainer_class(backbone, decoder, dtype=dtype, **settings)
    load_tensors(pretraining_targets(model), tensors, origin, path=ckpt.path)
    report = {
        "source": ckpt.path,
        "layout": layout,
        "model": type(model).__name__,
        "loaded": len(tensors),
        "ignored": sorted(ignored),
        "fresh": [],
        "backbone": backbone.get_config(),
        "decoder": decoder.get_config(),
    }
    return model, report


def _load_preset_model(path, num_frames, image_size, classifier, num_classes, allow_missing_head, mode, dropout,
                       class_names, dtype, overrides, pretraining=False):
    """What `load_pretrained` makes of a preset folder: the saved model, its encoder, or a classifier on it."""
    from mmder_tf.models.classifier import EmotionClassifier
    from mmder_tf.models.hicmae.backbone import HiCMAEBackbone
    from mmder_tf.models.hicmae.classifier import HiCMAEClassifier
    from mmder_tf.models.lgi_former.pretraining import LGIFormerPretrainer
    from mmder_tf.models.videomae.pretraining import VideoMAEPretrainer

    pretrainers = (VideoMAEPretrainer, LGIFormerPretrainer)
    geometry = {k: v for k, v in (("num_frames", num_frames), ("image_size", image_size)) if v is not None}
    saved = load_preset(path, dtype=dtype, backbone_overrides={**geometry, **overrides})
    if pretraining:
        if not isinstance(saved, pretrainers):
            raise CheckpointError(f"{path} holds a {type(saved).__name__}, not a pre-training model: it has no decoder")
        return saved
    backbone = saved.backbone if isinstance(saved, (EmotionClassifier, HiCMAEClassifier, *pretrainers)) else saved
    if not classifier:
        return backbone
    if isinstance(saved, HiCMAEClassifier) or isinstance(backbone, HiCMAEBackbone):
        return _hicmae_preset_classifier(path, saved, backbone, num_classes, allow_missing_head, mode, dropout,
                                         class_names)
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
    pooling = saved.pooling if isinstance(saved, EmotionClassifier) else None
    model = EmotionClassifier(backbone, num_classes, mode=mode, dropout=dropout, class_names=class_names, pooling=pooling)
    if isinstance(saved, EmotionClassifier):
        model.fc_norm.set_weights(saved.fc_norm.get_weights())
    return model


def _hicmae_preset_classifier(path, saved, backbone, num_classes, allow_missing_head, mode, dropout, class_names):
    from mmder_tf.models.hicmae.classifier import HiCMAEClassifier

    if saved is not backbone and (num_classes is None or num_classes == saved.num_classes):
        saved.mode = mode
        if class_names is not None:
            saved.class_names = list(class_names)
        return saved
    if not allow_missing_head:
        what = "has no head" if saved is backbone else f"has a {saved.num_classes}-class head"
        raise CheckpointError(f"{path} {what}; pass allow_missing_head=True for a fresh {num_classes}-class head")
    if num_classes is None:
        raise ConfigError(f"{path} has no classification head: pass num_classes")
    return HiCMAEClassifier(backbone, num_classes, mode=mode, dropout=dropout, class_names=class_names)


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
    region_size=None,
    pretraining=False,
    decoder_overrides=None,
    **backbone_overrides,
):
    """A ready backbone (or EmotionClassifier with `classifier=True`) from any supported checkpoint.

    `path`: a torch file (.pth/.pt/.bin) of VideoMAE (MCG-NJU), MAE-DFER or
    HiCMAE, a .safetensors file, a Hugging Face VideoMAE directory, a preset
    folder (`save_to_preset`, `convert_checkpoint`), or a pre-training run folder
    (`mmder-pretrain --out`: its encoder, or with `pretraining=True` the whole
    model). MAE-DFER checkpoints give an `LGIFormerBackbone`, the others a
    `VideoMAEBackbone` (HiCMAE: its visual encoder). With `classifier=True` a
    HiCMAE checkpoint gives its whole audio-visual `HiCMAEClassifier`; the keywords
    `num_heads`, `audio_num_heads`, `fusion_num_heads`, `image_size`, `audio_length`
    supply what neither its tensors nor its `args` tell (models.hicmae.convert).
    Depth, width and MLP size come from the tensors; heads from `num_heads=`, else
    the args saved beside the weights (upstream's `--model` name, or the heads this
    package's .pth export records), else the HF config, else the standard ViT widths;
    any other width is refused with a message naming `num_heads` (never guessed).
    LayerNorm eps from the HF config, else 1e-6. `num_frames` / `image_size` (an int or
    (height, width)) default to the checkpoint's saved args or config, else the release's:
    16 / 224 (VideoMAE), 16 / 160 (MAE-DFER, HiCMAE); `region_size` (t, h, w)
    in tubelets, MAE-DFER only, defaults to (2, 5, 10).
    `allow_missing_head`: leave fc_norm/head fresh when the checkpoint has none,
    or a head of another class count than `num_classes`.

    `pretraining=True` returns the whole masked autoencoder (`VideoMAEPretrainer`) from an MCG-NJU
    pre-training checkpoint (`encoder.*`, `decoder.*`, `encoder_to_decoder.weight`, `mask_token`), a
    Hugging Face VideoMAEForPreTraining directory, or a preset of a pre-training model;
    every missing, unexpected or mis-shaped tensor is named. Without it, such checkpoints give their encoder.
    `decoder_overrides`: MAEDecoder kwargs the tensors cannot tell (`num_heads` of a non-standard width
    without a config, `norm_epsilon`), as `**backbone_overrides` are for the encoder.
    """
    path = Path(path)
    path = run_folder_weights(path, pretraining)
    if region_size is not None:
        backbone_overrides["region_size"] = tuple(int(r) for r in region_size)
    if pretraining and classifier:
        raise ConfigError("pretraining=True loads the masked autoencoder; it has no classification head (drop classifier=True)")
    if decoder_overrides and not pretraining:
        raise ConfigError("decoder_overrides apply to pretraining=True only")
    args = (num_frames, image_size, classifier, num_classes, allow_missing_head, mode, dropout, class_names, dtype, backbone_overrides)
    if is_preset(path):
        return _load_preset_model(path, *args, pretraining=pretraining)
    if path.name.endswith(".h5"):
        _refuse_weights_file(path)
    if pretraining:
        ckpt = read_checkpoint(path, trust_pickle)
        return _build_pretrainer_from_torch(ckpt, num_frames, image_size, dtype, backbone_overrides, decoder_overrides)[0]
    model, _ = _build_from_torch(read_checkpoint(path, trust_pickle), *args)
    return model


# Destinations that name a file, not a preset folder (a typo for one would be written as a folder).
_FILE_SUFFIXES = (".h5", ".json", ".npz", ".npy", ".bin", ".safetensors", ".keras", ".ckpt", ".pkl", ".pth", ".pt")


def _check_destination(dst, allow_pth=False) -> Path:
    dst = Path(dst)
    if dst.suffix in _FILE_SUFFIXES and not (allow_pth and dst.suffix in (".pth", ".pt")):
        raise ConfigError(f"destination {dst} must be a preset folder (a path without a file extension"
                          + (", or .pth/.pt for the MCG-NJU layout)" if allow_pth else ")"))
    return dst


def convert_legacy(src, dst) -> dict:
    """Convert an `X.weights.h5` + `X.config.json` pair of earlier versions to the preset folder `dst`."""
    model = read_legacy(src)
    save_preset(model, _check_destination(dst), source=src)
    backbone = getattr(model, "backbone", model)
    return {"source": str(src), "layout": "mmder_tf two-file", "model": type(model).__name__,
            "loaded": len(model.weights), "ignored": [], "dropped": {}, "fresh": [],
            "backbone": backbone.get_config(), "preset": str(dst)}


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
    region_size=None,
    **backbone_overrides,
):
    """Convert a torch / HF checkpoint (as `load_pretrained` reads) to the preset folder `dst`.

    Writes an EmotionClassifier when the checkpoint has a video head or
    `num_classes` is given (an encoder-only checkpoint then needs
    `allow_missing_head`), otherwise (or with `backbone_only`) the backbone.
    Returns a report dict: layout, tensors loaded, ignored keys, `dropped`
    (ignored tensors per upstream part: decoder, audio encoder, ...), fresh keys,
    `preset` (the folder written). A two-file model of earlier versions converts as it is.
    A HiCMAE checkpoint gives its whole audio-visual `HiCMAEClassifier` (with `backbone_only`, its visual
    encoder); a HiCMAE model converts back to upstream's layout when `dst` ends in .pth / .pt.
    """
    if Path(dst).suffix in (".pth", ".pt"):
        return _convert_to_hicmae(src, Path(dst), num_frames, image_size, trust_pickle, backbone_overrides)
    dst = _check_destination(dst)
    if _legacy_config(Path(src)) is not None:
        return convert_legacy(src, dst)
    ckpt = read_checkpoint(src, trust_pickle)
    if region_size is not None:
        backbone_overrides["region_size"] = tuple(int(r) for r in region_size)
    model, report = _build_from_torch(
        ckpt, num_frames, image_size, False if backbone_only else None, num_classes, allow_missing_head, "linear_probe", 0.0,
        class_names, None, backbone_overrides,
    )
    save_preset(model, dst, source=f"{report['source']} ({report['layout']} layout)")
    report["preset"] = str(dst)
    return report


def _convert_to_hicmae(src, dst, num_frames, image_size, trust_pickle, overrides):
    from mmder_tf.models.hicmae.classifier import HiCMAEClassifier
    from mmder_tf.models.hicmae.convert import model_targets as hicmae_targets
    from mmder_tf.models.hicmae.convert import save_hicmae

    model = load_pretrained(src, num_frames, image_size, classifier=True, trust_pickle=trust_pickle, **overrides)
    if not isinstance(model, HiCMAEClassifier):
        raise ConfigError(f"{dst}: only HiCMAE models are written as .pth this way (VideoMAE pre-training models: "
                          "--pretraining); pass a preset folder as destination")
    save_hicmae(model, dst)
    return {"source": str(src), "layout": "hicmae", "model": type(model).__name__, "preset": str(dst),
            "loaded": len(hicmae_targets(model)), "ignored": [], "dropped": {}, "fresh": [],
            "backbone": model.backbone.get_config()}


def convert_pretraining(src, dst, *, num_frames=None, image_size=None, trust_pickle=False, decoder_overrides=None,
                        **backbone_overrides):
    """Convert a pre-training model (MCG-NJU .pth, HF VideoMAEForPreTraining folder, or a preset) to `dst`:
    a preset folder, or `.pth`/`.pt` in the MCG-NJU layout. Returns a report dict."""
    dst = _check_destination(dst, allow_pth=True)
    if _legacy_config(Path(src)) is not None:
        model = read_legacy(src)
        if not hasattr(model, "decoder"):
            raise CheckpointError(f"{src} holds a {type(model).__name__}, not a pre-training model: it has no decoder")
    else:
        model = load_pretrained(src, num_frames, image_size, pretraining=True, trust_pickle=trust_pickle,
                                decoder_overrides=decoder_overrides, **backbone_overrides)
    if dst.suffix in (".pth", ".pt"):
        save_videomae_pretraining(model, dst)
        layout = "videomae_pretrain"
    else:
        save_preset(model, dst, source=src)
        layout = "mmder_tf preset"
    return {"source": str(src), "model": type(model).__name__, "preset": str(dst), "layout": layout,
            "loaded": len(pretraining_targets(model)), "backbone": model.backbone.get_config(),
            "decoder": model.decoder.get_config()}


def _int_tuple(least, most):
    def parse(text):
        try:
            values = tuple(int(v) for v in text.replace("x", ",").split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
        if not least <= len(values) <= most:
            raise argparse.ArgumentTypeError(f"expected {least}..{most} integers, got {text!r}")
        return values[0] if len(values) == 1 and most <= 2 else values

    return parse


@one_line_file_errors("mmder-convert")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mmder_tf.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torch .pth/.pt/.bin, .safetensors, a Hugging Face VideoMAE directory, or an "
                                    "X.weights.h5 of the earlier two-file format (X.config.json beside it)")
    parser.add_argument("dst", help="output preset folder (config.json, model.weights.h5, metadata.json); "
                                    "for a HiCMAE model also .pth (upstream's layout)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: checkpoint config, else 16)")
    parser.add_argument("--image-size", type=_int_tuple(1, 2), default=None,
                        help="frame size, N or H,W (default: checkpoint config, else 224; MAE-DFER and HiCMAE 160)")
    parser.add_argument("--region-size", type=_int_tuple(3, 3), default=None,
                        help="MAE-DFER region size t,h,w in tubelets (default 2,5,10)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads (default: the checkpoint's args or config, else a standard width's)")
    parser.add_argument("--audio-num-heads", type=int, default=None, help="HiCMAE audio encoder heads")
    parser.add_argument("--fusion-num-heads", type=int, default=None, help="HiCMAE fusion encoder heads")
    parser.add_argument("--audio-length", type=int, default=None, help="HiCMAE fbank frames (256 released)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of the head (default: the checkpoint's head)")
    parser.add_argument("--class-names", default=None, help="comma-separated class names")
    parser.add_argument("--allow-missing-head", action="store_true", help="leave fc_norm/head fresh if absent or of another size")
    parser.add_argument("--backbone-only", action="store_true", help="write the encoder only")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickled objects in torch files")
    parser.add_argument("--pretraining", action="store_true",
                        help="convert the whole masked autoencoder (encoder + decoder); dst a preset folder, or .pth for the MCG-NJU layout")
    parser.add_argument("--decoder-num-heads", type=int, default=None, help="decoder attention heads (--pretraining; default: as --num-heads)")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up logs")
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)
    if args.pretraining:
        return _main_pretraining(args)
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
            region_size=args.region_size,
            **{k: v for k, v in (("num_heads", args.num_heads), ("audio_num_heads", args.audio_num_heads),
                                 ("fusion_num_heads", args.fusion_num_heads), ("audio_length", args.audio_length))
               if v is not None},
        )
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    b = report["backbone"]
    print(
        f"{report['model']} ({report['layout']} layout, depth {b['depth']}, width {b['hidden_dim']}, heads {b['num_heads']}, "
        f"{b['num_frames']}x{b['image_size']}): {report['loaded']} tensors -> {report['preset']}"
        + (f"; fresh: {', '.join(report['fresh'])}" if report["fresh"] else "")
        + (f"; ignored {len(report['ignored'])}" if report["ignored"] else "")
    )
    for part, count in report["dropped"].items():
        print(f"dropped: {part} ({count} tensors)")
    return 0


def _main_pretraining(args):
    try:
        report = convert_pretraining(
            args.src, args.dst, num_frames=args.num_frames, image_size=args.image_size, trust_pickle=args.trust_pickle,
            decoder_overrides=None if args.decoder_num_heads is None else {"num_heads": args.decoder_num_heads},
            **({} if args.num_heads is None else {"num_heads": args.num_heads}),
        )
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    b, d = report["backbone"], report["decoder"]
    print(
        f"{report['model']} (encoder depth {b['depth']}, width {b['hidden_dim']}, heads {b['num_heads']}; decoder depth "
        f"{d['depth']}, width {d['hidden_dim']}, heads {d['num_heads']}; {b['num_frames']}x{b['image_size']}): "
        f"{report['loaded']} tensors -> {report['preset']} ({report['layout']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
