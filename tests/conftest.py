"""Shared test fixtures: where the real clips live, and fast defaults for TF."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def _realclips_dir() -> Path:
    candidates = [os.environ.get("MMDER_REALCLIPS"), REPO.parent / "shared" / "realclips", REPO / "shared" / "realclips"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise RuntimeError(
        "real clips not found: set MMDER_REALCLIPS or place shared/realclips beside the repository"
    )


@pytest.fixture(scope="session")
def realclips_dir() -> Path:
    return _realclips_dir()


@pytest.fixture(scope="session")
def realclips(realclips_dir):
    """All real clips by file name."""
    return {p.name: p for p in sorted(realclips_dir.iterdir()) if p.suffix in (".mp4", ".flv")}
