"""Run reports: results.json, results.md and PNG plots, every file written atomically.

A run killed while writing must never leave a half-written results file behind,
because a fold's results.json is what marks it finished.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

# One writer for every file (fileio): unique temporary names, fsync, rename, umask permissions.
from mmder_tf.fileio import atomic_write_bytes, atomic_write_text


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None  # strict JSON has no NaN
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_save_npz(path, **arrays) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def _atomic_savefig(figure, path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix, class_names, path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per cell) annotated with counts."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    size = max(3.5, 0.6 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axes.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                      color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046, label="recall")
    axes.set_title(title)
    try:
        return _atomic_savefig(figure, path)
    finally:
        plt.close(figure)


def read_history_csv(path) -> dict:
    """CSVLogger output -> {column: [floats]} (empty if the file is missing)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    history: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            try:
                history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                history.setdefault(key, []).append(float("nan"))
    return history


def plot_history(history: dict, path, title: str = "") -> Path | None:
    """Loss and accuracy curves (train and validation) against epoch."""
    if not history:
        return None
    plt = _pyplot()
    epochs = history.get("epoch") or list(range(len(next(iter(history.values())))))
    epochs = [int(e) + 1 for e in epochs]
    panels = [("loss", [k for k in history if k.endswith("loss")]),
              ("accuracy", [k for k in history if k.endswith("accuracy")])]
    panels = [(name, keys) for name, keys in panels if keys]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for axis, (name, keys) in zip(axes[0], panels):
        for key in sorted(keys):
            axis.plot(epochs[: len(history[key])], history[key], marker="o", markersize=3, label=key)
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    try:
        return _atomic_savefig(figure, path)
    finally:
        plt.close(figure)


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def format_table(results: dict) -> str:
    """The per-fold table printed at the end of a run and stored in results.md."""
    lines = ["| fold | test clips | UAR % | WAR % | epoch |", "|---|---|---|---|---|"]
    for fold, entry in sorted(results.get("folds", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {fold} | {entry.get('n', '-')} | {_pct(entry.get('uar'))} | {_pct(entry.get('war'))} "
                     f"| {entry.get('selected_epoch', '-')} |")
    if results.get("folds"):
        lines.append(f"| mean ± std | | {_pct(results.get('uar_mean'))} ± {_pct(results.get('uar_std'))} "
                     f"| {_pct(results.get('war_mean'))} ± {_pct(results.get('war_std'))} | |")
    pooled = results.get("pooled")
    if pooled:
        lines.append(f"| pooled | {pooled.get('n')} | {_pct(pooled.get('uar'))} | {_pct(pooled.get('war'))} | |")
    return "\n".join(lines)


KIND_TITLES = {"audio_video": "audio + video", "video": "video only", "audio": "audio only"}


def format_modalities_table(results: dict) -> str:
    """One model, three inputs (modality dropout): WAR / UAR % per fold, mean ± std and pooled per input kind."""
    kinds = results.get("modalities") or {}
    if not kinds:
        return ""
    folds = sorted({f for entry in kinds.values() for f in entry.get("folds", {})}, key=int)
    lines = ["| input | " + " | ".join(f"fold {f} WAR / UAR" for f in folds) +
             " | WAR mean ± std | UAR mean ± std | pooled WAR / UAR |", "|---|" + "---|" * (len(folds) + 3)]
    for kind, entry in kinds.items():
        cells = [f"{_pct(entry['folds'][f]['war'])} / {_pct(entry['folds'][f]['uar'])}" if f in entry["folds"]
                 else "-" for f in folds]
        pooled = entry.get("pooled") or {}
        lines.append(f"| {KIND_TITLES.get(kind, kind)} | " + " | ".join(cells) +
                     f" | {_pct(entry.get('war_mean'))} ± {_pct(entry.get('war_std'))} "
                     f"| {_pct(entry.get('uar_mean'))} ± {_pct(entry.get('uar_std'))} "
                     f"| {_pct(pooled.get('war'))} / {_pct(pooled.get('uar'))} |")
    return "\n".join(lines)


def format_dimensions_table(results: dict) -> str:
    """Per emotion dimension: CCC per fold, mean ± std, and CCC / Pearson r / RMSE pooled over the folds."""
    dimensions = results.get("dimensions") or {}
    if not dimensions:
        return ""
    folds = sorted({f for d in dimensions.values() for f in d.get("folds", {})}, key=lambda f: int(f))
    lines = ["| dimension | " + " | ".join(f"CCC fold {f}" for f in folds) +
             " | CCC mean ± std | pooled CCC | pooled r | pooled RMSE | clips |",
             "|---|" + "---|" * (len(folds) + 5)]

    def number(value):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    for name, entry in dimensions.items():
        pooled = entry.get("pooled", {})
        cells = [number(entry["folds"].get(f, {}).get("ccc")) for f in folds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {number(entry.get('ccc_mean'))} ± "
                     f"{number(entry.get('ccc_std'))} | {number(pooled.get('ccc'))} | {number(pooled.get('pearson_r'))} "
                     f"| {number(pooled.get('rmse'))} | {pooled.get('n', '-')} |")
    return "\n".join(lines)


def plot_dimension_scatter(values: dict, path, title: str = "") -> Path:
    """Predicted against true values of one dimension, one colour per fold, with the identity line.

    values: {fold: (y_true, y_pred)}; clips whose target is missing are left out.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    low, high = np.inf, -np.inf
    for fold, (y_true, y_pred) in sorted(values.items(), key=lambda kv: int(kv[0])):
        y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        known = np.isfinite(y_true)
        axes.scatter(y_true[known], y_pred[known], s=10, alpha=0.7, label=f"fold {fold}")
        if known.any():
            low = min(low, y_true[known].min(), y_pred[known].min())
            high = max(high, y_true[known].max(), y_pred[known].max())
    if np.isfinite(low):
        axes.plot([low, high], [low, high], color="black", linewidth=1, linestyle="--", label="predicted = true")
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    axes.set_title(title)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    try:
        return _atomic_savefig(figure, path)
    finally:
        plt.close(figure)


def write_markdown(results: dict, path) -> Path:
    run = results.get("run", {})
    parts = ["# MultiMAE-DER results", ""]
    if run:
        parts += [", ".join(f"{k}={v}" for k, v in sorted(run.items()) if not isinstance(v, (dict, list))), ""]
    if results.get("epoch_policy"):
        parts += [f"Epoch policy: {results['epoch_policy']}", ""]
    parts += [format_table(results), ""]
    if results.get("modalities"):
        parts += ["## One model, three inputs (trained with modality dropout)", "",
                  format_modalities_table(results), ""]
    if results.get("dimensions"):
        parts += ["## Emotion dimensions", "", format_dimensions_table(results), ""]
    if results.get("uncertainty"):
        parts += ["## Multi-task weights (learned per fold)", "", "| fold | task | log variance | sigma | weight |",
                  "|---|---|---|---|---|"]
        for fold, tasks in sorted(results["uncertainty"].items(), key=lambda kv: int(kv[0])):
            for task, entry in tasks.items():
                cells = [entry.get(k) for k in ("log_variance", "sigma", "weight")]
                parts.append(f"| {fold} | {task} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
        parts.append("")
    pooled = results.get("pooled")
    if pooled:
        parts += ["## Per-class recall (pooled over folds)", "", "| class | support | recall % |", "|---|---|---|"]
        for name in pooled["class_names"]:
            parts.append(f"| {name} | {pooled['support'][name]} | {_pct(pooled['per_class_recall'][name])} |")
        parts.append("")
    skipped = results.get("skipped_clips") or []
    if skipped:
        parts += [f"## Skipped clips ({len(skipped)})", ""]
        parts += [f"- {item.get('path')}: {item.get('reason')}" for item in skipped]
        parts.append("")
    return atomic_write_text(path, "\n".join(parts))


def write_run_report(out_dir, results: dict, plots: bool = True) -> dict:
    """results.json + results.md + confusion plots (per fold and pooled) + curves."""
    out_dir = Path(out_dir)
    written = {"json": atomic_write_json(out_dir / "results.json", results),
               "md": write_markdown(results, out_dir / "results.md")}
    if plots:
        plot_dir = out_dir / "plots"
        names = results.get("class_names")
        for fold, entry in results.get("folds", {}).items():
            if entry.get("confusion") is not None and names:
                written[f"confusion_fold{fold}"] = plot_confusion(
                    entry["confusion"], names, plot_dir / f"confusion_fold{fold}.png",
                    f"fold {fold}: UAR {_pct(entry.get('uar'))} WAR {_pct(entry.get('war'))}")
            history = read_history_csv(out_dir / f"fold_{fold}" / "history.csv")
            curve = plot_history(history, plot_dir / f"curves_fold{fold}.png", f"fold {fold}")
            if curve:
                written[f"curves_fold{fold}"] = curve
        for name in results.get("dimensions") or {}:
            values = {}
            for fold in results.get("folds", {}):
                path = out_dir / f"fold_{fold}" / "predictions.npz"
                if path.exists():
                    with np.load(path) as data:
                        if f"true_{name}" in data.files:
                            values[fold] = (data[f"true_{name}"], data[f"pred_{name}"])
            if values:
                pooled_ccc = results["dimensions"][name].get("pooled", {}).get("ccc")
                written[f"scatter_{name}"] = plot_dimension_scatter(
                    values, plot_dir / f"scatter_{name}.png",
                    f"{name}: pooled CCC {'-' if pooled_ccc is None else f'{pooled_ccc:.3f}'}")
        for kind, entry in (results.get("modalities") or {}).items():
            kind_pooled = entry.get("pooled")
            if kind != "audio_video" and kind_pooled and names:
                written[f"confusion_pooled_{kind}"] = plot_confusion(
                    kind_pooled["confusion"], names, plot_dir / f"confusion_pooled_{kind}.png",
                    f"{KIND_TITLES[kind]}, pooled: UAR {_pct(kind_pooled['uar'])} WAR {_pct(kind_pooled['war'])}")
        pooled = results.get("pooled")
        if pooled and names:
            written["confusion_pooled"] = plot_confusion(
                pooled["confusion"], names, plot_dir / "confusion_pooled.png",
                f"pooled: UAR {_pct(pooled['uar'])} WAR {_pct(pooled['war'])}")
    return written
