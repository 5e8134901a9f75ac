"""MAE-DFER checkpoints (fine-tuned, and pre-trained with `encoder.` / `decoder.` prefixes) -> LGIFormerBackbone.

Used through `mmder_tf.models.convert` (`load_pretrained`, `convert_checkpoint`,
`python -m mmder_tf.convert`), which detects these checkpoints by their
`lg_region_tokens` and `first_attn` / `third_attn` tensors. The positional
table is fixed (not stored); the architecture comes from the tensor shapes,
the input geometry (frames, image size, region size) from the caller, by
default the released 16 x 160 x 160 with 2 x 5 x 10 regions.
"""
from __future__ import annotations

import re

from mmder_tf.errors import CheckpointError

RELEASED_GEOMETRY = {"num_frames": 16, "image_size": 160, "region_size": (2, 5, 10)}
# What upstream's fine-tuning does not use from a pre-training checkpoint.
PRETRAINING_EXTRAS = ("decoder.", "encoder_to_decoder.", "mask_token")
_ATTENTIONS = ("first_attn", "second_attn", "third_attn")
_NORMS = ("first_attn_norm0", "second_attn_norm0", "third_attn_norm0", "third_attn_norm1", "norm2")


def is_mae_dfer(keys) -> bool:
    return any(k.endswith("lg_region_tokens") or ".first_attn." in k or ".third_attn." in k for k in keys)


def canonical_state(state, path, keep_final_norm=True, keep_decoder=False):
    """Strip the pre-training `encoder.` prefix; returns (tensors, layout, ignored keys, original name of each key).

    `keep_final_norm=False` drops the pre-training encoder's final LayerNorm, as
    MAE-DFER's fine-tuning does (its classifier normalises the pooled feature only).
    `keep_decoder` keeps the decoder (VideoMAE's, under the same names) for `LGIFormerPretrainer`.
    """
    pretraining = any(k.startswith("encoder.") for k in state)
    layout = "mae_dfer_pretrain" if pretraining else "mae_dfer"
    out, origin, ignored = {}, {}, []
    for key, value in state.items():
        name = key
        if pretraining:
            if key.startswith(PRETRAINING_EXTRAS):
                if keep_decoder:
                    out[key], origin[key] = value, key
                else:
                    ignored.append(key)
                continue
            if not key.startswith("encoder."):
                out[key], origin[key] = value, key  # unknown: reported as unexpected
                continue
            name = key[len("encoder."):]
            if name.startswith("norm.") and not keep_final_norm:
                ignored.append(key)
                continue
        if name == "pos_embed":
            from mmder_tf.models.convert import check_pos_embed

            check_pos_embed(value, path)
            ignored.append(key)
            continue
        out[name], origin[name] = value, key
    return out, layout, ignored, origin


def infer_backbone_config(tensors, num_frames=None, image_size=None, region_size=None, path="checkpoint", num_heads=None,
                          args=None):
    """LGIFormerBackbone kwargs: architecture from the tensor shapes, heads from the caller or the saved args
    (else a standard width's, else refused), geometry from the caller or the release."""
    from mmder_tf.models.convert import resolve_heads
    from mmder_tf.models.layers import _pair
    from mmder_tf.models.lgi_former.layers import region_layout

    patch = tensors.get("patch_embed.proj.weight")
    if patch is None or patch.ndim != 5 or patch.shape[1] != 3 or patch.shape[3] != patch.shape[4]:
        shape = None if patch is None else tuple(patch.shape)
        raise CheckpointError(f"{path}: patch_embed.proj.weight is {shape}; expected [D, 3, t, p, p] (the tubelet embedding)")
    hidden_dim, _, tubelet, patch_size, _ = (int(s) for s in patch.shape)
    indices = {int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not indices:
        raise CheckpointError(f"{path}: no LGI-Former blocks (blocks.N.*) found")
    fc1 = tensors.get("blocks.0.mlp.fc1.weight")
    geometry = {
        "num_frames": RELEASED_GEOMETRY["num_frames"] if num_frames is None else int(num_frames),
        "image_size": RELEASED_GEOMETRY["image_size"] if image_size is None else image_size,
        "region_size": tuple(RELEASED_GEOMETRY["region_size"] if region_size is None else region_size),
    }
    height, width = _pair(geometry["image_size"], "image_size")
    grid = (geometry["num_frames"] // tubelet, height // patch_size, width // patch_size)
    _, num_regions, _ = region_layout(grid, geometry["region_size"])
    regions = tensors.get("lg_region_tokens")
    if regions is not None and regions.shape[0] != num_regions:
        raise CheckpointError(
            f"{path}: the checkpoint has {regions.shape[0]} region tokens, but region_size {geometry['region_size']} on "
            f"{geometry['num_frames']} frames of {height}x{width} (token grid {grid}) makes {num_regions} regions: "
            "pass the num_frames, image_size and region_size it was trained with"
        )
    return {
        "hidden_dim": hidden_dim,
        "depth": max(indices) + 1,
        "num_heads": resolve_heads(hidden_dim, num_heads, args, path=path),
        "mlp_ratio": fc1.shape[0] / hidden_dim if fc1 is not None else 4.0,
        "patch_size": patch_size,
        "tubelet_size": tubelet,
        **geometry,
        "final_norm": "norm.weight" in tensors,
        "qkv_bias": "blocks.0.first_attn.q_bias" in tensors,
    }


def model_targets(backbone, classifier=None):
    """MAE-DFER checkpoint key -> (Keras variable, torch->Keras transform) for every weight of the model."""
    from mmder_tf.models.convert import classifier_targets, conv3d_weight, dense_targets, identity, linear_weight, norm_targets

    embed = backbone.patch_embed.proj
    targets = {
        "patch_embed.proj.weight": (embed.kernel, conv3d_weight),
        "patch_embed.proj.bias": (embed.bias, identity),
        "lg_region_tokens": (backbone.region_tokens.region_tokens, identity),
    }
    for i, block in enumerate(backbone.blocks):
        p = f"blocks.{i}"
        for name in _NORMS:
            targets.update(norm_targets(f"{p}.{name}", getattr(block, name)))
        for name in _ATTENTIONS:
            attn = getattr(block, name)
            targets[f"{p}.{name}.q.weight"] = (attn.q.kernel, linear_weight)
            targets[f"{p}.{name}.kv.weight"] = (attn.kv.kernel, linear_weight)
            if attn.qkv_bias:
                targets[f"{p}.{name}.q_bias"] = (attn.q_bias, identity)
                targets[f"{p}.{name}.v_bias"] = (attn.v_bias, identity)
            targets.update(dense_targets(f"{p}.{name}.proj", attn.proj))
        targets.update(dense_targets(f"{p}.mlp.fc1", block.mlp.fc1))
        targets.update(dense_targets(f"{p}.mlp.fc2", block.mlp.fc2))
    if backbone.final_norm is not None:
        targets.update(norm_targets("norm", backbone.final_norm))
    targets.update(classifier_targets(classifier))
    return targets
