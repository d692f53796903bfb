"""Every byte under CODEX_HOME, searched for strings that must not be there.

Raw bytes of every file (qdrant segments, JSON, logs), plus the decoded content of what may hide
text from a byte search: every string of every Parquet column, every value of every SQLite table
(read through sqlite, so WAL pages count), every member of tar/gzip/bz2/xz/zip archives (snapshots),
recursively. A container that cannot be opened is reported, never passed as scanned.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import sqlite3
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq


@dataclass
class ScanStats:
    files: int = 0
    bytes: int = 0
    blobs: int = 0
    duplicates: int = 0
    decoded: dict[str, int] = field(default_factory=dict)  # kind -> count
    unreadable: list[str] = field(default_factory=list)  # compressed/containers that could not be opened

    def saw(self, kind: str) -> None:
        self.decoded[kind] = self.decoded.get(kind, 0) + 1


def _strings(value) -> Iterator[str | bytes]:
    if isinstance(value, str | bytes):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _join(values: Iterable[str | bytes]) -> bytes:
    return b"\n".join(v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for v in values)


def _parquet_strings(data: bytes) -> bytes:
    table = pq.read_table(io.BytesIO(data))
    return _join(s for column in table.columns for value in column.to_pylist() for s in _strings(value))


def _sqlite_strings(connection: sqlite3.Connection) -> bytes:
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    values: list[str | bytes] = []
    for table in tables:
        for row in connection.execute(f'SELECT * FROM "{table}"'):
            values += [v for v in row if isinstance(v, str | bytes)]
    return _join(values)


def _zstd_decompress(data: bytes) -> bytes | None:
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        return None
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _expand(where: str, data: bytes, stats: ScanStats, depth: int = 0, disk_path: Path | None = None
            ) -> Iterator[tuple[str, bytes]]:
    """``(where, bytes)`` of the data itself and of everything decoded from it, recursively."""
    yield where, data
    if depth > 4:
        return
    try:
        if data[:4] == b"PAR1":
            stats.saw("parquet")
            yield f"{where} [parquet strings]", _parquet_strings(data)
        elif data[:16] == b"SQLite format 3\x00":
            stats.saw("sqlite")
            if disk_path is not None:  # read through sqlite itself: a -wal sidecar's pages count too
                connection = sqlite3.connect(f"file:{disk_path}?mode=ro", uri=True)
            else:
                connection = sqlite3.connect(":memory:")
                connection.deserialize(data)
            try:
                yield f"{where} [sqlite values]", _sqlite_strings(connection)
            finally:
                connection.close()
        elif data[:2] == b"\x1f\x8b":
            stats.saw("gzip")
            yield from _expand(f"{where} [gunzip]", gzip.decompress(data), stats, depth + 1)
        elif data[:3] == b"BZh":
            stats.saw("bz2")
            yield from _expand(f"{where} [bunzip2]", bz2.decompress(data), stats, depth + 1)
        elif data[:6] == b"\xfd7zXZ\x00":
            stats.saw("xz")
            yield from _expand(f"{where} [unxz]", lzma.decompress(data), stats, depth + 1)
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            stats.saw("zstd")
            plain = _zstd_decompress(data)
            if plain is None:
                stats.unreadable.append(f"{where} (zstd, no decoder installed)")
            else:
                yield from _expand(f"{where} [unzstd]", plain, stats, depth + 1)
        elif data[:4] == b"PK\x03\x04":
            stats.saw("zip")
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    yield from _expand(f"{where}!{member}", archive.read(member), stats, depth + 1)
        elif len(data) > 262 and data[257:262] == b"ustar":
            stats.saw("tar")
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                for member in archive.getmembers():
                    handle = archive.extractfile(member) if member.isfile() else None
                    if handle is not None:
                        yield from _expand(f"{where}!{member.name}", handle.read(), stats, depth + 1)
    except Exception as exc:  # a container that cannot be opened must not pass as scanned
        stats.unreadable.append(f"{where}: {type(exc).__name__}: {exc}")


def scan_files(root: Path, label: str, stats: ScanStats, seen: set[str],
               find: Callable[[str, bytes], list[str]]) -> list[str]:
    """``find(where, blob)`` over every file under ``root`` and everything decoded from it
    (identical blobs are searched once)."""
    leaks: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        stats.files += 1
        stats.bytes += len(data)
        for where, blob in _expand(f"{label}/{path.relative_to(root)}", data, stats, disk_path=path):
            digest = hashlib.sha256(blob).hexdigest()
            if digest in seen:
                stats.duplicates += 1
                continue
            seen.add(digest)
            stats.blobs += 1
            leaks += find(where, blob)
    return leaks


def leaked_in_home(home: Path, secrets: Mapping[str, str]) -> list[str]:
    """``label: where`` for every planted secret found under ``home`` (raw or JSON-escaped)."""
    forms = {label: {value.encode(), json.dumps(value)[1:-1].encode()} for label, value in secrets.items()}

    def find(where: str, blob: bytes) -> list[str]:
        return [f"{label}: {where}" for label, needles in forms.items() if any(n in blob for n in needles)]

    stats = ScanStats()
    leaks = scan_files(Path(home), ".", stats, set(), find)
    assert not stats.unreadable, stats.unreadable
    return leaks
