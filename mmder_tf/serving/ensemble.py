"""Ensemble SavedModel: several trained strategies, each fused once, their posteriors averaged.

    mmder-export --ensemble RUN_CFAS RUN_FSLF RUN_OFOS --fold 1 -o models/ens/1 [--ensemble-weights 0.5,0.3,0.2]

The members are finished runs of different fusion strategies (reports.ensemble
chooses weights on validation subjects; pass them with --ensemble-weights, default
the mean). Signatures:

- `from_media`: the inputs of a single export's from_media; inside the graph the
  clip is fused once per member strategy (the same fuse_media path as a single
  export), each member classifies its own fused input, and the outputs are
  `probabilities` = sum_m w_m softmax_m, `labels`, `class_names`, and per emotion
  dimension the plain mean of the members that predict it.
- `serving_default`: one fused uint8 input per member, `fused_0` .. `fused_{M-1}`
  (member order as in the metadata), for clients that fuse themselves (mmder-predict).
- `metadata`: as a single export, with "ensemble": the members' strategy,
  FusionConfig, weight and source.

Members must share classes, sample rate, crop, frame count and image size (one
client request feeds them all).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from mmder_tf.config import FusionConfig
from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.fileio import WriterLock, clean_stale_temps, replace_dir, temp_path
from mmder_tf.serving import export as single

SIGNATURES = ("serving_default", "from_media", "metadata")


def _check_members(members, weights):
    if len(members) < 2:
        raise ConfigError("an ensemble export needs at least two members")
    first_model, first_config, first_names = members[0][:3]
    for model, config, names, *_ in members:
        if list(names) != list(first_names):
            raise ConfigError(f"members disagree on the classes: {list(names)} vs {list(first_names)}")
        for field in ("sample_rate", "crop", "num_frames", "image_size"):
            if getattr(config, field) != getattr(first_config, field):
                raise ConfigError(f"members disagree on {field}: {getattr(config, field)} vs "
                                  f"{getattr(first_config, field)} (one request must feed every member)")
        if model.dtype_policy.compute_dtype != "float32":
            raise ConfigError("export float32 members (rebuild under the float32 policy and load the weights)")
    weights = np.full(len(members), 1.0 / len(members)) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (len(members),) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ConfigError(f"--ensemble-weights must be {len(members)} non-negative numbers summing to 1, got "
                          f"{weights.tolist()}")
    return weights


def export_ensemble(members, export_dir, weights=None, *, overwrite=False) -> Path:
    """members: [(model, FusionConfig, class_names, preset, source)] -> SavedModel at export_dir."""
    import tensorflow as tf

    weights = _check_members(members, weights)
    export_dir = Path(export_dir)
    single._check_target(export_dir, overwrite)  # before the slow part: a refusal costs nothing
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    model0, config0, class_names = members[0][0], members[0][1], [str(c) for c in members[0][2]]
    metadata = single.build_metadata(model0, config0, class_names, preset=members[0][3], source=members[0][4])
    dimensions = []  # every dimension some member predicts, in order of first appearance
    for model, *_ in members:
        dimensions += [d for d in (getattr(model, "targets", ()) or ()) if d not in dimensions]
    metadata.update(
        strategy="ensemble(" + "+".join(c.strategy for _, c, *_ in members) + ")",
        dimensions=dimensions,
        num_parameters=int(sum(int(v.numpy().size) for m, *_ in members for v in m.weights)),
        ensemble={"members": [{"strategy": c.strategy, "fusion_config": c.to_dict(), "weight": float(w),
                               "preset": p or "custom", "source": None if s is None else str(s),
                               "dimensions": list(getattr(m, "targets", ()) or ())}
                              for (m, c, _, p, s), w in zip(members, weights)],
                  "combination": "weighted mean of the members' softmax posteriors; dimensions: mean of the "
                                 "members that predict them"},
    )
    t, s = config0.num_frames, config0.image_size
    metadata["inputs"]["serving_default"] = {f"fused_{i}": f"uint8 [batch, {t}, {s}, {s}, 3], 0..255, fused "
                                                           f"with strategy {c.strategy}"
                                             for i, (_, c, *_) in enumerate(members)}
    metadata["inputs"].pop("serving_float", None)
    metadata["outputs"].update({d: f"float32 [batch] predicted {d} (mean over members)" for d in dimensions})
    with WriterLock(export_dir.parent, "mmder-export", "wait for it, or export to another --output",
                    name=f".{export_dir.name}.lock"):
        clean_stale_temps(export_dir.parent, prefix=export_dir.name)  # copies left by a killed export
        single._check_target(export_dir, overwrite)  # again under the lock: another export may have landed
        tmp = temp_path(export_dir)
        tmp.mkdir()
        try:
            asset = tmp / single.METADATA_ASSET
            asset.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            module, signatures = _build_module(members, weights, class_names, dimensions, metadata, str(asset))
            saved = tmp / "model"
            tf.saved_model.save(module, str(saved), signatures=signatures)
            if not (saved / "assets" / single.METADATA_ASSET).is_file():
                raise CheckpointError(f"{export_dir}: the metadata asset was not written")
            replace_dir(saved, export_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def _build_module(members, weights, class_names, dimensions, metadata, asset_path):
    import tensorflow as tf

    module = tf.Module()
    module.model_variables = [getattr(v, "value", v) for m, *_ in members for v in m.variables]
    module.metadata_file = tf.saved_model.Asset(asset_path)
    config0 = members[0][1]
    t, s = config0.num_frames, config0.image_size
    names = tf.constant(list(class_names), tf.string)
    member_weights = [float(w) for w in weights]
    meta_json = json.dumps(metadata, sort_keys=True)

    def combine(fused_per_member):
        probabilities, values = 0.0, {d: [] for d in dimensions}
        for (model, *_), weight, fused in zip(members, member_weights, fused_per_member):
            outputs = model(tf.cast(fused, tf.float32), training=False)
            if isinstance(outputs, dict):
                for d in dimensions:
                    if d in outputs:
                        values[d].append(tf.cast(outputs[d], tf.float32))
                outputs = outputs["category"]
            probabilities += weight * tf.nn.softmax(tf.cast(outputs, tf.float32), axis=-1)
        top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        batch = tf.shape(probabilities)[0]
        return {"probabilities": probabilities, "labels": tf.gather(names, top),
                "class_names": tf.tile(names[tf.newaxis, :], [batch, 1]),
                **{d: tf.add_n(v) / len(v) for d, v in values.items() if v}}

    fused_specs = [tf.TensorSpec([None, t, s, s, 3], tf.uint8, name=f"fused_{i}") for i in range(len(members))]

    @tf.function(input_signature=fused_specs, autograph=False)
    def serve_fused(*fused):
        return combine([single._check_fused(f, c, check_range=False) for f, (_, c, *_) in zip(fused, members)])

    # One preprocessing function per member strategy (the single export's own): the clip is fused once each.
    preprocessors = [single.media_preprocess_function(config, metadata["max_clip_seconds"])
                     for _, config, *_ in members]
    media_spec = preprocessors[0][1]

    @tf.function(input_signature=media_spec, autograph=False)
    def from_media(frames, timestamps, waveform, num_frames_valid, num_samples):
        return combine([preprocess(frames, timestamps, waveform, num_frames_valid, num_samples)["fused"]
                        for preprocess, _ in preprocessors])

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="unused")], autograph=False)
    def metadata_fn(unused):
        del unused
        return {"json": tf.constant(meta_json), "strategy": tf.constant(metadata["strategy"]),
                "class_names": names, "sample_rate": tf.constant(config0.sample_rate, tf.int32),
                "num_frames": tf.constant(t, tf.int32), "image_size": tf.constant(s, tf.int32)}

    module.serve_fused, module.from_media, module.metadata = serve_fused, from_media, metadata_fn
    return module, {"serving_default": serve_fused.get_concrete_function(),
                    "from_media": from_media.get_concrete_function(),
                    "metadata": metadata_fn.get_concrete_function()}


def export_ensemble_runs(run_dirs, export_dir, fold=None, weights=None, *, overwrite=False) -> Path:
    """Export the same fold of several finished runs as one ensemble SavedModel."""
    members = [single.load_run(run, fold) for run in run_dirs]
    return export_ensemble(members, export_dir, weights, overwrite=overwrite)


def member_configs(metadata) -> list[FusionConfig]:
    """The members' FusionConfigs of an ensemble export's metadata (empty for a single model)."""
    return [FusionConfig.from_dict(m["fusion_config"]) for m in (metadata.get("ensemble") or {}).get("members", [])]
