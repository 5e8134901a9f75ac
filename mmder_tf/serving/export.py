"""Trained classifier -> TensorFlow SavedModel for TF Serving, `saved_model_cli` and `tf.saved_model.load`.

Signatures (see docs/serving.md for request bodies):

- `serving_default`: fused uint8 `fused` [batch, T, S, S, 3] -> `probabilities`
  float32 [batch, C], `labels` string [batch] (top-1 class name), `class_names`
  string [batch, C].
- `serving_float`: the same with float32 0..255 input.
- `from_media`: every decoded frame `frames` uint8 [batch, F, h, w, 3], their
  `timestamps` float32 [batch, F] (seconds; one clip may span at most
  media.decode.MAX_CLIP_SECONDS, 900 s, and with audio at most 4 x its waveform
  plus 1 s, so milliseconds are refused at once), the mono `waveform` float32
  [batch, samples] at the exported sample rate (sample 0 = first frame's time),
  `num_frames_valid` int32 [batch] and `num_samples` int32 [batch] (how much of
  each padded row is real) -> the same outputs. Frame selection, audio windows,
  spectrograms, crop, resize and fusion run in the graph through
  `preprocess.fuse_media` (alignment.select_frame_indices, as the decoder uses,
  then the fuse_aligned the training pipeline maps). These inputs are declared
  with unknown rank; their shapes are asserted in the graph (see `from_media` below).
  RFAS needs no clip id: the order comes from `strategies.clip_identity`, a
  fingerprint of the clip's own images, which every path computes identically.
- `preprocess`: the from_media inputs -> `fused` uint8 [batch, T, S, S, 3], the
  exact tensor from_media classifies (equal to fuse_clip and the prepared cache).
  With crop "face" or "aligned" the frames sent are face crops made on the client
  (`media.face.face_crops`): detection is a cascade of three networks with
  data-dependent candidate counts and NMS, and tracking is sequential, so in the
  graph it would cost every request a detector and tie the SavedModel to one; on
  the client, the same code that prepares the training cache makes the crops.
- A model trained with emotion dimensions (`--targets category,valence,...`) adds
  one float32 [batch] output per dimension, named after it, to the three signatures
  above (in the targets' own units, e.g. IEMOCAP valence on 1..5); the metadata
  lists them under "dimensions".
- `metadata`: one ignored int32 scalar `unused` -> strategy, preset, class names,
  sample rate, frame count, image size, the FusionConfig JSON and everything as
  one JSON string. The input exists because `saved_model_cli run` refuses a
  signature without inputs.

`class_names` is tiled to [batch, C] because TF Serving's row ("instances")
format requires every output to share the batch dimension.

The model's call is traced in float32 and only its variables are saved (not the
Keras objects), so loading needs TensorFlow alone, not mmder_tf or Keras.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.config import FusionConfig, check_strategy, needs_audio, needs_video
from mmder_tf.errors import CheckpointError, ConfigError, MMDERError
from mmder_tf.fileio import WriterLock, check_replaceable, clean_stale_temps, replace_dir, temp_path
from mmder_tf.models.presets import PRESETS

METADATA_ASSET = "mmder_tf.json"
EXPORT_FORMAT = "mmder_tf.saved_model"
EXPORT_FORMAT_VERSION = 1
SIGNATURES = ("serving_default", "serving_float", "from_media", "preprocess", "metadata")


def _tf():
    import tensorflow as tf

    return tf


# ----------------------------------------------------------------------------- metadata

def accepts_missing_modalities(metadata: dict) -> bool:
    """Whether an export's model was trained with modality dropout (takes video alone and audio alone)."""
    dropout = metadata.get("modality_dropout") or {}
    return any(float(p) > 0 for p in dropout.values())


