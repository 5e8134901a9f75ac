"""Does fusion work? Audio-visual strategies vs video-only and audio-only, same settings.

    python benchmarks/av_vs_single.py [--strategies fslf,ffls,cfas,video,audio] [--epochs 12]
        [--folds 1] [--mode finetune] [--lr 2e-3] [--image-size 64] [--synthetic-dir D]

The generated dataset (data.synthetic) makes every class a (face, voice) pair, so
video alone can reach at most ~4/7 and audio alone ~2/7 of the clips, and only a
model that reads both can reach 1. Actors are held out (subject-independent folds
of finetune; the default 24 actors x 7 classes x 1 clip give RAVDESS's 6 official
folds of 4 test actors, the embedded demo's dataset and settings). One line per
strategy: WAR / UAR (mean over the folds run) and wall time. Bar: AV WAR >= 0.9 and >= 0.2 above each single modality.
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

from mmder_tf import finetune  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402


def add_demo_arguments(parser, folds: str = "1"):
    """The embedded demo's training settings as options (shared by the benchmarks that train on it)."""
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--mode", default="finetune", choices=("finetune", "linear_probe"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--folds", default=folds)
    parser.add_argument("--num-folds", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="folder for the runs (default: a temporary one)")
    parser.add_argument("--synthetic-dir")
    parser.add_argument("--synthetic-actors", type=int, default=24)
    parser.add_argument("--synthetic-clips", type=int, default=1)
    add_smoke(parser)


def demo_smoke(opts, work: Path):
    """--smoke: 4 generated actors at 32 px, one epoch, one of two folds."""
    return smoke_sizes(opts, preset="tiny", image_size=32, epochs=1, batch_size=4, folds="1", num_folds=2,
                       synthetic_actors=4, synthetic_clips=1, synthetic_dir=str(work / "data"))


def demo_argv(opts, strategy: str, out: Path, work: Path, folds: str | None = None, epochs: int | None = None):
    """mmder-finetune arguments of one run with those settings (the cache shared under `work`)."""
    argv = ["--strategy", strategy, "--preset", opts.preset, "--mode", opts.mode,
            "--image-size", str(opts.image_size), "--epochs", str(epochs or opts.epochs), "--lr", str(opts.lr),
            "--batch-size", str(opts.batch_size), "--folds", folds or opts.folds, "--seed", str(opts.seed),
            "--cache", str(work / "cache"), "--out", str(out), "--verbose", "0",
            "--synthetic-actors", str(opts.synthetic_actors), "--synthetic-clips", str(opts.synthetic_clips)]
    if opts.num_folds:
        argv += ["--num-folds", str(opts.num_folds)]
    if opts.synthetic_dir:
        argv += ["--synthetic-dir", opts.synthetic_dir]
    return argv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="fslf,ffls,cfas,video,audio")
    add_demo_arguments(parser)
    opts = parser.parse_args(argv)
    work = Path(opts.work or tempfile.mkdtemp(prefix="mmder_av_"))
    demo_smoke(smoke_sizes(opts, strategies="fslf,audio"), work)
    lines = []
    for strategy in opts.strategies.split(","):
        argv = demo_argv(opts, strategy, work / strategy, work)
        started = time.perf_counter()
        results = finetune.run_protocol(finetune.config_from_argv(argv))
        line = (f"{strategy:6s} WAR {100 * results['war_mean']:6.2f}  UAR {100 * results['uar_mean']:6.2f}  "
                f"({len(results['folds'])} fold(s), {time.perf_counter() - started:.0f} s)")
        lines.append((strategy, results, line))
        print("RESULT " + line, flush=True)
    print(f"\nfusion check: {opts.mode}, preset {opts.preset}, {opts.image_size}px, {opts.epochs} epochs, "
          f"lr {opts.lr}, folds {opts.folds}")
    for _, _, line in lines:
        print(line)
    war = {s: r["war_mean"] for s, r, _ in lines}
    single = [war[s] for s in ("video", "audio") if s in war]
    for s in war:
        if s not in ("video", "audio") and single:
            margin = war[s] - max(single)
            ok = war[s] >= 0.9 and margin >= 0.2
            print(f"{s}: WAR {100 * war[s]:.2f}, {100 * margin:+.2f} points over the best single modality "
                  f"-> bar {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
