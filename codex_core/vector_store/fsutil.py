"""File utilities of the embedded index: content manifests, durable JSON replaces, sparse copies."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(directory: Path) -> dict[str, list[Any]]:
    """``{relative path: [size, sha256]}`` of every file under ``directory``."""
    return {
        p.relative_to(directory).as_posix(): [p.stat().st_size, _sha256_file(p)]
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _copy_file_sparse(src: Path, dst: Path) -> None:
    """Copy only the data extents of ``src``: qdrant-edge preallocates its files as sparse 32 MB
    mmaps, so a small shard is mostly holes that a plain copy would write out as zeros."""
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.truncate(size)
        fd_in, fd_out = fin.fileno(), fout.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd_in, pos, os.SEEK_DATA)
                end = os.lseek(fd_in, start, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                start, end = pos, size  # filesystem without SEEK_DATA: copy the rest densely
            while start < end:
                try:
                    done = os.copy_file_range(fd_in, fd_out, end - start, start, start)
                except OSError:
                    done = os.pwrite(fd_out, os.pread(fd_in, min(end - start, 1 << 20), start), start)
                if done <= 0:
                    raise OSError(f"short copy of {src} at offset {start}")
                start += done
            pos = end
    shutil.copystat(src, dst)


def copy_tree_sparse(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=lambda s, d: _copy_file_sparse(Path(s), Path(d)))
