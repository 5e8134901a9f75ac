"""Masked-autoencoder pre-training of one VideoMAE encoder on fused audio-visual clips.

The clips take the fine-tuning path exactly: decode -> align -> fuse
(data.prepare's cache read by data.pipeline, or the same encode decoded on the
fly), any fusion strategy or one drawn per clip. The model is
models.videomae.pretraining; this module adds the run around it:

- AdamW (betas 0.9 / 0.95, weight decay 0.05 except norms, biases and the mask
  token), lr = base_lr x batch / 256, linear warm-up then cosine, per step;
- mixed precision and XLA on accelerators, tf.distribute (mirrored,
  multi-worker from TF_CONFIG, TPU) with the batches sharded across workers;
- resumable: the training order of epoch e is a function of (seed, e) and each
  step's mask of (seed, step, replica), and the optimizer step is restored with
  the weights (engine.fit_resumable's BackupAndRestore), so rerunning a killed
  command ends with the weights of an uninterrupted run;
- TensorBoard, a progress bar, a held-out reconstruction loss (whole held-out
  subjects, a fixed mask), every N epochs a PNG of original / masked /
  reconstructed fused frames;
- RUN/encoder: the encoder as a preset folder (models.preset_io), which
  `mmder-finetune --weights RUN` and `load_pretrained(RUN)` take directly.

Run layout (OUT):
    pretrain.json            the PretrainConfig and the run's facts
    encoder/                 the encoder, a preset folder (updated every epoch)
    pretraining/             encoder + decoder (the whole pre-training model), a preset folder
    history.csv, state.json  per-epoch loss, val_loss, lr
    figures/epoch_XXX.png    reconstructions
    logs/                    TensorBoard
    backup/                  resume state (BackupAndRestore)
    cache/                   the prepared cache unless --cache / --decode stream
    skipped.json             clips that could not be decoded
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mmder_tf.config import STRATEGIES, FusionConfig
from mmder_tf.errors import ConfigError, DatasetError
from mmder_tf.models.lgi_former.presets import BACKBONE_PRESETS as LGI_PRESETS
from mmder_tf.models.preset_io import ENCODER_PRESET, PRETRAINING_PRESET
from mmder_tf.models.videomae.presets import BACKBONE_PRESETS as VIDEOMAE_PRESETS

PRETRAIN_DATASETS = ("folder", "csv", "ravdess", "cremad", "iemocap")
DECODE_MODES = ("cache", "stream")
TARGETS = ("pixel", "mae-dfer")
# Encoders mmder-pretrain builds from scratch: VideoMAE's ViTs and MAE-DFER's LGI-Former.
PRESETS = (*VIDEOMAE_PRESETS, *LGI_PRESETS)


# ----------------------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything a pre-training run depends on. Frozen and checked on construction, so a
    recipe that cannot work fails before any data is touched; saved to OUT/pretrain.json."""

    out: str
    dataset: str = "folder"
    data_dir: str | None = None
    manifest: str | None = None
    fusion: FusionConfig = FusionConfig(strategy="fslf")
    strategies: tuple = ()  # two or more: one drawn per clip (fusion.strategy then unused)
    decode: str = "cache"  # "cache": prepare once, read fast; "stream": decode every epoch
    cache: str | None = None  # default OUT/cache
    decode_workers: int = 8  # clips decoded at once (stream) / prepare processes (cache)
    preset: str = "base"
    decoder: str | None = None  # decoder preset; None: the encoder preset's
    weights: str | None = None  # start from a pre-training checkpoint (MCG-NJU, HF or ours)
    mask_ratio: float = 0.9
    target: str = "pixel"
    epochs: int = 100
    warmup_epochs: int = 10
    batch_size: int = 64  # global, over all replicas
    base_lr: float = 1.5e-4  # per 256 clips
    lr: float | None = None  # absolute peak lr; None: base_lr * batch_size / 256
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    beta_1: float = 0.9
    beta_2: float = 0.95
    seed: int = 0
    val_subjects: int = 1  # whole subjects held out for the reconstruction loss (0: none)
    val_clips: int = 64  # at most this many held-out clips are evaluated each epoch
    figure_every: int = 5  # epochs between reconstruction figures (0: none; the last epoch always)
    precision: str = "auto"
    jit_compile: str = "auto"
    distribute: str = "none"
    verbose: int = 1

    def __post_init__(self):
        from mmder_tf.data.datasets import dataset_name
        from mmder_tf.training.engine import DISTRIBUTE_CHOICES, JIT_CHOICES, PRECISIONS

        strategies = tuple(dict.fromkeys(str(s).lower() for s in self.strategies))
        object.__setattr__(self, "strategies", strategies)
        if isinstance(self.fusion, dict):
            object.__setattr__(self, "fusion", FusionConfig.from_dict(self.fusion))
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise ConfigError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
        if len(strategies) == 1:
            raise ConfigError("drawing a strategy per clip needs at least two strategies")
        if dataset_name(self.dataset) not in PRETRAIN_DATASETS:
            raise ConfigError(f"dataset must be one of {', '.join(PRETRAIN_DATASETS)}, got {self.dataset!r}")
        if not self.data_dir and not self.manifest:
            raise ConfigError("pre-training needs --data-dir (a folder of videos) or --manifest (a CSV)")
        if self.data_dir and not Path(self.data_dir).is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: no such directory")
        if self.manifest and not Path(self.manifest).is_file():
            raise ConfigError(f"--manifest {self.manifest}: no such file")
        if self.weights and not Path(self.weights).exists():
            raise ConfigError(f"--weights {self.weights}: no such file or directory")
        if self.decode not in DECODE_MODES:
            raise ConfigError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        for name in ("epochs", "batch_size", "decode_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs must be in 0..epochs, got {self.warmup_epochs}")
        if self.val_subjects < 0 or self.val_clips < 1 or self.figure_every < 0:
            raise ConfigError("val_subjects and figure_every must be >= 0, val_clips >= 1")
        finite = float("inf")
        if not 0 < self.base_lr < finite or (self.lr is not None and not 0 < self.lr < finite) \
                or not 0 <= self.min_lr < finite:
            raise ConfigError("learning rates must be positive and finite")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and self.weight_decay >= 0):
            raise ConfigError("betas must be in [0, 1) and weight_decay >= 0")
        if self.precision not in PRECISIONS or self.jit_compile not in JIT_CHOICES:
            raise ConfigError(f"precision must be one of {PRECISIONS}, jit_compile one of {JIT_CHOICES}")
        if self.distribute not in DISTRIBUTE_CHOICES:
            raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, got {self.distribute!r}")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / 256

    @property
    def strategy_names(self) -> tuple:
        return self.strategies or (self.fusion.strategy,)

    def replace(self, **changes) -> "PretrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["fusion"] = self.fusion.to_dict()
        values["strategies"] = list(self.strategies)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "PretrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown PretrainConfig fields: {sorted(unknown)}")
        values = dict(values)
        if isinstance(values.get("fusion"), dict):
            values["fusion"] = FusionConfig.from_dict(values["fusion"])
        values["strategies"] = tuple(values.get("strategies", ()))
        return cls(**values)


