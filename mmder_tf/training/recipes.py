"""Training recipes: optimizer, learning-rate schedule, loss and batch augmentation of the paper and of MAE-DFER.

The optimizer and schedule classes are registered Keras objects defined at module
level, so a saved optimizer (BackupAndRestore, model.save) deserialises by name.
"""
from __future__ import annotations

import math

import keras

from mmder_tf.config import PLACEHOLDER_RGB
from mmder_tf.errors import ConfigError
from mmder_tf import compat
from mmder_tf.training.config import RECIPES

RECIPE_DEFAULTS = {
    # Paper / official code: AdamW lr 1e-2, wd 0.05, constant lr, hard labels.
    "paper": dict(lr=1e-2, weight_decay=0.05, warmup_epochs=0, cosine=False, layer_decay=1.0,
                  drop_path=0.0, label_smoothing=0.0, mixup=0.0, cutmix=0.0, no_decay_1d=False),
    # Real speech at CPU scale (benchmarks/real_speech.py; chosen on validation actors, docs/real_speech.md):
    # warm-up + cosine, label smoothing and SpecAugment-style masking of the spectrogram images.
    # Dev split (train actors 05-20, validate 21-24), tiny, 64 px, 40 epochs: lr 2e-3 42.50 / 3e-3 44.17 WAR;
    # no masks 36.67; mixup 0.2 44.17 vs none 44.58; stronger masks (below) 46.25.
    "speech": dict(lr=3e-3, weight_decay=0.05, warmup_epochs=3, cosine=True, layer_decay=1.0,
                   drop_path=0.1, label_smoothing=0.1, mixup=0.0, cutmix=0.0, no_decay_1d=True,
                   freq_masks=2, freq_mask=0.25, time_masks=3, time_mask=0.25),
    # MAE-DFER / VideoMAE full fine-tuning (REFERENCE.md section 6); lr is per 256 clips.
    "mae-dfer": dict(lr=1e-3, weight_decay=0.05, warmup_epochs=5, cosine=True, layer_decay=0.75,
                     drop_path=0.1, label_smoothing=0.1, mixup=0.8, cutmix=1.0, no_decay_1d=True),
}


def recipe_settings(recipe: str, batch_size: int, lr: float | None = None) -> dict:
    """The recipe's hyper-parameters; `lr` None: the recipe's rate (MAE-DFER's scaled by batch_size / 256)."""
    if recipe not in RECIPES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    settings = dict(RECIPE_DEFAULTS[recipe])
    if lr is not None:
        settings["lr"] = float(lr)
    elif recipe == "mae-dfer":
        settings["lr"] = settings["lr"] * batch_size / 256
    return settings


def uses_soft_labels(settings: dict) -> bool:
    return settings["mixup"] > 0 or settings["cutmix"] > 0 or settings["label_smoothing"] > 0


def uses_masking(settings: dict) -> bool:
    return settings.get("freq_masks", 0) > 0 or settings.get("time_masks", 0) > 0


def batch_augmenter(settings: dict, num_classes: int, strategy: str | None = None):
    """The recipe's per-batch augmentation mix(x, y, seed) -> (x, soft targets), or None (hard labels).

    SpecAugment-style masks (audio strategy only: they mask spectrogram rows and columns)
    come first, then mixup / cutmix with label smoothing. `seed` is a stateless int64 [2].
    """
    import tensorflow as tf

    masking = uses_masking(settings) and strategy == "audio"
    if not (uses_soft_labels(settings) or masking):
        return None

    def mix(x, y, seed):
        if masking:
            seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
            x, seed = spec_augment(x, seeds[0], settings["freq_masks"], settings["freq_mask"],
                                   settings["time_masks"], settings["time_mask"]), seeds[1]
        return mix_batch(x, y, seed, num_classes, settings["mixup"], settings["cutmix"],
                         settings["label_smoothing"], strategy=strategy)

    return mix


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


