"""Re-evaluate a finished (or partly finished) run: `python -m mmder_tf.evaluate --run OUT` (mmder-evaluate).

Rebuilds each fold's classifier from the run's saved RunConfig, loads the fold's
kept checkpoint strictly (best on validation, or last; for a cached linear probe
the head, on the same encoder), runs the full model on the fold's test clips from
the prepared cache and rewrites fold_N/results.json, predictions and the run reports.

`--ensemble RUN_A RUN_B ...` instead combines finished runs (e.g. CFAS, FSLF and
OFOS on the same folds) at the posterior level (reports.ensemble): the mean of
their class posteriors, or with `--ensemble-weighting validation` weights chosen
per fold on its validation subjects (never its test subjects), and reports the
ensemble beside each member in <out>/results.json and results.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.errors import CheckpointError, ConfigError, DatasetError, MMDERError
from mmder_tf.fileio import WriterLock, read_json


def evaluate_run(run_dir, cache_dir=None, batch_size=None, verbose: bool = True) -> dict:
    from mmder_tf.training.config import read_run_file

    read_run_file(run_dir)  # a folder that is not a run is refused before anything is locked or written
    # It rewrites the folds' results: not while mmder-finetune (or another evaluation) writes the run.
    with WriterLock(run_dir, "mmder-evaluate", "wait for it to finish, then evaluate"):
        return _evaluate_locked(run_dir, cache_dir, batch_size, verbose)


def _evaluate_locked(run_dir, cache_dir, batch_size, verbose: bool) -> dict:
    import numpy as np

    from mmder_tf.data.datasets import Manifest
    from mmder_tf.data.prepare import load_index
    from mmder_tf.reports import metrics as metrics_lib
    from mmder_tf.reports.results import atomic_save_npz, atomic_write_json, format_table, write_run_report
    from mmder_tf.training import engine
    from mmder_tf.training.config import read_run_file
    from mmder_tf.training.model import finished_folds, load_fold
    from mmder_tf.training.multitask import dimension_arrays, split_outputs
    from mmder_tf.training.protocol import clip_dataset, in_order, summarize_run, evaluate_without_modalities

    run_dir = Path(run_dir)
    config, saved = read_run_file(run_dir)
    if batch_size:
        config = config.replace(batch_size=int(batch_size))
    cache_dir = Path(cache_dir or saved["cache_dir"])
    index = load_index(cache_dir)
    manifest = Manifest.from_json(cache_dir / "manifest.json")
    kept = {e["key"] for e in index["records"] if e["status"] == "ok"}
    class_names = saved["class_names"]
    engine.set_precision(engine.resolve_precision(saved["run"]["precision"]))
    jit = bool(saved["run"]["jit_compile"])
    fold_numbers = sorted(int(p.name[5:]) for p in run_dir.glob("fold_*") if p.is_dir() and p.name[5:].isdigit())
    if not fold_numbers:
        raise DatasetError(f"{run_dir}: no fold folders to evaluate")
    finished = set(finished_folds(run_dir))
    fold_results = {}
    for number in fold_numbers:
        if number not in finished:
            if verbose:
                print(f"fold {number}: not finished, skipped")
            continue
        trained = load_fold(run_dir, number, config=config)
        previous = trained.result
        test_subjects = set(previous["test_subjects"])
        test = [r for r in manifest.records if r.subject in test_subjects and r.key in kept]
        predictions = engine.predict(
            trained.model, clip_dataset(cache_dir, test, config.fusion, config.batch_size, with_keys=True), jit)
        dimensions = config.dimensions
        y_true, logits, predicted = in_order(test, predictions.keys, predictions.labels,
                                             *split_outputs(predictions.outputs, dimensions))
        result = dict(previous)
        result.update(metrics_lib.evaluate_predictions(y_true, logits, class_names=class_names))
        result["evaluated_by"] = "mmder_tf.evaluate (full model on the prepared test clips)"
        extra = dimension_arrays(test, predicted, dimensions) if dimensions else {}
        if dimensions:
            result["dimensions"] = {d: metrics_lib.evaluate_regression(extra[f"true_{d}"], extra[f"pred_{d}"])
                                    for d in dimensions}
            result["uncertainty"] = trained.task_weights
        fold_dir = run_dir / f"fold_{number}"
        if config.handles_missing:  # the same model with video alone and audio alone, as training tested it
            def predict_logits(batches):
                found = engine.predict(trained.model, batches, jit)
                return found.keys, found.labels, split_outputs(found.outputs, dimensions)[0]

            result["modalities"] = evaluate_without_modalities(
                predict_logits, lambda kind: clip_dataset(cache_dir, test, config.fusion, config.batch_size,
                                                          with_keys=True, modalities=kind),
                test, class_names, fold_dir, result)
        atomic_save_npz(fold_dir / "predictions.npz", keys=np.array([r.key for r in test]), y_true=y_true,
                        logits=logits, **extra)
        atomic_write_json(fold_dir / "results.json", result)
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
    results = summarize_run(run_dir, fold_results, class_names, saved["run"], skipped)
    write_run_report(run_dir, results)
    if verbose:
        print("\n" + format_table(results))
    return results


def evaluate_ensemble(run_dirs, out=None, weighting: str = "mean", verbose: bool = True,
                      significance: float | None = None) -> dict:
    """Posterior-level ensemble of finished runs (reports.ensemble.ensemble_runs), written to `out`."""
    from mmder_tf.reports.ensemble import ensemble_runs, format_ensemble

    if len(run_dirs) < 2:
        raise ConfigError("--ensemble needs at least two runs")
    if out is None:
        out = Path("runs") / ("ensemble_" + "_".join(Path(r).name for r in run_dirs))
    from mmder_tf.reports.ensemble import SIGNIFICANCE

    results = ensemble_runs(run_dirs, out, weighting=weighting,
                            significance=SIGNIFICANCE if significance is None else significance)
    if verbose:
        print(format_ensemble(results))
        print(f"-> {Path(out) / 'results.md'}")
    return results


@one_line_file_errors("mmder-evaluate")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mmder-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="run folder written by mmder-finetune (--out)")
    parser.add_argument("--cache", help="prepared cache (default: the one the run used)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up logs")
    parser.add_argument("--ensemble", nargs="+", metavar="RUN",
                        help="combine these finished runs (same folds, e.g. different strategies) at the posterior level")
    parser.add_argument("--ensemble-weighting", choices=("mean", "validation"), default="mean",
                        help="mean of the posteriors, or weights chosen per fold on its validation subjects "
                        "(kept only where they beat the mean on validation by a sign test)")
    parser.add_argument("--ensemble-significance", type=float, default=None, metavar="P",
                        help="validation weighting: level of the one-sided sign test against the mean (default "
                        "0.05; 1 always takes the validation candidate)")
    parser.add_argument("--out", help="--ensemble: folder for results.json / results.md (default runs/ensemble_<runs>)")
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)
    try:
        if args.ensemble:
            if args.run:
                raise ConfigError("give --run (re-evaluate one run) or --ensemble RUN ... (combine runs), not both")
            evaluate_ensemble(args.ensemble, args.out, args.ensemble_weighting,
                              significance=args.ensemble_significance)
            return 0
        if not args.run:
            raise ConfigError("give --run RUN or --ensemble RUN_A RUN_B ...")
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
