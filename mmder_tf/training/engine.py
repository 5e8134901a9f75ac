"""Training engine: devices, precision, tf.distribute, resumable fits with best/last checkpoints, prediction.

Everything TF-specific (tf.data, tf.distribute, mixed precision) lives here and in
the other training modules; the models stay pure Keras. Recipes (optimizers,
schedules, augmentation) are in recipes.py, private Keras fixes in compat.py.

Resumability: each fold trains with keras.callbacks.BackupAndRestore. The
training data order of epoch e is a pure function of (seed, e) and the
augmentation draws of a batch are a pure function of (seed, e, step), so a run
killed after epoch k and restarted replays exactly the batches the uninterrupted
run would have seen from epoch k on.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

import keras

from mmder_tf.config import SEED_MIX
from mmder_tf.errors import ConfigError, TrainingDivergedError
from mmder_tf import compat
from mmder_tf.training.config import DISTRIBUTE_CHOICES, JIT_CHOICES, PRECISIONS


# ----------------------------------------------------------------------------- devices

def device_kind() -> str:
    """'tpu', 'gpu' or 'cpu': the accelerator the default strategy would use."""
    import tensorflow as tf

    if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
        return "tpu"
    try:
        if tf.config.list_logical_devices("TPU"):
            return "tpu"
    except Exception:  # noqa: BLE001 - TPU discovery fails in odd ways off-TPU
        pass
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def resolve_precision(precision: str = "auto", kind: str | None = None) -> str:
    """auto -> mixed_bfloat16 on TPU, mixed_float16 on GPU, float32 on CPU (CPUs lack fast fp16)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = kind or device_kind()
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(kind, "float32")


def resolve_jit(jit_compile: str = "auto", kind: str | None = None) -> bool:
    """auto -> XLA on GPU/TPU. Off on CPU: XLA's CPU compile time exceeds its gain for
    these small runs and it forbids some tf.data-side ops."""
    if jit_compile not in JIT_CHOICES:
        raise ConfigError(f"jit_compile must be one of {', '.join(JIT_CHOICES)}, got {jit_compile!r}")
    if jit_compile != "auto":
        return jit_compile == "on"
    return (kind or device_kind()) in ("gpu", "tpu")


def set_precision(policy: str):
    keras.mixed_precision.set_global_policy(policy)