@keras.saving.register_keras_serializable(package="mmder_tf")
class LayerDecayAdamW(keras.optimizers.Adam):
    """AdamW whose learning rate (and decoupled weight decay) is scaled per variable by
    layer_decay ** (depth + 1 - layer_id): lower blocks of a pre-trained encoder move less.

    Scaling gradients would not work (Adam normalises them away), so the scale is
    applied to the step size inside update_step, which every backend and
    tf.distribute call per variable. The decay is applied there too, so it uses
    the same scaled rate as in the reference (timm) recipe. `no_decay_names`: variables
    whose path ends with one of them are not decayed either (e.g. a mask token).
    """

    def __init__(self, learning_rate=0.001, decoupled_weight_decay=0.05, depth=12, layer_decay=1.0,
                 no_decay_1d=False, no_decay_names=(), **kwargs):
        kwargs.pop("weight_decay", None)  # Adam's own (coupled) decay stays off
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        self.decoupled_weight_decay = float(decoupled_weight_decay)
        self.depth = int(depth)
        self.layer_decay = float(layer_decay)
        self.no_decay_1d = bool(no_decay_1d)
        self.no_decay_names = tuple(no_decay_names)
        self._lr_scales = []
        self._decays = []

    def build(self, variables):
        super().build(variables)
        self._lr_scales = [self.layer_decay ** (self.depth + 1 - layer_id(v.path, self.depth)) for v in variables]
        self._decays = [0.0 if (self.no_decay_1d and len(v.shape) <= 1) or v.path.endswith(self.no_decay_names)
                        or not compat.uses_weight_decay(self, v)
                        else self.decoupled_weight_decay for v in variables]

    def lr_scale(self, variable) -> float:
        return self._lr_scales[compat.variable_index(self, variable)]

    def update_step(self, gradient, variable, learning_rate):
        index = compat.variable_index(self, variable)
        scaled = keras.ops.cast(learning_rate, variable.dtype) * self._lr_scales[index]
        if self._decays[index]:
            variable.assign(variable - variable * (self._decays[index] * scaled))
        return super().update_step(gradient, variable, scaled)

    def get_config(self):
        config = super().get_config()
        config.update(decoupled_weight_decay=self.decoupled_weight_decay, depth=self.depth,
                      layer_decay=self.layer_decay, no_decay_1d=self.no_decay_1d,
                      no_decay_names=list(self.no_decay_names))
        return config


def make_layer_decay_adamw(learning_rate, weight_decay: float, depth: int, layer_decay: float = 1.0,
                           no_decay_1d: bool = False, beta_1: float = 0.9, beta_2: float = 0.999,
                           epsilon: float = 1e-8, no_decay_names=(), **kwargs) -> LayerDecayAdamW:
    return LayerDecayAdamW(learning_rate, weight_decay, depth, layer_decay, no_decay_1d, no_decay_names,
                           beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)


@keras.saving.register_keras_serializable(package="mmder_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to base_lr, then half-cosine down to min_lr (per step)."""

    def __init__(self, base_lr, total_steps, warmup_steps, min_lr=1e-6):
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


def warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 1e-6) -> WarmupCosine:
    return WarmupCosine(base_lr, total_steps, warmup_steps, min_lr)


# Token parameters that are never decayed, as VideoMAE / MAE-DFER exclude them (their `no_weight_decay`
# sets): the MAE mask token and LGI-Former's region tokens (upstream `lg_region_tokens`).
NO_DECAY_NAMES = ("mask_token", "region_tokens")


def make_optimizer(settings: dict, steps_per_epoch: int, epochs: int, depth: int):
    lr = settings["lr"]
    if settings.get("cosine"):
        lr = warmup_cosine(lr, steps_per_epoch * epochs, steps_per_epoch * settings.get("warmup_epochs", 0))
    if settings.get("layer_decay", 1.0) == 1.0 and not settings.get("no_decay_1d"):
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=settings["weight_decay"])
        optimizer.exclude_from_weight_decay(var_names=[f"^{name}$" for name in NO_DECAY_NAMES])
        return optimizer
    return make_layer_decay_adamw(lr, settings["weight_decay"], depth, settings.get("layer_decay", 1.0),
                                  settings.get("no_decay_1d", False), no_decay_names=NO_DECAY_NAMES)


def make_loss_and_metrics(soft_labels: bool):
    """Hard labels: sparse CE + sparse accuracy (paper). Soft labels (mixup/cutmix or
    smoothing): categorical CE on one-hot targets, whose metric is categorical accuracy."""
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


def modality_panes(strategy: str | None) -> int:
    """Horizontal bands of a fused frame that hold different modalities: CFAS stacks V over A (2), else 1.

    The other strategies keep a modality per whole frame (sequence strategies) or in
    every pixel (SFAS), where one box repeated over all frames takes the same share
    of each modality.
    """
    return 2 if strategy == "cfas" else 1


