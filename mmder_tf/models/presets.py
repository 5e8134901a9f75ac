"""Every backbone preset by name, across encoder families (VideoMAE sizes, MAE-DFER's LGI-Former)."""
from __future__ import annotations

from mmder_tf.errors import ConfigError


def backbone_classes():
    from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone

    return (VideoMAEBackbone, LGIFormerBackbone)


def preset_names() -> list[str]:
    return [name for cls in backbone_classes() for name in cls.presets]


def backbone_class(preset: str):
    """The backbone class a preset name belongs to."""
    for cls in backbone_classes():
        if str(preset).lower() in cls.presets:
            return cls
    raise ConfigError(f"unknown backbone preset {preset!r}; choose one of {', '.join(preset_names())}")


def from_preset(preset: str, **overrides):
    """A fresh backbone of any family by preset name (geometry arguments override the preset's)."""
    return backbone_class(preset).from_preset(preset, **overrides)


def preset_geometry(preset: str) -> dict:
    """The input a preset needs ({"num_frames", "image_size"}), or {} when any size works (VideoMAE)."""
    spec = backbone_class(preset).presets[str(preset).lower()]
    return {k: spec[k] for k in ("num_frames", "image_size") if k in spec}


def preset_of(backbone) -> str:
    """The preset name whose architecture `backbone` has, or "custom"."""
    architecture = ("hidden_dim", "depth", "num_heads", "region_size")
    for name, spec in type(backbone).presets.items():
        if all(getattr(backbone, k) == (tuple(spec[k]) if k == "region_size" else spec[k])
               for k in architecture if k in spec):
            return name
    return "custom"
