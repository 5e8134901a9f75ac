"""The classifier of a run: built from its RunConfig, and loaded back strictly from a trained fold.

`build_classifier(config, ...)` is the one place a run's model is made (training,
evaluate and export all call it), and `load_fold` the one place a trained fold's
model is read back: the fold's kept checkpoint is checked tensor by tensor before
anything is assigned, so a model never half-loads.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mmder_tf.config import FusionConfig
from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.fileio import read_json
from mmder_tf.models.preset_io import load_weights_strict
from mmder_tf.models.presets import backbone_from_preset, preset_of
from mmder_tf.training.config import RunConfig, read_run_file


def build_classifier(config: RunConfig, num_classes: int, class_names=None, *, drop_path: float = 0.0, dtype=None):
    """The EmotionClassifier of the run, with `config.weights` loaded. Call under the strategy's scope.

    Seeded with config.seed, so every fold and every resume starts from the same
    initial weights. Checkpoint weights fix the architecture; a `config.preset`
    that disagrees with them is an error rather than a silent switch of model size.
    `dtype` None: the global dtype policy (the run's precision).
    """
    import keras

    from mmder_tf.models.classifier import EmotionClassifier

    keras.utils.set_random_seed(config.seed)
    fusion = config.fusion
    if not config.weights:
        backbone = backbone_from_preset(config.preset, num_frames=fusion.num_frames,
                                                image_size=fusion.image_size, drop_path_rate=drop_path, dtype=dtype)
        return EmotionClassifier(backbone, num_classes, mode=config.mode, dropout=config.dropout,
                                 mean=config.mean, std=config.std, class_names=class_names, dtype=dtype,
                                 targets=config.dimensions, placeholder=config.placeholder)
    from mmder_tf.models.convert import is_hicmae_checkpoint, load_pretrained

    if is_hicmae_checkpoint(config.weights):
        # The fused strategies train HiCMAE's visual encoder under a fresh head (its AV model: docs/hicmae.md).
        backbone = load_pretrained(config.weights, num_frames=fusion.num_frames, image_size=fusion.image_size,
                                   drop_path_rate=drop_path, dtype=dtype)
        model = EmotionClassifier(backbone, num_classes, mode=config.mode, dropout=config.dropout,
                                  class_names=class_names, dtype=dtype)
    else:
        model = load_pretrained(config.weights, num_frames=fusion.num_frames, image_size=fusion.image_size,
                                classifier=True, num_classes=num_classes, allow_missing_head=True, mode=config.mode,
                                dropout=config.dropout, class_names=class_names, drop_path_rate=drop_path, dtype=dtype)
    if not isinstance(model, EmotionClassifier):
        raise ConfigError(f"--weights {config.weights} hold a {type(model).__name__}; mmder-finetune trains video "
                          "classifiers on the fused input (HiCMAE's audio-visual model: docs/hicmae.md)")
    found = preset_of(model.backbone)
    if config.preset is not None and config.preset != found:
        backbone = model.backbone
        raise ConfigError(
            f"--weights {config.weights} hold a {found} encoder (width {backbone.hidden_dim}, depth "
            f"{backbone.depth}, {backbone.num_heads} heads), not preset {config.preset!r}: drop --preset"
            + ("" if found == "custom" else f" or pass --preset {found}"))
    # A saved classifier keeps its own settings; the run's win (its head weights stay).
    model.mode = config.mode
    model.dropout.rate = model.dropout_rate = float(config.dropout)
    model.normalize.set_statistics(config.mean, config.std)
    if config.dimensions or config.placeholder != model.placeholder:
        # the checkpoint's encoder and category head; new regression heads or a new learned placeholder beside them
        joint = EmotionClassifier(model.backbone, num_classes, mode=config.mode, dropout=config.dropout,
                                  mean=config.mean, std=config.std, class_names=class_names,
                                  pooling=model.pooling, dtype=dtype, targets=config.dimensions,
                                  placeholder=config.placeholder)
        joint.fc_norm.set_weights(model.fc_norm.get_weights())
        joint.head.set_weights(model.head.get_weights())
        model = joint
    return model


# ----------------------------------------------------------------------------- a trained fold

@dataclasses.dataclass(frozen=True)
class TrainedFold:
    """One finished fold of a run, its model loaded."""

    model: object
    config: RunConfig
    class_names: tuple[str, ...]
    fold: int
    checkpoint: Path
    result: dict  # fold_N/results.json
    run: dict  # the whole run.json
    task_weights: dict | None = None  # joint runs: the learned (or fixed) weight of each task

    @property
    def fusion(self) -> FusionConfig:
        return self.config.fusion

    @property
    def preset(self) -> str:
        return preset_of(self.model.backbone)

    def save_to_preset(self, directory):
        """This fold's model as a preset folder, the run's fusion settings as its preprocessing: what
        `EmotionClassifier.from_preset(directory)` and `mmder-export --weights directory` read."""
        p_video, p_audio = self.config.modality_dropout
        return self.model.save_to_preset(directory, preprocessing=self.fusion, source=str(self.checkpoint),
                                         training={"modality_dropout": {"video": p_video, "audio": p_audio},
                                                   "dataset": self.config.dataset})


def finished_folds(run_dir) -> list[int]:
    folds = []
    for child in Path(run_dir).glob("fold_*"):
        if (child / "results.json").is_file() and child.name[5:].isdigit():
            folds.append(int(child.name[5:]))
    return sorted(folds)


def load_fold(run_dir, fold: int | None = None, *, dtype=None, config: RunConfig | None = None) -> TrainedFold:
    """The model of one finished fold of a `mmder-finetune` run, rebuilt as training built it and
    loaded strictly with the fold's kept checkpoint (best on validation, or last).

    For a feature-cached linear probe that checkpoint is the head: it is loaded onto
    the encoder rebuilt from the run's config, which must be the one the head was trained
    on (checked against the encoder fingerprint training recorded). `fold` None: the
    run's only finished fold. `dtype` None: the current dtype policy ("float32" for export).
    `config`: the run's config with changes that do not touch the model (e.g. batch size).
    """
    from mmder_tf.training.features import feature_key

    run_dir = Path(run_dir)
    saved_config, run = read_run_file(run_dir)
    config = config or saved_config
    finished = finished_folds(run_dir)
    if fold is None:
        if len(finished) != 1:
            raise ConfigError(f"{run_dir}: choose a fold (--fold); finished folds: {finished or 'none'}")
        fold = finished[0]
    fold_dir = run_dir / f"fold_{int(fold)}"
    if int(fold) not in finished:
        raise CheckpointError(f"{fold_dir}: fold {fold} has not finished (no results.json); finished: {finished}")
    result = read_json(fold_dir / "results.json", CheckpointError, "fold result")
    checkpoint = fold_dir / f"{result.get('checkpoint', 'last')}.weights.h5"
    class_names = tuple(run["class_names"])
    model = build_classifier(config, len(class_names), list(class_names), dtype=dtype)
    loaded = model.head_model() if result.get("weights_kind") == "head" else model
    task_weights = None
    if result.get("weights_wrapper") == "multitask":
        # A joint run's checkpoint holds MultiTaskModel(model): the model's weights and the task log-variances.
        from mmder_tf.models.multitask import MultiTaskModel

        loaded = MultiTaskModel(loaded, config.dimensions, weighting=config.task_weighting,
                                task_weights=dict(config.task_weights))
    if result.get("weights_kind") == "head":
        load_weights_strict(loaded, checkpoint)
        recorded = result.get("feature_fingerprint")
        found = feature_key(config, model.backbone, run["run"]["precision"], run["cache_dir"])
        if recorded is not None and recorded != found:
            raise CheckpointError(
                f"{fold_dir}: the frozen encoder rebuilt from the run's config (weights {config.weights}) is not "
                "the one this fold's head was trained on (the weights file changed?)")
    else:
        load_weights_strict(loaded, checkpoint)
    if loaded is not model and hasattr(loaded, "uncertainty_report"):
        task_weights = loaded.uncertainty_report()
    return TrainedFold(model, config, class_names, int(fold), checkpoint, result, run, task_weights)