def build_metadata(model, config: FusionConfig, class_names, preset=None, source=None, dataset=None,
                   modality_dropout=(0.0, 0.0)) -> dict:
    """Everything a client needs to build inputs and read outputs, as plain JSON values.

    `modality_dropout` (p_video, p_audio) of the training run: with any > 0 the model
    takes clips without audio or without video (the placeholder stands in); without,
    from_media and mmder-predict refuse such clips.
    """
    import keras

    import mmder_tf
    from mmder_tf.media.decode import MAX_CLIP_SECONDS

    tf = _tf()
    size = config.image_size
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "strategy": config.strategy,
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "dimensions": list(getattr(model, "targets", ()) or ()),
        "preset": preset or "custom",
        "dataset": dataset,  # what it was trained on (mmder-predict --timeline sizes its windows by it)
        "sample_rate": config.sample_rate,
        "num_frames": config.num_frames,
        "frames_per_modality": config.frames_per_modality,
        "image_size": size,
        "crop": config.crop,
        "max_clip_seconds": MAX_CLIP_SECONDS,
        "fusion_config": config.to_dict(),
        "modality_dropout": dict(zip(("video", "audio"), (float(p) for p in modality_dropout))),
        "input_kinds": (["audio_video", "video", "audio"] if any(float(p) > 0 for p in modality_dropout)
                        and needs_video(config.strategy) and needs_audio(config.strategy)
                        else ["audio_video"] if needs_video(config.strategy) and needs_audio(config.strategy)
                        else [config.strategy]),
        "inputs": {
            "serving_default": {"fused": f"uint8 [batch, {config.num_frames}, {size}, {size}, 3], 0..255"},
            "serving_float": {"fused": f"float32 [batch, {config.num_frames}, {size}, {size}, 3], 0..255"},
            "preprocess": "the from_media inputs; returns fused uint8 [batch, T, S, S, 3], what from_media classifies",
            "from_media": {
                "frames": "uint8 [batch, frames, height, width, 3] RGB, every decoded frame of the clip"
                          + (f", each already replaced by its {config.crop!r} crop: "
                             f"mmder_tf.media.face.face_crops(frames, {config.crop!r})[0] (faces are detected "
                             "and tracked on the client, not in the graph)"
                             if config.crop in ("face", "aligned") else ""),
                "timestamps": "float32 [batch, frames] presentation time of each frame in seconds "
                              f"(a clip spans at most {MAX_CLIP_SECONDS:g} s)",
                "waveform": f"float32 [batch, samples] mono at {config.sample_rate} Hz, sample 0 at the first "
                            "frame's time",
                "num_frames_valid": "int32 [batch] frames of each row that are real (rest is padding)"
                                    + ("; 0: no usable video (audio alone)" if any(modality_dropout) else ""),
                "num_samples": "int32 [batch] samples of each row that are real (rest is padding)"
                               + ("; 0: no audio (video alone)" if any(modality_dropout) else ""),
            },
        },
        "outputs": {
            "probabilities": "float32 [batch, num_classes] softmax of the logits",
            "labels": "string [batch] top-1 class name",
            "class_names": "string [batch, num_classes] the class of each probability column",
            **{name: f"float32 [batch] predicted {name}" for name in getattr(model, "targets", ()) or ()},
        },
        "source": None if source is None else str(source),
        "mmder_tf_version": mmder_tf.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "num_parameters": int(sum(int(v.numpy().size) for v in model.weights)),
    }


# ----------------------------------------------------------------------------- graph checks

def _dims(x, rank):
    """tf.shape(x) cut or padded (with 1) to `rank` entries: indexing it cannot fail on a wrong rank.

    Graph optimisation may run shape reads before the rank asserts they depend on,
    so reads must be safe on their own for the assert's message to be the error seen.
    """
    tf = _tf()
    return tf.concat([tf.shape(x), tf.ones([rank], tf.int32)], 0)[:rank]


def _assert_shape(x, expected, message):
    """In-graph shape check that also catches a wrong rank (None = any size), with `message` in the error.

    Needed on top of the declared signature shapes: loaded signatures and TF Serving
    feed tensors into the graph without comparing them with the declared shape.
    """
    tf = _tf()
    shape = tf.shape(x, out_type=tf.int64)
    rank = len(expected)
    padded = tf.concat([shape, tf.fill([rank], tf.constant(-1, tf.int64))], 0)[:rank]
    ok = tf.equal(tf.size(shape), rank)
    for i, size in enumerate(expected):
        if size is not None:
            ok = tf.logical_and(ok, tf.equal(padded[i], size))
    return tf.debugging.Assert(ok, [message + "; got shape", shape])


def _check_fused(fused, config: FusionConfig, check_range: bool):
    """Clear in-graph errors for a fused batch: shape, empty batch, and for floats the 0..255 range."""
    tf = _tf()
    t, s = config.num_frames, config.image_size
    checks = [
        _assert_shape(fused, [None, t, s, s, 3],
                      f"fused input must be [batch, {t}, {s}, {s}, 3] (strategy {config.strategy}, image_size {s})"),
    ]
    checks.append(tf.debugging.assert_positive(_dims(fused, 5)[0], message="empty batch: send at least one clip"))
    if check_range:
        checks += [
            tf.debugging.assert_all_finite(fused, message="fused input holds NaN or Inf"),
            tf.debugging.assert_greater_equal(
                tf.reduce_min(fused), 0.0,
                message="fused float input must hold pixel values 0..255 (not normalised values)"),
            tf.debugging.assert_less_equal(
                tf.reduce_max(fused), 255.0, message="fused float input must hold pixel values 0..255"),
        ]
    with tf.control_dependencies(checks):
        fused = tf.identity(fused)
    return tf.ensure_shape(fused, [None, t, s, s, 3])