def make_strategy(name: str = "none"):
    """The tf.distribute strategy for --distribute.

    multiworker reads TF_CONFIG (each worker runs the same command); tpu resolves
    the TPU from TPU_NAME / the local TPU VM.
    """
    import tensorflow as tf

    if name not in DISTRIBUTE_CHOICES:
        raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, got {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("--distribute multiworker needs TF_CONFIG set on every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def worker_info(strategy) -> tuple[bool, int]:
    """(is_chief, task index). Only the chief writes reports and checkpoints that others read."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0)
    return is_chief, task_id


# ----------------------------------------------------------------------------- fingerprints

def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_fingerprint(variables) -> str:
    """Hash of variable values: identifies frozen-encoder features whether the weights
    came from a checkpoint or a seeded random initialisation."""
    digest = hashlib.sha256()
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        digest.update(str(value.shape).encode())
        digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def repair_backup(backup_dir) -> bool:
    """Undo a kill that landed inside BackupAndRestore's own write of an epoch.

    Keras writes latest.weights.h5 and then training_metadata.json in place; with
    double_checkpoint it first copies the previous pair to *.bkp. A kill while the
    metadata is rewritten leaves it truncated next to the NEW weights, which Keras
    would not notice. Then the previous pair is put back, so the run resumes from
    the epoch before, consistently. Returns True when it repaired something.
    """
    backup_dir = Path(backup_dir)
    metadata = backup_dir / "training_metadata.json"
    previous = backup_dir / "training_metadata.json.bkp"
    if not metadata.exists():
        # AtomicBackupAndRestore killed between moving the last pair to *.bkp and renaming the new one in
        if previous.exists() and (backup_dir / "latest.weights.h5.bkp").exists():
            os.replace(backup_dir / "latest.weights.h5.bkp", backup_dir / "latest.weights.h5")
            os.replace(previous, metadata)
            return True
        return False
    try:
        int(json.loads(metadata.read_text())["epoch"])
        return False
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        int(json.loads(previous.read_text())["epoch"])
        weights = backup_dir / "latest.weights.h5.bkp"
        if not weights.exists():
            raise OSError(weights)
    except (OSError, ValueError, KeyError, TypeError):
        # nothing consistent to go back to: start this training from its beginning
        for name in ("training_metadata.json", "latest.weights.h5"):
            (backup_dir / name).unlink(missing_ok=True)
        return True
    os.replace(weights, backup_dir / "latest.weights.h5")
    os.replace(previous, metadata)
    return True


def read_backup_epoch(backup_dir) -> int:
    """The epoch BackupAndRestore will resume from (0 when there is no backup)."""
    path = Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


# ----------------------------------------------------------------------------- checkpoints / resumable fit

def _tensorboard_available() -> bool:
    """tensorflow-cpu does not pull in the tensorboard package that tf.summary needs."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def weights_nbytes(model) -> int:
    """Bytes of the tensors model.save_weights writes (the optimizer's slots included), HDF5 overhead aside."""
    return int(sum(np.prod(v.shape, dtype=np.int64) * np.dtype(getattr(v.dtype, "name", v.dtype)).itemsize
                   for v in compat.weight_entries(model).values()))


def save_weights_atomic(model, path):
    """save_weights to a temporary name, then rename: a kill mid-write leaves the old file.

    The free space is checked first: HDF5 crashes the process (SIGSEGV) when the disk fills
    mid-write; an OSError(ENOSPC) naming the file is what the commands report in one line.
    """
    from mmder_tf.fileio import ensure_space, replacing

    ensure_space(path, weights_nbytes(model) * 1.1)
    with replacing(path, suffix=".weights.h5") as tmp:  # Keras wants the suffix
        model.save_weights(str(tmp), overwrite=True)


class ResumableCheckpoint(keras.callbacks.Callback):
    """Best and last weights plus the history, resumable.

    Keras' ModelCheckpoint forgets its best value on restart (the first epoch after a
    resume would always overwrite best); this keeps best value, best epoch and the
    per-epoch history in state.json, truncated to the epochs the backup restored.
    """

    def __init__(self, fold_dir, monitor: str | None, initial_epoch: int):
        super().__init__()
        self.fold_dir = Path(fold_dir)
        self.monitor, self.initial_epoch = monitor, int(initial_epoch)
        self.state_path = self.fold_dir / "state.json"
        self.state = {"monitor": monitor, "best": None, "best_epoch": None, "history": []}

    def on_train_begin(self, logs=None):
        # Once per run: a later fit (the next chunk of epochs) continues the state it holds.
        if getattr(self, "_begun", False):
            return
        self._begun = True
        if self.state_path.exists() and self.initial_epoch > 0:
            state = json.loads(self.state_path.read_text())
            state["history"] = [h for h in state.get("history", []) if h["epoch"] < self.initial_epoch]
            if state.get("best_epoch") is not None and state["best_epoch"] >= self.initial_epoch:
                # The backup is older than best.weights.h5; recompute from the kept history.
                state["best"], state["best_epoch"] = (None, None)
                for h in state["history"]:
                    if self.monitor in h and self._improved(h[self.monitor], state["best"]):
                        state["best"], state["best_epoch"] = h[self.monitor], h["epoch"]
            self.state.update(state)

    def _improved(self, value, best):
        if best is None:
            return True
        return value < best if (self.monitor or "").endswith("loss") else value > best

    def on_epoch_end(self, epoch, logs=None):
        from mmder_tf.reports.results import atomic_write_json, atomic_write_text

        logs = {k: float(v) for k, v in (logs or {}).items()}
        save_weights_atomic(self.model, self.fold_dir / "last.weights.h5")
        if self.monitor and self.monitor in logs and self._improved(logs[self.monitor], self.state["best"]):
            save_weights_atomic(self.model, self.fold_dir / "best.weights.h5")
            self.state["best"], self.state["best_epoch"] = logs[self.monitor], epoch
        self.state["history"] = [h for h in self.state["history"] if h["epoch"] < epoch]
        self.state["history"].append({"epoch": epoch, **logs})
        self.state["last_epoch"] = epoch
        atomic_write_json(self.state_path, self.state)
        keys = sorted({k for h in self.state["history"] for k in h} - {"epoch"})
        rows = [",".join(["epoch"] + keys)]
        rows += [",".join([str(h["epoch"])] + [repr(h.get(k, float("nan"))) for k in keys])
                 for h in self.state["history"]]
        atomic_write_text(self.fold_dir / "history.csv", "\n".join(rows) + "\n")


class StopOnDivergence(keras.callbacks.Callback):
    """Raise TrainingDivergedError at the end of an epoch whose loss is NaN or infinite.

    Runs before the checkpoint callbacks, so the diverged epoch's weights are never
    saved, selected or evaluated: the run stops with a message instead of reporting
    chance-level metrics as if they were a result (Keras' TerminateOnNaN only stops quietly).
    """

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items() if k.endswith("loss") and not np.isfinite(float(v))}
        if bad:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(bad.items()))
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch + 1} ({detail}); no result is reported. Lower the learning "
                f"rate (--lr) or check the data; the checkpoints of the epochs before are kept")


EPOCHS_PER_FIT = 8  # epochs whose tf.data pipelines are built at once (fit_resumable)


