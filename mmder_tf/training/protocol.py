"""The subject-independent cross-validation protocol of one run: data, folds, prepared cache, every fold, reports.

    config = RunConfig.resolve(strategy="fslf", epochs=2)   # or RunConfig.from_run("runs/x")
    results = run_protocol(config)

Data and folds are checked before TensorFlow starts, so a bad dataset or fold
request fails in seconds. A run is resumable: finished folds (fold_N/results.json)
are skipped and the current fold resumes from its last epoch (BackupAndRestore).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from mmder_tf.errors import ConfigError, DatasetError
from mmder_tf.training.config import RUN_FILE, RunConfig, check_recipe, run_file_contents


def log(message: str):
    print(message, flush=True)


# ----------------------------------------------------------------------------- data

def generate_demo_data(directory, actors: int, clips: int, seed: int, progress: bool = False,
                       dimensions: bool = False) -> Path:
    from mmder_tf.data import synthetic

    try:  # asked before the generator's worker processes each fail on it
        Path(directory).mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(directory))
    except OSError as error:
        raise ConfigError(f"cannot write the demo dataset to {directory} ({error.strerror}); pass --synthetic-dir "
                          "DIR (or set MMDER_CACHE) to a writable folder") from None
    synthetic.generate(directory, actors=actors, clips_per_class=clips, seed=seed, progress=progress,
                       dimensions=dimensions)
    return Path(directory)


def ensure_demo_data(directory=None, actors: int | None = None, clips: int | None = None, seed: int = 0) -> Path:
    """The embedded demo dataset's folder, generated first if missing (existing clips are kept).

    Defaults are the demo run's: the same actors, clips per class, seed and location
    (``$MMDER_CACHE`` or ``~/.cache/mmder_tf``, then ``synthetic/a<actors>_c<clips>_s<seed>``),
    so ``run()`` with no dataset afterwards finds the clips ready.
    """
    options = {"seed": seed, "synthetic_dir": directory, "synthetic_actors": actors, "synthetic_clips": clips}
    config = RunConfig.resolve(**options)
    return generate_demo_data(config.demo_data_dir, config.synthetic_actors, config.synthetic_clips, config.seed)


def load_run_manifest(config: RunConfig):
    """The manifest of the run; for the demo, generates the dataset first (kept between runs)."""
    from mmder_tf.data.datasets import attach_targets, load_manifest

    if config.dataset == "synthetic":
        from mmder_tf.data.synthetic import DIMENSIONS_TABLE

        directory = Path(config.data_dir) if config.data_dir else config.demo_data_dir
        if config.data_dir is None:
            log(f"generating the synthetic audio-visual dataset in {directory} (kept for later runs)")
            generate_demo_data(directory, config.synthetic_actors, config.synthetic_clips, config.seed,
                               config.verbose > 0, dimensions=config.synthetic_dimensions)
        manifest = load_manifest("ravdess", data_dir=directory)
        if (directory / DIMENSIONS_TABLE).is_file():  # generated with valence / arousal
            manifest = attach_targets(manifest, directory / DIMENSIONS_TABLE)
    else:
        options = {"num_classes": config.num_classes} if config.num_classes else {}
        manifest = load_manifest(config.dataset, data_dir=config.data_dir, manifest=config.manifest, **options)
    if config.targets_file:
        manifest = attach_targets(manifest, config.targets_file)
    if config.dimensions:
        from mmder_tf.training.multitask import check_dimensions

        check_dimensions(manifest, config.dimensions)
    return manifest


def run_folds(config: RunConfig, manifest):
    """(fold number, Fold with validation subjects) pairs of the folds the config selects."""
    from mmder_tf.data import folds as folds_lib
    from mmder_tf.errors import ConfigError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_folds = folds_lib.make_folds(manifest, k=config.num_folds, seed=config.seed)
    for warning in caught:
        log(f"note: {warning.message}")
    numbers = list(config.folds or range(1, len(all_folds) + 1))
    if numbers[-1] > len(all_folds):
        raise ConfigError(f"--folds {','.join(map(str, numbers))}: the protocol has only {len(all_folds)} folds")
    selected = []
    for number in numbers:
        fold = all_folds[number - 1]
        if config.select != "last":
            try:
                fold = folds_lib.with_validation(fold, manifest, num_subjects=config.val_subjects, seed=config.seed)
            except DatasetError:
                if config.val_subjects:
                    raise
                log(f"note: fold {number} has too few training subjects for a validation split; keeping the last epoch")
        selected.append((number, fold))
    return selected


def prepare_cache(config: RunConfig, manifest):
    """Prepared TFRecord cache of every clip (resumable); returns (cache dir, kept records, skipped list)."""
    from mmder_tf.data import prepare as prepare_lib

    cache_dir = config.cache_dir
    index = prepare_lib.prepare(manifest, cache_dir, config.fusion, num_workers=config.workers,
                                progress=config.verbose > 0)
    if not index.get("complete", True):
        raise DatasetError(f"{cache_dir}: the cache is incomplete (shards {index.get('missing_shards')} missing)")
    skipped = [{"key": None, "path": str(getattr(item, "path", item)), "reason": str(getattr(item, "reason", ""))}
               for item in getattr(manifest, "skipped", ())]
    kept = set()
    for entry in index["records"]:
        if entry["status"] == "ok":
            kept.add(entry["key"])
        else:
            # the record's path is already usable from here (absolute, or relative as --data-dir was given)
            skipped.append({"key": entry["key"], "path": entry["path"],
                            "reason": entry.get("skip_reason", entry["status"])})
    for line in prepare_lib.describe_duplicates(index):
        log(f"warning: {line} (the same recording would be in training and test: subject-independent scores "
            "would be too high)")
    from mmder_tf.data.pipeline import check_streams

    # audio-only recordings for a strategy that needs video: refused here, before any model is built
    check_streams([e for e in index["records"] if e["status"] == "ok"], (config.strategy,),
                  tolerant=config.handles_missing)
    records = [r for r in manifest.records if r.key in kept]
    return cache_dir, records, skipped


def clip_dataset(cache_dir, records, fusion, batch_size, *, training=False, seed=0, epoch=None, with_keys=False,
                 modality_dropout=None, modalities=None):
    """Fused uint8 clips and labels of `records` from the prepared cache (pipeline.make_dataset)."""
    from mmder_tf.data.pipeline import make_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped clips were reported once, at prepare
        return make_dataset(cache_dir, list(records), fusion, batch_size, training=training, seed=seed,
                            epoch=epoch, with_keys=with_keys, modality_dropout=modality_dropout,
                            modalities=modalities)


def epoch_order(count: int, seed: int, epoch: int):
    """The order of cached features in epoch `epoch`: a pure function of (seed, epoch), so a resume replays it."""
    return np.random.default_rng([seed, epoch, 8191]).permutation(count)


# ----------------------------------------------------------------------------- one fold

@dataclasses.dataclass
class RunState:
    """What every fold of a run shares once data, devices and cache are settled."""

    config: RunConfig
    manifest: object
    class_names: list
    strategy: object  # tf.distribute strategy
    settings: dict  # recipe hyper-parameters
    jit: bool
    policy: str  # dtype policy name
    work: Path  # where this worker writes (the run folder for the chief)
    cache_dir: Path
    kept_keys: set
    feature_cache: bool
    is_chief: bool
    skipped: list
    run_info: dict

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def clips(self, records, *, training=False, epoch=None, with_keys=False, modalities=None):
        """Training clips get the run's modality dropout; `modalities` fixes the input kind (evaluation)."""
        config = self.config
        return clip_dataset(self.cache_dir, records, config.fusion, config.batch_size, training=training,
                            seed=config.seed, epoch=epoch, with_keys=with_keys, modalities=modalities,
                            modality_dropout=config.modality_dropout if training and config.handles_missing else None)


