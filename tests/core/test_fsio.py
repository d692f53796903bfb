"""codex_core.fsio: the one durability policy (atomic replaces), locked edits, stamps, sparse copies."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from codex_core import fsio


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_json_is_written_with_the_callers_formatting_and_no_temp_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"  # the parent is created
    data = {"b": 1, "a": [1, 2]}
    fsio.write_json_atomic(target, data)
    assert target.read_text() == json.dumps(data, indent=2, sort_keys=True)
    fsio.write_json_atomic(target, data, indent=None, sort_keys=False)
    assert target.read_text() == json.dumps(data)
    fsio.write_json_atomic(target, data, indent=1, sort_keys=True, mode=0o600)
    assert target.read_text() == json.dumps(data, indent=1, sort_keys=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _leftovers(target.parent) == []


def test_new_files_get_the_umask_not_the_owner_only_mode_of_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        fsio.write_text_atomic(tmp_path / "a.txt", "x")
        fsio.replace_atomically(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"y"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "data.parquet"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fsio.replace_atomically(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_replace_all_replaces_nothing_when_any_write_fails(tmp_path: Path) -> None:
    first, second = tmp_path / "definitions.parquet", tmp_path / "edges.parquet"
    first.write_bytes(b"old defs")
    second.write_bytes(b"old edges")

    def fail(tmp: Path) -> None:
        raise OSError("no space")

    with pytest.raises(OSError, match="no space"):
        fsio.replace_all({first: lambda tmp: tmp.write_bytes(b"new defs"), second: fail})
    assert (first.read_bytes(), second.read_bytes()) == (b"old defs", b"old edges")
    assert _leftovers(tmp_path) == []
    fsio.replace_all({first: lambda tmp: tmp.write_bytes(b"new defs"), second: lambda tmp: tmp.write_bytes(b"new")})
    assert (first.read_bytes(), second.read_bytes()) == (b"new defs", b"new")


def test_every_replace_gives_the_target_a_new_inode(tmp_path: Path) -> None:
    target = tmp_path / "pointer.json"
    fsio.write_bytes_atomic(target, b"1")
    before = fsio.stamp(target)
    fsio.write_bytes_atomic(target, b"1")  # same bytes, maybe same mtime: the inode still differs
    assert fsio.stamp(target) != before
    assert fsio.stamp(tmp_path / "absent") is None


def test_move_into_place_across_filesystems_copies_next_to_the_target(tmp_path: Path, monkeypatch) -> None:
    src, dst = tmp_path / "staging" / "f.json", tmp_path / "home" / "f.json"
    src.parent.mkdir()
    src.write_text("{}")
    real_replace = os.replace

    def no_cross_device_rename(a, b):
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(a, b)

    monkeypatch.setattr(fsio.os, "replace", no_cross_device_rename)
    fsio.move_into_place(src, dst)
    assert dst.read_text() == "{}" and not src.exists()
    assert _leftovers(dst.parent) == []


def test_locked_edit_serialises_writers_and_writes_nothing_on_error(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "canary.json"

    def bump() -> None:
        for _ in range(25):
            with fsio.locked_edit(path, lambda: {"n": 0}) as data:
                data["n"] += 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(path.read_text()) == {"n": 100}
    assert (tmp_path / "serving" / "canary.lock").exists()  # the lock file is path.with_suffix(".lock")

    before = path.read_bytes()
    with pytest.raises(KeyError), fsio.locked_edit(path) as data:
        data["n"] = -1
        raise KeyError("operator error")
    assert path.read_bytes() == before


def test_reloading_file_reads_again_only_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "kill_switch.json"
    reads: list[str] = []

    def load(p: Path) -> str:
        reads.append(p.read_text())
        if reads[-1] == "bad":
            raise ValueError("unparseable")
        return reads[-1]

    cached = fsio.ReloadingFile(path, load, "missing")
    assert cached.get() == "missing" and reads == []
    fsio.write_text_atomic(path, "on")
    assert [cached.get(), cached.get()] == ["on", "on"] and reads == ["on"]
    fsio.write_text_atomic(path, "bad")
    with pytest.raises(ValueError):
        cached.get()
    with pytest.raises(ValueError):  # nothing was cached: tried again
        cached.get()
    fsio.write_text_atomic(path, "off")
    assert cached.get() == "off"
    path.unlink()
    assert cached.get() == "missing"


def test_sparse_copy_keeps_the_holes_and_the_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src" / "segment"
    src.parent.mkdir()
    size = 8 << 20
    with src.open("wb") as fh:
        fh.truncate(size)
        fh.seek(1 << 20)
        fh.write(b"a" * 4096)
        fh.seek(6 << 20)
        fh.write(b"b" * 4096)
    fd = os.open(src, os.O_RDONLY)
    try:
        extents = fsio.data_extents(fd, size)
    finally:
        os.close(fd)
    assert sum(n for _, n in extents) <= size
    fsio.copy_tree_sparse(src.parent, tmp_path / "dst")
    copy = tmp_path / "dst" / "segment"
    assert copy.read_bytes() == src.read_bytes()
    assert fsio.file_manifest(tmp_path / "dst") == fsio.file_manifest(src.parent)
    if len(extents) > 1:  # the filesystem reports holes: the copy has them too
        assert copy.stat().st_blocks * 512 < size