def build_epoch_stream(epoch_dataset, initial_epoch: int, epochs: int, steps_per_epoch: int, mix=None, seed: int = 0,
                       float_batches: bool = False):
    """One dataset covering epochs [initial_epoch, epochs): epoch_dataset(e) must yield the
    batches of epoch e in an order fixed by (seed, e). mix(x, y, seed) augments a batch."""
    import tensorflow as tf

    stream = None
    for epoch in range(initial_epoch, epochs):
        part = epoch_dataset(epoch).take(steps_per_epoch)
        if mix is not None:
            part = part.enumerate().map(
                lambda i, xy, _e=epoch: mix(xy[0], xy[1], tf.stack([tf.constant(seed, tf.int64), _e * SEED_MIX + i])),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        stream = part if stream is None else stream.concatenate(part)
    if float_batches:
        stream = stream.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return stream.with_options(options).prefetch(tf.data.AUTOTUNE)


def _is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        getattr(strategy.extended, "_num_workers", 1) > 1


def with_data_sharding(dataset):
    """Workers share one file-less stream, so shard by element (FILE sharding would fail)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit_resumable(model, *, fold_dir, epoch_dataset, steps_per_epoch: int, epochs: int, val_data=None,
                  monitor: str | None = "val_accuracy", mix=None, seed: int = 0, tensorboard: bool = True,
                  verbose=1, backup_dir=None, extra_callbacks=()):
    """model.fit with BackupAndRestore, resumable best/last checkpoints and TensorBoard.

    The model must be compiled. Returns {"history", "best_epoch", "epoch_policy",
    "selected_epoch", "resumed_from"} and leaves the selected weights loaded: the
    best epoch on the validation split when there is one, else the last epoch.
    """
    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    backup_dir = Path(backup_dir or fold_dir / "backup")
    repair_backup(backup_dir)
    initial_epoch = min(read_backup_epoch(backup_dir), epochs)
    if val_data is None:
        monitor = None
    checkpoint = ResumableCheckpoint(fold_dir, monitor, initial_epoch)
    callbacks = [StopOnDivergence(), checkpoint, *extra_callbacks]
    if tensorboard and _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(fold_dir / "logs"), write_graph=False,
                                                     profile_batch=0))
    # Last, so a backup for epoch k exists only once the checkpoints of epoch k are on disk.
    # double_checkpoint keeps the previous epoch's pair, which repair_backup needs after a badly timed kill.
    callbacks.append(compat.atomic_backup_and_restore(str(backup_dir), save_weights_atomic))
    # Keras builds a multi-worker model by all-reducing (MEAN) the first batch, which the
    # collective ops cannot do for uint8/int tensors; the model takes floats 0..255 alike.
    multi_worker = _is_multi_worker(model.distribute_strategy)
    # One fit per chunk of epochs: the stream of all epochs was built up front (a tf.data
    # pipeline per epoch; --epochs 100 cost minutes and GBs before the first step).
    for start in range(initial_epoch, epochs, EPOCHS_PER_FIT):
        end = min(start + EPOCHS_PER_FIT, epochs)
        stream = build_epoch_stream(epoch_dataset, start, end, steps_per_epoch, mix, seed, float_batches=multi_worker)
        if start == initial_epoch:
            compat.prebuild_distributed(model, stream)
            if multi_worker:
                compat.patch_multi_worker_metric_reduce()
        model.fit(stream, initial_epoch=start, epochs=end, steps_per_epoch=steps_per_epoch, validation_data=val_data,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    state_path = fold_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"history": []}
    best_epoch = state.get("best_epoch")
    if monitor and best_epoch is not None and (fold_dir / "best.weights.h5").exists():
        model.load_weights(str(fold_dir / "best.weights.h5"))
        policy, selected = f"best {monitor} on the validation split (training subjects)", best_epoch
    else:
        if (fold_dir / "last.weights.h5").exists():
            model.load_weights(str(fold_dir / "last.weights.h5"))
        policy, selected = "last epoch (no validation split)", state.get("last_epoch", epochs - 1)
    return {"history": state.get("history", []), "best_epoch": best_epoch, "epoch_policy": policy,
            "selected_epoch": None if selected is None else int(selected) + 1, "resumed_from": initial_epoch}


class Predictions(NamedTuple):
    keys: list  # clip keys when the dataset yields (x, y, key), else empty
    labels: np.ndarray  # int64 [N]
    outputs: np.ndarray  # float32 [N, ...]; a dict of them for a model with emotion dimensions


def predict(model, dataset, jit_compile: bool = False) -> Predictions:
    """Keys, labels and float32 outputs of `model` over a finite (x, y) or (x, y, key) dataset, in order.

    A plain loop rather than model.predict: under a multi-worker strategy predict
    would shard the test set across workers, and every worker needs all of it.
    """
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True,
                          autograph=False)  # a plain call: nothing for AutoGraph to convert
    keys, labels, outputs = [], [], []
    for element in dataset:
        x, y = element[0], element[1]
        out = forward(x)
        # A model with emotion dimensions returns {"category": logits, dimension: values}.
        outputs.append({k: np.asarray(tf.cast(v, tf.float32)) for k, v in out.items()} if isinstance(out, dict)
                       else np.asarray(tf.cast(out, tf.float32)))
        labels.append(np.asarray(y))
        if len(element) > 2:
            keys.extend(k.decode() for k in np.asarray(element[2]))
    if not outputs:
        return Predictions([], np.zeros((0,), np.int64), np.zeros((0, 0), np.float32))
    if isinstance(outputs[0], dict):
        merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    else:
        merged = np.concatenate(outputs)
    return Predictions(keys, np.concatenate(labels).astype(np.int64), merged)
