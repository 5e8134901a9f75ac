"""Emotion classifier: pixels 0..255 -> encoder (VideoMAE or LGI-Former) -> pooling -> fc_norm -> dropout -> head.

With `targets` (emotion dimensions, e.g. ("valence", "arousal")) a regression head
on the same features predicts them beside the category; the outputs are then
{"category": logits [B, C], <dimension>: value [B], ...} (models.multitask).
"""
from __future__ import annotations

import keras
from keras import layers

from mmder_tf.config import CLASSIFIER_MODES, PLACEHOLDER_RGB, PLACEHOLDERS
from mmder_tf.errors import ConfigError
from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
from mmder_tf.models.videomae.backbone import VideoMAEBackbone
from mmder_tf.models.layers import IMAGENET_MEAN, IMAGENET_STD, InputNormalization, PlaceholderTubelets, _pair
from mmder_tf.models.multitask import CATEGORY, TargetScaling
from mmder_tf.models.preset_io import PresetIO

MODES = CLASSIFIER_MODES
BACKBONES = (VideoMAEBackbone, LGIFormerBackbone)


class TrainingMode:
    """`mode` of a classifier over `self.backbone`: linear_probe freezes the encoder, finetune trains it."""

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value):
        """Switching mode changes what trains: compile again afterwards."""
        if value not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value
        self.backbone.trainable = value == "finetune"