# ----------------------------------------------------------------------------- data

def _log(message: str):
    print(message, flush=True)


def load_unlabelled(config: PretrainConfig):
    """The run's clips. A labelled dataset keeps its manifest (so fine-tuning and pre-training
    share one prepared cache); pre-training never reads the labels."""
    from mmder_tf.data import datasets

    name = datasets.dataset_name(config.dataset)
    if config.manifest:
        if Path(config.manifest).suffix.lower() == ".json":
            return datasets.Manifest.from_json(config.manifest)
        return datasets.scan_path_csv(config.manifest)
    if name == "csv":
        raise ConfigError("--dataset csv needs --manifest <file.csv>")
    return datasets.load_manifest(name, data_dir=config.data_dir)


def split_held_out(manifest, config: PretrainConfig):
    """(training records, held-out records): whole subjects, seeded; the held-out list capped at val_clips."""
    subjects = sorted(manifest.subjects)
    if config.val_subjects == 0:
        return list(manifest.records), []
    if config.val_subjects >= len(subjects):
        raise DatasetError(f"--val-subjects {config.val_subjects} leaves no training subject "
                           f"(the data has {len(subjects)}); pass a smaller number or 0")
    rng = np.random.default_rng([config.seed, 4241])
    held = set(rng.choice(subjects, size=config.val_subjects, replace=False).tolist())
    train = [r for r in manifest.records if r.subject not in held]
    val = [r for r in manifest.records if r.subject in held][: config.val_clips]
    return train, val


# ----------------------------------------------------------------------------- the pre-training model (models.videomae.pretraining)

