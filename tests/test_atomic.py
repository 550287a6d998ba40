"""dgunet.atomic: whole files or none, with the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from dgunet.atomic import atomic_open, write_bytes_atomic, write_text_atomic


def test_files_get_the_umask_mode_not_mkstemps_owner_only(tmp_path):
    mask = os.umask(0o022)
    try:
        written = write_text_atomic(tmp_path / "sub" / "a.txt", "hello")
        plain = tmp_path / "plain.txt"
        plain.write_text("hello")
    finally:
        os.umask(mask)
    assert written.read_text() == "hello"
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_bytes_atomic(tmp_path / "r.bin", b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.bin"]
