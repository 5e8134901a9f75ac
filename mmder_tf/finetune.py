"""Cross-validated MultiMAE-DER training: `python -m mmder_tf.finetune --strategy fslf ...`.

With no --dataset/--data-dir it runs the embedded demo: a generated audio-visual
dataset (data.synthetic), the tiny preset, small images and the whole
subject-independent protocol in a few minutes on a CPU.

Every argument is checked before any work starts. A run is resumable: run the
same command again after a kill and finished folds are skipped, the current
fold resumes from its last epoch (BackupAndRestore).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmder_tf.config import STRATEGIES
from mmder_tf.errors import CheckpointError, ConfigError, DatasetError, MMDERError
from mmder_tf.models.presets import LGI_FORMER_PRESETS, PRESETS

DATASETS = ("ravdess", "cremad", "iemocap", "csv", "synthetic")

# Embedded demo: big enough that fusion visibly beats either modality, small enough
# for 2 CPU cores in a few minutes (see benchmarks/av_vs_single.py for the numbers).
DEMO = dict(preset="tiny", image_size=64, epochs=12, batch_size=8, mode="finetune", lr=2e-3)


class _RaisingParser(argparse.ArgumentParser):
    """For the Python API: a bad option raises ConfigError instead of exiting."""

    def error(self, message):
        raise ConfigError(message)


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    p = (_RaisingParser if raise_errors else argparse.ArgumentParser)(
        prog="mmder-finetune",
        description="Train and evaluate MultiMAE-DER with subject-independent cross-validation. "
                    "With no --dataset/--data-dir/--manifest: the embedded synthetic demo.")
    p.add_argument("--strategy", default="fslf", choices=STRATEGIES, help="fusion strategy (default fslf)")
    p.add_argument("--dataset", choices=DATASETS, help="dataset layout of --data-dir (default: synthetic demo)")
    p.add_argument("--data-dir", help="folder holding the dataset's clips")
    p.add_argument("--manifest", help="manifest JSON/CSV instead of scanning --data-dir")
    p.add_argument("--cache", help="prepared TFRecord cache (default <out>/cache; prepared on demand)")
    p.add_argument("--weights", help="converted .weights.h5 or a VideoMAE checkpoint (converted on the fly)")
    p.add_argument("--preset", choices=PRESETS, help="backbone size (default large; tiny for the demo)")
    p.add_argument("--mode", choices=("linear_probe", "finetune"),
                   help="linear_probe: frozen encoder (paper's official code); finetune: train all")
    p.add_argument("--folds", default="all", help="'all' or a comma list of 1-based fold numbers, e.g. 1,3")
    p.add_argument("--num-folds", type=int, help="number of folds (default: the dataset's protocol; 5 for CSV)")
    p.add_argument("--epochs", type=int, help="training epochs per fold (default 100; demo 12)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 16; demo 8)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout before the head")
    p.add_argument("--out", help="run folder (default runs/<dataset>_<strategy>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int,
                   help="fused frame size (default: what --weights / --preset needs, e.g. 160 for MAE-DFER; else 224, demo 64)")
    p.add_argument("--num-classes", type=int, choices=(7, 8), help="RAVDESS: 7 (calm merged) or 8")
    p.add_argument("--recipe", choices=("paper", "mae-dfer"), default="paper")
    p.add_argument("--select", choices=("val_accuracy", "val_loss", "last"), default="val_accuracy",
                   help="epoch kept per fold: best on a validation split of training subjects, or the last")
    p.add_argument("--val-subjects", type=int, help="training subjects held out for validation (default 10%%, >= 1)")
    p.add_argument("--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"), default="auto")
    p.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--distribute", choices=("none", "mirrored", "multiworker", "tpu"), default="none")
    p.add_argument("--official", action="store_true", help="official preprocessing (frame choice, MFCC, SFAS wrap)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="linear probe: run the frozen encoder every epoch instead of caching its features")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="prepare processes")
    p.add_argument("--synthetic-dir", help="where the demo dataset is generated (default ~/.cache/mmder_tf/synthetic)")
    p.add_argument("--synthetic-actors", type=int, default=24, help="demo dataset: actors")
    p.add_argument("--synthetic-clips", type=int, default=1, help="demo dataset: clips per actor and class")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity (1 = progress bars)")
    p.add_argument("--targets", default="category",
                   help="what to learn: 'category' plus emotion dimensions, e.g. category,valence,arousal "
                        "(IEMOCAP: valence/arousal/dominance; RAVDESS, CREMA-D: intensity; CSV: numeric columns)")
    p.add_argument("--task-weighting", choices=("uncertainty", "fixed"), default="uncertainty",
                   help="joint loss: learned per-task uncertainty (log-variance) weights, or fixed --task-weights")
    p.add_argument("--task-weights", help="fixed weights, e.g. category=1,valence=0.5 (default 1 each)")
    p.add_argument("--targets-file", help="CSV key,<dimension>,... adding dimensions to any dataset's clips")
    p.add_argument("--synthetic-dimensions", action="store_true",
                   help="demo dataset: generate it with valence / arousal cues (data.synthetic dimensions=True)")
    return p


def parse_folds(text: str) -> list[int] | None:
    if text is None or text.strip().lower() == "all":
        return None
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"--folds must be 'all' or comma-separated fold numbers, got {text!r}") from None
    if not folds or folds[0] < 1:
        raise ConfigError(f"--folds numbers start at 1, got {text!r}")
    return folds


def resolve_options(argv=None, raise_errors: bool = False) -> argparse.Namespace:
    """Parse and check everything that can be checked without touching TF or media.

    raise_errors=True (the Python API): argparse errors raise ConfigError instead of exiting.
    """
    parser = build_parser(raise_errors)
    args = parser.parse_args(argv)
    args.demo = args.dataset in (None, "synthetic") and args.data_dir is None and args.manifest is None
    if args.dataset is None:
        if args.data_dir or args.manifest:
            raise ConfigError("--data-dir/--manifest need --dataset (ravdess, cremad, iemocap or csv)")
        args.dataset = "synthetic"
    if args.dataset == "synthetic":
        defaults = DEMO
    else:
        defaults = dict(preset="large", image_size=224, epochs=100, batch_size=16, mode="linear_probe", lr=None)
        if args.dataset == "csv" and not args.manifest:
            raise ConfigError("--dataset csv needs --manifest <file.csv>")
        if not args.data_dir and not args.manifest:
            raise ConfigError(f"--dataset {args.dataset} needs --data-dir (the folder with the clips) or --manifest")
        if args.data_dir and not Path(args.data_dir).is_dir():
            raise ConfigError(f"--data-dir {args.data_dir}: no such directory")
        if args.manifest and not Path(args.manifest).is_file():
            raise ConfigError(f"--manifest {args.manifest}: no such file")
    args.preset_given = args.preset is not None
    if args.image_size is None:
        args.image_size = encoder_image_size(args)
    for key in ("preset", "image_size", "epochs", "batch_size", "mode"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if args.lr is None and args.recipe == "paper" and args.dataset == "synthetic" and args.mode == "finetune":
        # The paper's 1e-2 trains a frozen encoder's head; a randomly initialised
        # encoder trained end to end diverges at that rate.
        args.lr = DEMO["lr"]
    if args.num_classes is not None and args.dataset not in ("ravdess", "synthetic"):
        raise ConfigError("--num-classes applies to RAVDESS only (7 or 8 classes)")
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_folds is not None and args.num_folds < 2:
        raise ConfigError(f"--num-folds must be >= 2, got {args.num_folds}")
    if args.lr is not None and not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    if not 0.0 <= args.dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {args.dropout}")
    args.fold_list = parse_folds(args.folds)
    from mmder_tf.training.multitask import parse_targets, parse_task_weights

    args.dimensions = list(parse_targets(args.targets))
    weights = parse_task_weights(args.task_weights)
    if weights and args.task_weighting != "fixed":
        raise ConfigError("--task-weights apply to --task-weighting fixed (uncertainty weights are learned)")
    unknown = sorted(set(weights) - {"category", *args.dimensions})
    if unknown:
        raise ConfigError(f"--task-weights name {unknown}, not among --targets {args.targets}")
    if args.targets_file and not Path(args.targets_file).is_file():
        raise ConfigError(f"--targets-file {args.targets_file}: no such file")
    if args.weights and not Path(args.weights).exists():
        raise ConfigError(f"--weights {args.weights}: no such file")
    from mmder_tf.config import FusionConfig

    args.fusion = FusionConfig(strategy=args.strategy, image_size=args.image_size, official=args.official)
    if args.out is None:
        args.out = str(Path("runs") / f"{args.dataset}_{args.strategy}")
    return args



# ----------------------------------------------------------------------------- the protocol

def _log(message: str):
    print(message, flush=True)


def synthetic_dir(args) -> Path:
    if args.synthetic_dir:
        return Path(args.synthetic_dir)
    root = Path(os.environ.get("MMDER_CACHE", Path.home() / ".cache" / "mmder_tf"))
    suffix = "_dims" if getattr(args, "synthetic_dimensions", False) else ""
    return root / "synthetic" / f"a{args.synthetic_actors}_c{args.synthetic_clips}_s{args.seed}{suffix}"


def _generate_demo(directory, actors: int, clips: int, seed: int, progress: bool = False, dimensions: bool = False):
    from mmder_tf.data import synthetic

    synthetic.generate(directory, actors=actors, clips_per_class=clips, seed=seed, progress=progress,
                       dimensions=dimensions)


def ensure_demo_data(directory=None, actors: int | None = None, clips: int | None = None, seed: int = 0) -> Path:
    """The embedded demo dataset's folder, generated first if missing (existing clips are kept).

    Defaults are the demo run's: the same actors, clips per class, seed and location
    (``$MMDER_CACHE`` or ``~/.cache/mmder_tf``, then ``synthetic/a<actors>_c<clips>_s<seed>``),
    so ``run()`` with no dataset afterwards finds the clips ready.
    """
    argv = ["--seed", str(seed)]
    if actors is not None:
        argv += ["--synthetic-actors", str(actors)]
    if clips is not None:
        argv += ["--synthetic-clips", str(clips)]
    if directory is not None:
        argv += ["--synthetic-dir", str(directory)]
    args = build_parser(raise_errors=True).parse_args(argv)
    folder = synthetic_dir(args)
    _generate_demo(folder, args.synthetic_actors, args.synthetic_clips, args.seed)
    return folder


def load_run_manifest(args):
    """The manifest of the run; for the demo, generates the dataset first (kept between runs)."""
    from mmder_tf.data.datasets import attach_targets, load_manifest
    from mmder_tf.training.multitask import check_dimensions

    if args.dataset == "synthetic":
        from mmder_tf.data.synthetic import DIMENSIONS_TABLE

        directory = synthetic_dir(args) if args.data_dir is None else Path(args.data_dir)
        if args.data_dir is None:
            _log(f"generating the synthetic audio-visual dataset in {directory} (kept for later runs)")
            _generate_demo(directory, args.synthetic_actors, args.synthetic_clips, args.seed, args.verbose > 0,
                           dimensions=getattr(args, "synthetic_dimensions", False))
        manifest = load_manifest("ravdess", data_dir=directory)
        if (directory / DIMENSIONS_TABLE).is_file():
            manifest = attach_targets(manifest, directory / DIMENSIONS_TABLE)
    else:
        options = {"num_classes": args.num_classes} if args.num_classes else {}
        manifest = load_manifest(args.dataset, data_dir=args.data_dir, manifest=args.manifest, **options)
    if getattr(args, "targets_file", None):
        manifest = attach_targets(manifest, args.targets_file)
    if getattr(args, "dimensions", None):
        check_dimensions(manifest, args.dimensions)
    return manifest


def run_folds(args, manifest):
    """(fold number, Fold with validation subjects) pairs selected by --folds."""
    import warnings

    from mmder_tf.data import folds as folds_lib

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_folds = folds_lib.make_folds(manifest, k=args.num_folds, seed=args.seed)
    for warning in caught:
        _log(f"note: {warning.message}")
    numbers = args.fold_list or list(range(1, len(all_folds) + 1))
    if numbers[-1] > len(all_folds):
        raise ConfigError(f"--folds {args.folds}: the protocol has only {len(all_folds)} folds")
    selected = []
    for number in numbers:
        fold = all_folds[number - 1]
        if args.select != "last":
            try:
                fold = folds_lib.with_validation(fold, manifest, num_subjects=args.val_subjects, seed=args.seed)
            except DatasetError:
                if args.val_subjects:
                    raise
                _log(f"note: fold {number} has too few training subjects for a validation split; keeping the last epoch")
        selected.append((number, fold))
    return selected


def encoder_image_size(args):
    """The frame size the chosen encoder needs (MAE-DFER's regions fit 160 px only), or None: any size."""
    if args.weights:
        if not Path(args.weights).exists():
            raise ConfigError(f"--weights {args.weights}: no such file")
        from mmder_tf.models.convert import checkpoint_input

        size = checkpoint_input(args.weights).get("image_size")
    elif args.preset in LGI_FORMER_PRESETS:
        size = LGI_FORMER_PRESETS[args.preset]["image_size"]
    else:
        return None
    if size is not None and not isinstance(size, int):
        height, width = size
        if height != width:
            raise ConfigError(f"--weights {args.weights} needs {height}x{width} frames; fusion makes square ones")
        size = height
    return size


def build_classifier(args, num_classes: int, class_names=None, drop_path: float = 0.0):
    """The classifier of the run, with --weights loaded. Call under the strategy's scope.

    Checkpoint weights fix the architecture; an explicit --preset that disagrees
    with them is an error rather than a silent switch of model size.
    """
    import keras

    from mmder_tf.models import presets
    from mmder_tf.models.classifier import EmotionClassifier

    keras.utils.set_random_seed(args.seed)  # the same initial weights for every fold and every resume
    if not args.weights:
        backbone = presets.backbone_from_preset(args.preset, num_frames=args.fusion.num_frames,
                                       image_size=args.image_size, drop_path_rate=drop_path)
        return EmotionClassifier(backbone, num_classes, mode=args.mode, dropout=args.dropout, class_names=class_names,
                                 targets=tuple(getattr(args, "dimensions", None) or ()))
    from mmder_tf.models.convert import load_pretrained

    model = load_pretrained(args.weights, num_frames=args.fusion.num_frames, image_size=args.image_size,
                            classifier=True, num_classes=num_classes, allow_missing_head=True, mode=args.mode,
                            dropout=args.dropout, class_names=class_names, drop_path_rate=drop_path)
    backbone = model.backbone
    found = presets.preset_of(backbone)
    if args.preset_given and args.preset != found:
        raise ConfigError(
            f"--weights {args.weights} hold a {found} {type(backbone).__name__} (width {backbone.hidden_dim}, depth "
            f"{backbone.depth}, {backbone.num_heads} heads), not preset {args.preset!r}: drop --preset"
            + ("" if found == "custom" else f" or pass --preset {found}"))
    if not args.preset_given:
        args.preset = found
    # A saved classifier keeps its own settings; the run's win (its head weights stay).
    model.mode = args.mode
    model.dropout.rate = model.dropout_rate = float(args.dropout)
    dimensions = tuple(getattr(args, "dimensions", None) or ())
    if dimensions:  # the checkpoint's encoder and category head, new regression heads beside them
        joint = EmotionClassifier(model.backbone, num_classes, mode=args.mode, dropout=args.dropout,
                                  class_names=class_names, pooling=model.pooling, targets=dimensions)
        joint.fc_norm.set_weights(model.fc_norm.get_weights())
        joint.head.set_weights(model.head.get_weights())
        model = joint
    return model


def prepare_cache(args, manifest):
    """Prepared TFRecord cache of every clip (resumable); returns (cache dir, kept records, skipped list)."""
    from mmder_tf.data import prepare as prepare_lib

    cache_dir = Path(args.cache) if args.cache else Path(args.out) / "cache"
    index = prepare_lib.prepare(manifest, cache_dir, args.fusion, num_workers=args.workers,
                                progress=args.verbose > 0)
    if not index.get("complete", True):
        raise DatasetError(f"{cache_dir}: the cache is incomplete (shards {index.get('missing_shards')} missing)")
    skipped = [{"key": None, "path": str(getattr(item, "path", item)), "reason": str(getattr(item, "reason", ""))}
               for item in getattr(manifest, "skipped", ())]
    root = Path(manifest.root) if manifest.root else None
    kept = set()
    for entry in index["records"]:
        if entry["status"] == "ok":
            kept.add(entry["key"])
        else:
            path = Path(entry["path"])
            skipped.append({"key": entry["key"], "path": str(root / path if root and not path.is_absolute() else path),
                            "reason": entry.get("skip_reason", entry["status"])})
    records = [r for r in manifest.records if r.key in kept]
    return cache_dir, records, skipped


def clip_dataset(cache_dir, records, fusion, batch_size, *, training=False, seed=0, epoch=None, with_keys=False):
    """Fused uint8 clips and labels of `records` from the prepared cache (pipeline.make_dataset)."""
    import warnings

    from mmder_tf.data.pipeline import make_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped clips were reported once, at prepare
        return make_dataset(cache_dir, list(records), fusion, batch_size, training=training, seed=seed,
                            epoch=epoch, with_keys=with_keys)


def predict_with_keys(model, dataset, jit_compile=False):
    """(keys, labels, float32 outputs) over a (x, y, key) dataset."""
    import numpy as np
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True)
    keys, labels, outputs = [], [], []
    for x, y, key in dataset:
        outputs.append(np.asarray(tf.cast(forward(x), tf.float32)))
        labels.append(np.asarray(y))
        keys.extend(k.decode() for k in np.asarray(key))
    return keys, np.concatenate(labels).astype(np.int64), np.concatenate(outputs)


