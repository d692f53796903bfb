"""Per-repository artifacts under ``CODEX_HOME/repos/<name>/``, written atomically.

Each stage writes its product with :mod:`codex_core.fsio` (temp file, fsync, rename): a killed run
leaves the previous product intact, never a half-written one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from codex_core.files import FileScan, SourceFile
from codex_core.fsio import replace_atomically, write_json_atomic
from codex_core.models import Chunk, Location

SNAPSHOT = "snapshot.json"
FILES = "files.parquet"
SKIPPED = "skipped.json"
CHUNKS = "chunks.parquet"
UNIQUE_CHUNKS = "unique_chunks.parquet"
CHUNK_BLOBS = "chunks_blobs.json"  # path -> blob sha that chunks.parquet was built from
GRAPH_BLOBS = "graph_blobs.json"  # path -> blob sha that the graph was built from
SIGNATURES = "minhash_signatures.parquet"  # content hash -> MinHash values (dedup cache)
GRAPH_STATE = "graph_state.json"  # {"commit": the commit code_graph last built the graph for}
RAW_EDGES = "raw_edges.parquet"  # graph edges before resolution, for incremental re-resolution
STAGED = "staged_index.json"
INDEX_DIGEST = "index_digest.json"  # point id -> payload digest of the last staged version (delta staging)
PUBLISHED = "published_index.json"


def write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data, indent=2, sort_keys=True)


def read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: materialize the upstream assets first (feriactl ingest)"
        )
    return json.loads(path.read_text())


def write_files(repo_dir: Path, scan: FileScan) -> None:
    frame = pd.DataFrame([asdict(f) for f in scan.files], columns=list(SourceFile.__dataclass_fields__))
    replace_atomically(repo_dir / FILES, lambda tmp: frame.to_parquet(tmp, index=False))
    write_json(repo_dir / SKIPPED, {"commit": scan.commit, "skipped": scan.skipped})


def read_files(repo_dir: Path, paths: Iterable[str] | None = None) -> list[SourceFile]:
    """Indexed files (only ``paths``, when given: the others are not even decoded)."""
    path = repo_dir / FILES
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize code_files first")
    wanted = None if paths is None else sorted(set(paths))
    if wanted is not None and not wanted:
        return []
    frame = pd.read_parquet(path, filters=[("path", "in", wanted)] if wanted is not None else None)
    return [SourceFile(**row) for row in frame.to_dict("records")]


def read_file_index(repo_dir: Path) -> list[SourceFile]:
    """The indexed files without their text (``text`` is empty): paths, languages and blobs only."""
    path = repo_dir / FILES
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize code_files first")
    stored = set(pq.read_schema(path).names)  # a catalog from before a field existed lacks its column
    columns = [name for name in SourceFile.__dataclass_fields__ if name != "text" and name in stored]
    data = pq.read_table(path, columns=columns).to_pydict()
    rows = zip(*(data[name] for name in columns), strict=True)
    return [SourceFile(**dict(zip(columns, values, strict=True)), text="") for values in rows]


def read_file_keys(repo_dir: Path) -> dict[str, str]:
    """``{path: content_key}`` of the indexed files, without reading their text."""
    return {f.path: f.content_key for f in read_file_index(repo_dir)}


def read_point_ids(path: Path) -> list[str]:
    """Point ids of a chunk table, without reading the chunks."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize the upstream chunk assets first")
    return pd.read_parquet(path, columns=["point_id"])["point_id"].tolist()


_CHUNK_SCHEMA = pa.schema(
    [("repo", pa.string()), ("commit", pa.string()), ("path", pa.string()), ("language", pa.string()),
     ("symbol", pa.string()), ("kind", pa.string()), ("start_line", pa.int64()), ("end_line", pa.int64()),
     ("text", pa.string()), ("content_hash", pa.string()), ("duplicates", pa.string()), ("point_id", pa.string())]
)
_NO_DUPLICATES = "[]"


def write_chunks(path: Path, chunks: Iterable[Chunk]) -> int:
    """Chunks as parquet, column by column (no per-row dicts: this runs on every re-index)."""
    chunks = list(chunks)
    columns: dict[str, list[Any]] = {
        name: [getattr(c, name) for c in chunks]
        for name in ("repo", "commit", "path", "language", "symbol", "kind", "start_line", "end_line", "text",
                     "content_hash")
    }
    columns["duplicates"] = [
        json.dumps([asdict(d) for d in c.duplicates]) if c.duplicates else _NO_DUPLICATES for c in chunks
    ]
    columns["point_id"] = [c.point_id for c in chunks]
    table = pa.table(columns, schema=_CHUNK_SCHEMA)
    replace_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return len(chunks)


def read_chunks(path: Path) -> list[Chunk]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialize the upstream chunk assets first")
    data = pq.read_table(path).to_pydict()
    chunks = []
    for repo, commit, file, language, symbol, kind, start, end, text, digest, dups in zip(
        data["repo"], data["commit"], data["path"], data["language"], data["symbol"], data["kind"],
        data["start_line"], data["end_line"], data["text"], data["content_hash"], data["duplicates"], strict=True,
    ):
        duplicates = [Location(**d) for d in json.loads(dups)] if dups and dups != _NO_DUPLICATES else []
        chunks.append(Chunk(repo, commit, file, language, symbol or None, kind, int(start), int(end), text, digest,
                            duplicates))
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
    replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))


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
    replace_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))
