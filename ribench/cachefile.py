"""Files ribench writes and reads back: atomic writes, and cache files that carry their own hash.

Every write goes to a temporary file beside its target (``.<name>.<pid>.<random>.tmp``), is
flushed to disk and renamed over the target, so a reader sees the old file or the new one, never
half of one. A failed write removes its temporary file; temporary files that a killed process
left behind are removed by the next write into that folder.

A cache file starts with a magic line and the sha256 of what follows. A file that is missing,
truncated, bit-flipped, zeroed or of an older format reads as absent (and is removed), so the
caller rebuilds it; nothing damaged is ever used.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ribench.errors import RibenchError

__all__ = ["CacheError", "atomic_write", "load_arrays", "process_alive", "read_checked", "save_arrays",
           "sweep_leftovers", "write_checked"]

MAGIC = b"ribench-cache 1\n"
_DIGEST = hashlib.sha256().digest_size
LEFTOVER_AGE_S = 24 * 3600     # a temporary file this old is a leftover even if its pid is alive again


class CacheError(RibenchError):
    """A file ribench needs to write cannot be written (full disk, read-only folder)."""


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_leftovers(folder: Path) -> None:
    """Remove temporary files of writes that died (their process is gone, or they are a day old)."""
    try:
        candidates = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return
    now = time.time()
    for path in candidates:
        parts = path.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        try:
            stale = (pid is not None and pid != os.getpid() and not process_alive(pid)) or \
                now - path.stat().st_mtime > LEFTOVER_AGE_S
            if stale:
                path.unlink()
        except OSError:
            continue


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], what: str = "file",
                 error_type: type[RibenchError] = CacheError) -> Path:
    """Write `path` through `write(temporary_name)`, then fsync and rename; a failure (any exception,
    a full disk included) removes the temporary file and is one `error_type` line."""
    target = Path(path)
    tmp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_leftovers(target.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        write(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
    except RibenchError:
        raise
    except Exception as error:      # OSError, and the libraries' own types (safetensors' SafetensorError)
        raise error_type(f"cannot write {what} {target}: {_reason(error)}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return target


def write_checked(path: str | os.PathLike, payload: bytes, what: str = "cache file") -> Path:
    """Write `payload` behind a magic line and its sha256, atomically."""
    def write(name: str) -> None:
        with open(name, "wb") as handle:
            handle.write(MAGIC + hashlib.sha256(payload).digest() + payload)

    return atomic_write(path, write, what)


def read_checked(path: str | os.PathLike) -> bytes | None:
    """The payload of a file written by `write_checked`; None (and the file removed) when it is missing
    or does not match its hash."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + _DIGEST
    payload = data[head:]
    if data[:len(MAGIC)] == MAGIC and len(data) >= head and hashlib.sha256(payload).digest() == data[len(MAGIC):head]:
        return payload
    try:
        path.unlink()                       # damaged or of another format: rebuilt by the caller
    except OSError:
        pass
    return None


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], what: str = "cache file") -> Path:
    """Named numpy arrays (no pickled objects) as one checked cache file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_checked(path, buffer.getvalue(), what)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of `save_arrays`, or None when the file is missing or damaged."""
    payload = read_checked(path)
    if payload is None:
        return None
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as found:
            return {name: found[name] for name in found.files}
    except Exception:                       # hash matched but not an array file: treat as absent
        Path(path).unlink(missing_ok=True)
        return None
