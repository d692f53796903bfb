"""Per-repository artifacts under ``CODEX_HOME/repos/<name>/``, written atomically.

Each stage writes its product to a temp file and renames it into place: a killed run leaves the
previous product intact, never a half-written one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from codex_core.files import FileScan, SourceFile
from codex_core.models import Chunk

SNAPSHOT = "snapshot.json"
FILES = "files.parquet"
SKIPPED = "skipped.json"
CHUNKS = "chunks.parquet"
UNIQUE_CHUNKS = "unique_chunks.parquet"
CHUNK_BLOBS = "chunks_blobs.json"  # path -> blob sha that chunks.parquet was built from
GRAPH_BLOBS = "graph_blobs.json"  # path -> blob sha that the graph was built from
SIGNATURES = "minhash_signatures.parquet"  # content hash -> MinHash values (dedup cache)
RAW_EDGES = "raw_edges.parquet"  # graph edges before resolution, for incremental re-resolution
STAGED = "staged_index.json"
INDEX_DIGEST = "index_digest.json"  # point id -> payload digest of the last staged version (delta staging)
PUBLISHED = "published_index.json"


def _replace_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: materialize the upstream assets first (feriactl ingest)"
        )
    return json.loads(path.read_text())


def write_files(repo_dir: Path, scan: FileScan) -> None:
    frame = pd.DataFrame([asdict(f) for f in scan.files], columns=list(SourceFile.__dataclass_fields__))
    _replace_atomically(repo_dir / FILES, lambda tmp: frame.to_parquet(tmp, index=False))
    write_json(repo_dir / SKIPPED, {"commit": scan.commit, "skipped": scan.skipped})


def read_files(repo_dir: Path) -> list[SourceFile]:
    path = repo_dir / FILES
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize code_files first")
    frame = pd.read_parquet(path)
    return [SourceFile(**row) for row in frame.to_dict("records")]


def write_chunks(path: Path, chunks: Iterable[Chunk]) -> int:
    rows = []
    for chunk in chunks:
        row = chunk.to_row()
        row["duplicates"] = json.dumps(row["duplicates"])
        rows.append(row)
    columns = [*Chunk.__dataclass_fields__, "point_id"]
    frame = pd.DataFrame(rows, columns=columns)
    _replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return len(rows)


def read_chunks(path: Path) -> list[Chunk]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize the upstream chunk assets first")
    frame = pd.read_parquet(path)
    chunks = []
    for row in frame.to_dict("records"):
        row["duplicates"] = json.loads(row["duplicates"] or "[]")
        chunks.append(Chunk.from_row(row))
    return chunks


def point_payload(chunk: Chunk) -> dict[str, Any]:
    """Everything serving needs to cite a chunk without any other store."""
    return {
        "repo": chunk.repo,
        "commit": chunk.commit,
        "path": chunk.path,
        "language": chunk.language,
        "symbol": chunk.symbol,
        "kind": chunk.kind,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "content_hash": chunk.content_hash,
        "text": chunk.text,
        "duplicates": [asdict(loc) for loc in chunk.duplicates],
    }


def write_records(path: Path, rows: Iterable[Any], cls: type) -> None:
    """Dataclass rows as parquet (columns = the dataclass fields, even when there are no rows)."""
    frame = pd.DataFrame([asdict(r) for r in rows], columns=list(cls.__dataclass_fields__))
    _replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))


def read_records(path: Path, cls: type) -> list[Any]:
    if not path.exists():
        return []
    frame = pd.read_parquet(path)
    return [cls(**{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
            for row in frame.to_dict("records")]


def read_signatures(path: Path) -> dict[str, Any]:
    import numpy as np

    from codex_core.dedup import SIGNATURE_DTYPE

    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    return {h: np.frombuffer(b, dtype=SIGNATURE_DTYPE) for h, b in zip(frame["hash"], frame["values"], strict=True)}


def write_signatures(path: Path, signatures: dict[str, Any], keep: set[str]) -> None:
    """Persist the signatures of the chunks still present (the cache never grows without bound)."""
    from codex_core.dedup import SIGNATURE_DTYPE

    items = [(h, v.astype(SIGNATURE_DTYPE).tobytes()) for h, v in signatures.items() if h in keep]
    frame = pd.DataFrame(items, columns=["hash", "values"])
    _replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))
