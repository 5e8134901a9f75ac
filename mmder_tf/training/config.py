"""The run configuration: every setting of one cross-validated training run, typed, frozen and checked.

One `RunConfig` is built by the command line (`mmder-finetune ...`), by
`mmder_tf.finetune.run(...)` or from a saved run (`RunConfig.from_run(RUN)`);
it is written whole to `RUN/run.json` and read back by evaluate and export, so
a saved run can be repeated exactly (`mmder-finetune --config RUN/run.json`).

Nothing here imports TensorFlow or Keras: a bad setting fails in milliseconds.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
from pathlib import Path

from mmder_tf.config import (
    CLASSIFIER_MODES, IMAGENET_MEAN, IMAGENET_STD, MODALITIES, OFFICIAL_STD, PLACEHOLDERS, SPECTROGRAM_OPTIONS,
    FusionConfig, check_fields, default_crop, default_placeholder,
)
from mmder_tf.data.datasets import DATASETS as MEDIA_DATASETS
from mmder_tf.errors import ConfigError
from mmder_tf.models.presets import LGI_FORMER_PRESETS, PRESETS, resolve_weights

DATASETS = MEDIA_DATASETS + ("synthetic",)
RECIPES = ("paper", "mae-dfer", "speech")
SELECT_CHOICES = ("val_accuracy", "val_loss", "last")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_CHOICES = ("auto", "on", "off")
DISTRIBUTE_CHOICES = ("none", "mirrored", "multiworker", "tpu")
RAVDESS_CLASS_COUNTS = (7, 8)
# Full fine-tuning at the paper's constant lr 1e-2 (the official code's linear-probe rate)
# diverges beyond these encoders; the paper recipe there needs an explicit lr.
PAPER_FINETUNE_PRESETS = ("tiny", "small")
# The fusion settings a command line sets (FusionConfig fields), besides the strategy.
FUSION_OPTIONS = ("strategy", "image_size", "official", "crop") + tuple(SPECTROGRAM_OPTIONS)

CATEGORY = "category"
TASK_WEIGHTINGS = ("uncertainty", "fixed")
# Names a dimension cannot take: they are outputs or arrays of their own in exports and predictions.
RESERVED_OUTPUTS = ("probabilities", "labels", "class_names", "logits", "key", "y_true", "posteriors")

RUN_FILE = "run.json"
RUN_FORMAT = "mmder_tf.run"
RUN_FORMAT_VERSION = 2

# Embedded demo: big enough that fusion visibly beats either modality, small enough
# for 2 CPU cores in a few minutes (see benchmarks/av_vs_single.py for the numbers).
DEMO_DEFAULTS = dict(preset="tiny", image_size=64, epochs=12, batch_size=8, mode="finetune", lr=2e-3)
# A real dataset: the paper's setting (ViT-L, 224 px, 100 epochs, frozen encoder).
PAPER_DEFAULTS = dict(preset="large", image_size=224, epochs=100, batch_size=16, mode="linear_probe", lr=None)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def parse_channels(value, name: str) -> tuple[float, float, float]:
    """Per-channel input statistics: one number, 'R,G,B' or a sequence of three -> three floats."""
    try:
        if isinstance(value, str):
            values = [float(v) for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [float(value)]
        else:
            values = [float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or (name == "std" and min(values) <= 0):
        raise ConfigError(f"--{name} must be one {'positive ' if name == 'std' else ''}number or three "
                          f"comma-separated ones, got {value!r}")
    return tuple(values)


def check_recipe(recipe: str, mode: str, preset: str, lr) -> None:
    """Refuse the recipe choice that cannot work: full fine-tuning of a large encoder at the paper's lr."""
    if recipe == "paper" and mode == "finetune" and lr is None and preset not in PAPER_FINETUNE_PRESETS:
        raise ConfigError(
            f"--recipe paper with --mode finetune would train every parameter of the {preset} encoder at a "
            "constant lr 1e-2 with weight decay on all of them: that is the official code's linear-probe rate for a "
            "frozen encoder, and full fine-tuning diverges at it. Use --recipe mae-dfer (warm-up + cosine, "
            "layer decay 0.75, lr 1e-3 x batch/256, no decay on norms and biases), or give --lr explicitly")


