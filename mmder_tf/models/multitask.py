"""Emotion dimensions beside the category: regression heads and the jointly trained multi-task loss.

Pure Keras 3 (keras.ops): runs on TensorFlow, JAX and PyTorch.

- `TargetScaling`: regression heads predict standardised values; this layer maps
  them back to the targets' own units (z * std + mean) with the training
  targets' statistics held as non-trainable weights, so a saved model predicts
  IEMOCAP valence on 1..5 and the statistics travel with the weights.
- `MultiTaskModel`: wraps a task model whose outputs are {"category": logits,
  <dimension>: value, ...} and trains it with one loss over all tasks. Missing
  targets (NaN) are masked out of their task's loss, never read as zero.
  Weighting "uncertainty" learns one log-variance s_t per task (Kendall, Gal &
  Cipolla, CVPR 2018, the multi-task loss MER 2023's hierarchical fusion used):
      category:   exp(-s_c) * CE          + s_c / 2     (softmax likelihood, 1 / sigma^2 scaled)
      dimension:  exp(-s_t) * MSE_t / 2   + s_t / 2     (Gaussian likelihood)
  with MSE_t on the standardised scale, so s_t settles at log(MSE_t) and
  s_c at log(2 CE): a task that stays noisy is weighted down instead of
  dominating. Weighting "fixed" uses the given weights (default 1 each).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from mmder_tf import compat
from mmder_tf.errors import ConfigError

CATEGORY = "category"
WEIGHTINGS = ("uncertainty", "fixed")


@keras.saving.register_keras_serializable(package="mmder_tf")
class TargetScaling(layers.Layer):
    """z [B, T] -> z * std + mean: standardised predictions back in the targets' units."""

    def __init__(self, num_targets, **kwargs):
        super().__init__(**kwargs)
        self.num_targets = int(num_targets)

    def build(self, input_shape):
        self.mean = self.add_weight(name="mean", shape=(self.num_targets,), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(self.num_targets,), initializer="ones", trainable=False)

    def call(self, z):
        return z * ops.cast(self.std, z.dtype) + ops.cast(self.mean, z.dtype)

    def set_statistics(self, mean, std):
        """Statistics of the training targets (missing ones left out); a constant target gets std 1."""
        import numpy as np

        mean = np.asarray(mean, np.float32).reshape(self.num_targets)
        std = np.asarray(std, np.float32).reshape(self.num_targets)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise ConfigError("target statistics must be finite (a dimension without any known training value?)")
        self.mean.assign(mean)
        self.std.assign(np.where(std > 1e-6, std, 1.0).astype(np.float32))

    def get_config(self):
        return {**super().get_config(), "num_targets": self.num_targets}


def target_statistics(table):
    """(mean, std) per column of a float [N, T] target table, NaN (missing) left out."""
    import numpy as np

    table = np.asarray(table, np.float64)
    known = np.isfinite(table)
    if table.size and not np.all(known.any(axis=0)):
        raise ConfigError("a dimension has no known value among the training clips")
    mean = np.array([table[known[:, j], j].mean() for j in range(table.shape[1])])
    std = np.array([table[known[:, j], j].std() for j in range(table.shape[1])])
    return mean.astype(np.float32), std.astype(np.float32)


def _find_scaling(model):
    for layer in compat.sublayers(model):
        if isinstance(layer, TargetScaling):
            return layer
    raise ConfigError(f"{model.name} has no TargetScaling layer: build the classifier with targets")


