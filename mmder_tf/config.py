"""Preprocessing settings shared by fuse_clip, the prepared cache, training and export."""
from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path

from mmder_tf.errors import ConfigError

STRATEGIES = ("cfas", "sfas", "ffls", "fslf", "ofos", "rfas", "video", "audio")
AUDIO_VISUAL_STRATEGIES = ("cfas", "sfas", "ffls", "fslf", "ofos", "rfas")
_HALF_FRAME_STRATEGIES = ("ffls", "fslf", "ofos", "rfas")
SPECTROGRAMS = ("logmel", "stft", "mfcc")
# Input normalisation of the classifier (models/layers.InputNormalization); plain values here so that
# command lines can default them without importing Keras.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_STD = (0.225, 0.225, 0.225)  # the official MultiMAE-DER code: one std for every channel
# Combines two seeds into one, a * SEED_MIX + b (RFAS seed and epoch, data seed and epoch, epoch and
# step): odd and larger than any epoch or step count, so different pairs do not collide.
SEED_MIX = 1_000_003
# linear_probe: frozen encoder, only fc_norm and the head train (the official code); finetune: all of it.
CLASSIFIER_MODES = ("linear_probe", "finetune")


def check_fields(config_class, values: dict):
    """A saved config names only fields `config_class` (a dataclass) has: anything else is a typo or another version."""
    unknown = set(values) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        raise ConfigError(f"unknown {config_class.__name__} fields: {sorted(unknown)}")


def check_strategy(strategy: str) -> str:
    name = str(strategy).lower()
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def frames_per_modality(strategy: str, num_frames: int = 16) -> int:
    """Frames sampled from each modality: sequence strategies share the clip's frames."""
    strategy = check_strategy(strategy)
    return num_frames // 2 if strategy in _HALF_FRAME_STRATEGIES else num_frames


