"""Emotion dimensions and posterior-level ensembles on the generated dataset with valence / arousal cues.

    python benchmarks/dimensions.py [--work runs/dimensions] [--folds all] [--epochs 12]
        [--strategies fslf,cfas,ofos] [--image-size 64]

Generates the demo dataset with dimensions=True (24 actors x 7 classes, valence and
arousal carried by both modalities), then, with the embedded demo's settings (tiny
encoder from scratch, 64 px, 12 epochs, lr 2e-3, subject-independent folds):

1. the first strategy, category only;
2. every strategy trained jointly on category,valence,arousal (uncertainty-weighted loss);
3. the ensemble of the joint runs: posterior mean and validation-chosen weights.

One line per result. Bars: joint CCC >= 0.8 on each dimension (pooled over the folds),
joint WAR within 2 points of category-only (mean over folds), learned weights finite and
reported per fold, and on every fold each ensemble's WAR >= the best member's - 1 point.
Runs are resumable: run the same command again and finished folds are kept. On a
machine with cores to spare, `--only fslf_category` (or `cfas_joint`, ...) trains one
run alone, so several can go in parallel before the full command collects them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import add_smoke, smoke_sizes  # noqa: E402
from mmder_tf import finetune  # noqa: E402
from mmder_tf.reports import ensemble  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/dimensions")
    parser.add_argument("--strategies", default="fslf,cfas,ofos")
    parser.add_argument("--folds", default="all")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="train this one run (<strategy>_category or <strategy>_joint) and stop")
    add_smoke(parser)
    args = parser.parse_args(argv)
    smoke_sizes(args, strategies="fslf,cfas", folds="1", epochs=1, image_size=32)
    if args.smoke:
        args.work = tempfile.mkdtemp(prefix="mmder_dimensions_")
    work = Path(args.work)
    data = work / "data"
    common = dict(synthetic_dimensions=True, synthetic_dir=data, preset="tiny", image_size=args.image_size,
                  epochs=args.epochs, lr=args.lr, mode="finetune", batch_size=8, folds=args.folds, seed=args.seed,
                  cache=work / "cache", verbose=0, workers=2)
    if args.smoke:  # 4 generated actors, two folds
        common.update(synthetic_actors=4, num_folds=2, batch_size=4)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    started = time.time()
    if args.only:
        strategy, _, kind = args.only.partition("_")
        if kind not in ("category", "joint"):
            parser.error("--only takes <strategy>_category or <strategy>_joint")
        targets = "category,valence,arousal" if kind == "joint" else "category"
        r = finetune.run(strategy=strategy, out=work / args.only, targets=targets, **common)
        print(f"{args.only}: WAR {100 * r['war_mean']:.2f}  ({time.time() - started:.0f} s)")
        return 0
    category_only = finetune.run(strategy=strategies[0], out=work / f"{strategies[0]}_category", **common)
    print(f"{strategies[0]} category only: WAR {100 * category_only['war_mean']:.2f}  "
          f"UAR {100 * category_only['uar_mean']:.2f}  ({time.time() - started:.0f} s)", flush=True)
    joint = {}
    for strategy in strategies:
        t0 = time.time()
        joint[strategy] = finetune.run(strategy=strategy, out=work / f"{strategy}_joint",
                                       targets="category,valence,arousal", **common)
        r = joint[strategy]
        dims = "  ".join(f"CCC {d} {r['dimensions'][d]['pooled']['ccc']:.3f} (folds {r['dimensions'][d]['ccc_mean']:.3f}"
                         f" ± {r['dimensions'][d]['ccc_std']:.3f})" for d in ("valence", "arousal"))
        print(f"{strategy} joint: WAR {100 * r['war_mean']:.2f}  UAR {100 * r['uar_mean']:.2f}  {dims}  "
              f"({time.time() - t0:.0f} s)", flush=True)
        for fold, tasks in sorted(r["uncertainty"].items(), key=lambda kv: int(kv[0])):
            print(f"  fold {fold} learned sigma: " + ", ".join(f"{t} {v['sigma']:.3f}" for t, v in tasks.items()))
    results = {}
    for weighting in ("mean", "validation"):
        results[weighting] = ensemble.ensemble_runs([work / f"{s}_joint" for s in strategies],
                                                    work / f"ensemble_{weighting}", weighting=weighting)
        s = results[weighting]
        per_fold = "  ".join(f"{f}: {100 * e['war']:.2f} (best member {100 * e['best_member_war']:.2f}"
                             + (f"; {e['weight_choice']['used']}, +{e['weight_choice']['gained']}/"
                                f"-{e['weight_choice']['lost']} val clips, p {e['weight_choice']['p_value']:.2g}"
                                if "weight_choice" in e else "") + ")"
                             for f, e in sorted(s["folds"].items(), key=lambda kv: int(kv[0])))
        print(f"ensemble ({weighting}) of {','.join(strategies)}: WAR {100 * s['war_mean']:.2f}  "
              f"UAR {100 * s['uar_mean']:.2f}  worst fold vs best member "
              f"{100 * s['worst_fold_gap_to_best_member']:+.2f} points  | {per_fold}")
    first = joint[strategies[0]]
    bars = {
        "CCC >= 0.8 on each dimension (joint, pooled)": all(
            first["dimensions"][d]["pooled"]["ccc"] >= 0.8 for d in ("valence", "arousal")),
        "joint WAR within 2 points of category-only": abs(first["war_mean"] - category_only["war_mean"]) <= 0.02,
        **{f"{weighting} ensemble never > 1 WAR point below the best member on any fold":
           results[weighting]["worst_fold_gap_to_best_member"] >= -0.01 for weighting in results},
    }
    for name, ok in bars.items():
        print(f"bar: {name}: {'PASS' if ok else 'FAIL'}")
    print(f"total {time.time() - started:.0f} s")
    return 0 if args.smoke or all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
