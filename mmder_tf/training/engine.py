"""Training machinery: precision, distribution, optimizers, augmentation, resumable fits, the feature-cache linear probe.

Everything TF-specific (tf.data, tf.distribute, mixed precision) lives here; the
models in backbone.py / classifier.py stay pure Keras.

Resumability: each fold trains with keras.callbacks.BackupAndRestore. The
training data order of epoch e is a pure function of (seed, e) and the
augmentation draws of a batch are a pure function of (seed, e, step), so a run
killed after epoch k and restarted replays exactly the batches the uninterrupted
run would have seen from epoch k on.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from mmder_tf.errors import ConfigError

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_CHOICES = ("auto", "on", "off")
DISTRIBUTE_CHOICES = ("none", "mirrored", "multiworker", "tpu")
RECIPES = ("paper", "mae-dfer")


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
    import keras

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


# ----------------------------------------------------------------------------- optimizer

def layer_id(path: str, depth: int) -> int:
    """VideoMAE layer index for layer-wise lr decay: embeddings 0, block_i i+1, head depth+1."""
    parts = path.replace("\\", "/").split("/")
    for part in parts:
        if part.startswith("block_") and part[6:].isdigit():
            return int(part[6:]) + 1
    if any(p.startswith("patch_embed") or p.startswith("pos_embed") for p in parts):
        return 0
    return depth + 1


def _adam_base():
    import keras

    return keras.optimizers.Adam


def make_layer_decay_adamw(learning_rate, weight_decay: float, depth: int, layer_decay: float = 1.0,
                           no_decay_1d: bool = False, beta_1: float = 0.9, beta_2: float = 0.999,
                           epsilon: float = 1e-8, **kwargs):
    """AdamW whose learning rate (and decoupled weight decay) is scaled per variable by
    layer_decay ** (depth + 1 - layer_id): lower blocks of a pre-trained encoder move less.

    Scaling gradients would not work (Adam normalises them away), so the scale is
    applied to the step size inside update_step, which every backend and
    tf.distribute call per variable. The decay is applied there too, so it uses
    the same scaled rate as in the reference (timm) recipe.
    """
    import keras

    class LayerDecayAdamW(_adam_base()):
        def __init__(self, learning_rate, decoupled_weight_decay, depth, layer_decay, no_decay_1d, **kw):
            super().__init__(learning_rate=learning_rate, weight_decay=None, **kw)
            self.decoupled_weight_decay = float(decoupled_weight_decay)
            self.depth = int(depth)
            self.layer_decay = float(layer_decay)
            self.no_decay_1d = bool(no_decay_1d)
            self._lr_scales = []
            self._decays = []

        def build(self, variables):
            super().build(variables)
            self._lr_scales = [self.layer_decay ** (self.depth + 1 - layer_id(v.path, self.depth)) for v in variables]
            self._decays = [0.0 if (self.no_decay_1d and len(v.shape) <= 1) or not self._use_weight_decay(v)
                            else self.decoupled_weight_decay for v in variables]

        def lr_scale(self, variable) -> float:
            return self._lr_scales[self._get_variable_index(variable)]

        def update_step(self, gradient, variable, learning_rate):
            index = self._get_variable_index(variable)
            scaled = keras.ops.cast(learning_rate, variable.dtype) * self._lr_scales[index]
            if self._decays[index]:
                variable.assign(variable - variable * (self._decays[index] * scaled))
            return super().update_step(gradient, variable, scaled)

        def get_config(self):
            config = super().get_config()
            config.update(decoupled_weight_decay=self.decoupled_weight_decay, depth=self.depth,
                          layer_decay=self.layer_decay, no_decay_1d=self.no_decay_1d)
            return config

    return LayerDecayAdamW(learning_rate, weight_decay, depth, layer_decay, no_decay_1d,
                           beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)


def warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 1e-6):
    import keras

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up from 0 to base_lr, then half-cosine down to min_lr (per step)."""

        def __init__(self, base_lr, total_steps, warmup_steps, min_lr):
            self.base_lr, self.total_steps = float(base_lr), max(1, int(total_steps))
            self.warmup_steps, self.min_lr = max(0, int(warmup_steps)), float(min(min_lr, base_lr))

        def __call__(self, step):
            ops = keras.ops
            step = ops.cast(step, "float32")
            warm = self.base_lr * (step + 1.0) / max(1, self.warmup_steps)
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip(progress, 0.0, 1.0)
            cosine = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + ops.cos(math.pi * progress))
            return ops.where(step < self.warmup_steps, warm, cosine)

        def get_config(self):
            return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                    "warmup_steps": self.warmup_steps, "min_lr": self.min_lr}

    return WarmupCosine(base_lr, total_steps, warmup_steps, min_lr)


