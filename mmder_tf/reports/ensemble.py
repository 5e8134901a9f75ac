"""Posterior-level ensembles of runs: several fusion strategies' class posteriors, averaged or weighted.

MER 2023's hierarchical fusion combined several fusion structures at the
posterior-probability level; here the members are finished runs (e.g. CFAS, FSLF,
OFOS) evaluated on the same subject-independent folds. Per fold the ensemble's
posterior is sum_m w_m softmax(logits_m) with w on the simplex:

- "mean": w_m = 1/M.
- "validation": w chosen on the fold's VALIDATION subjects (held out of the
  members' training, never the test fold). A grid over the simplex proposes the
  weights with the best validation accuracy (ties to the larger validation UAR,
  then to the weights nearest the uniform mean) on one half of the validation clips
  (every other clip); they replace the mean only when they beat it on the OTHER half
  by more than chance: an exact one-sided sign test (McNemar) on the clips one gets
  right and the other wrong, p < `significance` (0.05). Testing on the clips the
  weights were chosen on would favour them (with three equally good members the
  mean was left in 8-10 % of null trials, not 5 %). A validation set of a few subjects (2 actors, 14 clips
  per fold on the generated data) moves the weights on one or two lucky clips,
  and such weights were measured to fall 3.6 WAR points below the best member on
  a test fold; the gate keeps the mean there and lets a large validation set
  (IEMOCAP sessions, CREMA-D) choose. The test predictions are only combined with
  the chosen weights, never looked at while choosing.

Pure numpy, so it runs on saved predictions without TensorFlow.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from mmder_tf.errors import ConfigError
from mmder_tf.reports import metrics as metrics_lib

WEIGHTINGS = ("mean", "validation")
SIGNIFICANCE = 0.05


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


def sign_test_p(gained: int, lost: int) -> float:
    """One-sided exact sign test: P(X >= gained) for X ~ Binomial(gained + lost, 1/2).

    `gained` / `lost`: clips the candidate gets right and the reference wrong, and
    the reverse (McNemar's discordant pairs); clips both get right or both wrong say
    nothing about which is better.
    """
    total = gained + lost
    return math.fsum(math.comb(total, k) for k in range(gained, total + 1)) / 2.0 ** total


def select_weights(val_posteriors, val_labels, step: float = 0.1, significance: float = SIGNIFICANCE):
    """(weights, choice): the validation candidate if it beats the mean significantly, else the mean.

    The candidate is chosen on the even-numbered validation clips and judged on the
    odd-numbered ones (disjoint, so the sign test's 5 % holds). `choice` says what
    happened: the candidate weights, the clips of each part, the judged clips they
    gain and lose against the mean, the sign test's p and which weights are used
    ("validation" or "mean"). Only validation posteriors and labels come in: the test
    fold cannot influence the choice.
    """
    val_labels = np.asarray(val_labels, np.int64)
    if val_labels.size == 0:
        raise ConfigError("no validation clips to choose ensemble weights on (run with a validation split)")
    if not 0.0 < significance <= 1.0:
        raise ConfigError(f"significance must be in (0, 1], got {significance}")
    members = len(val_posteriors)
    uniform = np.full(members, 1.0 / members)
    val_posteriors = [np.asarray(p) for p in val_posteriors]
    choose, judge = slice(0, None, 2), slice(1, None, 2)
    chosen_labels, judged_labels = val_labels[choose], val_labels[judge]
    candidate, best_key = uniform, None
    # The exact mean is a candidate too (a 0.1 grid has no 1/3): without a validation gain it is the choice.
    for weights in np.concatenate([uniform[None], simplex_grid(members, step)]):
        predicted = combine([p[choose] for p in val_posteriors], weights).argmax(axis=-1)
        key = (metrics_lib.war(chosen_labels, predicted), metrics_lib.uar(chosen_labels, predicted),
               -float(np.sum((weights - uniform) ** 2)))
        if best_key is None or key > best_key:
            candidate, best_key = weights, key
    judged = [p[judge] for p in val_posteriors]
    right_candidate = combine(judged, candidate).argmax(axis=-1) == judged_labels
    right_mean = combine(judged, uniform).argmax(axis=-1) == judged_labels
    gained = int(np.sum(right_candidate & ~right_mean))
    lost = int(np.sum(~right_candidate & right_mean))
    p_value = sign_test_p(gained, lost)
    used = "validation" if gained > lost and p_value < significance else "mean"
    choice = {"candidate": [float(w) for w in candidate], "val_clips": int(val_labels.size),
              "chosen_on": int(chosen_labels.size), "judged_on": int(judged_labels.size), "gained": gained, "lost": lost, "p_value": p_value, "significance": significance, "used": used}
    return (candidate if used == "validation" else uniform), choice


def _check_disjoint(val_subjects, test_subjects, fold):
    overlap = sorted(set(val_subjects) & set(test_subjects))
    if overlap:
        raise ConfigError(f"fold {fold}: validation subjects {overlap} are test subjects; "
                          "weights chosen on them would see the test fold")


def ensemble_fold(members: dict, fold, weighting: str = "mean", step: float = 0.1, class_names=None,
                  significance: float = SIGNIFICANCE) -> dict:
    """One fold's ensemble. members: {name: {"keys", "y_true", "logits", "test_subjects",
    and for weighting="validation" "val_keys", "val_y_true", "val_logits", "val_subjects"}}.

    Returns {"weights": {name: w}, "keys", "y_true", "posteriors", "metrics", "members": {name: metrics},
    "choice" (select_weights' record; None for the mean)}.
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
        weights, choice = select_weights([softmax(members[n]["val_logits"]) for n in names], first["val_y_true"],
                                         step, significance)
        choice["candidate"] = dict(zip(names, choice["candidate"]))
    else:
        weights, choice = np.full(len(names), 1.0 / len(names)), None
    combined = combine(posteriors, weights)
    y_true = np.asarray(first["y_true"], np.int64)
    return {
        "weights": {n: float(w) for n, w in zip(names, weights)}, "choice": choice,
        "keys": keys, "y_true": y_true, "posteriors": combined,
        "metrics": metrics_lib.evaluate_predictions(y_true, combined, class_names=class_names),
        "members": {n: metrics_lib.evaluate_predictions(y_true, p, class_names=class_names)
                    for n, p in zip(names, posteriors)},
    }


# ----------------------------------------------------------------------------- run folders

def _load_npz(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_member(run_dir, need_validation: bool) -> dict:
    """{"name", "strategy", "class_names", "folds": {fold: member dict for ensemble_fold}} of one finished run."""
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no run.json)")
    run = json.loads(run_file.read_text())
    folds = {}
    for fold_dir in sorted(run_dir.glob("fold_*")):
        if not (fold_dir / "results.json").is_file() or not fold_dir.name[5:].isdigit():
            continue
        result = json.loads((fold_dir / "results.json").read_text())
        test = _load_npz(fold_dir / "predictions.npz")
        member = {"keys": [str(k) for k in test["keys"]], "y_true": test["y_true"], "logits": test["logits"],
                  "test_subjects": result["test_subjects"], "val_subjects": result.get("val_subjects", []),
                  "dimensions": {k[5:]: test[k] for k in test if k.startswith("pred_")},
                  "dimension_truth": {k[5:]: test[k] for k in test if k.startswith("true_")}}
        val_path = fold_dir / "val_predictions.npz"
        if need_validation:
            if not val_path.is_file():
                raise ConfigError(f"{fold_dir}: no val_predictions.npz (a run without a validation split, or "
                                  "trained before they were saved): use --ensemble-weighting mean")
            val = _load_npz(val_path)
            member.update(val_keys=[str(k) for k in val["keys"]], val_y_true=val["y_true"], val_logits=val["logits"])
        folds[int(fold_dir.name[5:])] = member
    if not folds:
        raise ConfigError(f"{run_dir}: no finished folds")
    strategy = run.get("run", {}).get("strategy") or run.get("fusion", {}).get("strategy", "?")
    return {"name": run_dir.name, "path": str(run_dir), "strategy": strategy,
            "class_names": list(run["class_names"]), "folds": folds}


def ensemble_runs(run_dirs, out_dir=None, weighting: str = "mean", step: float = 0.1,
                  significance: float = SIGNIFICANCE) -> dict:
    """Combine finished runs fold by fold; write results.json / results.md (and per-fold predictions) to out_dir.

    Every fold finished by all runs is combined; each member's metrics are reported
    beside the ensemble's on the same clips.
    """
    from pathlib import Path

    from mmder_tf.reports.results import atomic_save_npz, atomic_write_json, atomic_write_text

    members = [load_member(d, need_validation=weighting == "validation") for d in run_dirs]
    names = [m["name"] for m in members]
    if len(set(names)) != len(names):
        names = [f"{m['name']}#{i + 1}" for i, m in enumerate(members)]
    class_names = members[0]["class_names"]
    for member in members[1:]:
        if member["class_names"] != class_names:
            raise ConfigError(f"{member['path']} has classes {member['class_names']}, {members[0]['path']} "
                              f"{class_names}: not the same task")
    folds = sorted(set.intersection(*(set(m["folds"]) for m in members)))
    if not folds:
        raise ConfigError("the runs have no finished fold in common")
    per_fold, pooled_true, pooled_post = {}, [], []
    member_pooled = {n: [] for n in names}
    dimension_values = {}
    for fold in folds:
        result = ensemble_fold({n: m["folds"][fold] for n, m in zip(names, members)}, fold, weighting, step,
                               class_names=class_names, significance=significance)
        # Dimensions: the plain mean of the members that predict them.
        dims = {}
        for d in members[0]["folds"][fold]["dimensions"]:
            if all(d in m["folds"][fold]["dimensions"] for m in members):
                truth = members[0]["folds"][fold]["dimension_truth"][d]
                dims[d] = {"y_true": truth,
                           "y_pred": np.mean([m["folds"][fold]["dimensions"][d] for m in members], axis=0)}
        if dims:
            dimension_values[fold] = dims
        per_fold[fold] = {
            "weights": result["weights"], **({"weight_choice": result["choice"]} if result["choice"] else {}),
            "n": result["metrics"]["n"], "war": result["metrics"]["war"],
            "uar": result["metrics"]["uar"], "confusion": result["metrics"]["confusion"],
            "members": {n: {"war": r["war"], "uar": r["uar"]} for n, r in result["members"].items()},
            "best_member_war": max(r["war"] for r in result["members"].values()),
        }
        pooled_true.append(result["y_true"])
        pooled_post.append(result["posteriors"])
        for n, m in zip(names, members):
            member_pooled[n].append(m["folds"][fold]["logits"])
        if out_dir is not None:
            atomic_save_npz(Path(out_dir) / f"fold_{fold}" / "predictions.npz", keys=np.array(result["keys"]),
                            y_true=result["y_true"], posteriors=result["posteriors"].astype(np.float32),
                            **{f"pred_{d}": v["y_pred"].astype(np.float32) for d, v in dims.items()},
                            **{f"true_{d}": v["y_true"] for d, v in dims.items()})
    y_true = np.concatenate(pooled_true)
    summary = {
        "ensemble": {"weighting": weighting, "grid_step": step if weighting == "validation" else None,
                     "significance": significance if weighting == "validation" else None,
                     "members": [{"name": n, "path": m["path"], "strategy": m["strategy"]}
                                 for n, m in zip(names, members)],
                     "weights_chosen_on": "validation subjects of each fold (never its test subjects); the mean "
                     "unless the validation weights beat it by a one-sided sign test"
                     if weighting == "validation" else "uniform"},
        "class_names": class_names, "folds": {str(f): v for f, v in per_fold.items()},
        "pooled": metrics_lib.evaluate_predictions(y_true, np.concatenate(pooled_post), class_names=class_names),
        "members": {},
    }
    for key in ("war", "uar"):
        summary[f"{key}_mean"], summary[f"{key}_std"] = metrics_lib.mean_std([per_fold[f][key] for f in folds])
    for n in names:
        entry = {"pooled_war": metrics_lib.war(y_true, np.concatenate(member_pooled[n]))}
        for key in ("war", "uar"):
            entry[f"{key}_mean"], entry[f"{key}_std"] = metrics_lib.mean_std(
                [per_fold[f]["members"][n][key] for f in folds])
        summary["members"][n] = entry
    summary["worst_fold_gap_to_best_member"] = min(per_fold[f]["war"] - per_fold[f]["best_member_war"] for f in folds)
    if dimension_values:
        summary["dimensions"] = metrics_lib.summarize_dimensions(dimension_values)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "results.json", summary)
        atomic_write_text(Path(out_dir) / "results.md", format_ensemble(summary))
    return summary


def format_ensemble(summary: dict) -> str:
    """results.md of an ensemble: per fold, the ensemble's WAR / UAR beside each member's, and the weights."""
    names = [m["name"] for m in summary["ensemble"]["members"]]
    strategies = {m["name"]: m["strategy"] for m in summary["ensemble"]["members"]}

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

    lines = [f"# Ensemble of {', '.join(f'{n} ({strategies[n]})' for n in names)}", "",
             f"Posterior weighting: {summary['ensemble']['weighting']} "
             f"({summary['ensemble']['weights_chosen_on']}).", "",
             "| fold | ensemble WAR / UAR % | " + " | ".join(f"{n} WAR / UAR %" for n in names) + " | weights |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for fold, entry in sorted(summary["folds"].items(), key=lambda kv: int(kv[0])):
        cells = [f"{pct(entry['members'][n]['war'])} / {pct(entry['members'][n]['uar'])}" for n in names]
        weights = ", ".join(f"{entry['weights'][n]:.2f}" for n in names)
        choice = entry.get("weight_choice")
        if choice:
            weights += (f" ({choice['used']}: +{choice['gained']} / -{choice['lost']} of {choice['val_clips']} "
                        f"validation clips vs the mean, p = {choice['p_value']:.3g})")
        lines.append(f"| {fold} | {pct(entry['war'])} / {pct(entry['uar'])} | " + " | ".join(cells) + f" | {weights} |")
    member_means = [f"{pct(summary['members'][n]['war_mean'])} / {pct(summary['members'][n]['uar_mean'])}"
                    for n in names]
    lines.append(f"| mean | {pct(summary['war_mean'])} / {pct(summary['uar_mean'])} | " + " | ".join(member_means)
                 + " | |")
    lines += ["", f"Worst fold, ensemble WAR minus best member's: {100 * summary['worst_fold_gap_to_best_member']:+.2f} "
              "points.", ""]
    if summary.get("dimensions"):
        from mmder_tf.reports.results import format_dimensions_table

        lines += ["## Emotion dimensions (mean of the members' predictions)", "",
                  format_dimensions_table(summary), ""]
    return "\n".join(lines)
