"""mmder_tf: MultiMAE-DER (multimodal masked autoencoder for dynamic emotion recognition) in Keras 3.

The public API is imported lazily so that `import mmder_tf` stays cheap and the
pure-Keras model can be used under any Keras backend.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "VideoMAEBackbone": "mmder_tf.models.videomae.backbone",
    "LGIFormerBackbone": "mmder_tf.models.lgi_former.backbone",
    "EmotionClassifier": "mmder_tf.models.classifier",
    "BACKBONE_PRESETS": "mmder_tf.models.videomae.presets",
    "VideoMAEPretrainer": "mmder_tf.models.videomae.pretraining",
    "LGIFormerPretrainer": "mmder_tf.models.lgi_former.pretraining",
    "HiCMAEBackbone": "mmder_tf.models.hicmae.backbone",
    "HiCMAEClassifier": "mmder_tf.models.hicmae.classifier",
    "kaldi_fbank": "mmder_tf.fusion.fbank",
    "load_pretrained": "mmder_tf.models.convert",
    "convert_checkpoint": "mmder_tf.models.convert",
    "FusionConfig": "mmder_tf.config",
    "RunConfig": "mmder_tf.training.config",
    "STRATEGIES": "mmder_tf.config",
    "decode_clip": "mmder_tf.media.decode",
    "fuse_clip": "mmder_tf.fusion.clip",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


_SUBMODULES = ("finetune", "pretrain", "evaluate", "export", "predict", "convert", "visualize", "media", "fusion", "models",
               "training", "reports", "serving", "data")


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"mmder_tf.{name}")
    else:
        raise AttributeError(f"module 'mmder_tf' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
