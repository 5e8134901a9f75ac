"""HiCMAE's audio-visual classifier: pixels and fbank -> two encoders and fusion -> hierarchical pooling -> head."""
from __future__ import annotations

import keras
from keras import layers, ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.classifier import TrainingMode
from mmder_tf.models.hicmae.backbone import HiCMAEBackbone
from mmder_tf.models.hicmae.layers import LayerWeightedPooling
from mmder_tf.models.hicmae.presets import CLASSIFIER_PRESETS
from mmder_tf.models.layers import IMAGENET_MEAN, IMAGENET_STD, InputNormalization, _pair
from mmder_tf.models.preset_io import PresetIO


@keras.saving.register_keras_serializable(package="mmder_tf")
class HiCMAEClassifier(TrainingMode, keras.Model, PresetIO):
    """{"video": uint8 or float 0..255 [B, T, H, W, 3], "audio": normalised fbank [B, Ta, F]} -> logits [B, C].

    The pixels are normalised inside (ImageNet mean/std, as EmotionClassifier
    does); the fbank comes normalised (`mmder_tf.kaldi_fbank`). Feature =
    [softmax-weighted mean of every visual layer's normed tokens, the same for
    audio, mean fused video tokens, mean fused audio tokens] -> `fc_norm` ->
    dropout -> `head`, as HiCMAE's fine-tuning model.

    `mode="linear_probe"` freezes the backbone (the layer weights, fc_norm and
    head train); `mode="finetune"` trains everything.
    """

    def __init__(self, backbone, num_classes, mode="finetune", dropout=0.0, fc_norm_epsilon=1e-6, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, class_names=None, input_dtype="float32", dtype=None, **kwargs):
        if not isinstance(backbone, HiCMAEBackbone):
            raise ConfigError(f"backbone must be a HiCMAEBackbone, got {type(backbone).__name__}")
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != num_classes:
                raise ConfigError(f"{len(class_names)} class_names for {num_classes} classes")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        dtype = dtype if dtype is not None else backbone.dtype_policy

        normalize = InputNormalization(mean, std, dtype=dtype, name="normalize")
        video_pool = LayerWeightedPooling(dtype=dtype, name="video_pool")
        audio_pool = LayerWeightedPooling(dtype=dtype, name="audio_pool")
        fc_norm = layers.LayerNormalization(epsilon=fc_norm_epsilon, dtype=dtype, name="fc_norm")
        drop = layers.Dropout(float(dropout), dtype=dtype, name="dropout")
        head = layers.Dense(num_classes, dtype="float32", name="head")  # float32 logits under mixed precision

        h, w = _pair(backbone.image_size, "image_size")
        inputs = {"video": keras.Input(shape=(backbone.num_frames, h, w, 3), dtype=input_dtype, name="video"),
                  "audio": keras.Input(shape=(backbone.audio_length, backbone.num_mel_bins), name="audio")}
        tokens = backbone({"video": normalize(inputs["video"]), "audio": inputs["audio"]})
        feature = ops.concatenate([video_pool(tokens["video_layers"]), audio_pool(tokens["audio_layers"]),
                                   ops.mean(tokens["video"], axis=1), ops.mean(tokens["audio"], axis=1)], axis=-1)
        features = fc_norm(feature)
        logits = head(drop(features))
        super().__init__(inputs=inputs, outputs=logits, dtype=dtype, **kwargs)

        self.backbone, self.normalize = backbone, normalize
        self.video_pool, self.audio_pool = video_pool, audio_pool
        self.fc_norm, self.dropout, self.head = fc_norm, drop, head
        self._features = features
        self.num_classes, self.dropout_rate = num_classes, float(dropout)
        self.fc_norm_epsilon, self.class_names, self.pixel_dtype = float(fc_norm_epsilon), class_names, input_dtype
        self._mode = None
        self.mode = mode

    @classmethod
    def from_builtin(cls, name, num_classes=None, dtype=None, backbone_overrides=None, **kwargs):
        """A classifier of a built-in size with RANDOM weights: a classifier preset ("hicmae-crema-d",
        "hicmae-mafw") or a backbone preset ("hicmae", "hicmae-tiny") with `num_classes`."""
        key = str(name).lower()
        spec = dict(CLASSIFIER_PRESETS.get(key, {"backbone": key}))
        backbone_name, preset_classes = spec.pop("backbone"), spec.pop("num_classes", None)
        num_classes = preset_classes if num_classes is None else num_classes
        if num_classes is None:
            raise ConfigError(f"{name} is an encoder preset: pass num_classes")
        backbone = HiCMAEBackbone.from_builtin(backbone_name, dtype=dtype, **{**spec, **(backbone_overrides or {})})
        return cls(backbone, num_classes, dtype=dtype, **kwargs)

    def feature_extractor(self) -> keras.Model:
        """Inputs -> the fc_norm output (what upstream's `save_feature=True` returns), sharing this model's layers."""
        return keras.Model(self.input, self._features, name=f"{self.name}_features")

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
        }

    @classmethod
    def from_config(cls, config):
        return cls(**cls._from_config_arguments(config, nested=("backbone",)))