def _check_media(frames, timestamps, waveform, num_frames_valid, num_samples, config: FusionConfig):
    """Batch-level checks of the from_media inputs (per-clip checks run inside the map)."""
    tf = _tf()
    same_batch = "frames, timestamps, waveform, num_frames_valid and num_samples must have the same batch size"
    ranks = [
        _assert_shape(frames, [None] * 4 + [3], "frames must be uint8 [batch, frames, height, width, 3]"),
        _assert_shape(timestamps, [None, None], "timestamps must be float32 [batch, frames]"),
        _assert_shape(waveform, [None, None], "waveform must be float32 [batch, samples]"),
        _assert_shape(num_frames_valid, [None], "num_frames_valid must be int32 [batch]"),
        _assert_shape(num_samples, [None], "num_samples must be int32 [batch]"),
    ]
    # Everything below reads dimensions, so none of it should run before the rank checks pass.
    with tf.control_dependencies(ranks):
        frames, timestamps, waveform, num_frames_valid, num_samples = (
            tf.identity(x) for x in (frames, timestamps, waveform, num_frames_valid, num_samples))
        fshape, tshape, wshape = _dims(frames, 5), _dims(timestamps, 2), _dims(waveform, 2)
        batch = fshape[0]
        checks = [
            tf.debugging.assert_positive(batch, message="empty batch: send at least one clip"),
            tf.debugging.assert_equal(tshape[0], batch, message=same_batch),
            tf.debugging.assert_equal(wshape[0], batch, message=same_batch),
            tf.debugging.assert_equal(_dims(num_frames_valid, 1)[0], batch, message=same_batch),
            tf.debugging.assert_equal(_dims(num_samples, 1)[0], batch, message=same_batch),
            tf.debugging.assert_equal(
                tshape[1], fshape[1], message="timestamps must have one entry per frame: [batch, frames]"),
            tf.debugging.assert_less_equal(
                num_frames_valid, fshape[1], message="num_frames_valid is larger than the frames sent"),
            tf.debugging.assert_less_equal(
                num_samples, wshape[1], message="num_samples is larger than the waveform sent"),
            tf.debugging.assert_non_negative(num_samples, message="num_samples must be >= 0"),
            tf.debugging.assert_all_finite(timestamps, message="timestamps hold NaN or Inf"),
            tf.debugging.assert_all_finite(waveform, message="waveform holds NaN or Inf"),
        ]
        if needs_video(config.strategy):
            checks.append(tf.debugging.assert_positive(
                fshape[2] * fshape[3], message="frames must have a positive height and width"))
    with tf.control_dependencies(checks):
        shapes = ([None, None, None, None, 3], [None, None], [None, None], [None], [None])
        return [tf.ensure_shape(tf.identity(x), shape)
                for x, shape in zip((frames, timestamps, waveform, num_frames_valid, num_samples), shapes)]