def build_model(config: PretrainConfig):
    """The pre-training model of the run: from --weights when given, else the presets, seeded."""
    import keras

    from mmder_tf.models.videomae.pretraining import VideoMAEPretrainer

    keras.utils.set_random_seed(config.seed)
    if config.weights:
        from mmder_tf.models.convert import load_pretrained

        model = load_pretrained(config.weights, pretraining=True, num_frames=config.fusion.num_frames,
                                image_size=config.fusion.image_size)
        # The checkpoint fixes the architecture; the run fixes the masking and the target.
        model.mask_ratio, model.frame_difference = config.mask_ratio, config.target == "mae-dfer"
        return model
    settings = dict(mask_ratio=config.mask_ratio, frame_difference=config.target == "mae-dfer", seed=config.seed)
    if config.preset in LGI_PRESETS:
        from mmder_tf.models.lgi_former.pretraining import LGIFormerPretrainer

        # MAE-DFER pre-trains its LGI-Former with VideoMAE-B's decoder (384 wide, 6 heads); the test size a tiny one.
        decoder = config.decoder or ("tiny" if config.preset == "mae-dfer-tiny" else "base")
        geometry = {"num_frames": config.fusion.num_frames, "image_size": config.fusion.image_size}
        return LGIFormerPretrainer.from_builtin(config.preset, decoder, backbone_overrides=geometry, **settings)
    return VideoMAEPretrainer.from_preset(config.preset, num_frames=config.fusion.num_frames,
                                          image_size=config.fusion.image_size, decoder=config.decoder, **settings)


def mask_noise(mae, batch_size, seed):
    """Uniform noise [B, h*w] from a stateless seed int64 [2]: the model's tube mask is a function of it."""
    import tensorflow as tf

    _, height, width = mae.token_grid
    return tf.random.stateless_uniform(tf.stack([batch_size, height * width]), seed)


def make_trainer(mae, seed: int):
    """A keras.Model whose fit() trains `mae` on batches (pixels uint8/float [B, T, H, W, 3], ignored labels).

    Each step draws its tube mask from (seed, optimizer step, replica): stateless,
    so a resumed run masks exactly as the uninterrupted one, and replicas differ.
    Evaluation uses one fixed mask seed, so held-out losses of two epochs compare.
    """
    import keras
    import tensorflow as tf

    from mmder_tf import compat

    class MaskedAutoencoderTrainer(keras.Model):
        def __init__(self, model, **kwargs):
            super().__init__(**kwargs)
            self.mae = model
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.built = model.built  # the pre-training model builds itself; BackupAndRestore needs a built model

        def call(self, pixels, training=False):
            return self._loss(pixels, tf.constant([seed, -1], tf.int64), training)

        def _loss(self, pixels, mask_seed, training):
            noise = mask_noise(self.mae, tf.shape(pixels)[0], mask_seed)
            return tf.cast(self.mae.pretraining_loss(pixels, noise=noise, training=training), tf.float32)

        @property
        def metrics(self):
            return [self.loss_tracker]

        def train_step(self, data):
            pixels = data[0] if isinstance(data, (tuple, list)) else data
            context = tf.distribute.get_replica_context()
            replica = context.replica_id_in_sync_group if context is not None else 0
            step = tf.cast(self.optimizer.iterations, tf.int64)
            mask_seed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + tf.cast(replica, tf.int64), step])
            with tf.GradientTape() as tape:
                loss = self._loss(pixels, mask_seed, True)
                scaled = self.optimizer.scale_loss(compat.scale_loss_for_distribution(loss))
            gradients = tape.gradient(scaled, self.trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result(), "lr": tf.cast(self.optimizer.learning_rate, tf.float32)}

        def test_step(self, data):
            pixels = data[0] if isinstance(data, (tuple, list)) else data
            self.loss_tracker.update_state(self(pixels, training=False))
            return {"loss": self.loss_tracker.result()}

    return MaskedAutoencoderTrainer(mae)


def encoder_of(mae):
    return mae.backbone


def make_pretrain_optimizer(config: PretrainConfig, steps_per_epoch: int, depth: int):
    """AdamW as VideoMAE pre-trains: betas (0.9, 0.95), decoupled decay except 1-D weights (norms,
    biases), the mask token and LGI-Former's region tokens, lr warmed up linearly then cosine to min_lr, per step."""
    from mmder_tf.training import recipes

    schedule = recipes.warmup_cosine(config.peak_lr, steps_per_epoch * config.epochs, steps_per_epoch * config.warmup_epochs,
                               config.min_lr)
    return recipes.make_layer_decay_adamw(schedule, config.weight_decay, depth, layer_decay=1.0, no_decay_1d=True,
                                    beta_1=config.beta_1, beta_2=config.beta_2, no_decay_names=recipes.NO_DECAY_NAMES)