@keras.saving.register_keras_serializable(package="mmder_tf")
class EmotionClassifier(TrainingMode, keras.Model, PresetIO):
    """Task model on a `VideoMAEBackbone` or `LGIFormerBackbone`; uint8 or float 0..255 [B, T, H, W, 3] -> logits [B, C].

    The backbone's tokens become one feature per clip by its own pooling
    (`pooling=None`): the token mean for VideoMAE, the mean of the region
    tokens for LGI-Former (MAE-DFER's choice; "local" and "all" are the others).

    `mode="linear_probe"` freezes the backbone (the official MultiMAE-DER
    setup: only fc_norm and head train, 2D + DC + C parameters);
    `mode="finetune"` trains everything. For a linear probe the frozen part
    can be run once: `feature_extractor()` maps clips to pooled tokens and
    `head_model()` maps those to logits with this model's own fc_norm/head.

    `save_to_preset(DIR, preprocessing=fusion_config)` writes the model with the
    FusionConfig of its inputs; `EmotionClassifier.from_preset(DIR)` reads both back
    (`model.preprocessing`).
    """

    def __init__(
        self,
        backbone,
        num_classes,
        mode="linear_probe",
        dropout=0.0,
        fc_norm_epsilon=1e-6,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=None,
        input_dtype="float32",
        pooling=None,
        targets=(),
        placeholder="image",
        dtype=None,
        **kwargs,
    ):
        if not isinstance(backbone, BACKBONES):
            names = " or ".join(b.__name__ for b in BACKBONES)
            raise ConfigError(f"backbone must be a {names}, got {type(backbone).__name__}")
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != num_classes:
                raise ConfigError(f"{len(class_names)} class_names for {num_classes} classes")
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if placeholder not in PLACEHOLDERS:
            raise ConfigError(f"placeholder must be one of {PLACEHOLDERS}, got {placeholder!r}")
        targets = tuple(str(t) for t in (targets or ()))
        if len(set(targets)) != len(targets) or CATEGORY in targets:
            raise ConfigError(f"targets must be distinct dimension names other than {CATEGORY!r}, got {targets}")
        dtype = dtype if dtype is not None else backbone.dtype_policy

        normalize = InputNormalization(mean, std, dtype=dtype, name="normalize")
        pooling = pooling or backbone.default_pooling
        pool = backbone.pooling_layer(pooling, dtype=dtype, name="pool")
        fc_norm = layers.LayerNormalization(epsilon=fc_norm_epsilon, dtype=dtype, name="fc_norm")
        drop = layers.Dropout(float(dropout), dtype=dtype, name="dropout")
        # Logits in float32 so mixed-precision losses and softmax stay stable.
        head = layers.Dense(num_classes, dtype="float32", name="head")

        h, w = _pair(backbone.image_size, "image_size")
        inputs = keras.Input(shape=(backbone.num_frames, h, w, 3), dtype=input_dtype, name="pixels")
        normalized = normalize(inputs)
        placeholder_tubelets = None  # attributes only after keras.Model.__init__ (the torch backend insists)
        if placeholder == "learned":
            initial = [(c / 255.0 - m) / s for c, m, s in zip(PLACEHOLDER_RGB, normalize.mean, normalize.std)]
            placeholder_tubelets = PlaceholderTubelets(
                backbone.tubelet_size, backbone.patch_size, PLACEHOLDER_RGB, initial, dtype=dtype,
                name="placeholder_tubelets")
            normalized = placeholder_tubelets(inputs, normalized)
        pooled = pool(backbone(normalized))
        dimension_head = scaling = None
        if targets:
            dimension_head = layers.Dense(len(targets), dtype="float32", name="dimension_head")
            scaling = TargetScaling(len(targets), dtype="float32", name="target_scaling")
        self._targets = targets
        outputs = self._heads(pooled, drop, fc_norm, head, dimension_head, scaling)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.dimension_head, self.target_scaling = dimension_head, scaling

        self.backbone, self.normalize, self.pool = backbone, normalize, pool
        self.fc_norm, self.dropout, self.head = fc_norm, drop, head
        self._pooled = pooled
        self.num_classes = num_classes
        self.dropout_rate = float(dropout)
        self.fc_norm_epsilon = float(fc_norm_epsilon)
        self.class_names = class_names
        self.pixel_dtype = input_dtype
        self.pooling = pooling
        self.targets = targets
        self.placeholder, self.placeholder_tubelets = placeholder, placeholder_tubelets
        self._mode = None
        self.mode = mode

    @classmethod
    def from_builtin(cls, name, num_classes, num_frames=None, image_size=None, dtype=None, backbone_overrides=None,
                     **kwargs):
        """A classifier on built-in encoder `name` with RANDOM weights (`kwargs`: the constructor's)."""
        from mmder_tf.models.presets import backbone_from_preset

        geometry = {k: v for k, v in (("num_frames", num_frames), ("image_size", image_size)) if v is not None}
        backbone = backbone_from_preset(name, dtype=dtype, **geometry, **(backbone_overrides or {}))
        return cls(backbone, num_classes, dtype=dtype, **kwargs)

    def _heads(self, pooled, drop, fc_norm, head, dimension_head, scaling):
        features = drop(fc_norm(pooled))
        logits = head(features)
        if dimension_head is None:
            return logits
        values = scaling(dimension_head(features))
        return {CATEGORY: logits, **{name: values[:, i] for i, name in enumerate(self._targets)}}

    def feature_extractor(self) -> keras.Model:
        """Pixels -> pooled tokens (the fc_norm input), sharing this model's layers."""
        return keras.Model(self.input, self._pooled, name=f"{self.name}_features")

    def pooled_features(self, x, batch_size=None):
        """Pooled tokens of a batch of clips, for caching a frozen backbone's output."""
        model = self.feature_extractor()
        if batch_size is None:
            return model(x, training=False)
        return model.predict(x, batch_size=batch_size, verbose=0)

    def head_model(self) -> keras.Model:
        """Pooled features [B, D] -> logits [B, C] (or the outputs dict with targets); its weights ARE this
        model's fc_norm and heads."""
        features = keras.Input(shape=(self.backbone.hidden_dim,), name="features")
        outputs = self._heads(features, self.dropout, self.fc_norm, self.head, self.dimension_head,
                              self.target_scaling)
        return keras.Model(features, outputs, name=f"{self.name}_head")

    def get_config(self):
        return {
            **self._base_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "mode": self.mode,
            "dropout": self.dropout_rate,
            "fc_norm_epsilon": self.fc_norm_epsilon,
            "mean": list(self.normalize.mean),
            "std": list(self.normalize.std),
            "class_names": self.class_names,
            "input_dtype": self.pixel_dtype,
            "pooling": self.pooling,
            "targets": list(self.targets),
            "placeholder": self.placeholder,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**cls._from_config_arguments(config, nested=("backbone",)))