def parse_folds(value) -> tuple[int, ...] | None:
    """'all' / None -> None (every fold); '1,3', 2 or [3, 1] -> (1, 3)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        if isinstance(value, str):
            numbers = {int(part) for part in value.split(",") if part.strip()}
        elif isinstance(value, int) and not isinstance(value, bool):
            numbers = {value}
        else:
            numbers = {int(v) for v in value}
    except (TypeError, ValueError):
        raise ConfigError(f"folds must be 'all' or comma-separated fold numbers, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise ConfigError(f"fold numbers start at 1, got {value!r}")
    return tuple(sorted(numbers))


def parse_targets(value) -> tuple[str, ...]:
    """'category,valence,arousal' (or a sequence) -> ("category", "valence", "arousal"), checked."""
    names = [t.strip() for t in (value.split(",") if isinstance(value, str) else value or ()) if str(t).strip()]
    names = [str(n) for n in names] or [CATEGORY]
    if CATEGORY not in names:
        raise ConfigError(f"--targets must include {CATEGORY!r} (the model always classifies), got {value!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--targets lists a name twice: {value!r}")
    bad = [n for n in names if n in RESERVED_OUTPUTS or not n.replace("_", "").isalnum()]
    if bad:
        raise ConfigError(f"--targets: {bad} cannot name a dimension (reserved, or not letters, digits and _)")
    return (CATEGORY,) + tuple(n for n in names if n != CATEGORY)


def parse_modality_dropout(value) -> tuple[float, float]:
    """(p_video, p_audio): the chance that a training clip loses its video (becomes audio-only) or its
    audio (video-only), never both. 'P' or one number: P each; 'video=P,audio=Q' (either may be left out,
    0); a dict or a pair (video, audio). Sum < 1, so some clips keep both."""
    if value is None:
        return (0.0, 0.0)
    try:
        if isinstance(value, str) and "=" in value:
            parts = dict(part.split("=", 1) for part in value.split(",") if part.strip())
            parts = {k.strip(): v for k, v in parts.items()}
            unknown = set(parts) - set(MODALITIES)
            if unknown:
                raise ValueError(unknown)
            pair = (float(parts.get("video", 0)), float(parts.get("audio", 0)))
        elif isinstance(value, dict):
            pair = (float(value.get("video", 0)), float(value.get("audio", 0)))
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            pair = (float(value),) * 2
        else:
            pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not (min(pair) >= 0 and sum(pair) < 1):
        raise ConfigError(f"--modality-dropout wants P or video=P,audio=Q with probabilities >= 0 summing to < 1 "
                          f"(a clip never loses both), got {value!r}")
    return pair


def parse_task_weights(value) -> tuple[tuple[str, float], ...]:
    """'category=1,valence=0.5' (or a dict, or pairs) -> (("category", 1.0), ("valence", 0.5))."""
    if isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if part.strip():
                name, sep, weight = part.partition("=")
                pairs.append((name.strip(), weight if sep else "missing"))
    else:
        pairs = list(value.items()) if isinstance(value, dict) else [tuple(p) for p in value or ()]
    out = []
    for name, weight in pairs:
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not weight >= 0:
            raise ConfigError(f"--task-weights wants task=weight pairs with weights >= 0, got {name}={weight}")
        out.append((str(name), weight))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One cross-validated training run. Build it with `RunConfig.resolve(...)` (the CLI's defaults)
    or directly (the paper's defaults); paths stay strings so the config is plain JSON.

    `preset=None` only with `weights`: the encoder's architecture is the checkpoint's.
    `folds=None` runs every fold of the protocol. `lr=None` takes the recipe's rate.
    A real dataset needs `weights` unless `from_scratch` (a random encoder on purpose).
    `mean` / `std` normalise the input (x / 255 - mean) / std; `std=None`: ImageNet's, or
    the official code's 0.225 with `fusion.official`.
    """

    fusion: FusionConfig = FusionConfig()
    dataset: str = "synthetic"
    data_dir: str | None = None
    manifest: str | None = None
    cache: str | None = None  # None: <out>/cache
    weights: str | None = None
    from_scratch: bool = False
    preset: str | None = "large"
    mode: str = "linear_probe"
    folds: tuple[int, ...] | None = None
    num_folds: int | None = None  # None: the dataset's own protocol
    epochs: int = 100
    batch_size: int = 16
    lr: float | None = None
    dropout: float = 0.0
    mean: tuple = IMAGENET_MEAN
    std: tuple | None = None  # None: IMAGENET_STD, or OFFICIAL_STD with fusion.official
    out: str | None = None  # None: runs/<dataset>_<strategy>
    seed: int = 0
    num_classes: int | None = None
    recipe: str = "paper"
    select: str = "val_accuracy"
    val_subjects: int | None = None
    precision: str = "auto"
    jit_compile: str = "auto"
    distribute: str = "none"
    feature_cache: bool = True
    workers: int = dataclasses.field(default_factory=default_workers)
    synthetic_dir: str | None = None
    synthetic_actors: int = 24
    synthetic_clips: int = 1
    verbose: int = 1
    # Emotion dimensions learned beside the category (models.multitask), and how their losses combine.
    targets: tuple[str, ...] = (CATEGORY,)
    task_weighting: str = "uncertainty"
    task_weights: tuple[tuple[str, float], ...] = ()  # fixed weighting only; unnamed tasks weigh 1
    targets_file: str | None = None  # CSV key,<dimension>,... adding dimensions to the dataset's clips
    synthetic_dimensions: bool = False  # the demo dataset with valence / arousal cues
    # Missing modalities (issue 15): (p_video, p_audio) of dropping a training clip's video / audio, and
    # what stands in for a missing one ("image": config.PLACEHOLDER_RGB; "learned": a learned tubelet).
    modality_dropout: tuple[float, float] = (0.0, 0.0)
    placeholder: str | None = None  # None: config.default_placeholder (learned for cfas/ffls/fslf with dropout)

    def __post_init__(self):
        fusion = self.fusion
        if isinstance(fusion, dict):
            fusion = FusionConfig.from_dict(fusion)
        if not isinstance(fusion, FusionConfig):
            raise ConfigError(f"fusion must be a FusionConfig, got {type(fusion).__name__}")
        set_ = object.__setattr__
        set_(self, "fusion", fusion)
        set_(self, "targets", parse_targets(self.targets))
        set_(self, "task_weights", parse_task_weights(self.task_weights))
        set_(self, "modality_dropout", parse_modality_dropout(self.modality_dropout))
        if self.placeholder is None:
            set_(self, "placeholder", default_placeholder(fusion.strategy, self.modality_dropout))
        _choice("placeholder", self.placeholder, PLACEHOLDERS)
        if self.modality_dropout != (0.0, 0.0) and fusion.strategy in ("video", "audio"):
            raise ConfigError(f"--modality-dropout needs an audio-visual strategy; {fusion.strategy!r} has one "
                              "modality to begin with")
        _choice("task_weighting", self.task_weighting, TASK_WEIGHTINGS)
        if self.task_weights and self.task_weighting != "fixed":
            raise ConfigError("--task-weights apply to --task-weighting fixed (uncertainty weights are learned)")
        unknown = sorted({name for name, _ in self.task_weights} - set(self.targets))
        if unknown:
            raise ConfigError(f"--task-weights name {unknown}, not among --targets {','.join(self.targets)}")
        set_(self, "weights", resolve_weights(self.weights))  # a shipped preset name -> its folder
        for name in ("data_dir", "manifest", "cache", "weights", "out", "synthetic_dir", "targets_file"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, str(value))
        set_(self, "folds", parse_folds(self.folds))
        if self.out is None:
            set_(self, "out", str(Path("runs") / f"{self.dataset}_{fusion.strategy}"))
        _choice("dataset", self.dataset, DATASETS)
        _choice("mode", self.mode, CLASSIFIER_MODES)
        _choice("recipe", self.recipe, RECIPES)
        _choice("select", self.select, SELECT_CHOICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("jit_compile", self.jit_compile, JIT_CHOICES)
        _choice("distribute", self.distribute, DISTRIBUTE_CHOICES)
        if self.preset is None:
            if not self.weights:
                raise ConfigError("preset is needed unless weights give the architecture")
        else:
            _choice("preset", self.preset, PRESETS)
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("workers", 1), ("synthetic_actors", 1),
                              ("synthetic_clips", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.num_folds is not None and (not isinstance(self.num_folds, int) or self.num_folds < 2):
            raise ConfigError(f"num_folds must be >= 2, got {self.num_folds!r}")
        if self.val_subjects is not None and self.val_subjects < 1:
            raise ConfigError(f"val_subjects must be >= 1, got {self.val_subjects}")
        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real):
                raise ConfigError(f"lr must be a number, got {self.lr!r}")
            set_(self, "lr", float(self.lr))
            if not 0 < self.lr < float("inf"):
                raise ConfigError(f"lr must be positive and finite, got {self.lr}")
        set_(self, "dropout", float(self.dropout))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.verbose not in (0, 1, 2):
            raise ConfigError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        if self.num_classes is not None:
            if self.dataset not in ("ravdess", "synthetic"):
                raise ConfigError("num_classes applies to RAVDESS only (7 or 8 classes)")
            _choice("num_classes", self.num_classes, RAVDESS_CLASS_COUNTS)
        set_(self, "mean", parse_channels(self.mean, "mean"))
        set_(self, "std", parse_channels(
            self.std if self.std is not None else (OFFICIAL_STD if fusion.official else IMAGENET_STD), "std"))
        if self.dataset == "csv" and not self.manifest:
            raise ConfigError("dataset csv needs --manifest <file.csv>")
        if self.dataset not in ("synthetic", "csv") and not self.data_dir and not self.manifest:
            raise ConfigError(f"dataset {self.dataset} needs --data-dir (the folder with the clips) or --manifest")
        if self.dataset != "synthetic" and not self.weights and not self.from_scratch:
            raise ConfigError(
                f"--dataset {self.dataset} without --weights would train a randomly initialised encoder (a linear "
                "probe of random features reports near-chance numbers as results): pass --weights <converted "
                "preset folder or VideoMAE checkpoint>, or --from-scratch to train from random initialisation on purpose")
        if self.from_scratch and self.weights:
            raise ConfigError("--from-scratch and --weights contradict each other: give one")
        if self.preset is not None:  # with weights alone, the protocol checks once the checkpoint is read
            check_recipe(self.recipe, self.mode, self.preset, self.lr)

    # ------------------------------------------------------------------ derived

    @property
    def strategy(self) -> str:
        return self.fusion.strategy

    @property
    def image_size(self) -> int:
        return self.fusion.image_size

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The emotion dimensions trained beside the category (empty: category only)."""
        return tuple(t for t in self.targets if t != CATEGORY)

    @property
    def handles_missing(self) -> bool:
        """Trained with modality dropout: the model takes video alone and audio alone too."""
        return self.modality_dropout != (0.0, 0.0)

    @property
    def is_demo(self) -> bool:
        """The embedded demo: the generated dataset, made on demand in `demo_data_dir`."""
        return self.dataset == "synthetic" and self.data_dir is None and self.manifest is None

    @property
    def demo_data_dir(self) -> Path:
        """Where the demo dataset lives: `synthetic_dir`, else `$MMDER_CACHE` (or ~/.cache/mmder_tf)
        /synthetic/a<actors>_c<clips>_s<seed>."""
        if self.synthetic_dir:
            return Path(self.synthetic_dir)
        root = Path(os.environ.get("MMDER_CACHE", Path.home() / ".cache" / "mmder_tf"))
        suffix = "_dims" if self.synthetic_dimensions else ""
        return root / "synthetic" / f"a{self.synthetic_actors}_c{self.synthetic_clips}_s{self.seed}{suffix}"

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.out) / "cache"

    def check_paths(self) -> "RunConfig":
        """The files a run reads exist (not checked at construction: a saved run's data may have moved
        while its prepared cache, all evaluate and export need, is still there)."""
        if self.data_dir and not Path(self.data_dir).is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: no such directory")
        if self.manifest and not Path(self.manifest).is_file():
            raise ConfigError(f"--manifest {self.manifest}: no such file")
        if self.weights and not Path(self.weights).exists():
            raise ConfigError(f"--weights {self.weights}: no such file")
        if self.targets_file and not Path(self.targets_file).is_file():
            raise ConfigError(f"--targets-file {self.targets_file}: no such file")
        return self

    # ------------------------------------------------------------------ building

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """What `resolve` accepts: the fields, with the fusion settings the CLI exposes flattened."""
        return tuple(sorted({f.name for f in dataclasses.fields(cls)} - {"fusion"} | set(FUSION_OPTIONS)))

    @classmethod
    def resolve(cls, **options) -> "RunConfig":
        """The run the CLI would make of these options (None = not given): the demo's defaults without a
        dataset, the paper's with one; `strategy`, `image_size` and `official` set the fusion
        (or pass a whole `fusion=FusionConfig(...)`). Paths are checked."""
        unknown = set(options) - set(cls.option_names())
        if unknown:
            raise ConfigError(f"unknown option {sorted(unknown)[0]!r}; options: {', '.join(cls.option_names())}")
        given = {k: v for k, v in options.items() if v is not None}
        for flag in ("official", "feature_cache", "from_scratch", "synthetic_dimensions"):
            if flag in given and not isinstance(given[flag], bool):
                raise ConfigError(f"{flag} is a flag: pass True or False, got {given[flag]!r}")
        dataset = given.get("dataset")
        if dataset is None:
            if given.get("data_dir") or given.get("manifest"):
                raise ConfigError("--data-dir/--manifest need --dataset (ravdess, cremad, iemocap or csv)")
            given["dataset"] = dataset = "synthetic"
        defaults = DEMO_DEFAULTS if dataset == "synthetic" else PAPER_DEFAULTS
        if "image_size" not in given:
            size = encoder_image_size(given.get("weights"), given.get("preset"))
            if size is not None:
                given["image_size"] = size
        if given.get("from_scratch") and "mode" not in given:
            given["mode"] = "finetune"  # a frozen random encoder cannot learn
        for key in ("image_size", "epochs", "batch_size", "mode"):
            given.setdefault(key, defaults[key])
        if "preset" not in given and not given.get("weights"):
            given["preset"] = defaults["preset"]
        elif "preset" not in given:
            given["preset"] = None  # the checkpoint's architecture
        if "lr" not in given and given.get("recipe", "paper") == "paper" and dataset == "synthetic" \
                and given["mode"] == "finetune":
            # The paper's 1e-2 trains a frozen encoder's head; a randomly initialised
            # encoder trained end to end diverges at that rate.
            given["lr"] = DEMO_DEFAULTS["lr"]
        # A classifier preset brings the fusion settings it was trained with; options given still win.
        fusion = given.pop("fusion", None) or preset_preprocessing(given.get("weights"))
        if fusion is None:
            # The dataset's crop (face crops for the real datasets) unless one is given: the same rule as
            # mmder-prepare's, so its cache is the one this run reads.
            fusion = FusionConfig(crop=default_crop(dataset, given.get("data_dir")))
        changes = {key: given.pop(key) for key in FUSION_OPTIONS if key in given}
        try:
            fusion = fusion.replace(**changes)
        except TypeError as error:
            raise ConfigError(str(error)) from None
        return cls(fusion=fusion, **given).check_paths()

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["fusion"] = self.fusion.to_dict()
        values["folds"] = None if self.folds is None else list(self.folds)
        values["targets"] = list(self.targets)
        values["task_weights"] = [list(pair) for pair in self.task_weights]
        values["modality_dropout"] = list(self.modality_dropout)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        check_fields(cls, values)
        values = dict(values)
        if isinstance(values.get("fusion"), dict):
            values["fusion"] = FusionConfig.from_dict(values["fusion"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path) -> "RunConfig":
        """The config of a run.json (or of a run folder holding one)."""
        return read_run_file(path)[0]

    @classmethod
    def from_run(cls, run_dir) -> "RunConfig":
        return read_run_file(Path(run_dir) / RUN_FILE)[0]


def preset_preprocessing(weights) -> FusionConfig | None:
    """The FusionConfig a preset folder's inputs were made with (models.preset_io), or None."""
    from mmder_tf.models.preset_io import is_preset, load_preprocessing

    weights = resolve_weights(weights)
    return load_preprocessing(weights) if weights and is_preset(weights) else None


def encoder_image_size(weights=None, preset=None) -> int | None:
    """The frame size an encoder needs (MAE-DFER's regions fit 160 px only), or None: any size will do."""
    weights = resolve_weights(weights)
    if weights:
        if not Path(weights).exists():
            raise ConfigError(f"--weights {weights}: no such file")
        from mmder_tf.models.convert import checkpoint_input

        size = checkpoint_input(weights).get("image_size")
    elif preset in LGI_FORMER_PRESETS:
        size = LGI_FORMER_PRESETS[preset]["image_size"]
    else:
        return None
    if size is not None and not isinstance(size, int):
        height, width = size
        if height != width:
            raise ConfigError(f"--weights {weights} needs {height}x{width} frames; fusion makes square ones")
        size = height
    return size


def read_run_file(path) -> tuple[RunConfig, dict]:
    """(config, the whole run.json) of a run file or folder; a clear ConfigError for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{path.parent if path.name == RUN_FILE else path}: not a training run (no {RUN_FILE})")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable run file ({error})") from None
    if not isinstance(saved, dict) or saved.get("format") != RUN_FORMAT:
        raise ConfigError(f"{path}: not an mmder_tf run file (written by an older mmder_tf? train it again)")
    if int(saved.get("format_version", 0)) > RUN_FORMAT_VERSION:
        raise ConfigError(f"{path}: run format {saved['format_version']} is newer than this mmder_tf reads "
                          f"({RUN_FORMAT_VERSION}); upgrade mmder_tf")
    try:
        return RunConfig.from_dict(saved["config"]), saved
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # a hand-edited field of another type
        raise ConfigError(f"{path}: a setting has the wrong type ({type(error).__name__}: {error})") from None


def run_file_contents(config: RunConfig, **extra) -> dict:
    """What run.json holds: the whole config plus what the run found out (class names, cache, devices)."""
    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "config": config.to_dict(), **extra}