def epoch_order(count: int, seed: int, epoch: int):
    import numpy as np

    return np.random.default_rng([seed, epoch, 8191]).permutation(count)


def _fold_result_path(fold_dir: Path) -> Path:
    return fold_dir / "results.json"


def train_and_test_fold(args, ctx, number, fold):
    """Train one fold (resuming if a backup exists), test it, write fold_N/results.json last."""
    import json

    import numpy as np
    import tensorflow as tf

    from mmder_tf.reports import metrics as metrics_lib
    from mmder_tf.training import engine as T
    from mmder_tf.data.folds import split
    from mmder_tf.reports.results import atomic_save_npz, atomic_write_json

    fold_dir = ctx["work"] / f"fold_{number}"
    if _fold_result_path(fold_dir).exists():
        _log(f"fold {number}: already finished ({_fold_result_path(fold_dir)}), skipping")
        return json.loads(_fold_result_path(fold_dir).read_text())
    kept = ctx["kept_keys"]
    train, val, test = (list(r for r in part if r.key in kept) for part in split(ctx["manifest"], fold, validation=True))
    if not train or not test:
        raise DatasetError(f"fold {number}: no usable {'training' if not train else 'test'} clips after skipping bad ones")
    _log(f"fold {number}: train {len(train)} clips ({len(fold.train_subjects)} subjects), "
         f"val {len(val)} ({len(fold.val_subjects)}), test {len(test)} ({', '.join(fold.test_subjects)})")
    settings, strategy, batch = ctx["settings"], ctx["strategy"], args.batch_size
    num_classes = ctx["num_classes"]
    soft = settings["mixup"] > 0 or settings["cutmix"] > 0 or settings["label_smoothing"] > 0
    steps = max(1, -(-len(train) // batch))
    mix = None
    if soft:
        def mix(x, y, seed):
            return T.mix_batch(x, y, seed, num_classes, settings["mixup"], settings["cutmix"],
                               settings["label_smoothing"])

    def to_onehot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), num_classes)

    with strategy.scope():
        # Stochastic depth in a frozen encoder would only add noise to its features.
        drop_path = settings["drop_path"] if args.mode == "finetune" else 0.0
        classifier = build_classifier(args, num_classes, ctx["class_names"], drop_path=drop_path)
        loss, metric_list = T.make_loss_and_metrics(soft)
    dimensions = tuple(getattr(args, "dimensions", None) or ())
    target_statistics = None
    if dimensions:
        from mmder_tf.training import multitask as MT

        # Standardised on the training clips only; the test fold's targets are never looked at.
        target_statistics = MT.set_target_statistics(classifier, train, dimensions)

    def trainable(model):
        """The model fit_resumable trains: itself, or wrapped in the joint multi-task loss."""
        return MT.wrap(model, dimensions, args.task_weighting, MT.parse_task_weights(args.task_weights), soft) \
            if dimensions else model

    def compile_model(model, optimizer):
        if dimensions:
            optimizer.exclude_from_weight_decay(var_names=["log_variances"])
            model.compile(optimizer=optimizer, jit_compile=ctx["jit"])
        else:
            model.compile(optimizer=optimizer, loss=loss, metrics=metric_list, jit_compile=ctx["jit"])
    monitor = None if args.select == "last" or not val else args.select
    started = __import__("time").time()
    cached = ctx["feature_cache"]
    info = {}
    if cached:
        features, feature_fp = feature_table(args, ctx, classifier, train + val + test)
        index = features["index"]

        def rows(records):
            return (features["features"][[index[r.key] for r in records]],
                    np.array([r.label for r in records], np.int64))

        train_x, train_y = rows(train)
        test_x, test_y = rows(test)
        if dimensions:
            train_y = MT.target_dict(train, train_y, dimensions, num_classes if soft else None)

        def epoch_dataset(epoch):
            order = epoch_order(len(train_x), args.seed, epoch)
            labels = {k: v[order] for k, v in train_y.items()} if dimensions else train_y[order]
            return tf.data.Dataset.from_tensor_slices((train_x[order], labels)).batch(batch)

        val_data = None
        if val:
            val_x, val_y = rows(val)
            if dimensions:
                val_data = tf.data.Dataset.from_tensor_slices(
                    (val_x, MT.target_dict(val, val_y, dimensions, num_classes if soft else None))).batch(batch)
                val_data = T.with_data_sharding(val_data)
            else:
                val_data = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(batch)
                val_data = T.with_data_sharding(val_data.map(to_onehot) if soft else val_data)
        with strategy.scope():
            model = trainable(classifier.head_model())
            optimizer = T.make_optimizer(settings, steps, args.epochs, classifier.backbone.depth)
            compile_model(model, optimizer)
        # Mixup on pooled features is not mixup of clips: feature caching is only used without it.
        info = T.fit_resumable(model, fold_dir=fold_dir, epoch_dataset=epoch_dataset, steps_per_epoch=steps,
                               epochs=args.epochs, val_data=val_data, monitor=monitor, seed=args.seed,
                               verbose=args.verbose, backup_dir=ctx["backup_root"] / f"fold_{number}")
        test_ds = tf.data.Dataset.from_tensor_slices((test_x, test_y)).batch(batch)
        predictor = model.task_model if dimensions else model
        _, y_true, logits, predicted = _predict(predictor, test_ds, dimensions, ctx["jit"])
        if val:
            _, val_true, val_logits, val_predicted = _predict(
                predictor, tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(batch), dimensions, ctx["jit"])
        info["feature_fingerprint"] = feature_fp
    else:
        fusion, cache_dir = args.fusion, ctx["cache_dir"]

        def epoch_dataset(epoch):
            # Order fixed by (seed, epoch): a resumed run replays the same batches.
            if dimensions:
                return MT.with_targets(clip_dataset(cache_dir, train, fusion, batch, training=True, seed=args.seed,
                                                    epoch=epoch, with_keys=True), train, dimensions,
                                       num_classes if soft else None)
            return clip_dataset(cache_dir, train, fusion, batch, training=True, seed=args.seed, epoch=epoch)

        val_data = None
        if val:
            if dimensions:
                val_data = T.with_data_sharding(MT.with_targets(
                    clip_dataset(cache_dir, val, fusion, batch, with_keys=True), val, dimensions,
                    num_classes if soft else None))
            else:
                val_data = clip_dataset(cache_dir, val, fusion, batch)
                val_data = T.with_data_sharding(val_data.map(to_onehot) if soft else val_data)
        with strategy.scope():
            model = trainable(classifier)
            optimizer = T.make_optimizer(settings, steps, args.epochs, classifier.backbone.depth)
            compile_model(model, optimizer)
        info = T.fit_resumable(model, fold_dir=fold_dir, epoch_dataset=epoch_dataset, steps_per_epoch=steps,
                               epochs=args.epochs, val_data=val_data, monitor=monitor, mix=mix, seed=args.seed,
                               verbose=args.verbose, backup_dir=ctx["backup_root"] / f"fold_{number}")
        test_keys, y_true, logits, predicted = _predict(
            classifier, clip_dataset(cache_dir, test, fusion, batch, with_keys=True), dimensions, ctx["jit"])
        y_true, logits, predicted = _in_order(test, test_keys, y_true, logits, predicted)
        if val:
            val_keys, val_true, val_logits, val_predicted = _predict(
                classifier, clip_dataset(cache_dir, val, fusion, batch, with_keys=True), dimensions, ctx["jit"])
            val_true, val_logits, val_predicted = _in_order(val, val_keys, val_true, val_logits, val_predicted)
    expected = np.array([r.label for r in test], np.int64)
    if not np.array_equal(y_true, expected):
        raise DatasetError(f"fold {number}: test labels from the cache disagree with the manifest")
    result = metrics_lib.evaluate_predictions(y_true, logits, class_names=ctx["class_names"])
    extra = {}
    if dimensions:
        from mmder_tf.training import multitask as MT

        extra = MT.dimension_arrays(test, predicted, dimensions)
        result["dimensions"] = {d: metrics_lib.evaluate_regression(extra[f"true_{d}"], extra[f"pred_{d}"])
                                for d in dimensions}
        result["uncertainty"] = model.uncertainty_report()
        result["task_weighting"] = args.task_weighting
        result["target_statistics"] = target_statistics
        result["weights_wrapper"] = "multitask"  # checkpoints hold MultiTaskModel(model) weights
    result.update(
        fold=number, test_subjects=list(fold.test_subjects), val_subjects=list(fold.val_subjects),
        train_subjects=list(fold.train_subjects), n_train=len(train), n_val=len(val),
        epoch_policy=info["epoch_policy"], selected_epoch=info["selected_epoch"],
        checkpoint=("best" if info["best_epoch"] is not None and monitor else "last"),
        weights_kind="head" if cached else "classifier", feature_cache=bool(cached),
        resumed_from_epoch=info["resumed_from"], train_seconds_this_session=round(__import__("time").time() - started, 2),
        history=info["history"], feature_fingerprint=info.get("feature_fingerprint"),
    )
    if val:  # for ensembles whose weights are chosen on the validation subjects
        val_extra = MT.dimension_arrays(val, val_predicted, dimensions) if dimensions else {}
        atomic_save_npz(fold_dir / "val_predictions.npz", keys=np.array([r.key for r in val]), y_true=val_true,
                        logits=val_logits, **val_extra)
    atomic_save_npz(fold_dir / "predictions.npz", keys=np.array([r.key for r in test]), y_true=y_true, logits=logits,
                    **extra)
    atomic_write_json(_fold_result_path(fold_dir), result)  # last: marks the fold finished
    ccc_text = "".join(f"  CCC {d} {v['ccc']:.3f}" for d, v in result.get("dimensions", {}).items())
    _log(f"fold {number}: UAR {100 * result['uar']:.2f}  WAR {100 * result['war']:.2f}{ccc_text}  "
         f"({result['epoch_policy']}, epoch {result['selected_epoch']})")
    return result


