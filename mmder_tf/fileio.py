"""How the package writes files: temporary names, permissions, the one-writer lock, owned folders.

Every command that writes a run folder, a cache or an export goes through here:

- `temp_path`: a hidden sibling name unique per process and call
  (`.NAME.tmp-<pid>-<random>`), so two writers never share a temporary file,
  and leftovers of a killed run are recognisable (`clean_stale_temps`).
- `finish_file`: the permissions a plain `open()` would have given (0666 less the
  umask); `tempfile.mkstemp` creates 0600, which made results readable by their
  owner only.
- `WriterLock`: one writer per run folder, cache or export target. A file lock
  (flock) on `<folder>/.mmder.lock` that records the holder's pid, host and
  command. The kernel drops the flock when the holder dies, so the lock of a dead
  process is taken over safely (no pid guessing, no race); a second live process
  gets a `LockedError` that names the holder.
- `check_replaceable`: a command only replaces (or deletes) a folder that carries
  this project's own marker; anything else is refused with what is there.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from mmder_tf.errors import MMDERError

TEMP_TAG = ".tmp-"
LOCK_NAME = ".mmder.lock"


class LockedError(MMDERError):
    """Another live process writes the same run folder, cache or export."""


class NotOwnedError(MMDERError):
    """An output path holds something this project did not write; it is never replaced."""


# ----------------------------------------------------------------------------- temporary files

def temp_path(path, suffix: str = "") -> Path:
    """A hidden sibling of `path` unique to this process and call; `suffix` keeps an extension writers need."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _temp_pid(name: str) -> int | None:
    if not name.startswith(".") or TEMP_TAG not in name:
        return None
    rest = name.rsplit(TEMP_TAG, 1)[1]
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def clean_stale_temps(directory, prefix: str = "", min_age_s: float = 0.0) -> list[Path]:
    """Remove this project's temporary files and folders in `directory` (only under a lock that covers them).

    A temporary name of this process is kept (it is being written); any other one
    is a leftover of a killed run, since the caller holds the folder's lock.
    `prefix` limits the clean-up to the temporaries of the one path named `prefix`
    (`.{prefix}.tmp-...`, so `model` never takes `model_v2`'s); `min_age_s`
    spares younger ones (in folders that other hosts may write under other locks).
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for child in directory.iterdir():
        pid = _temp_pid(child.name)
        if pid is None or pid == os.getpid() or (prefix and not child.name.startswith(f".{prefix}{TEMP_TAG}")):
            continue
        try:
            if min_age_s and time.time() - child.lstat().st_mtime < min_age_s:
                continue
        except FileNotFoundError:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
    return removed


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no other portable way to read it
    os.umask(mask)
    return mask


def finish_file(path, mode: int = 0o666):
    """Give `path` the permissions open() would have: `mode` less the process umask."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def replacing(path, suffix: str = ""):
    """`with replacing(path) as tmp:` write tmp (a `temp_path`); on a clean exit it replaces `path` in one
    rename, on an error it is removed and `path` is left as it was. `suffix`: an extension the writer
    needs (`.weights.h5` for Keras, `.mp4` for a muxer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix=suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(new, target):
    """Move the finished folder `new` to `target` by renames; an old `target` is removed only once the new
    one is in place (a reader sees the old folder or the new one, never a half-written one)."""
    new, target = Path(new), Path(target)
    if target.exists():
        old = temp_path(target)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` through a unique temporary file and a rename (fsync'd, umask permissions)."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- full and read-only disks

# Some writers (HDF5 behind Keras' save_weights) crash the process instead of raising when the disk
# fills mid-write, so a writer that knows its size asks first; the margin covers the file's metadata.
SPACE_MARGIN = 1 << 20


def mount_point(path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def ensure_space(path, nbytes: int):
    """Raise OSError(ENOSPC) naming the device before writing `nbytes` to `path` where they cannot fit."""
    directory = Path(path).parent
    directory.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(directory).free < int(nbytes) + SPACE_MARGIN:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


_FILE_SYSTEM_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded on the device",
                       errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                       errno.EPERM: "operation not permitted"}


def file_system_error(error: BaseException) -> str | None:
    """One line for a write refused by the disk (full, read-only, not ours), None for any other error.

    OSError carries errno and the file; TensorFlow's file errors (TFRecord, SavedModel) and HDF5's
    carry only the C library's text, so that is recognised too.
    """
    text = str(error)
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if code not in _FILE_SYSTEM_ERRORS:
        code = next((c for c in _FILE_SYSTEM_ERRORS if os.strerror(c) in text), None)
        if code is None:
            return None
    filename = getattr(error, "filename", None)
    where = f" ({filename})" if filename else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        device = mount_point(filename) if filename else None
        return (f"{_FILE_SYSTEM_ERRORS[code]}{f' mounted at {device}' if device else ''}{where}; free some space "
                "and run the same command again: finished files and the last good checkpoint are kept")
    detail = where or f" ({text.splitlines()[0][:200]})" if text else ""
    return f"cannot write: {_FILE_SYSTEM_ERRORS[code]}{detail}; choose a writable folder"


# ----------------------------------------------------------------------------- the one-writer lock

_HELD: dict[str, "WriterLock"] = {}  # lock path -> the lock this process holds (re-entrant per process)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd_or_path) -> dict:
    try:
        if isinstance(fd_or_path, int):
            os.lseek(fd_or_path, 0, os.SEEK_SET)
            text = os.read(fd_or_path, 4096).decode("utf-8", "replace")
        else:
            text = Path(fd_or_path).read_text(errors="replace")
        holder = json.loads(text) if text.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process"
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"{holder.get('command', 'a process')} (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, " \
           f"since {when})"


class WriterLock:
    """Exclusive lock of `directory` for one writing process: `with WriterLock(dir, "mmder-prepare", hint): ...`.

    `hint` ends the message a second process gets (what to do instead). Re-entrant
    within a process: the finetune run holds its folder while its own prepare or
    evaluation code asks again. `stale_holder` is the dead holder whose lock was
    taken over (None when the lock was free), for the caller to report.
    """

    def __init__(self, directory, command: str, hint: str = "wait for it to finish", name: str = LOCK_NAME):
        self.directory = Path(directory)
        self.path = self.directory / name
        self.command = command
        self.hint = hint
        self.stale_holder = None
        self._fd = None
        self._outer = None

    def acquire(self) -> "WriterLock":
        key = str(self.path.resolve()) if self.directory.exists() else str(self.path.absolute())
        if key in _HELD:
            self._outer = _HELD[key]
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not self._lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise LockedError(f"{self.directory} is being written by {describe_holder(holder)}; {self.hint}")
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            self.stale_holder = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        _HELD[str(self.path.resolve())] = self
        return self

    def _lock(self, fd) -> bool:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): fall back to the recorded pid
            holder = _read_holder(fd)
            return not (holder and holder.get("host") == socket.gethostname() and _pid_alive(int(holder["pid"])))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:
            # A file system without flock (some network mounts): trust the recorded pid on this host.
            holder = _read_holder(fd)
            if not holder:
                return True
            if holder.get("host") != socket.gethostname():
                return False
            return not _pid_alive(int(holder.get("pid", 0)))

    def release(self):
        if self._outer is not None:
            self._outer = None
            return
        if self._fd is None:
            return
        _HELD.pop(str(self.path.resolve()), None)
        # Unlinked while still locked: a process that opened the old file re-checks the inode and retries.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------- owned outputs

def describe_contents(directory, limit: int = 5) -> str:
    """'run.json, fold_1/, notes.txt and 4 more' for a refusal message."""
    directory = Path(directory)
    if not directory.is_dir():
        return "a file" if directory.exists() else "nothing"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    if not names:
        return "an empty folder"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_replaceable(path, is_owned, what: str, option: str = "--overwrite"):
    """Refuse to replace `path` unless `is_owned(path)` (the project's marker is there) or it is an empty folder.

    Returns True when `path` exists and may be replaced. The refusal names what
    is there, and suggests `option` only when `path` is something it would replace.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return True
    if path.is_dir() and not path.is_symlink() and is_owned(path):
        return True
    raise NotOwnedError(f"{path} exists and is not {what} (it holds {describe_contents(path)}); it is never "
                        f"replaced, even with {option}: choose another path")


def read_json(path, error=MMDERError, what: str = "file", fix: str = "restore or remove it"):
    """json.loads of `path`, or `error` naming the file when it is unreadable or damaged (never a traceback)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as failure:
        raise error(f"{path}: damaged {what}, not readable JSON ({type(failure).__name__}: "
                    f"{str(failure).splitlines()[0][:200] if str(failure) else ''}); {fix}") from None