# The inputs a model trained with modality dropout is tested on, besides audio-video.
SINGLE_MODALITY_KINDS = ("video", "audio")


def kind_predictions_path(fold_dir: Path, kind: str) -> Path:
    """Test predictions of one input kind: predictions.npz holds audio-video, predictions_<kind>.npz the others."""
    return Path(fold_dir) / ("predictions.npz" if kind == "audio_video" else f"predictions_{kind}.npz")


def evaluate_without_modalities(predict_logits, clips_of_kind, test, class_names, fold_dir, av_result: dict) -> dict:
    """A model trained with modality dropout on its test clips with video alone and audio alone.

    `predict_logits(dataset)` -> (keys, labels, logits); `clips_of_kind(kind)` the test
    clips' dataset of that input kind. Writes predictions_<kind>.npz; returns
    result["modalities"]: {"audio_video": from av_result, "video": {...}, "audio": {...}}.
    """
    from mmder_tf.reports import metrics as metrics_lib
    from mmder_tf.reports.results import atomic_save_npz

    found = {"audio_video": {k: av_result[k] for k in ("uar", "war", "n")}}
    for kind in SINGLE_MODALITY_KINDS:
        keys, labels, logits = predict_logits(clips_of_kind(kind))
        labels, logits, _ = in_order(test, keys, labels, logits, {})
        metrics = metrics_lib.evaluate_predictions(labels, logits, class_names=class_names)
        found[kind] = {k: metrics[k] for k in ("uar", "war", "n", "confusion")}
        atomic_save_npz(kind_predictions_path(fold_dir, kind), keys=np.array([r.key for r in test]),
                        y_true=labels, logits=logits)
    return found


