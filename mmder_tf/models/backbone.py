"""What every video encoder here shares (keras-hub's `Backbone` idea): geometry checks, config round trip, presets."""
from __future__ import annotations

import keras
import numpy as np

from mmder_tf.errors import ConfigError
from mmder_tf.models.layers import _pair
from mmder_tf.models.preset_io import PresetIO


class VideoBackbone(keras.Model, PresetIO):
    """Base of the functional encoders: normalised video [B, T, H, W, 3] in, tokens out.

    Subclasses set `presets` (name -> constructor kwargs), `default_pooling`,
    and call `_remember(**arguments)` with their normalised constructor
    arguments after building the graph: those are the config.
    `from_preset(name_or_folder)` / `save_to_preset(folder)`: models.preset_io.
    """

    presets: dict = {}
    default_pooling = "mean"

    @staticmethod
    def check_geometry(hidden_dim, depth, num_heads, num_frames, tubelet_size, image_size, patch_size, drop_path_rate):
        """The token grid (frames / tubelet, height / patch, width / patch); refuses sizes that do not fit."""
        height, width = _pair(image_size, "image_size")
        if hidden_dim < 1 or depth < 1 or num_heads < 1:
            raise ConfigError(f"hidden_dim, depth and num_heads must be positive, got {hidden_dim}, {depth}, {num_heads}")
        if hidden_dim % num_heads:
            raise ConfigError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if num_frames < tubelet_size or num_frames % tubelet_size:
            raise ConfigError(f"num_frames {num_frames} is not a positive multiple of tubelet_size {tubelet_size}")
        if min(height, width) < patch_size or height % patch_size or width % patch_size:
            raise ConfigError(f"image_size {image_size} is not a positive multiple of patch_size {patch_size}")
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        return (num_frames // tubelet_size, height // patch_size, width // patch_size)

    @staticmethod
    def drop_path_rates(drop_path_rate, depth):
        """Stochastic depth growing linearly with depth, as in timm / VideoMAE / MAE-DFER."""
        return [float(r) for r in np.linspace(0.0, float(drop_path_rate), depth)] if depth > 1 else [float(drop_path_rate)]

    def _remember(self, **arguments):
        self._arguments = arguments
        for key, value in arguments.items():
            # `final_norm` is the layer; the flag lives beside it.
            setattr(self, "use_final_norm" if key == "final_norm" else key, value)

    @property
    def num_tokens(self) -> int:
        """Tubelet tokens of one clip (VideoMAE's N; LGI-Former adds one region token per region)."""
        height, width = _pair(self.image_size, "image_size")
        return (self.num_frames // self.tubelet_size) * (height // self.patch_size) * (width // self.patch_size)

    def get_config(self):
        config = self._base_config()
        for key, value in self._arguments.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**cls._from_config_arguments(config))

    @classmethod
    def from_builtin(cls, name: str, **overrides):
        """A backbone of a built-in size with RANDOM weights (`overrides`: constructor arguments)."""
        key = str(name).lower()
        if key not in cls.presets:
            raise ConfigError(f"unknown {cls.__name__} preset {name!r}; choose one of {', '.join(cls.presets)}, "
                              "or pass a preset folder")
        return cls(**{**cls.presets[key], **overrides})
