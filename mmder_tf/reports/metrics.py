"""Emotion-recognition metrics: UAR, WAR, per-class recall, confusion, fold summaries.

Pure numpy so reports can be recomputed from saved predictions without TF.
UAR is the mean recall over the classes that occur in the ground truth: a class
absent from a test fold has no recall, and counting it as 0 (as
`recall_score(average="macro")` does when it is predicted) would punish the model
for the fold split, not for its predictions.
"""
from __future__ import annotations

import numpy as np

from mmder_tf.errors import ConfigError


def _as_labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2:  # logits or probabilities
        array = np.argmax(array, axis=-1)
    if array.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D label vector or a 2-D score matrix, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer)):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ConfigError(f"{name} must hold integer class ids")
        array = array.astype(np.int64)
    return array.astype(np.int64)


def _num_classes(y_true, y_pred, num_classes):
    if num_classes is not None:
        return int(num_classes)
    top = max(int(y_true.max(initial=-1)), int(y_pred.max(initial=-1)))
    return top + 1


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """[C, C] counts; rows are true classes, columns predicted classes."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    n = _num_classes(y_true, y_pred, num_classes)
    if y_true.size and (y_true.min() < 0 or y_pred.min() < 0 or y_true.max() >= n or y_pred.max() >= n):
        raise ConfigError(f"class ids must lie in [0, {n})")
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    """Recall per true class; NaN where the class has no examples."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)


def uar(y_true, y_pred, num_classes: int | None = None) -> float:
    """Unweighted average recall over the classes present in y_true."""
    recalls = per_class_recall(confusion_matrix(y_true, y_pred, num_classes))
    present = recalls[~np.isnan(recalls)]
    return float(present.mean()) if present.size else float("nan")


def war(y_true, y_pred) -> float:
    """Weighted average recall = overall accuracy."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def evaluate_predictions(y_true, y_pred, class_names=None, num_classes: int | None = None) -> dict:
    """All metrics of one evaluation as a JSON-ready dict. y_pred may be logits."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if class_names is not None:
        num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    recalls = per_class_recall(matrix)
    present = recalls[~np.isnan(recalls)]
    return {
        "n": int(y_true.size),
        "war": war(y_true, y_pred),
        "uar": float(present.mean()) if present.size else float("nan"),
        "per_class_recall": {name: (None if np.isnan(r) else float(r)) for name, r in zip(names, recalls)},
        "support": {name: int(s) for name, s in zip(names, matrix.sum(axis=1))},
        "confusion": matrix.tolist(),
        "class_names": names,
    }


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not values.size:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def summarize_folds(fold_results: dict, class_names=None) -> dict:
    """Across-fold mean ± std of UAR/WAR and metrics pooled over all test predictions.

    fold_results: {fold: {"y_true": [...], "y_pred": [...]} or evaluate_predictions output
    plus "y_true"/"y_pred"}. Pooling needs the raw labels; folds without them only
    contribute to mean ± std.
    """
    if not fold_results:
        raise ConfigError("no fold results to summarize")
    folds = sorted(fold_results, key=lambda k: (str(type(k)), k))
    per_fold = {}
    pooled_true, pooled_pred = [], []
    for fold in folds:
        result = fold_results[fold]
        if "y_true" in result and "y_pred" in result:
            metrics = evaluate_predictions(result["y_true"], result["y_pred"], class_names=class_names)
            pooled_true.append(_as_labels(result["y_true"], "y_true"))
            pooled_pred.append(_as_labels(result["y_pred"], "y_pred"))
        else:
            metrics = result
        per_fold[fold] = {"uar": metrics["uar"], "war": metrics["war"], "n": metrics.get("n")}
    summary = {"folds": per_fold}
    for key in ("uar", "war"):
        mean, std = mean_std([per_fold[f][key] for f in folds])
        summary[f"{key}_mean"] = mean
        summary[f"{key}_std"] = std
    if pooled_true:
        summary["pooled"] = evaluate_predictions(
            np.concatenate(pooled_true), np.concatenate(pooled_pred), class_names=class_names
        )
    return summary


