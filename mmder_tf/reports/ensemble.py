"""Posterior-level ensembles of runs: several fusion strategies' class posteriors, averaged or weighted.

MER 2023's hierarchical fusion combined several fusion structures at the
posterior-probability level; here the members are finished runs (e.g. CFAS, FSLF,
OFOS) evaluated on the same subject-independent folds. Per fold the ensemble's
posterior is sum_m w_m softmax(logits_m) with w on the simplex:

- "mean": w_m = 1/M.
- "validation": w chosen on the fold's VALIDATION subjects (held out of the
  members' training, never the test fold) by a grid over the simplex, best
  validation accuracy, ties to the larger validation UAR, then to the weights
  nearest the uniform mean. The test predictions are only combined with the
  chosen weights, never looked at while choosing.

Pure numpy, so it runs on saved predictions without TensorFlow.
"""
from __future__ import annotations

import itertools

import numpy as np

from mmder_tf.errors import ConfigError
from mmder_tf.reports import metrics as metrics_lib

WEIGHTINGS = ("mean", "validation")


def softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def combine(posteriors, weights=None) -> np.ndarray:
    """Weighted mean of the members' posteriors [M][N, C] -> [N, C]."""
    stack = np.stack([np.asarray(p, np.float64) for p in posteriors])
    if weights is None:
        weights = np.full(len(stack), 1.0 / len(stack))
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(stack),) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ConfigError(f"ensemble weights must be {len(stack)} non-negative numbers summing to 1, got {weights}")
    return np.tensordot(weights, stack, axes=1)


def simplex_grid(members: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors with entries in multiples of `step` summing to 1 ([K, members])."""
    parts = int(round(1.0 / step))
    if parts < 1 or not np.isclose(parts * step, 1.0):
        raise ConfigError(f"grid step must divide 1, got {step}")
    grid = [np.array(c, np.float64) / parts
            for c in itertools.product(range(parts + 1), repeat=members) if sum(c) == parts]
    return np.stack(grid)


def choose_weights(val_posteriors, val_labels, step: float = 0.1) -> np.ndarray:
    """Weights maximising validation accuracy (then UAR, then closeness to the uniform mean).

    Only validation posteriors and labels come in: the test fold cannot influence the choice.
    """
    val_labels = np.asarray(val_labels, np.int64)
    if val_labels.size == 0:
        raise ConfigError("no validation clips to choose ensemble weights on (run with a validation split)")
    members = len(val_posteriors)
    uniform = np.full(members, 1.0 / members)
    best, best_key = uniform, None
    for weights in simplex_grid(members, step):
        predicted = combine(val_posteriors, weights).argmax(axis=-1)
        key = (metrics_lib.war(val_labels, predicted), metrics_lib.uar(val_labels, predicted),
               -float(np.sum((weights - uniform) ** 2)))
        if best_key is None or key > best_key:
            best, best_key = weights, key
    return best


def _check_disjoint(val_subjects, test_subjects, fold):
    overlap = sorted(set(val_subjects) & set(test_subjects))
    if overlap:
        raise ConfigError(f"fold {fold}: validation subjects {overlap} are test subjects; "
                          "weights chosen on them would see the test fold")


def ensemble_fold(members: dict, fold, weighting: str = "mean", step: float = 0.1, class_names=None) -> dict:
    """One fold's ensemble. members: {name: {"keys", "y_true", "logits", "test_subjects",
    and for weighting="validation" "val_keys", "val_y_true", "val_logits", "val_subjects"}}.

    Returns {"weights": {name: w}, "keys", "y_true", "posteriors", "metrics", "members": {name: metrics}}.
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    names = list(members)
    if len(names) < 2:
        raise ConfigError("an ensemble needs at least two runs")
    first = members[names[0]]
    keys = list(first["keys"])
    for name in names[1:]:
        other = members[name]
        if sorted(other["test_subjects"]) != sorted(first["test_subjects"]):
            raise ConfigError(f"fold {fold}: {name} tested subjects {sorted(other['test_subjects'])}, "
                              f"{names[0]} {sorted(first['test_subjects'])}: not the same folds")
        if list(other["keys"]) != keys or not np.array_equal(other["y_true"], first["y_true"]):
            raise ConfigError(f"fold {fold}: {name} and {names[0]} predicted different test clips "
                              "(other skipped clips or another manifest)")
    posteriors = [softmax(members[n]["logits"]) for n in names]
    if weighting == "validation":
        val_keys = list(first["val_keys"])
        for name in names:
            member = members[name]
            _check_disjoint(member["val_subjects"], member["test_subjects"], fold)
            if list(member["val_keys"]) != val_keys:
                raise ConfigError(f"fold {fold}: {name} has other validation clips than {names[0]}")
        weights = choose_weights([softmax(members[n]["val_logits"]) for n in names], first["val_y_true"], step)
    else:
        weights = np.full(len(names), 1.0 / len(names))
    combined = combine(posteriors, weights)
    y_true = np.asarray(first["y_true"], np.int64)
    return {
        "weights": {n: float(w) for n, w in zip(names, weights)},
        "keys": keys, "y_true": y_true, "posteriors": combined,
        "metrics": metrics_lib.evaluate_predictions(y_true, combined, class_names=class_names),
        "members": {n: metrics_lib.evaluate_predictions(y_true, p, class_names=class_names)
                    for n, p in zip(names, posteriors)},
    }
