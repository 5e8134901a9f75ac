"""Training with emotion dimensions: targets into tf.data, the joint model, predictions per output.

The prepared cache stores the category only; dimensional targets come from the
manifest (`ClipRecord.targets`) and join the batches by clip key, so a cache
stays valid when targets are added or corrected. Missing targets are NaN,
masked by `models.multitask.MultiTaskModel`.
"""
from __future__ import annotations

import numpy as np

from mmder_tf.data.datasets import target_matrix
from mmder_tf.errors import ConfigError, DatasetError
from mmder_tf.models.multitask import CATEGORY, MultiTaskModel, target_statistics

RESERVED_OUTPUTS = ("probabilities", "labels", "class_names", "logits", "key", "y_true")


def parse_targets(text) -> tuple[str, ...]:
    """'category,valence,arousal' -> ("valence", "arousal"): the dimensions trained beside the category."""
    names = [t.strip() for t in str(text or CATEGORY).split(",") if t.strip()]
    if CATEGORY not in names:
        raise ConfigError(f"--targets must include {CATEGORY!r} (the model always classifies), got {text!r}")
    dimensions = tuple(n for n in names if n != CATEGORY)
    if len(set(dimensions)) != len(dimensions):
        raise ConfigError(f"--targets lists a dimension twice: {text!r}")
    clash = [n for n in dimensions if n in RESERVED_OUTPUTS or not n.replace("_", "").isalnum()]
    if clash:
        raise ConfigError(f"--targets: {clash} cannot name a dimension (reserved or not letters/digits/_)")
    return dimensions


def parse_task_weights(text) -> dict:
    """'category=1,valence=0.5' -> {"category": 1.0, "valence": 0.5}."""
    weights = {}
    for part in str(text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value) if sep else float("nan")
        except ValueError:
            weights[name.strip()] = float("nan")
        if not weights[name.strip()] >= 0:
            raise ConfigError(f"--task-weights wants task=weight pairs with weights >= 0, got {part!r}")
    return weights


def check_dimensions(manifest, dimensions):
    """Every requested dimension must exist in the manifest and be known for some clip."""
    available = manifest.target_names
    missing = [d for d in dimensions if d not in available]
    if missing:
        raise DatasetError(f"dimension(s) {missing} not in the dataset; it has {list(available) or 'none'} "
                           "(IEMOCAP: valence, arousal, dominance; RAVDESS / CREMA-D: intensity; CSV: numeric "
                           "columns; any dataset: --targets-file)")
    table = target_matrix(manifest.records, dimensions)
    empty = [d for j, d in enumerate(dimensions) if not np.isfinite(table[:, j]).any()]
    if empty:
        raise DatasetError(f"dimension(s) {empty} have no known value in the dataset")


def set_target_statistics(classifier, train_records, dimensions):
    """Standardise the regression heads on the TRAINING clips' targets (never the test fold's)."""
    mean, std = target_statistics(target_matrix(train_records, dimensions))
    classifier.target_scaling.set_statistics(mean, std)
    return {d: {"mean": float(m), "std": float(s)} for d, m, s in zip(dimensions, mean, std)}


def wrap(model, dimensions, weighting, task_weights, soft_labels):
    return MultiTaskModel(model, dimensions, weighting=weighting, task_weights=task_weights, soft_labels=soft_labels)


def with_targets(dataset, records, dimensions, num_classes=None, keep_keys=False):
    """(x, label, key) batches -> (x, {"category": label or one-hot, dim: float (NaN = missing)}[, key])."""
    import tensorflow as tf

    keys = tf.constant([r.key for r in records])
    values = tf.constant(target_matrix(records, dimensions))
    index = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(records), dtype=tf.int32)), default_value=-1)

    def attach(x, y, key):
        row = index.lookup(key)
        found = tf.gather(values, tf.maximum(row, 0))
        found = tf.where((row >= 0)[:, None], found, tf.fill(tf.shape(found), float("nan")))
        category = tf.one_hot(tf.cast(y, tf.int32), num_classes) if num_classes else y
        targets = {CATEGORY: category, **{d: found[:, j] for j, d in enumerate(dimensions)}}
        return (x, targets, key) if keep_keys else (x, targets)

    return dataset.map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def target_dict(records, labels, dimensions, num_classes=None) -> dict:
    """The same targets as `with_targets`, for in-memory (cached feature) training."""
    table = target_matrix(records, dimensions)
    labels = np.asarray(labels, np.int64)
    category = np.eye(num_classes, dtype=np.float32)[labels] if num_classes else labels
    return {CATEGORY: category, **{d: table[:, j] for j, d in enumerate(dimensions)}}


def split_outputs(outputs, dimensions):
    """Model outputs (logits tensor, or the dict of a model with dimensions) -> (logits, {dim: values})."""
    if isinstance(outputs, dict):
        return (np.asarray(outputs[CATEGORY], np.float32),
                {d: np.asarray(outputs[d], np.float32).reshape(-1) for d in dimensions})
    return np.asarray(outputs, np.float32), {}


def predict_batches(model, batches, dimensions, jit_compile=False):
    """(keys or None, labels, logits [N, C], {dim: [N]}) over (x, y) or (x, y, key) batches."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True)
    keys, labels, logits, values = [], [], [], {d: [] for d in dimensions}
    with_keys = None
    for batch in batches:
        x, y = batch[0], batch[1]
        with_keys = len(batch) == 3
        if with_keys:
            keys.extend(k.decode() for k in np.asarray(batch[2]))
        out = forward(x)
        batch_logits, batch_values = split_outputs(
            {k: tf.cast(v, tf.float32) for k, v in out.items()} if isinstance(out, dict) else tf.cast(out, tf.float32),
            dimensions)
        logits.append(batch_logits)
        labels.append(np.asarray(y))
        for d in dimensions:
            values[d].append(batch_values[d])
    if not logits:
        return ([] if with_keys else None), np.zeros((0,), np.int64), np.zeros((0, 0), np.float32), \
            {d: np.zeros((0,), np.float32) for d in dimensions}
    return (keys if with_keys else None), np.concatenate(labels).astype(np.int64), np.concatenate(logits), \
        {d: np.concatenate(v) for d, v in values.items()}


def dimension_arrays(records, predicted: dict, dimensions) -> dict:
    """The npz entries of a fold's dimensions: true_<dim> (NaN = missing) and pred_<dim>, in `records` order."""
    table = target_matrix(records, dimensions)
    out = {}
    for j, d in enumerate(dimensions):
        out[f"true_{d}"] = table[:, j]
        out[f"pred_{d}"] = np.asarray(predicted[d], np.float32)
    return out


def read_dimension_arrays(npz) -> dict:
    """{dim: {"y_true", "y_pred"}} from a predictions.npz written with `dimension_arrays`."""
    names = [k[len("pred_"):] for k in npz.files if k.startswith("pred_")]
    return {d: {"y_true": npz[f"true_{d}"], "y_pred": npz[f"pred_{d}"]} for d in names if f"true_{d}" in npz.files}


def load_checkpoint(model, path, dimensions=(), weighting="uncertainty"):
    """Load a fold checkpoint into `model` (classifier or its head model); a joint run's checkpoint holds the
    MultiTaskModel's weights (the model's plus the learned log-variances), so it is read through one."""
    dimensions = tuple(dimensions or ())
    if dimensions:
        wrapper = MultiTaskModel(model, dimensions, weighting=weighting)
        wrapper.load_weights(str(path))
        return wrapper
    model.load_weights(str(path))
    return model
