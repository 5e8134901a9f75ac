"""Presets that carry weights (keras-hub style): one folder holds a model whole, and nothing else does.

    PRESET/
      metadata.json       {"format": "mmder_tf.preset", "format_version", "class_name", "keras_version",
                           "mmder_tf_version", "parameter_count", "source", "training"}
      config.json         the model's Keras config (backbone family and sizes, heads, class names, targets)
      model.weights.h5    its weights
      preprocessing.json  the FusionConfig its inputs were made with (task models trained on fused clips)

`model.save_to_preset(DIR)` writes one (into a temporary sibling, then renamed: a
reader sees the old preset or the new one); `Class.from_preset(DIR)` reads it back,
`Class.from_preset("base")` builds a built-in architecture with random weights.
Loading refuses, with the file and the fault named, anything that is not a whole
preset of this format: a missing or damaged file, another format or a newer
version, weights that do not fit the config (every missing, unexpected and
mis-shaped tensor named, nothing assigned).

`load_weights_strict` is the one strict loader of a Keras `.weights.h5` (presets,
a run's fold checkpoints, `mmder-export --weights`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from mmder_tf.errors import CheckpointError, ConfigError

FORMAT = "mmder_tf.preset"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
PREPROCESSING_FILE = "preprocessing.json"
# The presets `mmder-pretrain` writes in its run folder: the encoder, and the whole pre-training model.
ENCODER_PRESET = "encoder"
PRETRAINING_PRESET = "pretraining"
# What a preset may hold, by registered class name -> module that registers it.
MODEL_CLASSES = {
    "VideoMAEBackbone": "mmder_tf.models.videomae.backbone",
    "LGIFormerBackbone": "mmder_tf.models.lgi_former.backbone",
    "EmotionClassifier": "mmder_tf.models.classifier",
    "VideoMAEPretrainer": "mmder_tf.models.videomae.pretraining",
    "LGIFormerPretrainer": "mmder_tf.models.lgi_former.pretraining",
    "HiCMAEBackbone": "mmder_tf.models.hicmae.backbone",
    "HiCMAEClassifier": "mmder_tf.models.hicmae.classifier",
}
# Constructor arguments that belong to the encoder of a task or pre-training model.
BACKBONE_ARGUMENTS = ("num_frames", "image_size", "region_size", "drop_path_rate")


def register_model_classes():
    """Import every module whose classes a preset (or a Keras config) may name, so Keras can build them."""
    import importlib

    for module in MODEL_CLASSES.values():
        importlib.import_module(module)


def is_preset(path) -> bool:
    """True when `path` is a folder whose metadata.json carries this format's marker (what may be replaced)."""
    try:
        return _read_json(Path(path) / METADATA_FILE, "preset metadata").get("format") == FORMAT
    except CheckpointError:
        return False


def looks_like_path(preset) -> bool:
    """A preset argument meant as a folder, not a built-in name: a Path, a string spelled as a path, a
    preset folder, or an existing path that is no built-in name (a folder "base" in the working directory
    does not hide the built-in "base" unless it is a preset)."""
    from mmder_tf.models.presets import PRESETS

    if isinstance(preset, os.PathLike):
        return True
    text = str(preset)
    if os.sep in text or text.startswith(".") or is_preset(text):
        return True
    return Path(text).exists() and text.lower() not in PRESETS


# ----------------------------------------------------------------------------- writing