def modality_size(strategy: str, image_size: int = 224) -> tuple[int, int]:
    """(height, width) of each video frame and spectrogram before fusion."""
    strategy = check_strategy(strategy)
    return (image_size // 2, image_size) if strategy == "cfas" else (image_size, image_size)


def needs_audio(strategy: str) -> bool:
    return check_strategy(strategy) != "video"


def needs_video(strategy: str) -> bool:
    return check_strategy(strategy) != "audio"


# ----------------------------------------------------------------------------- missing modalities

MODALITIES = ("video", "audio")
# What an input holds, named as results and predictions name it.
INPUT_KINDS = {"audio_video": ("video", "audio"), "video": ("video",), "audio": ("audio",)}
# The image that stands in for a missing modality's frames or spectrograms: uniform magenta. No
# spectrogram colour map makes it and no camera frame is one colour, so the model can learn to ignore
# it, and a learned placeholder (models.layers.PlaceholderTubelets) can find its tubelets in the input.
# (SFAS, which averages the two images, uses the present modality instead: fusion.clip.placeholder_images.)
PLACEHOLDER_RGB = (255, 0, 255)
# "image": the fixed image above is the missing modality; "learned": the classifier replaces the
# tubelets made of it by a learned tubelet (a learned patch embedding, see PlaceholderTubelets).
PLACEHOLDERS = ("image", "learned")
# Where a missing modality fills whole tubelets (2 frames x 16 x 16 pixels of it alone), so the learned
# placeholder applies to all of them; the default there (measured better: README "Missing modalities").
# OFOS pairs V_i with A_i in each tubelet and SFAS sums them: the fixed image; RFAS mixes them at random.
LEARNED_PLACEHOLDER_STRATEGIES = ("cfas", "ffls", "fslf")


def default_placeholder(strategy: str, modality_dropout) -> str:
    """The placeholder a run uses unless told: learned where it replaces whole tubelets, else the image."""
    dropped = any(float(p) > 0 for p in modality_dropout)
    return "learned" if dropped and check_strategy(strategy) in LEARNED_PLACEHOLDER_STRATEGIES else "image"


def check_modalities(modalities) -> tuple[str, ...]:
    """("video", "audio") / "video" / "audio,video" -> the present modalities in MODALITIES order (>= 1)."""
    if isinstance(modalities, str):
        modalities = INPUT_KINDS.get(modalities) or [m.strip() for m in modalities.split(",") if m.strip()]
    names = [str(m).lower() for m in modalities]
    unknown = [m for m in names if m not in MODALITIES]
    if unknown or not names:
        raise ConfigError(f"modalities must name one or both of {MODALITIES}, got {modalities!r}")
    return tuple(m for m in MODALITIES if m in names)


def input_kind(modalities) -> str:
    """("video", "audio") -> "audio_video", ("video",) -> "video", ("audio",) -> "audio"."""
    present = check_modalities(modalities)
    return next(kind for kind, names in INPUT_KINDS.items() if names == present)


CROPS = ("center", "face", "aligned", "none")


# The real datasets' default crop, chosen by benchmarks/face.py on the real clips
# (README "Faces"): the tracked face crop puts the face at ~RATIO of the input's
# area where the centre square leaves it a fraction.
REAL_DATASET_CROP = "face"


def default_crop(dataset: str, data_dir=None) -> str:
    """The crop of a dataset's clips unless --crop says otherwise (prepare, finetune, pretrain; exports and
    predictions carry the run's): REAL_DATASET_CROP for RAVDESS, CREMA-D and IEMOCAP
    recordings; the centre square for csv manifests and for generated data (a folder with synthetic.json,
    whose drawn faces are not what the detector was trained on)."""
    if data_dir is not None and (Path(data_dir) / "synthetic.json").is_file():
        return "center"
    return REAL_DATASET_CROP if dataset in ("ravdess", "cremad", "iemocap") else "center"


def face_crop_mode(crop: str) -> str | None:
    """What decode_clip's `face_crop` gets for a FusionConfig.crop: "face", "aligned" or None."""
    return crop if crop in ("face", "aligned") else None


MAX_IMAGE_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """How one clip becomes the fused uint8 [num_frames, image_size, image_size, 3] input.

    `official=True` reproduces the official code's frame choice (first ~1.5 s),
    wrapped uint8 SFAS and the official spectrogram settings, for comparison.
    """

    strategy: str = "fslf"
    num_frames: int = 16
    image_size: int = 224
    sample_rate: int = 16000
    crop: str = "center"  # "center" (centre square), "face" / "aligned" (tracked face, media/face.py), "none" (stretch)
    spectrogram: str = "logmel"  # "logmel", "stft" (linear frequency) or "mfcc"
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 5.0
    n_mels: int = 128
    n_mfcc: int = 40
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    top_db: float = 80.0
    colormap: str = "viridis"  # "viridis" or "gray" (replicated to 3 channels)
    rfas_seed: int = 0
    rfas_per_epoch: bool = False  # False: one fixed permutation per clip; True: redrawn each epoch
    official: bool = False

    def __post_init__(self):
        object.__setattr__(self, "strategy", check_strategy(self.strategy))
        # A hand-edited run.json may hold "64" or 64.0: refuse with the field's name, not a later traceback.
        for name in ("num_frames", "image_size", "sample_rate", "n_fft", "n_mels", "n_mfcc", "rfas_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if not 32 <= self.image_size <= MAX_IMAGE_SIZE:  # 100000 px exhausted memory before any check
            raise ConfigError(f"image_size must be a positive multiple of 32 up to {MAX_IMAGE_SIZE}, got "
                              f"{self.image_size}")
        if self.num_frames % 2 or self.num_frames < 2:
            raise ConfigError(f"num_frames must be even and >= 2 (tubelets pair frames), got {self.num_frames}")
        if self.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32 (16-pixel patches, CFAS halves), got {self.image_size}")
        if self.crop not in CROPS:
            raise ConfigError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.spectrogram not in SPECTROGRAMS:
            raise ConfigError(f"spectrogram must be one of {', '.join(SPECTROGRAMS)}, got {self.spectrogram!r}")
        if self.colormap not in ("viridis", "gray"):
            raise ConfigError(f"colormap must be 'viridis' or 'gray', got {self.colormap!r}")
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")

    @property
    def frames_per_modality(self) -> int:
        return frames_per_modality(self.strategy, self.num_frames)

    @property
    def modality_size(self) -> tuple[int, int]:
        return modality_size(self.strategy, self.image_size)

    def replace(self, **changes) -> "FusionConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "FusionConfig":
        check_fields(cls, values)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "FusionConfig":
        return cls.from_dict(json.loads(text))


# ----------------------------------------------------------------------------- command-line options

# FusionConfig fields a command line may set, with their flags' help. One table so
# that every CLI (finetune, visualize, export --weights) offers the same options.
SPECTROGRAM_OPTIONS = {
    "spectrogram": (str, "spectrogram image: logmel (default), stft (linear frequency) or mfcc "
                         "(each coefficient scaled over the clip)"),
    "n_fft": (int, "FFT size in samples (default 512)"),
    "win_ms": (float, "analysis window in ms (default 25)"),
    "hop_ms": (float, "hop in ms (default 5)"),
    "n_mels": (int, "mel bands for logmel / mfcc (default 128)"),
    "n_mfcc": (int, "MFCC coefficients from c0 (default 40)"),
    "fmin": (float, "lowest frequency in Hz (default 0)"),
    "fmax": (float, "highest frequency in Hz (default sample_rate / 2)"),
    "top_db": (float, "dynamic range in dB shown below the clip's peak (default 80)"),
    "colormap": (str, "viridis (default) or gray"),
}


def add_spectrogram_arguments(parser):
    """--spectrogram, --n-fft, --win-ms, ... (FusionConfig fields; unset = the FusionConfig default)."""
    group = parser.add_argument_group("spectrogram images (FusionConfig; default: its defaults)")
    for name, (kind, help_text) in SPECTROGRAM_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        choices = {"spectrogram": SPECTROGRAMS, "colormap": ("viridis", "gray")}.get(name)
        group.add_argument(flag, type=kind, choices=choices, help=help_text)
    return group
