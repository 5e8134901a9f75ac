"""Shared test fixtures: where the real clips live, and fast defaults for TF."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def _shared_dir(name: str, variable: str, what: str) -> Path:
    """../shared/<name> beside the repository (or inside it), or where $<variable> points."""
    candidates = [os.environ.get(variable), REPO.parent / "shared" / name, REPO / "shared" / name]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise RuntimeError(f"{what} not found: set {variable} or place shared/{name} beside the repository")


def _realclips_dir() -> Path:
    return _shared_dir("realclips", "MMDER_REALCLIPS", "real clips")


def golden_dir() -> Path:
    """The upstream golden tensors (../shared/golden); MMDER_GOLDEN overrides, as MMDER_REALCLIPS does for clips."""
    candidates = [os.environ.get("MMDER_GOLDEN"), REPO.parent / "shared" / "golden", REPO / "shared" / "golden"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise RuntimeError("golden tensors not found: set MMDER_GOLDEN or place shared/golden beside the repository")


@pytest.fixture(scope="session")
def realclips_dir() -> Path:
    return _realclips_dir()


@pytest.fixture(scope="session")
def realclips(realclips_dir):
    """All real clips by file name."""
    return {p.name: p for p in sorted(realclips_dir.iterdir()) if p.suffix in (".mp4", ".flv")}


@pytest.fixture(scope="session")
def realaudio_dir() -> Path:
    """The real emotional speech corpora (RAVDESS audio-only speech and song, BanglaSER; 16 kHz FLAC):
    tests read a handful of its files, never the whole set."""
    return _shared_dir("realaudio", "MMDER_REALAUDIO", "real speech recordings")


# ----------------------------------------------------------------------------- one small generated dataset, shared

# The end-to-end tests (finetune CLI, evaluate) all read this one dataset and one
# prepared cache: 4 actors x 3 emotions x 1 clip (32 px, 0.8 s), plus one corrupt
# clip with a valid RAVDESS name that every run must skip and report.
SMALL_EMOTIONS = ("01", "03", "05")
SMALL_ACTORS = 4


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    from mmder_tf.data import synthetic

    root = tmp_path_factory.mktemp("small_dataset")
    synthetic.generate(root, actors=SMALL_ACTORS, clips_per_class=1, seed=3, size=32, seconds=0.8,
                       emotions=SMALL_EMOTIONS)
    bad = root / synthetic.clip_name(2, "03", 1)  # a second 'happy' clip of actor 2, not a video
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


@pytest.fixture(scope="session")
def small_bad_clip(small_dataset) -> Path:
    from mmder_tf.data import synthetic

    return small_dataset / synthetic.clip_name(2, "03", 1)


@pytest.fixture(scope="session")
def small_cache(small_dataset, tmp_path_factory) -> Path:
    """The prepared TFRecord cache of small_dataset for fslf at 32 px (serves every strategy's frame count)."""
    from mmder_tf.config import FusionConfig
    from mmder_tf.data.datasets import load_manifest
    from mmder_tf.data.prepare import prepare

    out = tmp_path_factory.mktemp("small_cache")
    prepare(load_manifest("ravdess", data_dir=small_dataset), out, FusionConfig(strategy="fslf", image_size=32),
            progress=False)
    return out


# ----------------------------------------------------------------------------- the real clips as a small CSV dataset

# The seven real clips with audio (six CREMA-D, one RAVDESS), as a CSV dataset with
# three made-up subjects so that subject-independent folds exist. One cache of them
# (default, lossless format, 64 px) serves every test that compares the training
# path with fuse_clip, predict and the SavedModel.
REAL_CSV_IMAGE_SIZE = 64
_REAL_CSV_ROWS = (
    ("1001_DFA_ANG_XX.flv", "anger", "a"), ("1001_DFA_DIS_XX.flv", "disgust", "a"),
    ("1001_DFA_FEA_XX.flv", "fear", "b"), ("1001_DFA_HAP_XX.flv", "happy", "b"),
    ("1001_DFA_NEU_XX.flv", "neutral", "c"), ("1001_DFA_SAD_XX.flv", "sad", "c"),
    ("01-01-01-01-01-01-01.mp4", "neutral", "c"),
)


@pytest.fixture(scope="session")
def realclips_csv(realclips, tmp_path_factory) -> Path:
    """CSV manifest (path,label,subject) of the seven real clips with audio."""
    root = tmp_path_factory.mktemp("realclips_csv")
    lines = ["path,label,subject"] + [f"{realclips[name]},{label},{subject}" for name, label, subject in _REAL_CSV_ROWS]
    path = root / "clips.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def realclips_cache(realclips_csv, tmp_path_factory) -> Path:
    """The default (lossless) prepared cache of realclips_csv at REAL_CSV_IMAGE_SIZE px."""
    from mmder_tf.config import FusionConfig
    from mmder_tf.data.datasets import load_manifest
    from mmder_tf.data.prepare import prepare

    out = tmp_path_factory.mktemp("realclips_cache")
    prepare(load_manifest("csv", manifest=realclips_csv), out, FusionConfig(image_size=REAL_CSV_IMAGE_SIZE),
            progress=False)
    return out


# ----------------------------------------------------------------------------- kill -9 a training run mid-way

def kill_after_epoch(command, metadata, env, cwd, epoch: int = 1, timeout: float = 600):
    """Start `command`, SIGKILL it once Keras' BackupAndRestore `metadata` file records `epoch`
    finished epochs; fails if the run ends first or never gets there."""
    import json
    import signal
    import subprocess
    import time

    def reached():
        try:  # Keras writes the metadata in place: a read can catch it half-written
            return metadata.exists() and json.loads(metadata.read_text()).get("epoch", 0) >= epoch
        except ValueError:
            return False

    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not reached():
        time.sleep(0.02)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    else:
        raise AssertionError("the run ended before it could be killed: " + process.stderr.read().decode()[-2000:])
    process.stderr.close()
    assert reached(), f"no backup of epoch {epoch} within {timeout} s"