RECIPE_DEFAULTS = {
    # Paper / official code: AdamW lr 1e-2, wd 0.05, constant lr, hard labels.
    "paper": dict(lr=1e-2, weight_decay=0.05, warmup_epochs=0, cosine=False, layer_decay=1.0,
                  drop_path=0.0, label_smoothing=0.0, mixup=0.0, cutmix=0.0, no_decay_1d=False),
    # MAE-DFER / VideoMAE full fine-tuning (REFERENCE.md section 6); lr is per 256 clips.
    "mae-dfer": dict(lr=1e-3, weight_decay=0.05, warmup_epochs=5, cosine=True, layer_decay=0.75,
                     drop_path=0.1, label_smoothing=0.1, mixup=0.8, cutmix=1.0, no_decay_1d=True),
}


def recipe_settings(recipe: str, batch_size: int, lr: float | None = None) -> dict:
    if recipe not in RECIPES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    settings = dict(RECIPE_DEFAULTS[recipe])
    if lr is not None:
        settings["lr"] = float(lr)
    elif recipe == "mae-dfer":
        settings["lr"] = settings["lr"] * batch_size / 256
    return settings


def make_optimizer(settings: dict, steps_per_epoch: int, epochs: int, depth: int):
    lr = settings["lr"]
    if settings.get("cosine"):
        lr = warmup_cosine(lr, steps_per_epoch * epochs, steps_per_epoch * settings.get("warmup_epochs", 0))
    if settings.get("layer_decay", 1.0) == 1.0 and not settings.get("no_decay_1d"):
        import keras

        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=settings["weight_decay"])
    return make_layer_decay_adamw(lr, settings["weight_decay"], depth, settings.get("layer_decay", 1.0),
                                  settings.get("no_decay_1d", False))