def save_preset(model, directory, preprocessing=None, *, source=None, training=None) -> Path:
    """Write `model` (a backbone, classifier or pre-training model of this package) as a preset folder.

    `preprocessing`: the FusionConfig its inputs are made with (default: the model's
    own `preprocessing`, set when it was loaded from a preset). `training`: JSON facts of
    how it was trained that serving needs (e.g. {"modality_dropout": {"video": p, "audio": q}}),
    kept in metadata.json. An existing preset at `directory` is replaced; anything else is refused.
    """
    import json

    import keras

    import mmder_tf
    from mmder_tf.config import FusionConfig
    from mmder_tf.fileio import WriterLock, check_replaceable, clean_stale_temps, replace_dir, temp_path

    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise ConfigError(f"save_to_preset writes {', '.join(MODEL_CLASSES)}; got a {name}")
    preprocessing = preprocessing if preprocessing is not None else getattr(model, "preprocessing", None)
    if preprocessing is not None:
        if not isinstance(preprocessing, FusionConfig):
            raise ConfigError(f"preprocessing must be a FusionConfig, got {type(preprocessing).__name__}")
        _check_geometry(model, preprocessing, "preprocessing")
    directory = Path(directory)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class_name": name,
        "keras_version": keras.__version__,
        "mmder_tf_version": mmder_tf.__version__,
        "parameter_count": int(model.count_params()),
        "source": None if source is None else str(source),
        "training": dict(training or {}),
    }
    config = keras.saving.serialize_keras_object(model)
    check_replaceable(directory, is_preset, "an mmder_tf preset", option="save_to_preset")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(directory.parent, "save_to_preset", "wait for it, or save to another folder",
                    name=f".{directory.name}.lock"):
        # Copies of this preset left by a killed writer (not those of a sibling whose name starts alike).
        clean_stale_temps(directory.parent, prefix=directory.name)
        check_replaceable(directory, is_preset, "an mmder_tf preset", option="save_to_preset")
        tmp = temp_path(directory)
        tmp.mkdir()
        try:
            model.save_weights(str(tmp / WEIGHTS_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
            if preprocessing is not None:
                (tmp / PREPROCESSING_FILE).write_text(json.dumps(preprocessing.to_dict(), indent=1, sort_keys=True) + "\n")
            # Written last: a folder with the marker is a whole preset.
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
            replace_dir(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became the preset
    return directory


# ----------------------------------------------------------------------------- reading

def _read_json(path: Path, what: str) -> dict:
    from mmder_tf.fileio import read_json

    value = read_json(path, CheckpointError, what, fix="save the preset again")
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: damaged {what}, a JSON {type(value).__name__} instead of an object")
    return value


def read_metadata(directory) -> dict:
    """The checked metadata.json of a preset folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such preset folder")
    path = directory / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not an mmder_tf preset (no {METADATA_FILE}; presets are written by "
                              "save_to_preset or `python -m mmder_tf.convert SRC DIR`)")
    metadata = _read_json(path, "preset metadata")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {metadata.get('format')!r} is not {FORMAT!r}")
    version = metadata.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: preset format version {version} is newer than this mmder_tf reads "
                              f"({FORMAT_VERSION}); upgrade mmder_tf")
    if metadata.get("class_name") not in MODEL_CLASSES:
        raise CheckpointError(f"{path}: class_name {metadata.get('class_name')!r} is not one of {', '.join(MODEL_CLASSES)}")
    return metadata


def read_config(directory) -> dict:
    """The model config (Keras serialised form) of a preset folder, checked against its metadata."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    path = directory / CONFIG_FILE
    spec = _read_json(path, "preset config")
    if spec.get("class_name") != metadata["class_name"] or not isinstance(spec.get("config"), dict):
        raise CheckpointError(f"{path}: holds a {spec.get('class_name')!r} config; metadata.json says "
                              f"{metadata['class_name']}")
    return spec


def backbone_config(spec: dict) -> dict:
    """The encoder's config dict inside a model config (the model's own when it is an encoder)."""
    inner = spec["config"].get("backbone")
    return inner["config"] if isinstance(inner, dict) else spec["config"]


def load_preprocessing(directory):
    """The FusionConfig a preset's inputs are made with, or None when it has none (an encoder)."""
    from mmder_tf.config import FusionConfig

    directory = Path(directory)
    read_metadata(directory)
    path = directory / PREPROCESSING_FILE
    if not path.exists():
        return None
    try:
        return FusionConfig.from_dict(_read_json(path, "preprocessing settings"))
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: not valid preprocessing settings ({error})") from None


def input_geometry(directory) -> dict:
    """{"num_frames", "image_size"} of a preset's encoder, read from its config (nothing is built)."""
    config = backbone_config(read_config(directory))
    try:
        return {"num_frames": int(config["num_frames"]), "image_size": config["image_size"]}
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: no encoder geometry ({error})") from None


def load_preset(directory, expected=None, *, dtype=None, backbone_overrides=None, **overrides):
    """The model saved in a preset folder, its weights loaded strictly.

    `expected`: the class asking (`Class.from_preset`); a backbone class takes the
    encoder of a task or pre-training preset, any other class must be the saved one.
    `dtype`: the dtype policy to build under. `overrides`: constructor arguments;
    encoder ones (num_frames, image_size, region_size, drop_path_rate, or any in
    `backbone_overrides`) go to the encoder, the rest to the model itself.
    """
    import importlib

    import keras

    directory = Path(directory)
    metadata = read_metadata(directory)
    spec = read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: the preset has no {WEIGHTS_FILE}")
    preprocessing = load_preprocessing(directory)
    name = metadata["class_name"]
    module = importlib.import_module(MODEL_CLASSES[name])
    saved_class = getattr(module, name)
    take_backbone = False
    if expected is not None and not issubclass(saved_class, expected):
        from mmder_tf.models.backbone import VideoBackbone

        inner = spec["config"].get("backbone")
        take_backbone = issubclass(expected, VideoBackbone) and isinstance(inner, dict) \
            and inner.get("class_name") == expected.__name__
        if not take_backbone:
            raise CheckpointError(f"{directory}: holds a {name}, not a {expected.__name__}")

    spec = {**spec, "config": dict(spec["config"])}
    nested = isinstance(spec["config"].get("backbone"), dict)
    encoder = dict(backbone_config(spec))
    encoder_changes = {**{k: overrides.pop(k) for k in BACKBONE_ARGUMENTS if k in overrides}, **(backbone_overrides or {})}
    if "region_size" in encoder_changes and "region_size" not in encoder:
        raise ConfigError(f"region_size applies to LGI-Former models; {directory} holds a {name}")
    encoder.update(encoder_changes)
    if dtype is not None:
        encoder["dtype"] = dtype
        if nested:
            spec["config"]["dtype"] = dtype  # the heads, decoder and projection follow
    unknown = sorted(set(overrides) - set(spec["config"]))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not settings of the {name} in {directory}")
    spec["config"].update(overrides)
    if nested:
        spec["config"]["backbone"] = {**spec["config"]["backbone"], "config": encoder}
    else:
        spec["config"] = encoder
    try:
        model = keras.saving.deserialize_keras_object(spec)
    except ConfigError as error:
        raise ConfigError(f"{directory}: {error}") from None
    except Exception as error:  # Keras raises many kinds for a config it cannot build
        raise CheckpointError(f"{directory / CONFIG_FILE}: cannot build a {name} from it "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''})") from None
    load_weights_strict(model, weights)
    if preprocessing is not None:
        if not encoder_changes:
            _check_geometry(model, preprocessing, directory / PREPROCESSING_FILE)
        model.preprocessing = preprocessing
    return model.backbone if take_backbone else model


def _check_geometry(model, preprocessing, where):
    backbone = getattr(model, "backbone", model)
    size = backbone.image_size
    if backbone.num_frames != preprocessing.num_frames or size not in (preprocessing.image_size,
                                                                       [preprocessing.image_size] * 2,
                                                                       (preprocessing.image_size,) * 2):
        raise (CheckpointError if isinstance(where, Path) else ConfigError)(
            f"{where}: makes {preprocessing.num_frames} frames of {preprocessing.image_size} px; the model takes "
            f"{backbone.num_frames} frames of {size} px")


# ----------------------------------------------------------------------------- strict weights

def _file_tensors(path: Path) -> dict[str, tuple]:
    import h5py

    found = {}
    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, item: found.__setitem__(name, tuple(item.shape))
                              if isinstance(item, h5py.Dataset) else None)
    except OSError as error:
        raise CheckpointError(f"{path}: not a readable .weights.h5 file ({error})") from None
    return found


def load_weights_strict(model, path):
    """Load a Keras .weights.h5 into `model`, or raise CheckpointError naming every missing,
    unexpected and mis-shaped tensor (nothing is assigned then). A training checkpoint's
    optimizer state is ignored when `model` has no optimizer.

    Keras' own load_weights only warns when it skips part of a file and silently
    ignores extra entries; a model left half-initialised would train or serve noise.
    """
    from mmder_tf import compat

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if not path.name.endswith(".weights.h5"):
        raise CheckpointError(f"{path}: expected a Keras .weights.h5 file")
    compat.check_keras_version()
    expected = compat.weight_entries(model)
    found = _file_tensors(path)
    if not any(k.startswith("optimizer/") for k in expected):
        # Checkpoints written during training also hold the optimizer's state; a model
        # loaded for evaluation or export has no optimizer to receive it.
        found = {k: v for k, v in found.items() if not k.startswith("optimizer/")}
    missing = [f"{v.path} {tuple(v.shape)}" for k, v in expected.items() if k not in found]
    unexpected = [f"{k} {shape}" for k, shape in found.items() if k not in expected]
    wrong = [f"{v.path}: file {found[k]}, model {tuple(v.shape)}" for k, v in expected.items()
             if k in found and found[k] != tuple(v.shape)]
    if missing or unexpected or wrong:
        lines = [f"{path}: does not fit the model; nothing was loaded."]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                lines.append(f"{title} ({len(items)}): " + "; ".join(items))
        raise CheckpointError("\n".join(lines))
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as error:
        raise CheckpointError(f"{path}: does not fit the model ({error})") from None
    return model


# ----------------------------------------------------------------------------- the methods

class PresetIO:
    """`save_to_preset` / `from_preset` for the models of this package (one implementation for all).

    A subclass defines `from_builtin(name, ...)`: its built-in architectures by name.
    """

    preprocessing = None  # the FusionConfig of a task model's inputs, when it came from a preset that has one

    def _base_config(self) -> dict:
        """What every config here starts with: Keras' own name, trainable flag and dtype policy."""
        import keras

        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.saving.serialize_keras_object(self.dtype_policy)}

    @staticmethod
    def _from_config_arguments(config, nested=(), dtype_to_nested=False) -> dict:
        """Constructor arguments of a config: the models under `nested` keys built, the dtype policy read.
        `dtype_to_nested`: the nested models are built under the model's policy (a functional backbone
        serialises float32 for itself even when its layers ran mixed)."""
        import keras

        config = dict(config)
        for key in nested:
            spec = config.get(key)
            if isinstance(spec, dict):
                if dtype_to_nested and config.get("dtype") is not None and isinstance(spec.get("config"), dict):
                    spec = {**spec, "config": {**spec["config"], "dtype": config["dtype"]}}
                config[key] = keras.saving.deserialize_keras_object(spec)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return config

    def save_to_preset(self, directory, preprocessing=None, *, source=None, training=None) -> Path:
        """Write this model (config, weights and, for a task model, the FusionConfig of its inputs) as a
        preset folder that `from_preset(directory)` reads back. Atomic; replaces only a preset."""
        return save_preset(self, directory, preprocessing, source=source, training=training)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A model from a preset folder (saved weights, loaded strictly) or a built-in name.

        A built-in name ("tiny", "base", "large", "mae-dfer", ...) gives the
        architecture only: its weights are RANDOM (load trained ones with
        `from_preset(FOLDER)` or `mmder_tf.load_pretrained`). `kwargs` are the
        constructor arguments to change (for a folder: `num_frames`, `image_size`,
        `dtype`, ..., see `models.preset_io.load_preset`).
        """
        if looks_like_path(preset):
            return load_preset(preset, cls, **kwargs)
        return cls.from_builtin(str(preset), **kwargs)

    @classmethod
    def from_builtin(cls, name, **kwargs):
        raise ConfigError(f"{cls.__name__} has no built-in presets; pass a preset folder")