def fold_result_path(fold_dir: Path) -> Path:
    return Path(fold_dir) / "results.json"


def train_and_test_fold(state: RunState, number: int, fold) -> dict:
    """Train one fold (resuming if a backup exists), test it, write fold_N/results.json last."""
    import tensorflow as tf

    from mmder_tf.data.folds import split
    from mmder_tf.reports import metrics as metrics_lib
    from mmder_tf.reports.results import atomic_save_npz, atomic_write_json
    from mmder_tf.training import engine, recipes
    from mmder_tf.training.features import feature_table
    from mmder_tf.training.model import build_classifier

    config = state.config
    fold_dir = state.work / f"fold_{number}"
    if fold_result_path(fold_dir).exists():
        log(f"fold {number}: already finished ({fold_result_path(fold_dir)}), skipping")
        return json.loads(fold_result_path(fold_dir).read_text())
    kept = state.kept_keys
    train, val, test = ([r for r in part if r.key in kept] for part in split(state.manifest, fold, validation=True))
    if not train or not test:
        raise DatasetError(f"fold {number}: no usable {'training' if not train else 'test'} clips after skipping bad ones")
    log(f"fold {number}: train {len(train)} clips ({len(fold.train_subjects)} subjects), "
        f"val {len(val)} ({len(fold.val_subjects)}), test {len(test)} ({', '.join(fold.test_subjects)})")
    settings, strategy, batch = state.settings, state.strategy, config.batch_size
    num_classes = state.num_classes
    steps = max(1, -(-len(train) // batch))
    # mixup / cutmix / label smoothing, and the speech recipe's spectrogram masks: one-hot (soft) targets
    mix = recipes.batch_augmenter(settings, num_classes, config.strategy)
    soft = mix is not None

    def to_onehot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), num_classes)

    with strategy.scope():
        # Stochastic depth in a frozen encoder would only add noise to its features.
        drop_path = settings["drop_path"] if config.mode == "finetune" else 0.0
        classifier = build_classifier(config, num_classes, state.class_names, drop_path=drop_path)
        loss, metric_list = recipes.make_loss_and_metrics(soft)
    dimensions = config.dimensions
    target_statistics = None
    if dimensions:
        from mmder_tf.training import multitask as MT

        # Standardised on the training clips only; the test fold's targets are never looked at.
        target_statistics = MT.set_target_statistics(classifier, train, dimensions)

    def trainable(model):
        """The model fit_resumable trains: itself, or inside the joint multi-task loss."""
        return MT.wrap(model, config, soft) if dimensions else model

    def compile_model(model, optimizer):
        if dimensions:
            optimizer.exclude_from_weight_decay(var_names=["log_variances"])
            model.compile(optimizer=optimizer, jit_compile=state.jit)
        else:
            model.compile(optimizer=optimizer, loss=loss, metrics=metric_list, jit_compile=state.jit)

    def predict(model, batches):
        """(keys or None, labels, logits, {dimension: values})."""
        found = engine.predict(model, batches, state.jit)
        if dimensions:
            return (found.keys, found.labels, *MT.split_outputs(found.outputs, dimensions))
        return found.keys, found.labels, found.outputs, {}

    monitor = None if config.select == "last" or not val else config.select
    started = time.time()
    fit = dict(fold_dir=fold_dir, steps_per_epoch=steps, epochs=config.epochs, monitor=monitor, seed=config.seed,
               verbose=config.verbose, backup_dir=state.work / "backup" / f"fold_{number}")
    feature_fp = None
    if state.feature_cache:
        features, feature_fp = feature_table(
            config, classifier, train + val + test, work_dir=state.work, cache_dir=state.cache_dir,
            precision=state.policy, jit_compile=state.jit,
            clip_dataset=lambda records, with_keys: state.clips(records, with_keys=with_keys))
        index = features["index"]

        def rows(records):
            return (features["features"][[index[r.key] for r in records]],
                    np.array([r.label for r in records], np.int64))

        train_x, train_y = rows(train)
        test_x, test_y = rows(test)
        if dimensions:
            train_y = MT.target_dict(train, train_y, dimensions, num_classes if soft else None)

        def epoch_dataset(epoch):
            order = epoch_order(len(train_x), config.seed, epoch)
            labels = {k: v[order] for k, v in train_y.items()} if dimensions else train_y[order]
            return tf.data.Dataset.from_tensor_slices((train_x[order], labels)).batch(batch)

        val_data = None
        if val:
            val_x, val_y = rows(val)
            if dimensions:
                val_data = engine.with_data_sharding(tf.data.Dataset.from_tensor_slices(
                    (val_x, MT.target_dict(val, val_y, dimensions, num_classes if soft else None))).batch(batch))
            else:
                val_data = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(batch)
                val_data = engine.with_data_sharding(val_data.map(to_onehot) if soft else val_data)
        with strategy.scope():
            model = trainable(classifier.head_model())
            optimizer = recipes.make_optimizer(settings, steps, config.epochs, classifier.backbone.depth)
            compile_model(model, optimizer)
        # Mixup on pooled features is not mixup of clips: feature caching is only used without it.
        info = engine.fit_resumable(model, epoch_dataset=epoch_dataset, val_data=val_data, **fit)
        predictor = model.task_model if dimensions else model
        _, y_true, logits, predicted = predict(predictor, tf.data.Dataset.from_tensor_slices((test_x, test_y))
                                               .batch(batch))
        if val:
            _, val_true, val_logits, val_predicted = predict(
                predictor, tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(batch))
    else:
        def epoch_dataset(epoch):
            # Order fixed by (seed, epoch): a resumed run replays the same batches.
            if dimensions:
                return MT.with_targets(state.clips(train, training=True, epoch=epoch, with_keys=True), train,
                                       dimensions, num_classes if soft else None)
            return state.clips(train, training=True, epoch=epoch)

        val_data = None
        if val:
            if dimensions:
                val_data = engine.with_data_sharding(MT.with_targets(
                    state.clips(val, with_keys=True), val, dimensions, num_classes if soft else None))
            else:
                val_data = state.clips(val)
                if config.handles_missing:
                    # the epoch is chosen for all three inputs the model is trained for, not for AV alone
                    for kind in SINGLE_MODALITY_KINDS:
                        val_data = val_data.concatenate(state.clips(val, modalities=kind))
                val_data = engine.with_data_sharding(val_data.map(to_onehot) if soft else val_data)
        with strategy.scope():
            model = trainable(classifier)
            optimizer = recipes.make_optimizer(settings, steps, config.epochs, classifier.backbone.depth)
            compile_model(model, optimizer)
        info = engine.fit_resumable(model, epoch_dataset=epoch_dataset, val_data=val_data, mix=mix, **fit)
        keys, y_true, logits, predicted = predict(classifier, state.clips(test, with_keys=True))
        y_true, logits, predicted = in_order(test, keys, y_true, logits, predicted)  # back to manifest order
        if val:
            keys, val_true, val_logits, val_predicted = predict(classifier, state.clips(val, with_keys=True))
            val_true, val_logits, val_predicted = in_order(val, keys, val_true, val_logits, val_predicted)
    expected = np.array([r.label for r in test], np.int64)
    if not np.array_equal(y_true, expected):
        raise DatasetError(f"fold {number}: test labels from the cache disagree with the manifest")
    result = metrics_lib.evaluate_predictions(y_true, logits, class_names=state.class_names)
    extra = {}
    if dimensions:
        extra = MT.dimension_arrays(test, predicted, dimensions)
        result["dimensions"] = {d: metrics_lib.evaluate_regression(extra[f"true_{d}"], extra[f"pred_{d}"])
                                for d in dimensions}
        result["uncertainty"] = model.uncertainty_report()
        result["task_weighting"] = config.task_weighting
        result["target_statistics"] = target_statistics
        result["weights_wrapper"] = "multitask"  # checkpoints hold MultiTaskModel(model) weights
    result.update(
        fold=number, test_subjects=list(fold.test_subjects), val_subjects=list(fold.val_subjects),
        train_subjects=list(fold.train_subjects), n_train=len(train), n_val=len(val),
        epoch_policy=info["epoch_policy"], selected_epoch=info["selected_epoch"],
        checkpoint=("best" if info["best_epoch"] is not None and monitor else "last"),
        weights_kind="head" if state.feature_cache else "classifier", feature_cache=state.feature_cache,
        resumed_from_epoch=info["resumed_from"], train_seconds_this_session=round(time.time() - started, 2),
        history=info["history"], feature_fingerprint=feature_fp,
    )
    if config.handles_missing:  # the same model on the test clips with one modality missing
        result["modalities"] = evaluate_without_modalities(
            lambda batches: predict(classifier, batches)[:3],
            lambda kind: state.clips(test, with_keys=True, modalities=kind),
            test, state.class_names, fold_dir, result)
    if val:  # for ensembles whose weights are chosen on the validation subjects
        val_extra = MT.dimension_arrays(val, val_predicted, dimensions) if dimensions else {}
        atomic_save_npz(fold_dir / "val_predictions.npz", keys=np.array([r.key for r in val]), y_true=val_true,
                        logits=val_logits, **val_extra)
    atomic_save_npz(fold_dir / "predictions.npz", keys=np.array([r.key for r in test]), y_true=y_true, logits=logits,
                    **extra)
    atomic_write_json(fold_result_path(fold_dir), result)  # last: marks the fold finished
    ccc = "".join(f"  CCC {d} {v['ccc']:.3f}" for d, v in result.get("dimensions", {}).items())
    kinds = "".join(f"  {kind} WAR {100 * v['war']:.2f}" for kind, v in result.get("modalities", {}).items()
                    if kind != "audio_video")
    log(f"fold {number}: UAR {100 * result['uar']:.2f}  WAR {100 * result['war']:.2f}{ccc}{kinds}  "
        f"({result['epoch_policy']}, epoch {result['selected_epoch']})")
    return result


