"""Cross-validated MultiMAE-DER training: `python -m mmder_tf.finetune --strategy fslf ...` (mmder-finetune).

With no --dataset/--data-dir it runs the embedded demo: a generated audio-visual
dataset (data.synthetic), the tiny preset, small images and the whole
subject-independent protocol in a few minutes on a CPU.

Every argument is checked before any work starts (`RunConfig`). A run is
resumable: run the same command again after a kill and finished folds are
skipped, the current fold resumes from its last epoch. `--config RUN/run.json`
repeats a saved run exactly (`--out` elsewhere). The protocol itself lives in
`mmder_tf.training.protocol`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.config import CLASSIFIER_MODES, CROPS, STRATEGIES, add_spectrogram_arguments
from mmder_tf.errors import CheckpointError, ConfigError, DatasetError, MMDERError
from mmder_tf.training.config import (
    DATASETS, DISTRIBUTE_CHOICES, JIT_CHOICES, PRECISIONS, PRESETS, RAVDESS_CLASS_COUNTS, RECIPES, SELECT_CHOICES,
    RunConfig, default_workers,
)
from mmder_tf.training.protocol import ensure_demo_data, run_protocol

__all__ = ["build_parser", "config_from_argv", "ensure_demo_data", "main", "run", "run_protocol"]

# What --config may change about a saved run: where it writes and how it reports, never what it computes.
RERUN_OPTIONS = ("out", "cache", "workers", "verbose")


class _RaisingParser(argparse.ArgumentParser):
    """A bad option raises ConfigError instead of exiting (the Python API)."""

    def error(self, message):
        raise ConfigError(message)


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    # SUPPRESS: options not given stay absent, so RunConfig.resolve applies the defaults
    # (the demo's or the paper's) and --config can tell what was given.
    p = (_RaisingParser if raise_errors else argparse.ArgumentParser)(
        prog="mmder-finetune", argument_default=argparse.SUPPRESS,
        description="Train and evaluate MultiMAE-DER with subject-independent cross-validation. "
                    "With no --dataset/--data-dir/--manifest: the embedded synthetic demo.")
    p.add_argument("--config", help="repeat the run saved in this run.json (only --out, --cache, --workers and "
                                    "--verbose may change)")
    p.add_argument("--strategy", choices=STRATEGIES, help="fusion strategy (default fslf)")
    p.add_argument("--dataset", choices=DATASETS, help="dataset layout of --data-dir (default: synthetic demo)")
    p.add_argument("--data-dir", help="folder holding the dataset's clips")
    p.add_argument("--manifest", help="manifest JSON/CSV instead of scanning --data-dir")
    p.add_argument("--cache", help="prepared TFRecord cache (default <out>/cache; prepared on demand)")
    p.add_argument("--weights", help="a preset folder (mmder-convert, save_to_preset, an mmder-pretrain run) or a "
                                     "VideoMAE / MAE-DFER checkpoint (converted on the fly), or a shipped preset: speech-tiny "
                                     "(an audio encoder pre-trained on BanglaSER)")
    p.add_argument("--preset", choices=PRESETS,
                   help="backbone size (default large; tiny for the demo; with --weights: the checkpoint's)")
    p.add_argument("--mode", choices=CLASSIFIER_MODES,
                   help="linear_probe: frozen encoder (paper's official code); finetune: train all")
    p.add_argument("--folds", help="'all' (default) or a comma list of 1-based fold numbers, e.g. 1,3")
    p.add_argument("--num-folds", type=int, help="number of folds (default: the dataset's protocol; 5 for CSV)")
    p.add_argument("--epochs", type=int, help="training epochs per fold (default 100; demo 12)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 16; demo 8)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--dropout", type=float, help="dropout before the head (default 0)")
    p.add_argument("--out", help="run folder (default runs/<dataset>_<strategy>)")
    p.add_argument("--seed", type=int, help="seed of weights, folds, data order and the demo data (default 0)")
    p.add_argument("--image-size", type=int,
                   help="fused frame size (default: what --weights / --preset needs, e.g. 160 for MAE-DFER; else 224, "
                        "demo 64)")
    p.add_argument("--num-classes", type=int, choices=RAVDESS_CLASS_COUNTS, help="RAVDESS: 7 (calm merged) or 8")
    p.add_argument("--recipe", choices=RECIPES, help="paper (default), mae-dfer, or speech (real speech with --strategy audio: warm-up + "
                        "cosine, label smoothing, mixup, SpecAugment masks; docs/real_speech.md)")
    p.add_argument("--select", choices=SELECT_CHOICES,
                   help="epoch kept per fold: best on a validation split of training subjects (default "
                        "val_accuracy), or the last")
    p.add_argument("--val-subjects", type=int, help="training subjects held out for validation (default 10%%, >= 1)")
    p.add_argument("--precision", choices=PRECISIONS, help="default auto")
    p.add_argument("--jit-compile", choices=JIT_CHOICES, help="default auto")
    p.add_argument("--distribute", choices=DISTRIBUTE_CHOICES, help="default none")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a randomly initialised encoder on a real dataset on purpose (default mode then "
                        "finetune); without it a real-dataset run needs --weights")
    p.add_argument("--crop", choices=CROPS,
                   help="frame crop (default: the tracked face for ravdess, cremad and iemocap, as mmder-prepare; "
                        "the centre square for csv, generated data and the demo)")
    p.add_argument("--official", action="store_true",
                   help="official preprocessing (frame choice, MFCC, SFAS wrap) and input std 0.225")
    p.add_argument("--mean", help="input mean per channel, 'R,G,B' or one value (default ImageNet 0.485,0.456,0.406)")
    p.add_argument("--std", help="input std per channel, 'R,G,B' or one value (default ImageNet 0.229,0.224,0.225; "
                                 "--official: 0.225)")
    p.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                   help="linear probe: run the frozen encoder every epoch instead of caching its features")
    p.add_argument("--workers", type=int, help=f"prepare processes (default {default_workers()})")
    p.add_argument("--synthetic-dir", help="where the demo dataset is generated (default ~/.cache/mmder_tf/synthetic)")
    p.add_argument("--synthetic-actors", type=int, help="demo dataset: actors (default 24)")
    p.add_argument("--synthetic-clips", type=int, help="demo dataset: clips per actor and class (default 1)")
    p.add_argument("--targets", help="what to learn: 'category' (default) plus emotion dimensions, e.g. "
                                     "category,valence,arousal (IEMOCAP: valence/arousal/dominance; RAVDESS, "
                                     "CREMA-D: intensity; CSV: numeric columns; any: --targets-file)")
    p.add_argument("--task-weighting", choices=("uncertainty", "fixed"),
                   help="joint loss: learned per-task uncertainty (log-variance) weights (default), or fixed")
    p.add_argument("--task-weights", help="--task-weighting fixed: e.g. category=1,valence=0.5 (default 1 each)")
    p.add_argument("--targets-file", help="CSV key,<dimension>,... adding dimensions to the dataset's clips")
    p.add_argument("--synthetic-dimensions", action="store_true",
                   help="demo dataset: generate it with valence / arousal cues (data.synthetic dimensions=True)")
    p.add_argument("--modality-dropout", help="train one model for audio-video, video alone and audio alone: "
                   "P (each modality dropped with probability P, never both) or video=P,audio=Q; the test set is "
                   "then evaluated three ways (default 0: audio-visual only)")
    p.add_argument("--placeholder", choices=("image", "learned"),
                   help="what stands in for a missing modality: the fixed placeholder image or a learned tubelet "
                        "embedding (default: learned for cfas, ffls and fslf with --modality-dropout, image otherwise)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2),
                   help="Keras fit verbosity (default 1 = progress bars); 2 also shows TensorFlow's own logs")
    add_spectrogram_arguments(p)
    return p


def config_from_options(options: dict) -> RunConfig:
    """A RunConfig of parsed options; with `config` (a run.json), that run with only RERUN_OPTIONS changed."""
    options = dict(options)
    saved = options.pop("config", None)
    if saved is None:
        return RunConfig.resolve(**options)
    changed = sorted(set(options) - set(RERUN_OPTIONS))
    if changed:
        raise ConfigError(f"--config repeats a saved run; it cannot change {', '.join(changed)} "
                          f"(only {', '.join(RERUN_OPTIONS)})")
    return RunConfig.from_file(saved).replace(**options).check_paths()


def config_from_argv(argv=None, raise_errors: bool = False) -> RunConfig:
    """The run configuration of a command line (argparse errors exit, or raise ConfigError with raise_errors)."""
    return config_from_options(vars(build_parser(raise_errors).parse_args(argv)))


def run(**options) -> dict:
    """Run the protocol from Python (notebooks): ``run(strategy="fslf", epochs=2, folds=1, out="runs/x")``.

    Keyword arguments are `RunConfig.resolve`'s: the CLI options with ``-`` -> ``_``
    (``feature_cache=False`` for --no-feature-cache, ``config="RUN/run.json"`` to repeat a
    run), or ``config=RunConfig(...)``. None means "not given". Returns the results dict
    (what results.json holds) with ``"out"``, the run folder, added. Errors raise
    (ConfigError, DatasetError, CheckpointError, ...) instead of exiting.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(given.get("config"), RunConfig):
        config = given.pop("config")
        if given:
            config = config.replace(**given)
    else:
        config = config_from_options(given)
    results = dict(run_protocol(config))
    results["out"] = Path(config.out)
    return results


@one_line_file_errors("mmder-finetune")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow(verbose=getattr(args, "verbose", 1) >= 2)
    try:
        config = config_from_options(vars(args))
        run_protocol(config)
    except MMDERError as error:
        print(f"mmder-finetune: error: {error}", file=sys.stderr)
        # 2: the request cannot work (settings, data, checkpoint); 1: it failed while running.
        return 2 if isinstance(error, (ConfigError, DatasetError, CheckpointError)) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
