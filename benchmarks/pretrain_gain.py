"""What does masked-autoencoder pre-training buy? Pre-trained vs random initialisation on generated data.

    python benchmarks/pretrain_gain.py [--difficulty hard,standard] [--eval-actors 8] [--pretrain-actors 16]
        [--clips 2] [--image-size 64] [--strategy cfas] [--pretrain-epochs 40] [--work DIR]

Two generated sets per difficulty (data.synthetic): an evaluation set of actors
1..E and a pre-training set of OTHER actors (E+1..E+P) whose labels are never
read. `mmder-pretrain` trains the tiny encoder on the second set (held-out
reconstruction loss on 2 of its actors, before and after); then `mmder-finetune`
runs the same linear probe and the same full fine-tuning on the evaluation set
under subject-independent folds (few labelled actors per fold), once with
`--weights RUN` and once from the same random initialisation. The standard
generator saturates (CFAS 100 % WAR from random init), so the hard setting
(subtle, noisy, actor-dependent cues) is the one that can show a gain.

One line per measurement; the last line is `linear probe WAR: pretrained X random Y`
(the first difficulty listed). Aim: pretrained >= random + 10 points, and the
held-out reconstruction loss <= 0.6 of its initial value.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmder_tf import finetune  # noqa: E402
from mmder_tf import pretrain as pretrain_cli  # noqa: E402
from mmder_tf.data import synthetic  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)


def generate_sets(work: Path, difficulty: str, opts) -> tuple[Path, Path]:
    evaluation, unlabelled = work / difficulty / "eval", work / difficulty / "pretrain"
    common = dict(clips_per_class=opts.clips, seed=opts.seed, size=opts.clip_size, seconds=opts.seconds,
                  difficulty=difficulty, workers=opts.workers)
    synthetic.generate(evaluation, actors=list(range(1, opts.eval_actors + 1)), **common)
    synthetic.generate(unlabelled, actors=list(range(opts.eval_actors + 1, opts.eval_actors + opts.pretrain_actors + 1)),
                       **common)
    return evaluation, unlabelled


def pretrain_argv(unlabelled: Path, out: Path, opts) -> list:
    return ["--data-dir", str(unlabelled), "--dataset", "ravdess", "--out", str(out), "--preset", "tiny",
            "--image-size", str(opts.image_size), "--strategy", opts.strategy, "--epochs", str(opts.pretrain_epochs),
            "--warmup-epochs", str(max(1, opts.pretrain_epochs // 10)), "--batch-size", str(opts.batch_size),
            "--lr", str(opts.pretrain_lr), "--mask-ratio", str(opts.mask_ratio), "--val-subjects", "2",
            "--figure-every", str(opts.pretrain_epochs), "--seed", str(opts.seed), "--verbose", "0",
            "--decode-workers", str(opts.workers)]


def pretrain(unlabelled: Path, out: Path, opts) -> dict:
    if pretrain_cli.main(pretrain_argv(unlabelled, out, opts)) != 0:
        raise SystemExit("pre-training failed")
    return json.loads((out / "pretrain.json").read_text())


def random_encoder(unlabelled: Path, out: Path, opts) -> Path:
    """The pre-training run's encoder before its first step (same seed, same architecture incl. its final
    norm): the random-initialisation baseline differs from the pre-trained one only by the training."""
    from mmder_tf.training.pretrain import build_model, save_encoder

    config = pretrain_cli.config_from_args(pretrain_argv(unlabelled, out, opts))
    save_encoder(build_model(config), out)
    return out


def evaluate(evaluation: Path, out: Path, cache: Path, mode: str, weights, opts) -> dict:
    epochs, lr = (opts.probe_epochs, opts.probe_lr) if mode == "linear_probe" else (opts.finetune_epochs, opts.finetune_lr)
    argv = ["--dataset", "ravdess", "--data-dir", str(evaluation), "--cache", str(cache), "--out", str(out),
            "--preset", "tiny", "--image-size", str(opts.image_size), "--strategy", opts.strategy, "--mode", mode,
            "--epochs", str(epochs), "--lr", str(lr), "--batch-size", "8", "--num-folds", str(opts.folds),
            "--select", "last", "--seed", str(opts.seed), "--verbose", "0", "--workers", str(opts.workers)]
    if opts.smoke:
        argv += ["--folds", "1"]
    if weights:
        argv += ["--weights", str(weights)]
    return finetune.run_protocol(finetune.config_from_argv(argv))


def paired(pretrained: dict, random: dict) -> str:
    """Per-fold paired comparison (same folds, same test actors): mean ± std of the WAR differences, wins."""
    import numpy as np

    folds = sorted(set(pretrained["folds"]) & set(random["folds"]), key=int)
    gains = np.array([pretrained["folds"][f]["war"] - random["folds"][f]["war"] for f in folds]) * 100
    spread = gains.std(ddof=1) if len(gains) > 1 else float("nan")
    wins = int((gains > 0).sum())
    return (f"paired per fold: gain {gains.mean():+.2f} ± {spread:.2f} points over {len(folds)} folds "
            f"(pretrained better in {wins}, worse in {int((gains < 0).sum())}; per fold "
            + ", ".join(f"{g:+.1f}" for g in gains) + ")")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--difficulty", default="hard,standard", help="comma list; the first gives the last line")
    parser.add_argument("--eval-actors", type=int, default=8)
    parser.add_argument("--pretrain-actors", type=int, default=16)
    parser.add_argument("--clips", type=int, default=2, help="clips per actor and class")
    parser.add_argument("--clip-size", type=int, default=96, help="generated frame size")
    parser.add_argument("--seconds", type=float, default=1.2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--strategy", default="cfas")
    parser.add_argument("--folds", type=int, default=4, help="subject-independent folds of the evaluation actors")
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--pretrain-lr", type=float, default=1.5e-3)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--batch-size", type=int, default=16, help="pre-training batch")
    parser.add_argument("--probe-epochs", type=int, default=60)
    parser.add_argument("--probe-lr", type=float, default=1e-2)
    parser.add_argument("--finetune-epochs", type=int, default=12)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", help="folder for data and runs (default: a temporary one)")
    add_smoke(parser)
    # --smoke: 4 + 3 generated actors at 32 px, one epoch each, one fold of two
    opts = smoke_sizes(parser.parse_args(argv), difficulty="standard", eval_actors=4, pretrain_actors=3, clips=1,
                       clip_size=32, seconds=0.6, image_size=32, folds=2, pretrain_epochs=1, batch_size=4,
                       probe_epochs=1, finetune_epochs=1, workers=1)
    work = Path(opts.work or tempfile.mkdtemp(prefix="mmder_pretrain_gain_"))
    difficulties = [d.strip() for d in opts.difficulty.split(",") if d.strip()]
    summary = {}
    for difficulty in difficulties:
        started = time.perf_counter()
        evaluation, unlabelled = generate_sets(work, difficulty, opts)
        run = work / difficulty / "pretrain_run"
        facts = pretrain(unlabelled, run, opts)
        ratio = facts.get("val_loss_ratio", float("nan"))
        print(f"[{difficulty}] pre-training on {facts['run']['train_clips']} clips of {opts.pretrain_actors - 2} "
              f"other actors: held-out reconstruction loss {facts['initial_val_loss']:.4f} -> "
              f"{facts['final_val_loss']:.4f} (ratio {ratio:.3f}; aim <= 0.6)", flush=True)
        baseline = random_encoder(unlabelled, work / difficulty / "random_init", opts)
        rows = {}
        for mode in ("linear_probe", "finetune"):
            for name, weights in (("pretrained", run), ("random", baseline)):
                result = evaluate(evaluation, work / difficulty / f"{mode}_{name}", work / difficulty / "cache", mode,
                                  weights, opts)
                rows[(mode, name)] = result
                print(f"[{difficulty}] {mode:12s} {name:10s} WAR {100 * result['war_mean']:6.2f} "
                      f"± {100 * result['war_std']:5.2f}  UAR {100 * result['uar_mean']:6.2f}  "
                      f"({len(result['folds'])} folds of {opts.eval_actors} actors)", flush=True)
            print(f"[{difficulty}] {mode:12s} {paired(rows[(mode, 'pretrained')], rows[(mode, 'random')])}", flush=True)
        summary[difficulty] = {"ratio": ratio, "rows": rows}
        print(f"[{difficulty}] {time.perf_counter() - started:.0f} s", flush=True)
    for difficulty in reversed(difficulties):
        rows = summary[difficulty]["rows"]
        print(f"[{difficulty}] fine-tune WAR: pretrained {100 * rows[('finetune', 'pretrained')]['war_mean']:.2f} "
              f"random {100 * rows[('finetune', 'random')]['war_mean']:.2f}")
        print(f"[{difficulty}] linear probe WAR: pretrained "
              f"{100 * rows[('linear_probe', 'pretrained')]['war_mean']:.2f} random "
              f"{100 * rows[('linear_probe', 'random')]['war_mean']:.2f}")
    first = summary[difficulties[0]]["rows"]
    print(f"linear probe WAR: pretrained {100 * first[('linear_probe', 'pretrained')]['war_mean']:.2f} "
          f"random {100 * first[('linear_probe', 'random')]['war_mean']:.2f}")


if __name__ == "__main__":
    main()