def in_order(records, keys, labels, logits, predicted):
    """Predictions back in the records' (manifest) order."""
    order = {k: i for i, k in enumerate(keys)}
    rank = [order[r.key] for r in records]
    return labels[rank], logits[rank], {d: v[rank] for d, v in predicted.items()}


# ----------------------------------------------------------------------------- the whole run

def summarize_run(work_dir, fold_results: dict, class_names, run_info: dict, skipped: list) -> dict:
    """results.json of a run from its finished folds' results and predictions."""
    from mmder_tf.reports import metrics as metrics_lib

    from mmder_tf.training.multitask import read_dimension_arrays

    raw, dimension_values = {}, {}
    for number in fold_results:
        with np.load(Path(work_dir) / f"fold_{number}" / "predictions.npz") as data:
            raw[number] = {"y_true": data["y_true"], "y_pred": data["logits"]}
            found = read_dimension_arrays(data)
            if found:
                dimension_values[number] = found
    summary = metrics_lib.summarize_folds(raw, class_names=class_names)
    modalities = {}
    if all("modalities" in r for r in fold_results.values()):
        for kind in ("audio_video", *SINGLE_MODALITY_KINDS):
            kind_raw = {}
            for number in fold_results:
                with np.load(kind_predictions_path(Path(work_dir) / f"fold_{number}", kind)) as data:
                    kind_raw[number] = {"y_true": data["y_true"], "y_pred": data["logits"]}
            found = metrics_lib.summarize_folds(kind_raw, class_names=class_names)
            modalities[kind] = {k: found.get(k) for k in ("uar_mean", "uar_std", "war_mean", "war_std", "pooled")}
            modalities[kind]["folds"] = {str(n): v for n, v in found["folds"].items()}
    folds = {str(number): {k: v for k, v in result.items() if k != "history"}
             for number, result in fold_results.items()}
    policies = sorted({r["epoch_policy"] for r in fold_results.values()})
    return {
        "run": run_info, "class_names": list(class_names), "folds": folds,
        "uar_mean": summary["uar_mean"], "uar_std": summary["uar_std"],
        "war_mean": summary["war_mean"], "war_std": summary["war_std"],
        "pooled": summary.get("pooled"), "epoch_policy": "; ".join(policies),
        "skipped_clips": skipped, "std": "sample standard deviation across folds (ddof=1)",
        **({"modalities": modalities} if modalities else {}),
        **({"dimensions": metrics_lib.summarize_dimensions(dimension_values),
            "uncertainty": {str(n): r["uncertainty"] for n, r in fold_results.items() if r.get("uncertainty")}}
           if dimension_values else {}),
    }


