"""Every byte under CODEX_HOME, searched for strings that must not be there.

Raw bytes of every file (sqlite pages, qdrant segments, JSON, logs), plus the decoded content of what
may be compressed: every string column of every Parquet file, and every member of gzip/tar/zip
archives (snapshots), recursively. A test calls :func:`leaked_in_home` with the secrets it planted.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow.parquet as pq


def _parquet_text(data: bytes) -> bytes:
    table = pq.read_table(io.BytesIO(data))
    parts = []
    for column in table.columns:
        for value in column.to_pylist():
            if isinstance(value, str | bytes):
                parts.append(value.encode() if isinstance(value, str) else value)
    return b"\n".join(parts)


def _blobs(name: str, data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    yield name, data
    if depth > 3:
        return
    if data[:4] == b"PAR1":
        yield f"{name} (parquet strings)", _parquet_text(data)
    elif data[:2] == b"\x1f\x8b":
        yield from _blobs(f"{name} (gunzip)", gzip.decompress(data), depth + 1)
    elif data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield from _blobs(f"{name}!{member}", archive.read(member), depth + 1)
    elif len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield from _blobs(f"{name}!{member.name}", handle.read(), depth + 1)


def leaked_in_home(home: Path, secrets: Mapping[str, str]) -> list[str]:
    """``label: file`` for every planted secret found anywhere under ``home`` (empty: none leaked)."""
    needles = {label: value.encode() for label, value in secrets.items()}
    found = []
    for path in sorted(p for p in Path(home).rglob("*") if p.is_file() and not p.is_symlink()):
        for name, blob in _blobs(str(path.relative_to(home)), path.read_bytes()):
            found += [f"{label}: {name}" for label, needle in needles.items() if needle in blob]
    return found