def _fuse_one(config: FusionConfig, min_frames: int, min_duration: float, max_seconds: float,
              accepts_missing: bool = False):
    """map_fn body: one padded row -> fused uint8 [T, S, S, 3], with the decoder's clip-length rules.

    The audio windows grow with the timeline (2/(n+1) of it each), so the timeline
    is bounded before anything is sized from it: timestamps sent in milliseconds
    make a 3 s clip 3000 s long, which is refused here instead of costing minutes
    and gigabytes.

    `accepts_missing` (a model trained with modality dropout, audio-visual strategy):
    a row with num_samples 0 is video-only, a row with num_frames_valid 0 audio-only
    (its timeline is the waveform's length), each missing modality the placeholder.
    Otherwise both are required, with a message that says why. The `audio` strategy
    takes rows without frames too (audio-only recordings, timed by their waveform).
    """
    tf = _tf()
    from mmder_tf.fusion import alignment
    from mmder_tf.fusion.clip import fuse_media

    audio_visual = needs_video(config.strategy) and needs_audio(config.strategy)
    accepts_missing = accepts_missing and audio_visual
    # rows without frames are audio-only recordings: for the audio strategy, or a model with modality dropout
    audio_alone = accepts_missing or not needs_video(config.strategy)
    refusal = ("; this model was trained without modality dropout and needs both video and audio "
               "(train with --modality-dropout for clips that lack one)" if audio_visual else "")

    def fuse(row):
        frames, timestamps, waveform, count, samples = row
        times = timestamps[:count]
        has_video, has_audio = count > 0, samples > 0
        enough_frames = count >= min_frames
        if audio_alone:
            enough_frames = tf.logical_or(enough_frames, tf.logical_not(has_video))
        checks = [
            tf.debugging.Assert(enough_frames, [f"a clip needs at least {min_frames} frames (num_frames_valid)"
                                                + (" or none (audio alone)" if audio_alone else refusal)
                                                + "; got", count]),
            # Strictly increasing, as decoded presentation times are: anything else is a client bug
            # (unsorted frames or timestamps in the wrong unit) that would silently pick wrong frames.
            tf.debugging.assert_positive(
                times[1:] - times[:-1], message="timestamps must increase strictly within num_frames_valid"),
        ]
        if accepts_missing:
            checks.append(tf.debugging.Assert(tf.logical_or(has_video, has_audio), [
                "a clip needs video frames or audio: num_frames_valid and num_samples are both 0"]))
        with tf.control_dependencies(checks):
            times = tf.identity(times)
        audio_seconds = tf.cast(samples, tf.float32) / float(config.sample_rate)
        if audio_alone:  # without frames the timeline is the waveform's length, as decode_clip gives it
            duration = tf.cond(has_video, lambda: alignment.video_duration(times - times[0]),
                               lambda: audio_seconds)
        else:
            duration = alignment.video_duration(times - times[0])
        checks = [
            tf.debugging.assert_greater_equal(
                duration, min_duration,
                message=f"a clip's frames (or its audio alone) must span at least {min_duration} s "
                        "(timestamps in seconds?)"),
            tf.debugging.assert_less_equal(
                duration, max_seconds,
                message=f"a clip's frames may span at most {max_seconds:g} s (this export's max_clip_seconds); "
                        "timestamps must be in seconds, not milliseconds"),
        ]
        if needs_audio(config.strategy):
            # Audio may end early, but not by a factor: then the units disagree.
            units_agree = duration <= 4.0 * audio_seconds + 1.0
            if accepts_missing:
                units_agree = tf.logical_or(units_agree, tf.logical_not(has_audio))
            else:
                checks.append(tf.debugging.Assert(has_audio, [
                    f"strategy {config.strategy} needs audio: num_samples must be > 0{refusal}"]))
            checks.append(tf.debugging.Assert(units_agree, [
                f"the frames span more than 4 times the waveform ({config.sample_rate} Hz samples): "
                "timestamps must be in seconds and the waveform at the exported sample rate"]))
        with tf.control_dependencies(checks):
            # everything sized from the timeline waits for the checks
            frames, times, waveform = tf.identity(frames[:count]), tf.identity(times), tf.identity(waveform[:samples])
        present = tf.stack([has_video, has_audio]) if audio_alone else None
        return fuse_media(frames, times, waveform, config, modalities=present)

    return fuse


MEDIA_SPEC_NAMES = ("frames", "timestamps", "waveform", "num_frames_valid", "num_samples")


def media_preprocess_function(config: FusionConfig, max_seconds: float | None = None, accepts_missing: bool = False):
    """The tf.function the `preprocess` signature exports (and `from_media` classifies the output of):
    the from_media inputs -> {"fused": uint8 [batch, T, S, S, 3]}, each row through clip.fuse_media.
    `accepts_missing`: rows may lack video or audio (see _fuse_one)."""
    tf = _tf()
    from mmder_tf.media.decode import MAX_CLIP_SECONDS, MIN_DURATION, MIN_FRAMES

    max_seconds = MAX_CLIP_SECONDS if max_seconds is None else float(max_seconds)
    t, s = config.num_frames, config.image_size
    # Inputs of unknown rank: grappler trusts declared shapes (folds rank asserts, drops
    # "no-op" reshapes), so a wrong rank would surface as an obscure op error instead of
    # the asserts' messages. The shapes are checked in the graph and listed in the metadata.
    spec = [tf.TensorSpec(None, dtype, name=name) for name, dtype in zip(
        MEDIA_SPEC_NAMES, (tf.uint8, tf.float32, tf.float32, tf.int32, tf.int32))]

    @tf.function(input_signature=spec, autograph=False)
    def preprocess(frames, timestamps, waveform, num_frames_valid, num_samples):
        rows = _check_media(frames, timestamps, waveform, num_frames_valid, num_samples, config)
        fused = tf.map_fn(_fuse_one(config, MIN_FRAMES, MIN_DURATION, max_seconds, accepts_missing), tuple(rows),
                          fn_output_signature=tf.TensorSpec([t, s, s, 3], tf.uint8))
        return {"fused": fused}

    return preprocess, spec


