"""Files that appear complete or not at all: every file the package writes goes through `replacing`.

A run killed while writing must never leave a half-written file behind (a fold's
results.json marks it finished; a cache shard is trusted once it exists).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

TEMP_MARK = ".tmp-"  # in every temporary name, for clean-ups of killed writers: glob(f".{name}*{TEMP_MARK}*")


def temporary_name(path, keep_suffix: bool = False) -> Path:
    """A fresh temporary path beside `path` (same folder: os.replace stays on one file system), hidden
    (dataset scans skip dot files). Its name ends in a random tag, so a glob for `path`'s suffix
    never picks it up; `keep_suffix=True` ends it with `path`'s whole name instead, for writers
    that choose the format from the suffix (`.weights.h5`, `.mp4`, `.png`)."""
    path = Path(path)
    tag = f"{TEMP_MARK}{uuid.uuid4().hex[:8]}"
    return path.with_name(f"{tag}.{path.name}" if keep_suffix else f".{path.name}{tag}")


@contextlib.contextmanager
def replacing(path, keep_suffix: bool = False):
    """`with replacing(path) as tmp:` write tmp; on a clean exit it replaces `path` in one rename,
    on an error it is removed and `path` is left as it was. `keep_suffix`: see temporary_name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))