def spec_augment(x, seed, freq_masks: int, freq_mask: float, time_masks: int, time_mask: float):
    """SpecAugment on spectrogram images uint8 [B, T, H, W, 3] (rows: frequency, columns: time), stateless.

    Each clip gets `freq_masks` bands of up to freq_mask * H rows, the same rows in all T
    images (a frequency band gone from the whole clip), and `time_masks` bands of up to
    time_mask * W columns, each in one of its T images (a stretch of time gone). Masked
    pixels take the clip's mean colour, so the masks add no new intensity.
    """
    import tensorflow as tf

    shape = tf.shape(x)
    batch, frames, height, width = shape[0], shape[1], shape[2], shape[3]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)

    def bands(size, count, fraction, seed_pair):
        """bool [B, size]: the union of `count` random bands of width < fraction * size per clip."""
        widths = tf.floor(tf.random.stateless_uniform([batch, count], seed_pair[0])
                          * (fraction * tf.cast(size, tf.float32) + 1.0))
        starts = tf.floor(tf.random.stateless_uniform([batch, count], seed_pair[1])
                          * (tf.cast(size, tf.float32) - widths + 1.0))
        index = tf.cast(tf.range(size), tf.float32)[None, None, :]
        inside = (index >= starts[..., None]) & (index < (starts + widths)[..., None])
        return tf.reduce_any(inside, axis=1), inside

    mask = tf.zeros([batch, frames, height, width], tf.bool)
    if freq_masks > 0:
        rows, _ = bands(height, freq_masks, freq_mask, tf.random.experimental.stateless_split(seeds[0], 2))
        mask = mask | rows[:, None, :, None]
    if time_masks > 0:
        _, columns = bands(width, time_masks, time_mask, tf.random.experimental.stateless_split(seeds[1], 2))
        which = tf.random.stateless_uniform([batch, time_masks], seeds[2], maxval=frames, dtype=tf.int32)
        in_frame = tf.equal(tf.range(frames)[None, None, :], which[..., None])  # [B, count, T]
        # [B, count, T, 1, W]: a band in one image per mask
        time = tf.reduce_any(in_frame[..., None, None] & columns[:, :, None, None, :], axis=1)
        mask = mask | time
    x = tf.convert_to_tensor(x)
    mean = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2, 3], keepdims=True)
    out = tf.where(mask[..., None], mean, tf.cast(x, tf.float32))
    return tf.cast(tf.round(out), x.dtype) if x.dtype == tf.uint8 else out


def mix_batch(x, y, seed, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              label_smoothing: float = 0.0, switch_prob: float = 0.5, strategy: str | None = None):
    """timm-style mixup / cutmix of one batch with its reversed self (stateless, seeded).

    x: uint8 [B, T, H, W, 3]; y: int [B]. Returns float32 0..255 inputs and soft
    one-hot targets (label smoothing folded in). The cutmix box is the same for all
    T frames, like timm's video mixup; lambda is corrected to the box's true area.
    Each modality gives the partner clip the label's share: for CFAS (`strategy`)
    the box is drawn in the video band and repeated at the same place in the
    spectrogram band, since one box over the whole frame would take its area from
    either modality in any proportion.
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
    pane = height // modality_panes(strategy)

    def do_mixup():
        lam = _beta(seeds[1], mixup_alpha) if mixup_alpha > 0 else tf.constant(1.0)
        return x * lam + x_flip * (1.0 - lam), lam

    def do_cutmix():
        lam = _beta(seeds[2], cutmix_alpha) if cutmix_alpha > 0 else tf.constant(1.0)
        ratio = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.cast(pane, tf.float32) * ratio, tf.int32)
        cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
        centre = tf.random.stateless_uniform([2], seeds[3])
        cy = tf.cast(centre[0] * tf.cast(pane, tf.float32), tf.int32)
        cx = tf.cast(centre[1] * tf.cast(width, tf.float32), tf.int32)
        y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, pane), tf.clip_by_value(cy + cut_h // 2, 0, pane)
        x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w // 2, 0, width)
        row_in_pane = tf.range(height) % pane  # the same box in every pane
        rows = tf.logical_and(row_in_pane >= y0, row_in_pane < y1)
        cols = tf.logical_and(tf.range(width) >= x0, tf.range(width) < x1)
        box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), tf.float32)[None, None, :, :, None]
        mixed = x * (1.0 - box) + x_flip * box
        area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(pane * width, tf.float32)
        return mixed, 1.0 - area

    if isinstance(use_cutmix, bool):
        mixed, lam = do_cutmix() if use_cutmix else do_mixup()
    else:
        mixed, lam = tf.cond(use_cutmix, do_cutmix, do_mixup)
    # Where both clips have the missing-modality placeholder, the mix IS the placeholder: keep it bit-exact
    # (x * lam + x * (1 - lam) rounds off it), so the classifier still knows that modality is absent.
    colour = tf.constant(PLACEHOLDER_RGB, tf.float32)
    both = tf.logical_and(tf.reduce_all(tf.equal(x, colour), -1, keepdims=True),
                          tf.reduce_all(tf.equal(x_flip, colour), -1, keepdims=True))
    mixed = tf.where(both, x, mixed)
    return mixed, onehot * lam + y_flip * (1.0 - lam)
