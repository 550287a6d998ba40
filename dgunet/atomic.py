"""Atomic file writes: a temporary file in the target folder, then a rename over the target.

A crash, a full disk or Ctrl-C leaves the previous file (or no file), never half of one. Every
result, checkpoint and record this package writes goes through here, and so does every write
failure: read-only folders, permission denied, a full disk or a file-size limit become a one-line
StorageError naming the path (and, for a full disk, the free space), never a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from dgunet.errors import StorageError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it is synced and renamed to `path`.

    An OSError on the way (creating the folder, writing, syncing, renaming) is raised as a
    StorageError naming `path`; the temporary file is removed and any old `path` is untouched.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # mkstemp creates the file owner-only (0600); give it the mode open() would have.
            os.chmod(tmp, 0o666 & ~_umask())
            with os.fdopen(handle, mode, encoding=encoding) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing `path` (a file or a folder) into a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except OSError as err:
        raise storage_error(path, err) from None


_ADVICE = "choose another output folder (or fix this one) and run again"


def storage_error(path: str | os.PathLike, err: OSError) -> StorageError:
    """A one-line StorageError saying why `path` could not be written, and what to do."""
    path = Path(path)
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk is full ({_free_space(path)} free on the file system of {_existing(path)})"
        advice = "free some space or write elsewhere"
    elif code == errno.EFBIG:
        why = "the file would exceed this process's file-size limit (ulimit -f) or the file system's"
        advice = "raise the limit or write elsewhere"
    elif code == errno.EROFS:
        why = f"{_existing(path)} is on a read-only file system"
        advice = _ADVICE
    elif code in (errno.EACCES, errno.EPERM):
        why = f"permission denied ({err.filename or _existing(path)})"
        advice = _ADVICE
    elif code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        why = f"{err.strerror.lower() if err.strerror else err}: {err.filename or path}"
        advice = "a file stands where a folder is needed (or the reverse); " + _ADVICE
    else:
        why, advice = (err.strerror or str(err)), _ADVICE
    result = StorageError(code, f"cannot write {path}: {why}; {advice}. Nothing was half-written")
    result.filename = str(path)
    return result


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent folder."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_space(path: Path) -> str:
    try:
        free = shutil.disk_usage(_existing(path)).free
    except OSError:
        return "an unknown amount"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return f"{free:.1f} TiB"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
