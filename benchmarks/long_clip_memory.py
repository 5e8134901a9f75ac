"""Peak memory of `mmder-predict` on a generated 10-minute clip, against a 3-second clip in the same run.

    python benchmarks/long_clip_memory.py [--minutes 10]

Prints one line: the peak resident set size (whole process, from
getrusage(RUSAGE_CHILDREN) of a fresh child per run) for the long and the short
clip, their ratio and the 2 GB bound of issue 11. The export is a tiny CFAS
model at 32 px (the memory of a long clip is in its audio windows, not the model).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)

MEASURE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_mb(clip, model) -> tuple[float, float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "mmder_tf.predict", str(clip),
                          "--model", str(model), "--no-progress"], capture_output=True, text=True, cwd=REPO)
    rc, kb = (int(x) for x in out.stdout.split())
    if rc != 0:
        raise SystemExit(f"mmder-predict failed on {clip} (rc {rc})")
    return kb / 1024, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    add_smoke(parser)
    args = smoke_sizes(parser.parse_args(argv), minutes=0.1)
    import keras

    from mmder_tf.config import FusionConfig
    from mmder_tf.serving import export
    from mmder_tf.data.synthetic import write_long_clip

    work = Path(tempfile.mkdtemp(prefix="mmder_long_"))
    config = FusionConfig(strategy="cfas", image_size=32)
    keras.utils.set_random_seed(1)
    model = export.build_classifier("tiny", config, ["a", "b", "c"])
    export.export_saved_model(model, config, ["a", "b", "c"], work / "model")
    short = write_long_clip(work / "short.mkv", 3)
    long = write_long_clip(work / "long.mkv", args.minutes * 60)
    short_mb, short_s = peak_mb(short, work / "model")
    long_mb, long_s = peak_mb(long, work / "model")
    print(f"long_clip_memory: {args.minutes:g}-min clip peak {long_mb:.0f} MB ({long_s:.0f} s), 3-s clip "
          f"{short_mb:.0f} MB ({short_s:.0f} s), ratio {long_mb / short_mb:.2f}, bound 2048 MB: "
          f"{'ok' if long_mb < 2048 else 'OVER'}")
    return 0 if args.smoke or long_mb < 2048 else 1


if __name__ == "__main__":
    sys.exit(main())