def make_loss_and_metrics(soft_labels: bool, label_smoothing: float = 0.0):
    """Hard labels: sparse CE + sparse accuracy (paper). Soft labels (mixup/cutmix or
    smoothing): categorical CE on one-hot targets, whose metric is categorical accuracy."""
    import keras

    if soft_labels:
        return (keras.losses.CategoricalCrossentropy(from_logits=True),
                [keras.metrics.CategoricalAccuracy(name="accuracy")])
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            [keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


# ----------------------------------------------------------------------------- augmentation

def _beta(seed, alpha):
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
    return a / (a + b)


def mix_batch(x, y, seed, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              label_smoothing: float = 0.0, switch_prob: float = 0.5):
    """timm-style mixup / cutmix of one batch with its reversed self (stateless, seeded).

    x: uint8 [B, T, H, W, 3]; y: int [B]. Returns float32 0..255 inputs and soft
    one-hot targets (label smoothing folded in). The cutmix box is the same for all
    T frames, like timm's video mixup; lambda is corrected to the box's true area.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    off = label_smoothing / num_classes
    onehot = tf.one_hot(tf.cast(y, tf.int32), num_classes, on_value=1.0 - label_smoothing + off, off_value=off)
    x = tf.cast(x, tf.float32)
    x_flip, y_flip = tf.reverse(x, [0]), tf.reverse(onehot, [0])
    use_cutmix = (cutmix_alpha > 0) and (mixup_alpha <= 0)
    if cutmix_alpha > 0 and mixup_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], seeds[0]) < switch_prob
    height, width = tf.shape(x)[2], tf.shape(x)[3]

    def do_mixup():
        lam = _beta(seeds[1], mixup_alpha) if mixup_alpha > 0 else tf.constant(1.0)
        return x * lam + x_flip * (1.0 - lam), lam

    def do_cutmix():
        lam = _beta(seeds[2], cutmix_alpha) if cutmix_alpha > 0 else tf.constant(1.0)
        ratio = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
        cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
        centre = tf.random.stateless_uniform([2], seeds[3])
        cy = tf.cast(centre[0] * tf.cast(height, tf.float32), tf.int32)
        cx = tf.cast(centre[1] * tf.cast(width, tf.float32), tf.int32)
        y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h // 2, 0, height)
        x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w // 2, 0, width)
        rows = tf.logical_and(tf.range(height) >= y0, tf.range(height) < y1)
        cols = tf.logical_and(tf.range(width) >= x0, tf.range(width) < x1)
        box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), tf.float32)[None, None, :, :, None]
        mixed = x * (1.0 - box) + x_flip * box
        area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(height * width, tf.float32)
        return mixed, 1.0 - area

    if isinstance(use_cutmix, bool):
        mixed, lam = do_cutmix() if use_cutmix else do_mixup()
    else:
        mixed, lam = tf.cond(use_cutmix, do_cutmix, do_mixup)
    return mixed, onehot * lam + y_flip * (1.0 - lam)


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


def read_backup_epoch(backup_dir) -> int:
    """The epoch BackupAndRestore will resume from (0 when there is no backup)."""
    path = Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


# ----------------------------------------------------------------------------- checkpoints / resumable fit

def _keras():
    import keras

    return keras


def _tensorboard_available() -> bool:
    """tensorflow-cpu does not pull in the tensorboard package that tf.summary needs."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def save_weights_atomic(model, path):
    """save_weights to a temporary name, then rename: a kill mid-write leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp.weights.h5")
    model.save_weights(str(tmp), overwrite=True)
    os.replace(tmp, path)


def make_checkpoint_callback(fold_dir, monitor: str | None, initial_epoch: int):
    """Best and last weights plus the history, resumable.

    Keras' ModelCheckpoint forgets its best value on restart (the first epoch after a
    resume would always overwrite best); this keeps best value, best epoch and the
    per-epoch history in state.json, truncated to the epochs the backup restored.
    """
    from mmder_tf.reports.results import atomic_write_json, atomic_write_text

    keras = _keras()
    fold_dir = Path(fold_dir)

    class ResumableCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.state_path = fold_dir / "state.json"
            self.state = {"monitor": monitor, "best": None, "best_epoch": None, "history": []}

        def on_train_begin(self, logs=None):
            if self.state_path.exists() and initial_epoch > 0:
                state = json.loads(self.state_path.read_text())
                state["history"] = [h for h in state.get("history", []) if h["epoch"] < initial_epoch]
                if state.get("best_epoch") is not None and state["best_epoch"] >= initial_epoch:
                    # The backup is older than best.weights.h5; recompute from the kept history.
                    kept = [h for h in state["history"] if monitor in h]
                    state["best"], state["best_epoch"] = (None, None)
                    for h in kept:
                        if self._improved(h[monitor], state["best"]):
                            state["best"], state["best_epoch"] = h[monitor], h["epoch"]
                self.state.update(state)

        @staticmethod
        def _improved(value, best):
            if best is None:
                return True
            return value < best if (monitor or "").endswith("loss") else value > best

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            save_weights_atomic(self.model, fold_dir / "last.weights.h5")
            if monitor and monitor in logs and self._improved(logs[monitor], self.state["best"]):
                save_weights_atomic(self.model, fold_dir / "best.weights.h5")
                self.state["best"], self.state["best_epoch"] = logs[monitor], epoch
            self.state["history"] = [h for h in self.state["history"] if h["epoch"] < epoch]
            self.state["history"].append({"epoch": epoch, **logs})
            self.state["last_epoch"] = epoch
            atomic_write_json(self.state_path, self.state)
            keys = sorted({k for h in self.state["history"] for k in h} - {"epoch"})
            rows = [",".join(["epoch"] + keys)]
            rows += [",".join([str(h["epoch"])] + [repr(h.get(k, float("nan"))) for k in keys]) for h in self.state["history"]]
            atomic_write_text(fold_dir / "history.csv", "\n".join(rows) + "\n")

    return ResumableCheckpoint()


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
                lambda i, xy, _e=epoch: mix(xy[0], xy[1], tf.stack([tf.constant(seed, tf.int64), _e * 1_000_003 + i])),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        stream = part if stream is None else stream.concatenate(part)
    if float_batches:
        stream = stream.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return stream.with_options(options).prefetch(tf.data.AUTOTUNE)


def _prebuild_distributed(model, stream):
    """Build compile state from the stream's element spec instead of Keras' default.

    Under a tf.distribute strategy Keras 3 (3.15) builds the model by pulling the
    first batch out of the training iterator and all-reducing it: that batch is then
    missing from epoch 1 (with steps_per_epoch the iterator persists), and
    MultiWorkerMirroredStrategy cannot reduce it eagerly at all. Shapes and dtypes
    are all the build needs, and the element spec has them.
    """
    if getattr(model, "_distribute_strategy", None) is None:
        return
    spec = stream.element_spec
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=tuple(spec) if isinstance(spec, (tuple, list)) else spec)
    model._maybe_symbolic_build = lambda *args, **kwargs: None


def _patch_multi_worker_metric_reduce():
    """Keras 3.15 reduces the per-step logs of a multi-worker run with
    strategy.reduce("MEAN", v, axis=0), which fails on the scalar metric results.
    The results are already cross-replica values (metric variables are synchronised),
    so reducing scalars over no axis is exact. Applied only to multi-worker runs."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer.reduce_per_replica, "_mmder_patched", False):
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def _mean(v):
                return strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0) \
                    if isinstance(v, tf.distribute.DistributedValues) else v
            return tf.nest.map_structure(_mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica._mmder_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


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
    keras = _keras()
    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    backup_dir = Path(backup_dir or fold_dir / "backup")
    initial_epoch = min(read_backup_epoch(backup_dir), epochs)
    if val_data is None:
        monitor = None
    checkpoint = make_checkpoint_callback(fold_dir, monitor, initial_epoch)
    callbacks = [checkpoint, *extra_callbacks]
    if tensorboard and _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(fold_dir / "logs"), write_graph=False,
                                                     profile_batch=0))
    # Last, so a backup for epoch k exists only once the checkpoints of epoch k are on disk.
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False))
    if initial_epoch < epochs:
        # Keras builds a multi-worker model by all-reducing (MEAN) the first batch, which the
        # collective ops cannot do for uint8/int tensors; the model takes floats 0..255 alike.
        multi_worker = _is_multi_worker(model.distribute_strategy)
        stream = build_epoch_stream(epoch_dataset, initial_epoch, epochs, steps_per_epoch, mix, seed,
                                    float_batches=multi_worker)
        _prebuild_distributed(model, stream)
        if multi_worker:
            _patch_multi_worker_metric_reduce()
        model.fit(stream, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=val_data,
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


def predict_logits(model, dataset, jit_compile: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(labels, float32 logits) over a finite (x, y) dataset, in dataset order.

    A plain loop rather than model.predict: under a multi-worker strategy predict
    would shard the test set across workers, and every worker needs all of it.
    """
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True)
    labels, logits = [], []
    for x, y in dataset:
        logits.append(np.asarray(tf.cast(forward(x), tf.float32)))
        labels.append(np.asarray(y))
    if not logits:
        return np.zeros((0,), np.int64), np.zeros((0, 0), np.float32)
    return np.concatenate(labels).astype(np.int64), np.concatenate(logits)