def _predict(model, batches, dimensions, jit):
    """(keys or None, labels, logits, {dimension: values}) of a model over (x, y[, key]) batches."""
    from mmder_tf.training.multitask import predict_batches

    return predict_batches(model, batches, dimensions, jit)


def _in_order(records, keys, labels, logits, predicted):
    """Predictions back in the records' (manifest) order."""
    order = {k: i for i, k in enumerate(keys)}
    rank = [order[r.key] for r in records]
    return labels[rank], logits[rank], {d: v[rank] for d, v in predicted.items()}


def feature_table(args, ctx, classifier, records):
    """Pooled frozen-encoder features of `records`, computed once and cached on disk.

    The file is keyed by a fingerprint of the encoder's weight values and the
    preprocessing, so any change of weights, preset, image size or strategy
    computes new features, and folds (which share clips) reuse them.
    """
    import numpy as np
    from tqdm import tqdm

    from mmder_tf.training import engine as T
    from mmder_tf.reports.results import atomic_save_npz

    key = T.fingerprint({
        "encoder": T.weights_fingerprint(classifier.backbone.weights),
        "fusion": args.fusion.to_dict(), "preset": args.preset, "precision": ctx["policy"],
        "cache": str(Path(ctx["cache_dir"]).resolve()),
    })
    path = ctx["work"] / "features" / f"{key}.npz"
    table, index = None, {}
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            table = {"keys": list(data["keys"]), "features": data["features"]}
        index = {k: i for i, k in enumerate(table["keys"])}
    missing = [r for r in records if r.key not in index]
    if missing:
        extractor = classifier.feature_extractor()
        batches = clip_dataset(ctx["cache_dir"], missing, args.fusion, args.batch_size, with_keys=True)
        new_keys, _, computed = predict_with_keys(
            extractor, tqdm(batches, desc="frozen-encoder features", unit="batch",
                            total=-(-len(missing) // args.batch_size), disable=args.verbose == 0), ctx["jit"])
        keys = (table["keys"] if table else []) + new_keys
        values = computed if table is None else np.concatenate([table["features"], computed])
        table = {"keys": keys, "features": values.astype(np.float32)}
        atomic_save_npz(path, keys=np.array(keys), features=table["features"])
        index = {k: i for i, k in enumerate(keys)}
    table["index"] = index
    return table, key


def summarize_run(args, ctx, fold_results: dict) -> dict:
    from mmder_tf.reports import metrics as metrics_lib

    from mmder_tf.training.multitask import read_dimension_arrays

    raw, dimension_values = {}, {}
    for number, result in fold_results.items():
        import numpy as np

        with np.load(ctx["work"] / f"fold_{number}" / "predictions.npz") as data:
            raw[number] = {"y_true": data["y_true"], "y_pred": data["logits"]}
            found = read_dimension_arrays(data)
            if found:
                dimension_values[number] = found
    summary = metrics_lib.summarize_folds(raw, class_names=ctx["class_names"])
    folds = {}
    for number, result in fold_results.items():
        entry = {k: v for k, v in result.items() if k != "history"}
        folds[str(number)] = entry
    policies = sorted({r["epoch_policy"] for r in fold_results.values()})
    return {
        "run": ctx["run_info"], "class_names": ctx["class_names"], "folds": folds,
        "uar_mean": summary["uar_mean"], "uar_std": summary["uar_std"],
        "war_mean": summary["war_mean"], "war_std": summary["war_std"],
        "pooled": summary.get("pooled"), "epoch_policy": "; ".join(policies),
        "skipped_clips": ctx["skipped"], "std": "sample standard deviation across folds (ddof=1)",
        **({"dimensions": metrics_lib.summarize_dimensions(dimension_values),
            "uncertainty": {str(n): r["uncertainty"] for n, r in fold_results.items() if r.get("uncertainty")}}
           if dimension_values else {}),
    }


def run_protocol(args) -> dict:
    """The whole run: data, folds, cache, every fold, reports. Returns the results dict."""
    import json

    from mmder_tf.training import engine as T
    from mmder_tf.reports.results import atomic_write_json, format_table, write_run_report

    # Data and folds first (no TF): a bad dataset or fold request fails in seconds.
    manifest = load_run_manifest(args)
    if not manifest.records:
        raise DatasetError("the dataset has no usable clips")
    class_names = list(manifest.class_names)
    selected = run_folds(args, manifest)
    strategy = T.make_strategy(args.distribute)  # before any other TF work: multi-worker needs that
    kind = T.device_kind()
    policy = T.resolve_precision(args.precision, kind)
    T.set_precision(policy)
    jit = T.resolve_jit(args.jit_compile, kind)
    is_chief, task = T.worker_info(strategy)
    out = Path(args.out)
    work = out if is_chief else out / ".workers" / f"worker{task}"
    settings = T.recipe_settings(args.recipe, args.batch_size, args.lr)
    with strategy.scope():
        # Fails fast on weights of another preset or a broken checkpoint, before any preprocessing.
        probe = build_classifier(args, len(class_names), class_names)
        del probe

    if args.dimensions and (settings["mixup"] > 0 or settings["cutmix"] > 0):
        raise ConfigError(f"--recipe {args.recipe} mixes clips (mixup / CutMix), which would need mixed dimension "
                          "targets: train emotion dimensions with --recipe paper")
    augmentation = settings["mixup"] > 0 or settings["cutmix"] > 0 or (
        args.fusion.strategy == "rfas" and args.fusion.rfas_per_epoch)
    # Caching is exact only when the frozen encoder sees each clip the same way every epoch.
    feature_cache = args.mode == "linear_probe" and not args.no_feature_cache and not augmentation
    run_info = {
        "strategy": args.strategy, "dataset": args.dataset, "preset": args.preset, "mode": args.mode,
        "recipe": args.recipe, "epochs": args.epochs, "batch_size": args.batch_size, "lr": settings["lr"],
        "image_size": args.image_size, "seed": args.seed, "precision": policy, "jit_compile": jit,
        "distribute": args.distribute, "replicas": strategy.num_replicas_in_sync, "official": args.official,
        "weights": args.weights, "select": args.select, "feature_cache": feature_cache,
        "num_clips": len(manifest.records), "num_subjects": len(manifest.subjects),
        "num_folds_run": len(selected), "targets": ["category", *args.dimensions],
        **({"task_weighting": args.task_weighting} if args.dimensions else {}),
    }
    _log("run: " + ", ".join(f"{k}={v}" for k, v in run_info.items()))
    cache_dir, records, skipped = prepare_cache(args, manifest)
    for entry in skipped:
        _log(f"skipped clip: {entry['path']}: {entry['reason']}")
    if is_chief:
        atomic_write_json(out / "run.json", {"args": {k: v for k, v in vars(args).items() if k != "fusion"},
                                             "fusion": args.fusion.to_dict(), "run": run_info,
                                             "cache_dir": str(cache_dir), "class_names": class_names})
    ctx = {
        "manifest": manifest, "class_names": class_names, "num_classes": len(class_names), "strategy": strategy,
        "settings": settings, "jit": jit, "policy": policy, "work": work, "cache_dir": cache_dir,
        "kept_keys": {r.key for r in records}, "feature_cache": feature_cache, "is_chief": is_chief,
        "backup_root": work / "backup", "skipped": skipped, "run_info": run_info,
    }
    fold_results = {}
    for number, fold in selected:
        fold_results[number] = train_and_test_fold(args, ctx, number, fold)
    results = summarize_run(args, ctx, fold_results)
    if is_chief:
        write_run_report(out, results)
    _log("\n" + format_table(results))
    if results.get("dimensions"):
        from mmder_tf.reports.results import format_dimensions_table

        _log("\n" + format_dimensions_table(results))
    _log(f"\n{args.strategy}: UAR {100 * results['uar_mean']:.2f} ± {100 * results['uar_std']:.2f}  "
         f"WAR {100 * results['war_mean']:.2f} ± {100 * results['war_std']:.2f}  -> {out / 'results.md'}")
    return results


def options_to_argv(options: dict) -> list[str]:
    """Keyword arguments -> CLI arguments: data_dir=... -> --data-dir ...; True -> the bare flag;
    None / False -> not given; folds as an int, a string or a list of fold numbers."""
    parser = build_parser()
    flags = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                flags[option[2:].replace("-", "_")] = action
    argv = []
    for name, value in options.items():
        if name not in flags:
            raise ConfigError(f"unknown option {name!r}; options: {', '.join(sorted(flags))}")
        action = flags[name]
        flag = action.option_strings[-1]
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} is a flag: pass True or False, got {value!r}")
            if value:
                argv.append(flag)
            continue
        if isinstance(value, bool):
            raise ConfigError(f"{name} takes a value, got {value!r}")
        if name == "folds" and isinstance(value, (list, tuple, set, range)):
            value = ",".join(str(int(v)) for v in value)
        argv += [flag, str(value)]
    return argv


def run(**options) -> dict:
    """Run the protocol from Python (notebooks): ``run(strategy="fslf", epochs=2, folds=1, out="runs/x")``.

    Keyword arguments are the CLI options with ``-`` -> ``_`` (see ``mmder-finetune --help``);
    flags take True/False and None means "not given" (the CLI default). Returns the
    results dict (what results.json holds) with ``"out"``, the run folder, added.
    Errors raise (ConfigError, DatasetError, CheckpointError, ...) instead of exiting.
    """
    args = resolve_options(options_to_argv(options), raise_errors=True)
    results = run_protocol(args)
    results = dict(results)
    results["out"] = Path(args.out)
    return results


def main(argv=None) -> int:
    try:
        args = resolve_options(argv)
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"mmder-finetune: error: {error}", file=sys.stderr)
        return 2
    try:
        results = run_protocol(args)
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"mmder-finetune: error: {error}", file=sys.stderr)
        return 2
    except MMDERError as error:
        print(f"mmder-finetune: error: {error}", file=sys.stderr)
        return 1
    return 0 if results is not None else 1


if __name__ == "__main__":
    sys.exit(main())