class _ServingModule:
    """Builds the tf.Module that holds the model's variables, the signature functions and the asset."""

    def __init__(self, model, config: FusionConfig, class_names, metadata: dict, asset_path: str):
        tf = _tf()

        self.module = module = tf.Module()
        # Variables only: tracking the Keras model itself would make loading depend on Keras.
        # The tf.Variables under the Keras ones: tracking the Keras wrappers saves every variable
        # twice, and TF1-style loaders (saved_model_cli run) then restore the copy the graph does not use.
        module.model_variables = [getattr(v, "value", v) for v in model.variables]
        module.metadata_file = tf.saved_model.Asset(asset_path)
        t, s = config.num_frames, config.image_size
        names = tf.constant(list(class_names), tf.string)
        meta_json = json.dumps(metadata, sort_keys=True)

        # One traced model call shared by every signature; autograph off: no tensor-dependent
        # Python control flow here, and converting the preprocessing modules costs seconds.
        @tf.function(input_signature=[tf.TensorSpec([None, t, s, s, 3], tf.float32)], autograph=False)
        def classify(fused_float):
            outputs = model(fused_float, training=False)
            dimensions = {}
            if isinstance(outputs, dict):  # a model trained with emotion dimensions
                dimensions = {k: tf.cast(v, tf.float32) for k, v in outputs.items() if k != "category"}
                outputs = outputs["category"]
            probabilities = tf.nn.softmax(tf.cast(outputs, tf.float32), axis=-1)
            top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            batch = tf.shape(probabilities)[0]
            return {
                "probabilities": probabilities,
                "labels": tf.gather(names, top),
                "class_names": tf.tile(names[tf.newaxis, :], [batch, 1]),
                **dimensions,
            }

        @tf.function(input_signature=[tf.TensorSpec([None, t, s, s, 3], tf.uint8, name="fused")], autograph=False)
        def serve_uint8(fused):
            return classify(tf.cast(_check_fused(fused, config, check_range=False), tf.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, t, s, s, 3], tf.float32, name="fused")], autograph=False)
        def serve_float(fused):
            return classify(_check_fused(fused, config, check_range=True))

        preprocess, media_spec = media_preprocess_function(config, metadata["max_clip_seconds"],
                                                           accepts_missing_modalities(metadata))

        @tf.function(input_signature=media_spec, autograph=False)
        def from_media(frames, timestamps, waveform, num_frames_valid, num_samples):
            fused = preprocess(frames, timestamps, waveform, num_frames_valid, num_samples)["fused"]
            return classify(tf.cast(fused, tf.float32))

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="unused")], autograph=False)
        def metadata_fn(unused):
            del unused
            return {
                "json": tf.constant(meta_json),
                "strategy": tf.constant(config.strategy),
                "preset": tf.constant(metadata["preset"]),
                "class_names": names,
                "fusion_config": tf.constant(config.to_json()),
                "sample_rate": tf.constant(config.sample_rate, tf.int32),
                "num_frames": tf.constant(t, tf.int32),
                "image_size": tf.constant(s, tf.int32),
            }

        module.serve_uint8, module.serve_float = serve_uint8, serve_float
        module.from_media, module.preprocess, module.metadata = from_media, preprocess, metadata_fn
        self.signatures = {
            "serving_default": serve_uint8.get_concrete_function(),
            "serving_float": serve_float.get_concrete_function(),
            "from_media": from_media.get_concrete_function(),
            "preprocess": preprocess.get_concrete_function(),
            "metadata": metadata_fn.get_concrete_function(),
        }


def is_export(path) -> bool:
    """True when `path` is a folder this project exported (its metadata asset names the format)."""
    try:
        return read_metadata(path)["format"] == EXPORT_FORMAT
    except (CheckpointError, OSError):
        return False


def _check_target(export_dir: Path, overwrite: bool) -> bool:
    """Whether `export_dir` exists (and may be replaced); refuses anything that is not an export of ours."""
    if not check_replaceable(export_dir, is_export, "an mmder_tf export"):
        return False
    if not overwrite and any(export_dir.iterdir()):
        existing = read_metadata(export_dir)
        raise ConfigError(f"{export_dir} exists: an mmder_tf export ({existing.get('strategy')} "
                          f"{existing.get('preset')}, classes {', '.join(existing.get('class_names', []))}); "
                          "pass overwrite=True (--overwrite) to replace that export")
    return True


