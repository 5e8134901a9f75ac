"""One model for audio-video, video alone and audio alone: modality dropout against specialised models.

    python benchmarks/missing_modality.py [--strategies cfas,sfas,ffls,fslf,ofos,rfas]
        [--placeholders image] [--learned-strategies fslf,cfas] [--modality-dropout 0.25]
        [--folds all] [--short-folds 1,2,3] [--epochs 12] [--dropout-epochs 24] [--work DIR]

On the generated dataset (data.synthetic: every class a (face, voice) pair, so video
alone reaches at most 4/7 and audio alone 2/7 of the clips) with the embedded demo's
settings (tiny encoder from scratch, 64 px, 12 epochs, lr 2e-3, batch 8, finetune,
subject-independent folds of 4 test actors), this trains:

- the three specialised models as today: FSLF (audio-video), video only, audio only;
- per strategy, ONE model with modality dropout (`--modality-dropout`), tested on the
  same test actors with both modalities, with video alone and with audio alone (the
  missing one is the fixed placeholder image; for SFAS the present modality);
- for `--learned-strategies`, the same with the learned tubelet placeholder.

`--short-folds` runs the strategies other than FSLF and CFAS on fewer folds (time on
a shared 2-core machine); each comparison then uses the specialised models' WAR on
exactly those folds. One line per model; bar: each input kind within 3 WAR points
of its specialised model (AV against FSLF AV, video against video, audio against audio).
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

from av_vs_single import add_demo_arguments, demo_argv, demo_smoke  # noqa: E402  (this folder is on sys.path)
from _smoke import smoke_sizes  # noqa: E402
from mmder_tf import finetune  # noqa: E402

KINDS = ("audio_video", "video", "audio")
SPECIALISED = {"audio_video": "fslf", "video": "video", "audio": "audio"}
BAR_POINTS = 3.0


def fold_war(results: dict, folds, kind: str | None = None) -> float:
    """Mean WAR (%) over `folds` of a run's results (kind: one input of a modality-dropout model)."""
    per_fold = results["modalities"][kind]["folds"] if kind else results["folds"]
    return 100 * sum(per_fold[str(f)]["war"] for f in folds) / len(folds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="cfas,sfas,ffls,fslf,ofos,rfas")
    parser.add_argument("--learned-strategies", default="fslf,cfas",
                        help="also trained with the learned placeholder ('' for none)")
    parser.add_argument("--modality-dropout", default="0.25")
    parser.add_argument("--dropout-epochs", type=int,
                        help="epochs of the modality-dropout models (default --epochs): each sees every input kind "
                             "in only part of its clips")
    parser.add_argument("--short-folds", help="folds for strategies other than fslf and cfas (default: --folds)")
    add_demo_arguments(parser, folds="all")
    opts = parser.parse_args(argv)
    work = Path(opts.work or tempfile.mkdtemp(prefix="mmder_missing_"))
    demo_smoke(smoke_sizes(opts, strategies="fslf", learned_strategies="", dropout_epochs=1, short_folds=None), work)

    def train(name, strategy, folds, extra=(), epochs=None):
        started = time.perf_counter()
        argv = demo_argv(opts, strategy, work / name, work, folds, epochs) + list(extra)
        results = finetune.run_protocol(finetune.config_from_argv(argv))
        return results, time.perf_counter() - started

    strategies = [s for s in opts.strategies.split(",") if s]
    learned = [s for s in opts.learned_strategies.split(",") if s]
    # FSLF and CFAS with both placeholders first: the comparison that chooses the placeholder
    first = [s for s in ("fslf", "cfas") if s in strategies]
    plans = [(f"{s}_dropout_{p}", s, p) for s in first for p in ("image", "learned") if p == "image" or s in learned]
    plans += [(f"{s}_dropout_image", s, "image") for s in strategies if s not in first]
    plans += [(f"{s}_dropout_learned", s, "learned") for s in learned if s not in first]
    specialised = {}
    for kind, strategy in SPECIALISED.items():
        results, seconds = train(f"{strategy}_specialised", strategy, opts.folds)
        specialised[kind] = results
        folds = sorted(results["folds"], key=int)
        print(f"RESULT specialised {strategy:6s} WAR {results['war_mean'] * 100:6.2f}  UAR "
              f"{results['uar_mean'] * 100:6.2f}  ({len(folds)} fold(s), {seconds:.0f} s)", flush=True)
    rows = []
    for name, strategy, placeholder in plans:
        folds_arg = opts.folds if strategy in ("fslf", "cfas") or not opts.short_folds else opts.short_folds
        results, seconds = train(name, strategy, folds_arg,
                                 ["--modality-dropout", opts.modality_dropout, "--placeholder", placeholder],
                                 epochs=opts.dropout_epochs or opts.epochs)
        folds = sorted(results["folds"], key=int)
        cells, ok = [], True
        for kind in KINDS:
            mine = fold_war(results, folds, kind)
            reference = fold_war(specialised[kind], folds)
            ok &= mine >= reference - BAR_POINTS
            cells.append(f"{kind} {mine:6.2f} (spec. {reference:6.2f}, {mine - reference:+6.2f})")
        line = (f"{strategy:4s} placeholder={placeholder:7s} WAR " + "  ".join(cells) +
                f"  folds {','.join(folds)}  {seconds:.0f} s  bar {'met' if ok else 'NOT met'}")
        rows.append({"name": name, "strategy": strategy, "placeholder": placeholder, "folds": folds,
                     "war": {k: fold_war(results, folds, k) for k in KINDS},
                     "uar": {k: 100 * sum(results["modalities"][k]["folds"][f]["uar"] for f in folds) / len(folds)
                             for k in KINDS},
                     "specialised_war": {k: fold_war(specialised[k], folds) for k in KINDS},
                     "seconds": round(seconds), "bar_met": ok})
        print("RESULT " + line, flush=True)
    (work / "missing_modality.json").write_text(json.dumps(rows, indent=1))
    print(f"\nmissing modality: modality dropout {opts.modality_dropout}, {opts.preset}, {opts.image_size}px, "
          f"{opts.epochs} epochs (dropout models {opts.dropout_epochs or opts.epochs}), lr {opts.lr}, "
          f"folds {opts.folds} (short {opts.short_folds}); -> {work}")
    for row in rows:
        print(f"{row['strategy']:4s} {row['placeholder']:7s} " + "  ".join(
            f"{k} {row['war'][k]:6.2f}/{row['specialised_war'][k]:6.2f}" for k in KINDS) +
            f"  bar {'met' if row['bar_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