class MultiTaskModel(keras.Model):
    """Trains `task_model` (outputs {"category": logits, dim: value}) with the joint loss above.

    Targets are {"category": int labels [B] (or soft one-hot [B, C] with
    soft_labels=True), dim: float [B] with NaN where unknown}. Compile with an
    optimizer only; logs hold loss, accuracy, loss_<task> (CE, standardised MSE)
    and, for uncertainty weighting, log_var_<task>.
    """

    def __init__(self, task_model, targets, weighting="uncertainty", task_weights=None, soft_labels=False,
                 **kwargs):
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        targets = tuple(str(t) for t in targets)
        if not targets:
            raise ConfigError("MultiTaskModel needs at least one dimension besides the category")
        self.task_model = task_model
        self.targets = targets
        self.tasks = (CATEGORY,) + targets
        self.weighting = weighting
        self.soft_labels = bool(soft_labels)
        weights = dict(task_weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ConfigError(f"task weights for unknown task(s) {unknown}; tasks are {list(self.tasks)}")
        self.task_weights = tuple(float(weights.get(t, 1.0)) for t in self.tasks)
        if any(w < 0 for w in self.task_weights):
            raise ConfigError(f"task weights must be >= 0, got {self.task_weights}")
        self.scaling = _find_scaling(task_model)
        if self.scaling.num_targets != len(targets):
            raise ConfigError(f"the task model predicts {self.scaling.num_targets} dimensions, not {len(targets)}")
        self.log_variances = self.add_weight(name="log_variances", shape=(len(self.tasks),), initializer="zeros",
                                             trainable=weighting == "uncertainty")
        accuracy = keras.metrics.CategoricalAccuracy if self.soft_labels else keras.metrics.SparseCategoricalAccuracy
        self.accuracy_metric = accuracy(name="accuracy")
        self.task_loss_metrics = [keras.metrics.Mean(name=f"loss_{t}") for t in self.tasks]
        self.log_variance_metrics = ([keras.metrics.Mean(name=f"log_var_{t}") for t in self.tasks]
                                     if weighting == "uncertainty" else [])
        self.built = True  # the task model is built; weights can be loaded before any call

    def call(self, inputs, training=False):
        return self.task_model(inputs, training=training)

    def task_losses(self, y, y_pred):
        """[(loss, present)] per task: CE over the batch; masked standardised MSE, present = any known."""
        logits = ops.cast(y_pred[CATEGORY], "float32")
        if self.soft_labels:
            ce = keras.losses.categorical_crossentropy(ops.cast(y[CATEGORY], "float32"), logits, from_logits=True)
        else:
            ce = keras.losses.sparse_categorical_crossentropy(ops.cast(y[CATEGORY], "int32"), logits,
                                                              from_logits=True)
        out = [(ops.mean(ce), ops.ones((), "float32"))]
        std = ops.cast(self.scaling.std, "float32")
        for j, name in enumerate(self.targets):
            target = ops.reshape(ops.cast(y[name], "float32"), (-1,))
            predicted = ops.reshape(ops.cast(y_pred[name], "float32"), (-1,))
            known = ops.isfinite(target)
            residual = (predicted - ops.where(known, target, ops.zeros_like(target))) / std[j]
            squared = ops.where(known, ops.square(residual), ops.zeros_like(residual))
            count = ops.sum(ops.cast(known, "float32"))
            out.append((ops.sum(squared) / ops.maximum(count, 1.0), ops.cast(count > 0, "float32")))
        return out

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        per_task = self.task_losses(y, y_pred)
        s = ops.cast(self.log_variances, "float32")
        total = ops.zeros((), "float32")
        for i, (loss, present) in enumerate(per_task):
            if self.weighting == "uncertainty":
                scale = 1.0 if i == 0 else 0.5  # softmax vs Gaussian likelihood
                term = scale * ops.exp(-s[i]) * loss + 0.5 * s[i]
            else:
                term = self.task_weights[i] * loss
            total = total + present * term
            self.task_loss_metrics[i].update_state(loss, sample_weight=present)
            if self.log_variance_metrics:
                self.log_variance_metrics[i].update_state(s[i])
        for extra in self.losses:  # regularisers of the task model, if any
            total = total + ops.cast(ops.sum(extra), "float32")
        return compat.scale_loss_for_distribution(total)  # per replica, as Keras' own losses (tf.distribute)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.accuracy_metric.update_state(y[CATEGORY], y_pred[CATEGORY])
        return self.get_metrics_result()

    def effective_weights(self) -> dict:
        """What each task's loss is multiplied by now: exp(-s) (x 1/2 for a dimension), or the fixed weight."""
        import numpy as np

        if self.weighting == "fixed":
            return dict(zip(self.tasks, self.task_weights))
        s = np.asarray(keras.ops.convert_to_numpy(self.log_variances), np.float64)
        return {t: float(np.exp(-s[i]) * (1.0 if i == 0 else 0.5)) for i, t in enumerate(self.tasks)}

    def uncertainty_report(self) -> dict:
        """{task: {"log_variance", "sigma", "weight"}} (weights only for fixed weighting)."""
        import numpy as np

        weights = self.effective_weights()
        if self.weighting == "fixed":
            return {t: {"weight": weights[t]} for t in self.tasks}
        s = np.asarray(keras.ops.convert_to_numpy(self.log_variances), np.float64)
        return {t: {"log_variance": float(s[i]), "sigma": float(np.exp(0.5 * s[i])), "weight": weights[t]}
                for i, t in enumerate(self.tasks)}
