"""One training per run folder: an exclusive `fcntl.flock` on <run>/train.lock.

The lock file holds the holder's host and PID (JSON), so a refused second training can say
which process owns the folder. The kernel drops a flock when its process ends, however it ends
(SIGKILL included): a lock file whose lock is free is stale, and the next training takes it over
with a warning. A training that ends removes the file. Under DDP rank 0 holds the lock and every
rank learns from one collective whether it got it, so all ranks stop together when it did not.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from dgunet.atomic import writing
from dgunet.errors import ConfigError

LOCK = "train.lock"


def _warn(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _holder_text(text: str) -> str:
    """'PID 123 on host' from a lock file's contents (or what little it says)."""
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process (the lock file is unreadable)"


class RunLock:
    """An exclusive lock of `out_dir`; `acquire` raises ConfigError naming the holder's PID."""

    def __init__(self, out_dir: str | os.PathLike, warn: Callable[[str], None] = _warn) -> None:
        self.path = Path(out_dir) / LOCK
        self._fd: int | None = None
        self._warn = warn

    def acquire(self) -> None:
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:  # another process may remove the file between our open and our flock
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder_text(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                    os.close(fd)
                    raise ConfigError(
                        f"{self.path.parent} is in use by another training ({holder}, lock {self.path}); "
                        f"wait for it to end or stop it, or set OUTPUT.NAME / OUTPUT.DIR for a new run"
                    ) from None
                if self._still_the_file(fd):
                    break
                os.close(fd)
            self._fd = fd
            previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            if previous:
                self._warn(f"warning: took over the stale lock {self.path} of {_holder_text(previous)}: "
                           f"that process is gone (it crashed or was killed)")
            me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}) + "\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
            os.fsync(fd)

    def _still_the_file(self, fd: int) -> bool:
        """Whether `fd` is still the file at `self.path` (not one a releasing holder just removed)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: nobody locks a removed file)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


@contextmanager
def run_lock(out_dir: Path, is_main: bool, all_ranks_agree: Callable[[bool], bool]) -> Iterator[RunLock | None]:
    """Hold the lock of `out_dir` on the main rank for the block; every rank raises when it failed.

    all_ranks_agree(failed) -> whether any rank failed (a collective under DDP, identity alone).
    """
    lock, error = RunLock(out_dir) if is_main else None, None
    if lock is not None:
        try:
            lock.acquire()
        except (ConfigError, OSError) as err:
            error = err
    if all_ranks_agree(error is not None):
        if error is not None:
            raise error
        raise ConfigError(f"rank 0 could not lock {Path(out_dir) / LOCK}; its message says why")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()