# ----------------------------------------------------------------------------- outputs

def save_encoder(mae, out) -> Path:
    """OUT/encoder, a preset folder: what load_pretrained(OUT) and mmder-finetune --weights OUT read."""
    return mae.backbone.save_to_preset(Path(out) / ENCODER_PRESET, source=f"mmder-pretrain {out}")


def make_epoch_callback(config: PretrainConfig, mae, out: Path, preview, is_chief: bool):
    """Per epoch (chief only): the encoder and the whole model on disk, and every figure_every
    epochs (and the last) the reconstruction figure of the preview clips."""
    import keras
    import tensorflow as tf

    from mmder_tf.reports.reconstruction import reconstruction_grid, save_png

    class PretrainOutputs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not is_chief:
                return
            save_encoder(mae, out)
            mae.save_to_preset(out / PRETRAINING_PRESET, source=f"mmder-pretrain {out}")
            last = epoch + 1 == config.epochs
            if preview is not None and (last or (config.figure_every and (epoch + 1) % config.figure_every == 0)):
                write_figure(mae, preview, out / "figures" / f"epoch_{epoch + 1:03d}.png", config.seed)

    def write_figure(model, pixels, path, seed):
        noise = mask_noise(model, pixels.shape[0], tf.constant([seed, -2], tf.int64))
        # The model's own masking rule: LGI-Former's per-window mask keeps the regions even, a tube mask would not.
        mask = np.asarray(model.mask_from_noise(noise, model.token_grid)[0])
        predictions, _ = model.reconstruct(tf.convert_to_tensor(pixels), mask, training=False)
        frames = range(0, pixels.shape[1], max(1, pixels.shape[1] // 8))
        image = reconstruction_grid(pixels, mask, np.asarray(tf.cast(predictions, tf.float32)),
                                    patch=model.backbone.patch_size, tubelet=model.backbone.tubelet_size,
                                    frames=frames)
        save_png(image, path)

    return PretrainOutputs()


# ----------------------------------------------------------------------------- the run

def run(config: PretrainConfig) -> dict:
    """Pre-train; returns the summary written to OUT/pretrain.json."""
    import tensorflow as tf

    from mmder_tf.data import pipeline
    from mmder_tf.data.prepare import prepare
    from mmder_tf.reports.results import atomic_write_json
    from mmder_tf.training import engine as T

    # Data first (no TF graph work): a bad folder fails in seconds.
    manifest = load_unlabelled(config)
    for skip in manifest.skipped:
        if config.verbose > 1:
            _log(f"not a clip: {skip.path}: {skip.reason}")
    train_records, val_records = split_held_out(manifest, config)
    if len(train_records) < config.batch_size:
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the {len(train_records)} training clips")
    strategy = T.make_strategy(config.distribute)  # before any other TF work: multi-worker needs that
    kind = T.device_kind()
    policy = T.resolve_precision(config.precision, kind)
    T.set_precision(policy)
    jit = T.resolve_jit(config.jit_compile, kind)
    is_chief, task = T.worker_info(strategy)
    out = Path(config.out)
    work = out if is_chief else out / ".workers" / f"worker{task}"
    work.mkdir(parents=True, exist_ok=True)
    fusion, strategies = config.fusion, config.strategies or None
    skipped = []

    if config.decode == "cache":
        cache_dir = Path(config.cache) if config.cache else out / "cache"
        index = prepare(manifest, cache_dir, fusion, num_workers=min(config.decode_workers, 8),
                        progress=config.verbose > 0)
        if not index.get("complete", True):
            raise DatasetError(f"{cache_dir}: the cache is incomplete (shards {index.get('missing_shards')} missing)")
        skipped = [{"key": e["key"], "path": e["path"], "reason": e.get("skip_reason", "")}
                   for e in index["records"] if e["status"] == "skipped"]
        usable = {e["key"] for e in index["records"] if e["status"] == "ok"}
        # audio-only recordings for a strategy that needs video: refused before any model is built
        pipeline.check_streams([e for e in index["records"] if e["status"] == "ok"], strategies or (fusion.strategy,))
        train_records = [r for r in train_records if r.key in usable]
        val_records = [r for r in val_records if r.key in usable]
        for entry in skipped:
            _log(f"skipped clip: {entry['path']}: {entry['reason']}")
        if len(train_records) < config.batch_size:
            raise DatasetError(f"only {len(train_records)} decodable training clips for batch size {config.batch_size}")

        def epoch_dataset(epoch):
            return pipeline.make_dataset(cache_dir, train_records, fusion, config.batch_size, training=True,
                                         seed=config.seed, epoch=epoch, drop_remainder=True, strategies=strategies)

        def fixed_dataset(records):
            return pipeline.make_dataset(cache_dir, records, fusion, config.batch_size, training=False,
                                         seed=config.seed, strategies=strategies)
    else:
        def on_skip(record, reason):
            skipped.append({"key": record.key, "path": record.path, "reason": reason})
            _log(f"skipped clip: {record.path}: {reason}")
            if is_chief:
                atomic_write_json(out / "skipped.json", skipped)

        def epoch_dataset(epoch):
            # A clip that fails to decode makes the pass shorter; repeat keeps every epoch at full length.
            return pipeline.decoding_dataset(train_records, fusion, config.batch_size, training=True,
                                             seed=config.seed, epoch=epoch, strategies=strategies,
                                             num_parallel_calls=config.decode_workers, on_skip=on_skip,
                                             drop_remainder=True).repeat()

        def fixed_dataset(records):
            return pipeline.decoding_dataset(records, fusion, config.batch_size, training=False, seed=config.seed,
                                             strategies=strategies, num_parallel_calls=config.decode_workers,
                                             on_skip=on_skip)

    steps = len(train_records) // config.batch_size
    val_data = None
    if val_records:
        # float batches: a multi-worker Keras build all-reduces a first batch, which uint8 cannot be
        val_data = fixed_dataset(val_records).map(lambda x, y: (tf.cast(x, tf.float32), y))
        val_data = T.with_data_sharding(val_data)
    preview_records = (val_records or train_records)[:2]
    preview = next(iter(fixed_dataset(preview_records)))[0].numpy() if is_chief else None

    with strategy.scope():
        mae = build_model(config)
        trainer = make_trainer(mae, config.seed)
        optimizer = make_pretrain_optimizer(config, steps, encoder_of(mae).depth)
        trainer.compile(optimizer=optimizer, jit_compile=jit)
    facts = {
        "clips": len(manifest.records), "train_clips": len(train_records), "held_out_clips": len(val_records),
        "held_out_subjects": sorted({r.subject for r in val_records}), "steps_per_epoch": steps,
        "peak_lr": config.peak_lr, "precision": policy, "jit_compile": jit,
        "replicas": strategy.num_replicas_in_sync, "device": kind,
        "encoder": encoder_of(mae).get_config(),
    }
    _log("pretrain: " + ", ".join(f"{k}={v}" for k, v in facts.items() if k != "encoder"))
    if is_chief:
        atomic_write_json(out / "pretrain.json", {"config": config.to_dict(), "run": facts, "finished": False})
    if val_data is not None:
        # Before any step (and the same on a resumed run: the seeded initial weights are rebuilt).
        facts["initial_val_loss"] = float(trainer.evaluate(val_data, verbose=0, return_dict=True)["loss"])
    callback = make_epoch_callback(config, mae, out, preview, is_chief)
    info = T.fit_resumable(trainer, fold_dir=work, epoch_dataset=epoch_dataset, steps_per_epoch=steps,
                           epochs=config.epochs, val_data=val_data, monitor=None, seed=config.seed,
                           verbose=config.verbose, backup_dir=work / "backup", extra_callbacks=[callback])
    history = info["history"]
    summary = {"config": config.to_dict(), "run": facts, "finished": True, "resumed_from_epoch": info["resumed_from"],
               "history": history, "skipped_clips": skipped,
               "encoder_preset": str(out / ENCODER_PRESET)}
    if "initial_val_loss" in facts and history:
        summary["initial_val_loss"] = facts["initial_val_loss"]
        summary["final_val_loss"] = history[-1]["val_loss"]
        summary["val_loss_ratio"] = history[-1]["val_loss"] / facts["initial_val_loss"]
    if is_chief:
        save_encoder(mae, out)  # the final weights even when every epoch was already done (a rerun)
        atomic_write_json(out / "pretrain.json", summary)
        atomic_write_json(out / "skipped.json", skipped)
    last = history[-1] if history else {}
    _log(f"pre-training done: loss {last.get('loss', float('nan')):.4f}"
         + (f", held-out loss {last['val_loss']:.4f}" if "val_loss" in last else "")
         + f" -> encoder {out / ENCODER_PRESET} (mmder-finetune --weights {out})")
    return summary