def check_protocol(manifest):
    """Refuse a dataset no classifier or subject-independent protocol can be built from."""
    if not manifest.records:
        raise DatasetError("the dataset has no usable clips")
    present = sorted({r.label_name for r in manifest.records})
    if len(present) < 2:
        raise DatasetError(f"every clip has the label {present[0]!r}: a classifier needs at least two classes "
                           "(a one-class model is 100 % accurate and learns nothing)")
    if len(manifest.subjects) < 2:
        raise DatasetError(f"every clip is from subject {manifest.subjects[0]!r}: subject-independent folds need "
                           "at least two subjects (test on people the model never saw)")
    absent = [name for name in manifest.class_names if name not in present]
    if absent:
        log(f"warning: no clip of class(es) {', '.join(absent)}: the model still has their outputs, never trained")


def check_run_folder(out) -> None:
    """Refuse an --out that holds files a run did not write (a dataset, another tool's results).

    A run resumes into its own folder, so a folder is accepted when it is empty, or
    holds run.json, a prepared cache, fold or worker folders or a run's lock (a run
    interrupted before it wrote run.json leaves its cache). Anything else would get
    run files mixed into it, and a later cleanup of the run would take the user's files.
    """
    from mmder_tf.errors import ConfigError
    from mmder_tf.fileio import LOCK_NAME, describe_contents

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    cache = out / "cache"
    ours = ((out / RUN_FILE).is_file() or (out / LOCK_NAME).exists() or (out / ".workers").is_dir()
            or any(p.is_dir() and p.name[5:].isdigit() for p in out.glob("fold_*"))
            or (cache / "settings.json").is_file() or (cache / "index.json").is_file())
    if not ours:
        raise ConfigError(f"--out {out} holds {describe_contents(out)}, not a mmder-finetune run (no {RUN_FILE}): "
                          "training there would mix run files with them; choose a new or empty folder")


