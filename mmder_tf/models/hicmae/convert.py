"""HiCMAE checkpoints (fine-tuning and pre-training, `.pth` with `model` and maybe `args`) <-> HiCMAEClassifier.

Used through `mmder_tf.models.convert` (`load_pretrained(..., classifier=True)`,
`convert_checkpoint`, `mmder-convert`), which detects these checkpoints by
their `encoder_audio.` / `encoder_fusion.` tensors. Keys keep upstream's names
(`encoder.`, `encoder_audio.`, `encoder_fusion.blocks{,_audio}.N.`,
`video_layer_weights`, `fc_norm.`, `head.`); no positional table is stored.

Widths, depths, MLP size, patch and tubelet sizes come from the tensor shapes.
Head counts and the input geometry do not: they come from the caller, else
from the checkpoint's `args` (the registered model name fixes the heads and
sizes, `input_size` / `input_size_audio` / `num_frames` the geometry), else
the load is refused naming the keyword to pass.
"""
from __future__ import annotations

import re

import numpy as np

from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.models.hicmae.presets import REGISTERED_MODELS

# What upstream's fine-tuning does not take from a pre-training checkpoint.
PRETRAINING_EXTRAS = ("decoder.", "decoder_audio.", "encoder_to_decoder", "mask_token")
HEAD_KEYS = ("video_layer_weights", "audio_layer_weights", "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")
# Every HiCMAE data loader computes a 128-bin fbank; 16 frames is the only clip length any of its models sees.
NUM_MEL_BINS = 128
NUM_FRAMES = 16
# Keyword -> where an upstream argparse Namespace keeps it.
_ARGS = {"image_size": "input_size", "audio_length": "input_size_audio", "num_frames": "num_frames"}


def is_hicmae(keys) -> bool:
    return any(k.removeprefix("module.").startswith(("encoder_audio.", "encoder_fusion.")) for k in keys)


def canonical_state(state, keep_head=True):
    """(tensors the classifier takes, ignored keys): `module.` stripped, pre-training decoders left out."""
    tensors, ignored = {}, []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(PRETRAINING_EXTRAS) or name.endswith("pos_embed") or (not keep_head and name in HEAD_KEYS):
            ignored.append(key)
        else:
            tensors[name] = value
    return tensors, ignored


def _depth(tensors, prefix, path):
    indices = {int(m.group(1)) for k in tensors if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if not indices:
        raise CheckpointError(f"{path}: no {prefix}N.* tensors: not a HiCMAE checkpoint")
    return max(indices) + 1


def _patch(tensors, key, dims, path):
    value = tensors.get(key)
    if value is None or value.ndim != dims:
        raise CheckpointError(f"{path}: {key} is {None if value is None else tuple(value.shape)}; expected a "
                              f"{dims}-d convolution weight")
    return value.shape


def infer_backbone_config(tensors, args=None, overrides=None, path="checkpoint"):
    """HiCMAEBackbone kwargs: architecture from the shapes, heads and geometry from `overrides`, else `args`."""
    args, overrides = dict(args or {}), dict(overrides or {})
    hidden_dim, channels, tubelet, patch, _ = _patch(tensors, "encoder.patch_embed.proj.weight", 5, path)
    audio_dim, _, audio_patch, _ = _patch(tensors, "encoder_audio.patch_embed.proj.weight", 4, path)
    if channels != 3:
        raise CheckpointError(f"{path}: the visual patch embedding takes {channels} channels, not RGB")
    fc1 = tensors.get("encoder.blocks.0.mlp.fc1.weight")
    config = {
        "hidden_dim": int(hidden_dim), "depth": _depth(tensors, "encoder.blocks.", path),
        "audio_hidden_dim": int(audio_dim), "audio_depth": _depth(tensors, "encoder_audio.blocks.", path),
        "fusion_depth": _depth(tensors, "encoder_fusion.blocks.", path),
        "mlp_ratio": fc1.shape[0] / hidden_dim if fc1 is not None else 4.0,
        "patch_size": int(patch), "tubelet_size": int(tubelet), "audio_patch_size": int(audio_patch),
        "num_mel_bins": NUM_MEL_BINS,
        # The stored gammas replace this value on load; it only decides that the weights exist.
        "layer_scale_init": 1.0 if "encoder.blocks.0.gamma_1" in tensors else None,
        "qkv_bias": "encoder.blocks.0.attn.q_bias" in tensors,
    }
    registered = {}
    model_name = args.get("model")
    if model_name in REGISTERED_MODELS:
        if (hidden_dim, audio_dim) != (512, 512):
            raise CheckpointError(f"{path}: args.model is {model_name} (512 wide) but the tensors are {hidden_dim} / "
                                  f"{audio_dim} wide")
        registered = REGISTERED_MODELS[model_name]
    known = {**registered, **{k: args[a] for k, a in _ARGS.items() if args.get(a) is not None}}
    known.setdefault("num_frames", NUM_FRAMES)
    missing = []
    for key in ("num_heads", "audio_num_heads", "fusion_num_heads", "image_size", "audio_length", "num_frames"):
        value = overrides.pop(key, None)
        value = known.get(key) if value is None else value
        if value is None:
            missing.append(key)
        else:
            config[key] = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)
    if missing:
        what = f"its args name model {model_name!r}" if model_name else "it has no args"
        raise ConfigError(f"{path}: a HiCMAE checkpoint does not store {', '.join(missing)} ({what}): pass "
                          + ", ".join(f"{k}=" for k in missing))
    config.update(overrides)
    return config