def export_saved_model(model, config: FusionConfig, class_names, export_dir, *, preset=None, source=None,
                       overwrite=False, dataset=None, modality_dropout=(0.0, 0.0)) -> Path:
    """Write `model` (an EmotionClassifier for `config`) as a SavedModel at `export_dir`; returns the path.

    The directory appears complete or not at all: the model is saved to a
    sibling temporary directory and renamed. For TF Serving, export to
    `<model_base>/<version>` (e.g. models/mmder/1).
    """
    tf = _tf()
    if not isinstance(config, FusionConfig):
        raise ConfigError(f"config must be a FusionConfig, got {type(config).__name__}")
    class_names = [str(c) for c in class_names]
    if not class_names or len(set(class_names)) != len(class_names):
        raise ConfigError(f"class_names must be non-empty and unique, got {class_names}")
    if getattr(model, "targets", ()):  # category + emotion dimensions: a dict of outputs
        num_classes = int(model.num_classes)
    else:
        num_classes = int(model.output_shape[-1])
    if num_classes != len(class_names):
        raise ConfigError(f"{len(class_names)} class names for a model with {num_classes} outputs")
    expected = (None, config.num_frames, config.image_size, config.image_size, 3)
    if tuple(model.input_shape) != expected:
        raise ConfigError(f"the model takes {tuple(model.input_shape)}, the config makes {expected} "
                          "(num_frames / image_size disagree)")
    if model.dtype_policy.compute_dtype != "float32":
        # Serving traces in float32: a mixed-precision model would be exported at reduced precision.
        raise ConfigError(f"export a float32 model (got dtype policy {model.dtype_policy.name}); "
                          "rebuild it under the float32 policy and load its weights")

    export_dir = Path(export_dir)
    _check_target(export_dir, overwrite)  # before the slow part: a refusal costs nothing
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    metadata = build_metadata(model, config, class_names, preset=preset, source=source, dataset=dataset,
                              modality_dropout=modality_dropout)
    with WriterLock(export_dir.parent, "mmder-export", "wait for it, or export to another --output",
                    name=f".{export_dir.name}.lock"):
        clean_stale_temps(export_dir.parent, prefix=export_dir.name)  # copies left by a killed export
        _check_target(export_dir, overwrite)  # again under the lock: another export may have landed
        tmp = temp_path(export_dir)
        tmp.mkdir()
        try:
            asset = tmp / METADATA_ASSET
            asset.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            built = _ServingModule(model, config, class_names, metadata, str(asset))
            saved = tmp / "model"
            tf.saved_model.save(built.module, str(saved), signatures=built.signatures)
            if not (saved / "assets" / METADATA_ASSET).is_file():
                raise CheckpointError(f"{export_dir}: the metadata asset was not written")
            replace_dir(saved, export_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def read_metadata(export_dir) -> dict:
    """The metadata of an export (its assets/mmder_tf.json), without loading the model."""
    path = Path(export_dir) / "assets" / METADATA_ASSET
    if not path.is_file():
        raise CheckpointError(f"{export_dir}: not an mmder_tf export (no assets/{METADATA_ASSET})")
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path}: unreadable metadata ({error})") from None
    if metadata.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path}: not an mmder_tf export metadata file")
    if int(metadata.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{export_dir}: export format {metadata['format_version']} is newer than this "
                              f"mmder_tf reads ({EXPORT_FORMAT_VERSION}); upgrade mmder_tf")
    return metadata


def check_graph_metadata(export_dir, loaded, metadata: dict):
    """Refuse an export whose assets/mmder_tf.json disagrees with the metadata compiled into its graph.

    The graph's copy (the `metadata` signature) is what the model computes with; the asset is what
    predict names the columns and fuses the input by. A hand-edited asset (class names reversed) or a
    saved_model.pb taken from another export would otherwise label every prediction wrongly.
    """
    import tensorflow as tf

    signature = loaded.signatures.get("metadata")
    try:
        graph = json.loads(signature(unused=tf.constant(0, tf.int32))["json"].numpy().decode("utf-8"))
    except Exception as error:  # noqa: BLE001 - no signature, no "json" output, or not JSON: all the same refusal
        raise CheckpointError(f"{export_dir}: the SavedModel carries no readable metadata of its own "
                              f"({type(error).__name__}); export it again") from None
    differing = sorted(k for k in set(graph) | set(metadata) if graph.get(k) != metadata.get(k))
    if differing:
        first = min(differing, key=lambda k: len(repr(graph.get(k))) + len(repr(metadata.get(k))))  # readable
        raise CheckpointError(
            f"{export_dir}: assets/{METADATA_ASSET} disagrees with the SavedModel's own metadata on "
            f"{', '.join(differing)} ({first}: assets {metadata.get(first)!r}, graph {graph.get(first)!r}); "
            "the export was altered after it was written: export it again")


# ----------------------------------------------------------------------------- loading trained models

def build_classifier(preset: str, config: FusionConfig, class_names, weights=None):
    """A float32 EmotionClassifier of `preset` for `config`, with an EmotionClassifier .weights.h5 loaded strictly."""
    from mmder_tf.models import presets
    from mmder_tf.models.classifier import EmotionClassifier
    from mmder_tf.models.preset_io import load_weights_strict

    backbone = presets.backbone_from_preset(preset, num_frames=config.num_frames, image_size=config.image_size,
                                            dtype="float32")
    model = EmotionClassifier(backbone, len(class_names), class_names=list(class_names), dtype="float32")
    if weights is not None:
        load_weights_strict(model, weights)
    return model