def run_protocol(config: RunConfig) -> dict:
    """The whole run: data, folds, cache, every fold, reports. Returns the results dict (results.json).

    One process writes a run folder at a time (fileio.WriterLock): a second one on
    the same --out stops with a message naming the first.
    """
    from mmder_tf.fileio import WriterLock, clean_stale_temps, describe_holder
    from mmder_tf.training import engine

    config.check_paths()
    check_run_folder(config.out)
    manifest = load_run_manifest(config)
    check_protocol(manifest)
    class_names = list(manifest.class_names)
    selected = run_folds(config, manifest)
    strategy = engine.make_strategy(config.distribute)  # before any other TF work: multi-worker needs that
    is_chief, task = engine.worker_info(strategy)
    out = Path(config.out)
    work = out if is_chief else out / ".workers" / f"worker{task}"
    with WriterLock(work, "mmder-finetune", "wait for it to finish (rerunning the same command later resumes "
                    "the run), or train into another --out") as lock:
        if lock.stale_holder:
            log(f"note: {work}: taking over from {describe_holder(lock.stale_holder)}, which is no longer running")
        for folder in [work, *work.glob("fold_*")]:
            clean_stale_temps(folder)  # half-written checkpoints and reports of a killed run
        return _run_locked(config, manifest, class_names, selected, strategy, is_chief, out, work)