def audio_conv_weight(a):
    return np.transpose(a, (2, 3, 1, 0))[None]  # [D, 1, time, mel] -> [1, time, mel, 1, D]


def _audio_conv_to_torch(a):
    return np.transpose(a[0], (3, 2, 0, 1))


def model_targets(model):
    """HiCMAE checkpoint key -> (Keras variable, torch->Keras transform) for every weight of a HiCMAEBackbone
    (or of a HiCMAEClassifier: its backbone plus the layer weights, fc_norm and head)."""
    from mmder_tf.models.convert import block_targets, conv3d_weight, dense_targets, identity, linear_weight, norm_targets

    backbone = getattr(model, "backbone", model)
    targets = {
        "encoder.patch_embed.proj.weight": (backbone.patch_embed.proj.kernel, conv3d_weight),
        "encoder.patch_embed.proj.bias": (backbone.patch_embed.proj.bias, identity),
        "encoder_audio.patch_embed.proj.weight": (backbone.audio_patch_embed.proj.kernel, audio_conv_weight),
        "encoder_audio.patch_embed.proj.bias": (backbone.audio_patch_embed.proj.bias, identity),
    }
    for prefix, blocks, norm in (("encoder", backbone.blocks, backbone.norm),
                                 ("encoder_audio", backbone.audio_blocks, backbone.audio_norm)):
        for i, block in enumerate(blocks):
            targets.update(block_targets(f"{prefix}.blocks.{i}", block))
        targets.update(norm_targets(f"{prefix}.norm", norm))
    for stream, blocks in (("blocks", backbone.fusion_blocks), ("blocks_audio", backbone.fusion_audio_blocks)):
        for i, block in enumerate(blocks):
            p = f"encoder_fusion.{stream}.{i}"
            attn = block.cross_attn
            targets.update(norm_targets(f"{p}.cross_norm1", block.cross_norm1))
            targets.update(norm_targets(f"{p}.cross_norm2", block.cross_norm2))
            targets[f"{p}.cross_attn.q.weight"] = (attn.q.kernel, linear_weight)
            targets[f"{p}.cross_attn.kv.weight"] = (attn.kv.kernel, linear_weight)
            if attn.qkv_bias:
                targets[f"{p}.cross_attn.q_bias"] = (attn.q_bias, identity)
                targets[f"{p}.cross_attn.v_bias"] = (attn.v_bias, identity)
            targets.update(dense_targets(f"{p}.cross_attn.proj", attn.proj))
            targets.update(block_targets(p, block.block))  # the self part: norm1, attn, norm2, mlp
    targets.update(norm_targets("encoder_fusion.norm", backbone.fusion_norm))
    targets.update(norm_targets("encoder_fusion.norm_audio", backbone.fusion_audio_norm))
    if model is not backbone:
        targets["video_layer_weights"] = (model.video_pool.layer_weights, identity)
        targets["audio_layer_weights"] = (model.audio_pool.layer_weights, identity)
        targets.update(norm_targets("fc_norm", model.fc_norm))
        targets.update(dense_targets("head", model.head))
    return targets


