"""Every built-in backbone preset by name, across model families (no Keras import: the CLI lists them).

A name picks a family and its architecture; `backbone_from_preset(name, ...)`
builds it (randomly initialised). New families add their presets module here.
"""
from __future__ import annotations

import importlib

from mmder_tf.errors import ConfigError
from mmder_tf.models.lgi_former.presets import BACKBONE_PRESETS as LGI_FORMER_PRESETS
from mmder_tf.models.videomae.presets import BACKBONE_PRESETS as VIDEOMAE_PRESETS

# family -> (backbone class path, its presets)
FAMILIES = {
    "videomae": ("mmder_tf.models.videomae.backbone:VideoMAEBackbone", VIDEOMAE_PRESETS),
    "lgi_former": ("mmder_tf.models.lgi_former.backbone:LGIFormerBackbone", LGI_FORMER_PRESETS),
}
# Presets WITH weights, shipped inside the package (a preset folder each, with its model card README.md):
# name -> folder relative to mmder_tf/models. `--weights NAME` reads them.
WEIGHTS_PRESETS = {
    # Tiny VideoMAE encoder, audio strategy, 64 px log-mel images, masked-autoencoder pre-trained on
    # BanglaSER (CC BY 4.0) only: no RAVDESS actor. benchmarks/real_speech.py; docs/real_speech.md.
    "speech-tiny": "videomae/weights/speech_tiny",
}
PRESET_FAMILY = {name: family for family, (_, presets) in FAMILIES.items() for name in presets}
PRESETS = tuple(PRESET_FAMILY)


def backbone_class(preset: str):
    """The backbone class of a built-in preset name."""
    family = PRESET_FAMILY.get(str(preset).lower())
    if family is None:
        raise ConfigError(f"unknown backbone preset {preset!r}; choose one of {', '.join(PRESETS)}")
    module, name = FAMILIES[family][0].split(":")
    return getattr(importlib.import_module(module), name)


def backbone_from_preset(preset: str, **overrides):
    """A randomly initialised backbone of a built-in preset (`overrides`: constructor arguments)."""
    return backbone_class(preset).from_builtin(preset, **overrides)


def preset_of(backbone) -> str:
    """The built-in preset whose architecture `backbone` has, or "custom"."""
    config = backbone.get_config()
    for name, spec in getattr(type(backbone), "presets", {}).items():
        if all(config.get(k) == (list(v) if isinstance(v, tuple) else v)
               for k, v in spec.items() if k not in ("num_frames", "image_size")):
            return name
    return "custom"


def weights_preset_path(name: str):
    """The folder of a shipped preset with weights (WEIGHTS_PRESETS), as a Path."""
    from pathlib import Path

    key = str(name).lower()
    if key not in WEIGHTS_PRESETS:
        raise ConfigError(f"unknown weights preset {name!r}; shipped: {', '.join(WEIGHTS_PRESETS)}")
    return Path(__file__).resolve().parent / WEIGHTS_PRESETS[key]


def resolve_weights(weights):
    """`--weights`: a shipped preset name (WEIGHTS_PRESETS) becomes its folder; anything else is kept."""
    if weights is not None and str(weights).lower() in WEIGHTS_PRESETS:
        return str(weights_preset_path(weights))
    return weights
