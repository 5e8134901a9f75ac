"""Every use of private Keras internals, in one place, checked against the Keras versions they were written for.

Keras' public API lacks four things this package needs:

- `variable_index(optimizer, variable)`: which slot of an optimizer a variable is
  (per-variable learning-rate scales of layer-wise decay).
- `prebuild_distributed(model, dataset)` and `patch_multi_worker_metric_reduce()`:
  two fixes for `model.fit` under tf.distribute (see their docstrings).
- `atomic_backup_and_restore(...)`: BackupAndRestore writing by renames (a full disk keeps the last epoch).
- `weight_entries(model)`: where `save_weights` puts each variable in a .weights.h5
  file, so a strict loader can name every missing, unexpected or mis-shaped tensor.
- `scale_loss_for_distribution(loss)`: a custom train step's loss divided by the
  replicas in sync, as Keras' own losses are (wrong gradients under tf.distribute without it).
- `sublayers(model)`, `uses_weight_decay(optimizer, variable)`: a model's nested layers,
  and whether an optimizer's own exclusions (`exclude_from_weight_decay`) spare a variable.

Each fails loudly (`KerasInternalsError`) when the internal has moved, never by falling back
to something that silently computes another thing.

`tests/test_compat.py` exercises each against the installed Keras and fails when
Keras changes under them; `check_keras_version()` warns when running a Keras
outside `TESTED_KERAS` (the code may still work; the tests say whether it does).
"""
from __future__ import annotations

import warnings

TESTED_KERAS = ("3.15",)  # major.minor versions whose internals this module was checked against


def keras_minor_version() -> str:
    import keras

    return ".".join(keras.__version__.split(".")[:2])


def check_keras_version() -> bool:
    """True on a tested Keras; otherwise a warning naming this module (once per process)."""
    version = keras_minor_version()
    if version in TESTED_KERAS:
        return True
    warnings.warn(f"mmder_tf.compat uses private Keras internals checked on Keras {', '.join(TESTED_KERAS)}; "
                  f"this is Keras {version}: run tests/test_compat.py before trusting distributed training, "
                  "layer-wise lr decay or strict weight loading", RuntimeWarning, stacklevel=2)
    return False


class KerasInternalsError(RuntimeError):
    """A private Keras internal this package relies on is gone: update mmder_tf/compat.py."""


def _internal(owner, name: str, what: str):
    try:
        return getattr(owner, name)
    except AttributeError:
        raise KerasInternalsError(f"Keras {keras_minor_version()} has no {what} (mmder_tf.compat was checked on "
                                  f"Keras {', '.join(TESTED_KERAS)}): update mmder_tf/compat.py") from None


# ----------------------------------------------------------------------------- optimizers

def variable_index(optimizer, variable) -> int:
    """The optimizer's slot of `variable` (Keras 3: BaseOptimizer._get_variable_index)."""
    return _internal(optimizer, "_get_variable_index", "BaseOptimizer._get_variable_index")(variable)


def uses_weight_decay(optimizer, variable) -> bool:
    """False when the optimizer's `exclude_from_weight_decay` lists spare `variable` (BaseOptimizer._use_weight_decay)."""
    return bool(_internal(optimizer, "_use_weight_decay", "BaseOptimizer._use_weight_decay")(variable))


# ----------------------------------------------------------------------------- losses and layers

def scale_loss_for_distribution(loss):
    """`loss` / replicas in sync under a tf.distribute strategy, unchanged otherwise (what Keras' own
    losses do; keras.src.losses.loss.scale_loss_for_distribution)."""
    try:
        from keras.src.losses import loss as loss_module
    except ImportError:
        loss_module = None
    return _internal(loss_module, "scale_loss_for_distribution", "keras.src.losses.loss.scale_loss_for_distribution")(loss)


def sublayers(model) -> list:
    """Every layer nested in `model`, depth first, without the model itself (Layer._flatten_layers)."""
    return list(_internal(model, "_flatten_layers", "Layer._flatten_layers")(include_self=False, recursive=True))


# ----------------------------------------------------------------------------- tf.distribute fit

def prebuild_distributed(model, stream):
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


def patch_multi_worker_metric_reduce():
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


# ----------------------------------------------------------------------------- checkpoints

def atomic_backup_and_restore(backup_dir, save_weights):
    """keras.callbacks.BackupAndRestore whose files are replaced by renames, never rewritten in place.

    Keras writes latest.weights.h5 and training_metadata.json in place: a full disk or a kill
    mid-write left a truncated file that every rerun then failed to load. Here each file is written
    under a temporary name and renamed, the weights before the metadata, so the backup on disk is
    always a complete epoch (the previous one kept as *.bkp, as with double_checkpoint).
    `save_weights(model, path)` writes a weights file atomically (engine.save_weights_atomic).
    A later fit of the same run (the next chunk of epochs) does not reload what it already holds.
    Private: `_save_model`, the `_*_path` names, `_current_epoch`, `_last_batch_seen`, `model._initial_epoch`.
    """
    import json
    import os
    from pathlib import Path

    import keras

    from mmder_tf.fileio import atomic_write_text

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def __init__(self):
            super().__init__(backup_dir, delete_checkpoint=False, double_checkpoint=True)
            self.restored = False

        def on_train_begin(self, logs=None):
            if not self.restored:
                super().on_train_begin(logs)
                self.restored = True
            else:  # Keras' fit starts at model._initial_epoch when set: the restore's epoch, not this chunk's
                self.model._initial_epoch = None

        def _save_model(self):
            Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
            latest, metadata = Path(self._weights_path), Path(self._training_metadata_path)
            previous, previous_metadata = Path(self._prev_weights_path), Path(self._prev_training_metadata_path)
            upcoming = Path(self.backup_dir) / ".next.weights.h5"
            save_weights(self.model, upcoming)  # checks the space first: a full disk leaves the backup as it was
            if latest.exists() and metadata.exists():
                os.replace(latest, previous)
                os.replace(metadata, previous_metadata)
            os.replace(upcoming, latest)
            atomic_write_text(metadata, json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))

    return AtomicBackupAndRestore()


# ----------------------------------------------------------------------------- weights files

def weight_entries(model) -> dict[str, object]:
    """{dataset path inside a .weights.h5 that `model.save_weights` writes: the variable stored there}.

    Walks the model exactly as Keras' saver does (saving_lib._save_state) with a store
    that records instead of writing, so nothing is copied or written.
    """
    from keras.src.saving import saving_lib

    class _RecordingStore(saving_lib.H5IOStore):
        def __init__(self):  # no file: the parent opens one
            self.entries, self._prefix = {}, ""

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self._prefix = f"{path}/vars" if path else "vars"
            return self

        def __setitem__(self, key, value):
            self.entries[f"{self._prefix}/{key}"] = value

    store = _RecordingStore()
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    return store.entries