def hicmae_state(model) -> dict:
    """The model as HiCMAE's state dict (numpy float32, torch layouts): what its fine-tuning code loads."""
    import keras

    from mmder_tf.models.convert import _TO_TORCH

    state = {}
    for key, (variable, transform) in model_targets(model).items():
        value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        inverse = _audio_conv_to_torch if transform is audio_conv_weight else _TO_TORCH[transform]
        state[key] = np.ascontiguousarray(inverse(value))
    return state


def save_hicmae(model, path):
    """torch.save HiCMAE's state dict (torch tensors under "model") to `path`, atomically. Returns the path."""
    from pathlib import Path

    from mmder_tf.fileio import replacing
    from mmder_tf.models.convert import _import_torch

    path = Path(path)
    torch = _import_torch(path)
    state = {k: torch.from_numpy(v) for k, v in hicmae_state(model).items()}
    with replacing(path) as tmp:
        torch.save({"model": state}, tmp)
    return path


def build_from_tensors(state, args, path, *, classifier, num_classes=None, allow_missing_head=False, mode="finetune",
                       dropout=0.0, class_names=None, dtype=None, overrides=None):
    """(HiCMAEClassifier or HiCMAEBackbone with the checkpoint's weights, report)."""
    from mmder_tf.models.convert import dropped_parts, load_tensors
    from mmder_tf.models.hicmae.backbone import HiCMAEBackbone
    from mmder_tf.models.hicmae.classifier import HiCMAEClassifier

    tensors, ignored = canonical_state(state, keep_head=classifier)
    config = infer_backbone_config(tensors, args, overrides, path)
    try:
        backbone = HiCMAEBackbone(**config, dtype=dtype)
    except TypeError as exc:
        raise ConfigError(f"{path}: HiCMAEBackbone does not take these arguments: {exc}") from None
    model, fresh = backbone, []
    if classifier:
        has_head = "head.weight" in tensors
        if num_classes is None:
            if not has_head:
                raise ConfigError(f"{path} has no classification head (a pre-training checkpoint): pass num_classes "
                                  "and allow_missing_head=True")
            num_classes = int(tensors["head.weight"].shape[0])
        model = HiCMAEClassifier(backbone, num_classes, mode=mode, dropout=dropout, class_names=class_names, dtype=dtype)
        targets = model_targets(model)
        if not has_head or tensors["head.weight"].shape[0] != num_classes:
            if not allow_missing_head:
                why = "no head" if not has_head else f"a {tensors['head.weight'].shape[0]}-class head"
                raise CheckpointError(f"{path} has {why}; pass allow_missing_head=True for a fresh {num_classes}-class "
                                      "head (HiCMAE's layer weights, fc_norm and head)")
            fresh = [k for k in HEAD_KEYS if k in targets]
            ignored += [k for k in HEAD_KEYS if k in tensors]
            targets = {k: v for k, v in targets.items() if k not in fresh}
            tensors = {k: v for k, v in tensors.items() if k not in HEAD_KEYS}
    else:
        targets = model_targets(model)
    load_tensors(targets, tensors, path=path)
    report = {"source": str(path), "layout": "hicmae", "model": type(model).__name__, "loaded": len(tensors),
              "ignored": sorted(ignored),
              "dropped": dropped_parts(ignored), "fresh": fresh, "backbone": backbone.get_config()}
    return model, report
