"""Re-evaluate a finished (or partly finished) run: `python -m mmder_tf.evaluate --run OUT`.

Rebuilds each fold's classifier exactly as training did, loads the fold's kept
checkpoint (best on validation, or last; for a cached linear probe the head,
on the same encoder), runs the full model on the fold's test clips from the
prepared cache and rewrites fold_N/results.json, predictions and the run reports.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmder_tf.errors import CheckpointError, ConfigError, DatasetError, MMDERError
from mmder_tf.fileio import WriterLock, read_json


def _run_args(run_dir: Path, overrides: argparse.Namespace) -> tuple[argparse.Namespace, dict]:
    from mmder_tf.config import FusionConfig

    path = run_dir / "run.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no run.json)")
    saved = read_json(path, ConfigError, "run description")
    if not isinstance(saved, dict) or not all(key in saved for key in ("fusion", "class_names", "args", "run")):
        raise ConfigError(f"{path}: not a run description written by mmder-finetune (fusion, class_names, args "
                          "and run are needed)")
    args = argparse.Namespace(**saved["args"])
    args.fusion = FusionConfig.from_dict(saved["fusion"])
    args.preset = saved["run"]["preset"]
    args.preset_given = False  # the run already settled the architecture
    args.out = str(run_dir)
    if overrides.batch_size:
        args.batch_size = overrides.batch_size
    return args, saved


def evaluate_run(run_dir, cache_dir=None, batch_size=None, verbose: bool = True) -> dict:
    run_dir = Path(run_dir)
    args, saved = _run_args(run_dir, argparse.Namespace(batch_size=batch_size))
    # It rewrites the folds' results: not while mmder-finetune (or another evaluation) writes the run.
    with WriterLock(run_dir, "mmder-evaluate", "wait for it to finish, then evaluate"):
        return _evaluate_locked(run_dir, args, saved, cache_dir, verbose)


def _evaluate_locked(run_dir: Path, args, saved: dict, cache_dir, verbose: bool) -> dict:
    import numpy as np

    from mmder_tf.reports import metrics as metrics_lib
    from mmder_tf.training import engine as T
    from mmder_tf.data.datasets import Manifest
    from mmder_tf.data.prepare import load_index
    from mmder_tf.finetune import build_classifier, clip_dataset, predict_with_keys, summarize_run
    from mmder_tf.reports.results import atomic_save_npz, atomic_write_json, format_table, write_run_report

    cache_dir = Path(cache_dir or saved["cache_dir"])
    index = load_index(cache_dir)
    manifest = Manifest.from_json(cache_dir / "manifest.json")
    kept = {e["key"] for e in index["records"] if e["status"] == "ok"}
    class_names = saved["class_names"]
    policy = T.resolve_precision(saved["run"]["precision"])
    T.set_precision(policy)
    jit = bool(saved["run"]["jit_compile"])
    fold_dirs = sorted((p for p in run_dir.glob("fold_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    if not fold_dirs:
        raise DatasetError(f"{run_dir}: no fold folders to evaluate")
    fold_results = {}
    for fold_dir in fold_dirs:
        number = int(fold_dir.name.split("_")[1])
        previous_path = fold_dir / "results.json"
        if not previous_path.exists():
            if verbose:
                print(f"fold {number}: not finished, skipped")
            continue
        previous = read_json(previous_path, CheckpointError, "fold result")
        checkpoint = fold_dir / f"{previous.get('checkpoint', 'last')}.weights.h5"
        if not checkpoint.exists():
            raise CheckpointError(f"{checkpoint}: missing checkpoint of fold {number}")
        model = build_classifier(args, len(class_names), class_names)
        if previous.get("weights_kind") == "head":
            model.head_model().load_weights(str(checkpoint))
        else:
            model.load_weights(str(checkpoint))
        test_subjects = set(previous["test_subjects"])
        test = [r for r in manifest.records if r.subject in test_subjects and r.key in kept]
        keys, y_true, logits = predict_with_keys(
            model, clip_dataset(cache_dir, test, args.fusion, args.batch_size, with_keys=True), jit)
        rank = {k: i for i, k in enumerate(keys)}
        order = [rank[r.key] for r in test]
        y_true, logits = y_true[order], logits[order]
        result = dict(previous)
        result.update(metrics_lib.evaluate_predictions(y_true, logits, class_names=class_names))
        result["evaluated_by"] = "mmder_tf.evaluate (full model on the prepared test clips)"
        atomic_save_npz(fold_dir / "predictions.npz", keys=np.array([r.key for r in test]), y_true=y_true,
                        logits=logits)
        atomic_write_json(previous_path, result)
        fold_results[number] = result
        if verbose:
            print(f"fold {number}: UAR {100 * result['uar']:.2f}  WAR {100 * result['war']:.2f}  "
                  f"(was UAR {100 * previous['uar']:.2f}  WAR {100 * previous['war']:.2f})")
    if not fold_results:
        raise DatasetError(f"{run_dir}: no finished folds")
    skipped = []
    old = run_dir / "results.json"
    if old.exists():
        skipped = read_json(old, CheckpointError, "run result").get("skipped_clips", [])
    ctx = {"work": run_dir, "class_names": class_names, "run_info": saved["run"], "skipped": skipped}
    results = summarize_run(args, ctx, fold_results)
    write_run_report(run_dir, results)
    if verbose:
        print("\n" + format_table(results))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mmder-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by mmder-finetune (--out)")
    parser.add_argument("--cache", help="prepared cache (default: the one the run used)")
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args(argv)
    try:
        evaluate_run(args.run, args.cache, args.batch_size)
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"mmder-evaluate: error: {error}", file=sys.stderr)
        return 2
    except MMDERError as error:
        print(f"mmder-evaluate: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