# ----------------------------------------------------------------------------- emotion dimensions

REGRESSION_METRICS = ("ccc", "pearson_r", "rmse")


def _paired(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Float vectors with the pairs whose target is missing (NaN: masked, never zero) dropped."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    known = np.isfinite(y_true)
    if not np.all(np.isfinite(y_pred[known])):
        raise ConfigError("predictions contain NaN or inf where the target is known")
    return y_true[known], y_pred[known]


def ccc(y_true, y_pred) -> float:
    """Lin's (1989) concordance correlation coefficient 2 s_xy / (s_x^2 + s_y^2 + (m_x - m_y)^2).

    Moments with 1/N as in Lin's paper (the AVEC / MuSe convention); pairs with a
    missing target are left out. NaN for fewer than two pairs or two constant,
    equal vectors (0/0).
    """
    y_true, y_pred = _paired(y_true, y_pred)
    if y_true.size < 2:
        return float("nan")
    mean_t, mean_p = y_true.mean(), y_pred.mean()
    covariance = np.mean((y_true - mean_t) * (y_pred - mean_p))
    denominator = y_true.var() + y_pred.var() + (mean_t - mean_p) ** 2
    return float(2.0 * covariance / denominator) if denominator > 0 else float("nan")


def pearson_r(y_true, y_pred) -> float:
    """Pearson correlation of the known pairs; NaN when either side is constant."""
    y_true, y_pred = _paired(y_true, y_pred)
    if y_true.size < 2:
        return float("nan")
    dt, dp = y_true - y_true.mean(), y_pred - y_pred.mean()
    scale = np.sqrt(np.sum(dt ** 2) * np.sum(dp ** 2))
    return float(np.sum(dt * dp) / scale) if scale > 0 else float("nan")


def rmse(y_true, y_pred) -> float:
    y_true, y_pred = _paired(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2))) if y_true.size else float("nan")


def evaluate_regression(y_true, y_pred) -> dict:
    """CCC, Pearson r, RMSE and the count of known targets of one dimension, JSON-ready."""
    known, _ = _paired(y_true, y_pred)
    return {"n": int(known.size), "ccc": ccc(y_true, y_pred), "pearson_r": pearson_r(y_true, y_pred),
            "rmse": rmse(y_true, y_pred)}


def summarize_dimensions(fold_values: dict) -> dict:
    """Per dimension: metrics per fold, across-fold mean ± std and metrics pooled over all test clips.

    fold_values: {fold: {dimension: {"y_true": [...], "y_pred": [...]}}} (NaN targets masked).
    Returns {dimension: {"folds": {fold: {...}}, "ccc_mean", "ccc_std", ..., "pooled": {...}}}.
    """
    if not fold_values:
        raise ConfigError("no fold results to summarize")
    folds = sorted(fold_values, key=lambda k: (str(type(k)), k))
    names = []
    for fold in folds:
        names += [n for n in fold_values[fold] if n not in names]
    summary = {}
    for name in names:
        per_fold, pooled_true, pooled_pred = {}, [], []
        for fold in folds:
            if name not in fold_values[fold]:
                continue
            values = fold_values[fold][name]
            per_fold[fold] = evaluate_regression(values["y_true"], values["y_pred"])
            pooled_true.append(np.asarray(values["y_true"], np.float64).reshape(-1))
            pooled_pred.append(np.asarray(values["y_pred"], np.float64).reshape(-1))
        entry = {"folds": per_fold}
        for key in REGRESSION_METRICS:
            entry[f"{key}_mean"], entry[f"{key}_std"] = mean_std([per_fold[f][key] for f in per_fold])
        entry["pooled"] = evaluate_regression(np.concatenate(pooled_true), np.concatenate(pooled_pred))
        summary[name] = entry
    return summary