def _run_locked(config: RunConfig, manifest, class_names, selected, strategy, is_chief, out, work) -> dict:
    from mmder_tf.reports.results import atomic_write_json, format_table, write_run_report
    from mmder_tf.training import engine, recipes
    from mmder_tf.training.model import build_classifier, preset_of

    kind = engine.device_kind()
    policy = engine.resolve_precision(config.precision, kind)
    engine.set_precision(policy)
    jit = engine.resolve_jit(config.jit_compile, kind)
    settings = recipes.recipe_settings(config.recipe, config.batch_size, config.lr)
    with strategy.scope():
        # Fails fast on weights of another preset or a broken checkpoint, before any preprocessing.
        architecture = preset_of(build_classifier(config, len(class_names), class_names).backbone)
    check_recipe(config.recipe, config.mode, architecture, config.lr)  # also when only --weights named the encoder

    if config.dimensions and (settings["mixup"] > 0 or settings["cutmix"] > 0):
        from mmder_tf.errors import ConfigError

        raise ConfigError(f"--recipe {config.recipe} mixes clips (mixup / CutMix), which would need mixed dimension "
                          "targets: train emotion dimensions with --recipe paper")
    augmentation = settings["mixup"] > 0 or settings["cutmix"] > 0 or config.handles_missing or (
        config.strategy == "rfas" and config.fusion.rfas_per_epoch) or (
        recipes.uses_masking(settings) and config.strategy == "audio")
    # Caching is exact only when the frozen encoder sees each clip the same way every epoch.
    feature_cache = config.mode == "linear_probe" and config.feature_cache and not augmentation
    run_info = {
        "strategy": config.strategy, "dataset": config.dataset, "preset": architecture, "mode": config.mode,
        "recipe": config.recipe, "epochs": config.epochs, "batch_size": config.batch_size, "lr": settings["lr"],
        "image_size": config.image_size, "seed": config.seed, "precision": policy, "jit_compile": jit,
        "distribute": config.distribute, "replicas": strategy.num_replicas_in_sync, "official": config.fusion.official,
        "weights": config.weights, "from_scratch": config.from_scratch, "mean": list(config.mean),
        "std": list(config.std), "select": config.select, "feature_cache": feature_cache,
        "num_clips": len(manifest.records), "num_subjects": len(manifest.subjects),
        "num_folds_run": len(selected), "targets": list(config.targets),
        "modality_dropout": dict(zip(("video", "audio"), config.modality_dropout)), "placeholder": config.placeholder,
        **({"task_weighting": config.task_weighting} if config.dimensions else {}),
    }
    log("run: " + ", ".join(f"{k}={v}" for k, v in run_info.items()))
    cache_dir, records, skipped = prepare_cache(config, manifest)
    for entry in skipped:
        log(f"skipped clip: {entry['path']}: {entry['reason']}")
    if is_chief:
        atomic_write_json(out / RUN_FILE, run_file_contents(config, run=run_info, cache_dir=str(cache_dir),
                                                            class_names=class_names))
    state = RunState(config=config, manifest=manifest, class_names=class_names, strategy=strategy,
                     settings=settings, jit=jit, policy=policy, work=work, cache_dir=cache_dir,
                     kept_keys={r.key for r in records}, feature_cache=feature_cache, is_chief=is_chief,
                     skipped=skipped, run_info=run_info)
    fold_results = {number: train_and_test_fold(state, number, fold) for number, fold in selected}
    results = summarize_run(work, fold_results, class_names, run_info, skipped)
    if is_chief:
        write_run_report(out, results)
    log("\n" + format_table(results))
    if results.get("dimensions"):
        from mmder_tf.reports.results import format_dimensions_table

        log("\n" + format_dimensions_table(results))
    if results.get("modalities"):
        from mmder_tf.reports.results import format_modalities_table

        log("\n" + format_modalities_table(results))
    log(f"\n{config.strategy}: UAR {100 * results['uar_mean']:.2f} ± {100 * results['uar_std']:.2f}  "
        f"WAR {100 * results['war_mean']:.2f} ± {100 * results['war_std']:.2f}  -> {out / 'results.md'}")
    return results
