"""Training with emotion dimensions: targets into tf.data, the joint model, predictions per output.

The prepared cache stores the category only; dimensional targets come from the
manifest (`ClipRecord.targets`) and join the batches by clip key, so a cache
stays valid when targets are added or corrected. Missing targets are NaN,
masked by `models.multitask.MultiTaskModel`.
"""
from __future__ import annotations

import numpy as np

from mmder_tf.data.datasets import target_matrix
from mmder_tf.errors import DatasetError
from mmder_tf.models.multitask import CATEGORY, MultiTaskModel, target_statistics

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


def wrap(model, config, soft_labels=False):
    """`model` in the joint loss of `config` (a RunConfig with dimensions)."""
    return MultiTaskModel(model, config.dimensions, weighting=config.task_weighting,
                          task_weights=dict(config.task_weights), soft_labels=soft_labels)


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
