"""Tar member I/O: sparse-aware writing and hashing, bounded reading, member type/path checks, and
sparse extraction (all-zero blocks become holes again).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codex_core.fsio import data_extents
from codex_core.snapshot.format import SnapshotError, SnapshotRejected

BLOCK = 1 << 20
ZEROS = bytes(BLOCK)
SPARSE_GRAIN = 1 << 16


def open_archive(path: Path) -> tarfile.TarFile:
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {path} (list them: feriactl snapshot list)") from None
    try:
        return tarfile.open(path, "r:gz" if magic == b"\x1f\x8b" else "r:")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise SnapshotRejected(path, "malformed", f"not a readable tar archive ({exc})") from None


@dataclass
class Entry:
    """One archive member before it is written: bytes in memory, or a file read with its holes."""

    arcname: str
    size: int
    sha256: str
    data: bytes | None = None
    source: Path | None = None


class _StreamReader:
    """``read(n)`` over an iterator of byte strings, returning exactly n bytes until the end."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            n = len(self._buffer)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def drain(self) -> int:
        """Run the iterator to its end; returns the bytes that were left unread."""
        return len(self._buffer) + sum(len(chunk) for chunk in self._chunks)


def _file_stream(fd: int, extents: list[tuple[int, int]], size: int, digest) -> Iterator[bytes]:
    """The stored bytes (data regions only) of a file; ``digest`` sees the whole file, holes as zeros."""
    pos = 0
    for offset, length in extents:
        while pos < offset:
            step = min(BLOCK, offset - pos)
            digest.update(ZEROS[:step])
            pos += step
        end = offset + length
        while pos < end:
            block = os.pread(fd, min(BLOCK, end - pos), pos)
            if not block:
                raise SnapshotError(f"file shrank while being archived (at offset {pos})")
            digest.update(block)
            pos += len(block)
            yield block
    while pos < size:
        step = min(BLOCK, size - pos)
        digest.update(ZEROS[:step])
        pos += step


def _sparse_map(extents: list[tuple[int, int]], size: int) -> bytes:
    """GNU tar sparse format 1.0 map block (read by GNU tar and Python's tarfile)."""
    entries = list(extents)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))  # GNU convention: a trailing hole ends with an empty region
    text = f"{len(entries)}\n" + "".join(f"{o}\n{n}\n" for o, n in entries)
    raw = text.encode("ascii")
    return raw + b"\0" * (-len(raw) % tarfile.BLOCKSIZE)


def add_entry(tar: tarfile.TarFile, entry: Entry, mtime: int, sparse_counter: list[int]) -> str:
    """Write one member; returns the sha256 of the content actually written."""
    info = tarfile.TarInfo(entry.arcname)
    info.mtime = mtime
    info.mode = 0o644
    if entry.data is not None:
        info.size = len(entry.data)
        tar.addfile(info, io.BytesIO(entry.data))
        return hashlib.sha256(entry.data).hexdigest()
    assert entry.source is not None
    digest = hashlib.sha256()
    fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if size != entry.size:
            raise SnapshotError(f"{entry.source} changed size while being archived ({entry.size} -> {size})")
        extents = data_extents(fd, size)
        stored = sum(n for _, n in extents)
        if stored < size:
            sparse_counter[0] += 1
            smap = _sparse_map(extents, size)
            info.name = f"GNUSparseFile.0/{sparse_counter[0]}"  # ASCII and short: no pax "path" record
            info.size = len(smap) + stored
            info.pax_headers = {
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
                "GNU.sparse.name": entry.arcname,
                "GNU.sparse.realsize": str(size),
            }
            reader = _StreamReader(_chain(smap, _file_stream(fd, extents, size, digest)))
        else:
            info.size = size
            reader = _StreamReader(_file_stream(fd, [(0, size)] if size else [], size, digest))
        tar.addfile(info, reader)
        if reader.drain():  # tarfile stops at info.size; draining also hashes a trailing hole
            raise SnapshotError(f"{entry.source} grew while being archived")
    finally:
        os.close(fd)
    return digest.hexdigest()


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        for _ in _file_stream(fd, data_extents(fd, size), size, digest):
            pass
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def member_problem(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """(reason, detail) when a member must be refused for its type or path, None when acceptable."""
    name = member.name
    kind = (
        "a symlink" if member.issym() else
        "a hard link" if member.islnk() else
        "a device file" if member.ischr() or member.isblk() else
        "a fifo" if member.isfifo() else
        "a directory entry" if member.isdir() else
        None if member.isreg() else f"of unsupported type {member.type!r}"
    )
    if kind is not None:
        return "hostile", f"member {name!r} is {kind}; snapshots contain only regular files"
    if not name or "\0" in name or "\\" in name:
        return "hostile", f"member name {name!r} is empty or contains NUL or backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "hostile", f"member {name!r} has an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "hostile", f"member {name!r} escapes the archive (path traversal with '..')"
    if any(p in ("", ".") for p in parts):
        return "hostile", f"member {name!r} has an empty or '.' path component"
    return None


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, path: Path) -> bytes:
    if member.size > limit:
        raise SnapshotRejected(path, "malformed", f"{member.name} is {member.size} bytes (limit {limit})")
    return b"".join(member_blocks(tar, member, path))


def next_member(tar: tarfile.TarFile, path: Path) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # ValueError: a garbled sparse map
        raise SnapshotRejected(path, "malformed", f"the archive is truncated or corrupt ({exc})") from None


def member_blocks(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> Iterator[bytes]:
    fh = tar.extractfile(member)
    assert fh is not None
    while True:
        try:
            block = fh.read(BLOCK)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise SnapshotRejected(
                path, "malformed", f"member {member.name!r} cannot be read: the archive is truncated or corrupt ({exc})"
            ) from None
        if not block:
            return
        yield block


def hash_blocks(member: tarfile.TarInfo, blocks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


class Extractor:
    """Writes verified members under a staging directory, sparse (all-zero blocks become holes)."""

    def __init__(self, staging: Path):
        self.staging = staging
        self.files = 0

    def __call__(self, member: tarfile.TarInfo, blocks: Iterable[bytes]) -> str:
        target = self.staging / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        digest = hashlib.sha256()
        pos = 0
        try:
            for block in blocks:
                digest.update(block)
                if block != ZEROS[: len(block)]:
                    for off in range(0, len(block), SPARSE_GRAIN):
                        piece = block[off : off + SPARSE_GRAIN]
                        if piece != ZEROS[: len(piece)]:
                            os.pwrite(fd, piece, pos + off)
                pos += len(block)
            os.ftruncate(fd, pos)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.files += 1
        return digest.hexdigest()