def load_run(run_dir, fold=None):
    """(model, config, class_names, preset, source) of one finished fold of a `mmder-finetune` run:
    the fold's model in float32 (training.model.load_fold, strict), its FusionConfig and class names."""
    from mmder_tf.training.model import load_fold

    try:
        trained = load_fold(run_dir, fold, dtype="float32")
    except ConfigError as error:
        if "not a training run" in str(error):
            raise CheckpointError(str(error)) from None
        raise
    return trained.model, trained.fusion, list(trained.class_names), trained.preset, trained.checkpoint


def export_run(run_dir, export_dir, fold=None, *, overwrite=False) -> Path:
    """Export one finished fold of a `mmder-finetune` run (the notebooks' and the CLI's RUN path)."""
    model, config, class_names, preset, source = load_run(run_dir, fold)
    return export_saved_model(model, config, class_names, export_dir, preset=preset, source=source,
                              overwrite=overwrite, dataset=run_dataset(run_dir),
                              modality_dropout=run_modality_dropout(run_dir))


def run_modality_dropout(run_dir) -> tuple[float, float]:
    """(p_video, p_audio) the run trained with ((0, 0): both modalities always)."""
    from mmder_tf.training.config import RunConfig

    return RunConfig.from_run(run_dir).modality_dropout


def run_dataset(run_dir) -> str:
    """The dataset a run trained on (its clips' length is the timeline's default window)."""
    from mmder_tf.training.config import RunConfig

    return RunConfig.from_run(run_dir).dataset


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmder-export",
        description="Export a trained classifier as a TensorFlow SavedModel (TF Serving, saved_model_cli). "
                    "Either a training run folder (RUN, with --fold) or an explicit --weights file.")
    p.add_argument("run", nargs="?", help="run folder written by mmder-finetune (has run.json and fold_N/)")
    p.add_argument("--output", "-o", required=True,
                   help="SavedModel folder to create; for TF Serving use <model_base>/<version>, e.g. models/mmder/1")
    p.add_argument("--fold", type=int, help="which finished fold's checkpoint (needed when the run has several)")
    p.add_argument("--weights", help="an EmotionClassifier preset folder (save_to_preset: its class names and "
                                     "preprocessing come with it), or a bare .weights.h5 with --preset and "
                                     "--class-names (instead of a run folder)")
    p.add_argument("--preset", choices=PRESETS, help="backbone preset of --weights")
    p.add_argument("--class-names", help="comma-separated class names in logit order (with --weights)")
    p.add_argument("--num-classes", type=int, help="checked against --class-names")
    p.add_argument("--strategy", help="fusion strategy (with --weights; default fslf or the --fusion-config's)")
    p.add_argument("--fusion-config", help="FusionConfig JSON file (with --weights)")
    p.add_argument("--image-size", type=int, help="fused frame size (with --weights)")
    p.add_argument("--num-frames", type=int, help="fused frame count (with --weights)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--ensemble", nargs="+", metavar="RUN",
                   help="export the same --fold of these runs (different strategies) as one ensemble SavedModel")
    p.add_argument("--ensemble-weights", help="comma-separated member weights summing to 1 (default: the mean), "
                                              "e.g. the validation-chosen ones from mmder-evaluate --ensemble")
    p.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up logs")
    return p


def preset_modality_dropout(path) -> tuple[float, float]:
    """(p_video, p_audio) a classifier preset was trained with, from its metadata ((0, 0) when not recorded)."""
    from mmder_tf.models.preset_io import read_metadata

    dropout = (read_metadata(path).get("training") or {}).get("modality_dropout") or {}
    return float(dropout.get("video", 0.0)), float(dropout.get("audio", 0.0))


def load_preset_classifier(path):
    """(model, config, class_names, preset, source) of an EmotionClassifier preset folder, in float32: the
    inputs are made with the preset's own preprocessing settings."""
    from mmder_tf.models.classifier import EmotionClassifier
    from mmder_tf.models.presets import preset_of

    model = EmotionClassifier.from_preset(path, dtype="float32")
    if model.preprocessing is None:
        raise ConfigError(f"{path}: the preset has no preprocessing.json (how its inputs are fused); save it with "
                          "save_to_preset(DIR, preprocessing=FusionConfig(...))")
    if not model.class_names:
        raise ConfigError(f"{path}: the preset's classifier has no class names")
    return model, model.preprocessing, list(model.class_names), preset_of(model.backbone), str(path)


