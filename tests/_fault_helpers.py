"""What the fault tests share: broken checkpoints, limited child processes, places that refuse writes."""

from __future__ import annotations

import errno
import math
import os
import resource
import subprocess
from pathlib import Path

import torch
from _engine_helpers import PYTHON, REPO, env_one_thread

# sysfs refuses new files even to root: a real "permission denied" wherever it is mounted.
DENIED_DIR = Path("/sys")


def nan_checkpoint(path: Path, source: Path, key_index: int = 3) -> str:
    """A copy of the checkpoint `source` with NaN in its `key_index`-th tensor; returns that key."""
    ckpt = torch.load(source, weights_only=True)
    state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt
    key = [k for k, v in state.items() if v.is_floating_point()][key_index]
    state[key] = torch.full_like(state[key], math.nan)
    torch.save(ckpt, path)
    return key.removeprefix("module.")


def run_limited(cmd: list[str], cwd: Path, file_size_limit: int,
                timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `cmd` with RLIMIT_FSIZE: a write past `file_size_limit` bytes fails with EFBIG, as on a
    full (or quota-limited) disk. Python ignores SIGXFSZ, so the write raises instead of killing."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(cmd, cwd=cwd, env=env_one_thread(), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def run_module(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """python -m dgunet ARGS in `cwd`, with this worktree importable."""
    env = {**env_one_thread(), "PYTHONPATH": str(REPO)}
    return subprocess.run([PYTHON, "-m", "dgunet", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def refuses_writes(folder: Path) -> bool:
    """Whether creating a file in `folder` fails with permission denied (so a test can use it)."""
    try:
        fd = os.open(folder / "dgunet_probe.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as err:
        return err.errno in (errno.EACCES, errno.EPERM)
    os.close(fd)
    os.unlink(folder / "dgunet_probe.txt")
    return False


def one_error_line(stderr: str) -> str:
    """The `error: ...` line of a command's stderr; asserts there is exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]