def _explicit(args):
    from mmder_tf.models.preset_io import is_preset

    if is_preset(args.weights):
        for flag in ("preset", "class_names", "num_classes", "strategy", "fusion_config", "image_size", "num_frames"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')}: the preset {args.weights} carries its own settings")
        return load_preset_classifier(args.weights)
    if not args.preset or not args.class_names:
        raise ConfigError("--weights needs --preset and --class-names")
    class_names = [c.strip() for c in args.class_names.split(",") if c.strip()]
    if args.num_classes is not None and args.num_classes != len(class_names):
        raise ConfigError(f"--num-classes {args.num_classes} but {len(class_names)} --class-names")
    config = FusionConfig()
    if args.fusion_config:
        try:
            config = FusionConfig.from_json(Path(args.fusion_config).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"--fusion-config {args.fusion_config}: {error}") from None
    changes = {k: v for k, v in (("strategy", args.strategy and check_strategy(args.strategy)),
                                 ("image_size", args.image_size), ("num_frames", args.num_frames)) if v}
    config = config.replace(**changes)
    warn_training_mismatch(args.weights, config)
    model = build_classifier(args.preset, config, class_names, weights=args.weights)
    return model, config, class_names, args.preset, args.weights


def warn_training_mismatch(weights, config: FusionConfig) -> list[str]:
    """Warn when a fold checkpoint of a run is exported with other sizes than the run trained with.

    A ViT's weights load at any image size or frame count (the position embedding
    is not stored), so a model trained at 64 px loads at 224 px and serves inputs
    it never saw. The run's run.json (two folders up from fold_N/*.weights.h5)
    says what training used.
    """
    from mmder_tf.training.config import read_run_file

    run_file = Path(weights).resolve().parent.parent / "run.json"
    if not run_file.is_file():
        return []
    try:
        trained = read_run_file(run_file)[0].fusion
    except (MMDERError, KeyError, TypeError, ValueError):
        return []  # not a run this mmder_tf reads: nothing to compare with
    differences = [f"{name} {getattr(trained, name)} in training, {getattr(config, name)} now"
                   for name in ("image_size", "num_frames", "strategy", "crop", "sample_rate")
                   if getattr(trained, name) != getattr(config, name)]
    if differences:
        message = (f"{weights} was trained by the run in {run_file.parent} with other settings than this export: "
                   f"{'; '.join(differences)} (export the run folder instead to use its own settings)")
        print(f"mmder-export: warning: {message}", file=sys.stderr)
    return differences


@one_line_file_errors("mmder-export")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow(args.verbose)
    if args.ensemble:
        from mmder_tf.serving.ensemble import SIGNATURES as ENSEMBLE_SIGNATURES, export_ensemble_runs

        try:
            if args.run or args.weights:
                raise ConfigError("--ensemble takes the run folders itself; drop RUN / --weights")
            weights = None
            if args.ensemble_weights:
                try:
                    weights = [float(w) for w in args.ensemble_weights.split(",")]
                except ValueError:
                    raise ConfigError(f"--ensemble-weights must be numbers, got {args.ensemble_weights!r}") from None
            out = export_ensemble_runs(args.ensemble, args.output, args.fold, weights, overwrite=args.overwrite)
        except MMDERError as error:
            print(f"mmder-export: error: {error}", file=sys.stderr)
            return 2
        print(f"exported an ensemble of {len(args.ensemble)} runs to {out}")
        print(f"signatures: {', '.join(ENSEMBLE_SIGNATURES)}; metadata: {out / 'assets' / METADATA_ASSET}")
        return 0
    try:
        if args.weights:
            if args.run:
                raise ConfigError("give either a run folder or --weights, not both")
            model, config, class_names, preset, source = _explicit(args)
        elif args.run:
            for flag in ("preset", "class_names", "strategy", "fusion_config", "image_size", "num_frames"):
                if getattr(args, flag) is not None:
                    raise ConfigError(f"--{flag.replace('_', '-')} applies to --weights; a run folder has its own")
            model, config, class_names, preset, source = load_run(args.run, args.fold)
        else:
            raise ConfigError("give a run folder or --weights")
        dataset = None
        if args.run:
            modality_dropout, dataset = run_modality_dropout(args.run), run_dataset(args.run)
        else:
            from mmder_tf.models.preset_io import is_preset

            modality_dropout = preset_modality_dropout(args.weights) if is_preset(args.weights) else (0.0, 0.0)
        out = export_saved_model(model, config, class_names, args.output, preset=preset, source=source,
                                 overwrite=args.overwrite, modality_dropout=modality_dropout, dataset=dataset)
    except MMDERError as error:
        print(f"mmder-export: error: {error}", file=sys.stderr)
        return 2
    print(f"exported {config.strategy} {preset} classifier ({', '.join(class_names)}) to {out}")
    print(f"signatures: {', '.join(SIGNATURES)}; metadata: {out / 'assets' / METADATA_ASSET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
