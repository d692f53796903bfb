"""Ingestion stages as plain functions; Dagster assets (and benchmarks) are thin callers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from codex_core.chunking import chunk_file
from codex_core.files import SourceFile
from codex_core.git import RepoRegistry, head_sha, open_or_clone
from codex_core.graph import extract_file_graph, resolve_edges
from codex_core.home import CodexHome
from codex_core.models import Chunk, Definition, Edge, span_text
from codex_core.vector_store import IndexPoint


@dataclass(frozen=True)
class RepoSnapshot:
    name: str
    source: str
    worktree: str
    commit: str
    taken_at: str

    def to_dict(self) -> dict[str, str]:
        return self.__dict__.copy()


def take_snapshot(home: CodexHome, registry: RepoRegistry, name: str) -> RepoSnapshot:
    """Open (or clone / fast-forward) a registered repository and pin its HEAD commit."""
    entry = registry.get(name)
    worktree = open_or_clone(entry.source, home.checkout_dir(name))
    return RepoSnapshot(
        name=name,
        source=entry.source,
        worktree=str(worktree),
        commit=head_sha(worktree),
        taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def chunk_source_files(
    files: Iterable[SourceFile], repo: str, commit: str, *, target_tokens: int = 300, overlap_tokens: int = 50
) -> list[Chunk]:
    chunks: list[Chunk] = []
    for f in files:
        for span in chunk_file(f.path, f.text, f.language, target_tokens=target_tokens, overlap_tokens=overlap_tokens):
            chunks.append(Chunk.from_span(span, repo=repo, commit=commit))
    return chunks


def build_graph(files: Iterable[SourceFile]) -> tuple[list[Definition], list[Edge]]:
    """Definitions and resolved edges of ``files`` from scratch (no previous run to reuse)."""
    definitions, _, resolved, _ = incremental_graph(list(files), {}, [], [])
    return definitions, resolved


def index_points(chunks: Sequence[Chunk], vectors: np.ndarray, payload_of) -> Iterator[IndexPoint]:
    for chunk, vector in zip(chunks, vectors, strict=True):
        yield IndexPoint(id=chunk.point_id, vector=vector, payload=payload_of(chunk))


def payload_digest(payload: dict[str, Any]) -> str:
    """Stable digest of a point payload: equal digests mean the stored point needs no rewrite.

    ``text`` is left out only when ``content_hash`` (its sha256) stands for it: serializing every
    chunk's text on each re-index would cost more than the rest of the digest.
    """
    import hashlib
    import json

    if "content_hash" in payload:
        payload = {k: v for k, v in payload.items() if k != "text"}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


@dataclass(frozen=True)
class DeltaPlan:
    """How ``staged_index`` builds the next version: a copy of ``base`` plus changes, or from scratch."""

    base: str | None  # None: stage every point
    upserts: list[str]  # point ids to (re)write
    deletes: list[str]  # point ids of the base that are gone
    reason: str


# A delta that rewrites more than this share of the points is not worth a copy of the old version.
MAX_DELTA_FRACTION = 0.5


def plan_delta(
    previous: dict[str, Any] | None,
    digests: dict[str, str],
    *,
    published_version: str | None,
    published_index: str | None = "exact",
    supports_delta: bool,
    model_id: str,
    masker_version: int | None = None,
) -> DeltaPlan:
    """Compare the payload digests of the wanted points with those of the last staged version.

    A delta is only taken on top of the version serving publishes now (a staged version that
    failed its checks is never a base), built with the same embedding model and the same secret
    masker (a delta copies its base: text masked by another masker must not be carried over, not
    even as a deleted point's bytes).
    """
    if not supports_delta:
        return DeltaPlan(None, list(digests), [], "the vector store stages full versions only")
    if not previous:
        return DeltaPlan(None, list(digests), [], "no earlier staged version")
    if previous.get("version") != published_version:
        return DeltaPlan(None, list(digests), [], "the last staged version is not the published one")
    if previous.get("model_id") != model_id:
        return DeltaPlan(None, list(digests), [], "the embedding model changed")
    if masker_version is not None and previous.get("masker_version", 1) != masker_version:
        return DeltaPlan(None, list(digests), [], f"the secret masker changed (v{previous.get('masker_version', 1)} "
                         f"-> v{masker_version}): nothing of the old version is carried over")
    if published_index not in ("exact", "server"):
        # An embedded HNSW graph is rebuilt by a full stage (past HNSW_MIN_POINTS; see vector_store);
        # a Qdrant server ("server") indexes a delta's collection itself.
        return DeltaPlan(None, list(digests), [], "the published version is an HNSW index")
    old: dict[str, str] = previous.get("digests") or {}
    upserts = [pid for pid, d in digests.items() if old.get(pid) != d]
    deletes = [pid for pid in old if pid not in digests]
    if len(upserts) + len(deletes) > MAX_DELTA_FRACTION * max(1, len(digests)):
        return DeltaPlan(None, list(digests), [], f"{len(upserts)} upserts + {len(deletes)} deletes: "
                         "more than half the index changes")
    return DeltaPlan(published_version, upserts, deletes, "delta on the published version")


def span_check_scope(
    plan: DeltaPlan, chunks: Sequence[Chunk], blobs: dict[str, str], old_blobs: dict[str, str]
) -> list[str] | None:
    """The point ids the span check must read (None: all of them). Everything for a full version;
    for a delta, every rewritten point and every point of a file whose content changed (the rest
    is byte-identical to a version that passed the check against identical files)."""
    if not plan.base:
        return None
    changed_files = {path for path, key in blobs.items() if old_blobs.get(path) != key}
    return sorted(set(plan.upserts) | {c.point_id for c in chunks if c.path in changed_files})


def versions_to_keep(previous_published: dict[str, Any], masker_version: int) -> int:
    """Index versions kept after a publish: the new one and the previous for a rollback, unless
    the previous was masked by another secret masker (it may hold credentials this one masks, and
    its spans would not verify), then only the new one."""
    return 2 if previous_published.get("masker_version", 1) == masker_version else 1


def span_problems(payloads: Iterable[tuple[str, dict[str, Any]]], files: Sequence[SourceFile]) -> list[str]:
    """Every point must cite lines that exist in its file and hash to the stored text."""
    lines_by_path = {f.path: f.text.split("\n") for f in files}
    problems = []
    for point_id, p in payloads:
        lines = lines_by_path.get(p["path"])
        start, end = int(p["start_line"]), int(p["end_line"])
        if lines is None:
            problems.append(f"{point_id}: {p['path']} is not an indexed file")
        elif not 1 <= start <= end <= len(lines):
            problems.append(f"{point_id}: {p['path']}:{start}-{end} outside 1-{len(lines)}")
        elif span_text(lines, start, end) != p["text"]:
            problems.append(f"{point_id}: {p['path']}:{start}-{end} text differs from the file")
    return problems


def counts(values: Iterable[Any]) -> dict[str, int]:
    return {str(k): v for k, v in Counter(values).most_common()}


def markdown_table(mapping: dict[str, Any], key: str = "key", value: str = "count") -> str:
    rows = [f"| {key} | {value} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in mapping.items()]
    return "\n".join(rows)


def repo_dir_for(home: CodexHome, name: str) -> Path:
    path = home.repo_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ incremental re-indexing
#
# Each stage remembers which content of every file it last built from (``<stage>_blobs.json``:
# path -> blob sha + masker version).
# A file whose blob is unchanged reuses its previous rows; only changed or new files are
# re-chunked / re-parsed, deleted files simply drop out, and graph edges are re-resolved
# repo-wide every time (cheap), which repairs the edges of callers of changed symbols.


def load_blob_index(path: Path) -> dict[str, str]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def reuse_or_rebuild(
    files: Sequence[SourceFile], previous_blobs: dict[str, str], previous_by_path: dict[str, list], build
) -> tuple[list, dict[str, int]]:
    """Rows per file: the previous rows when the file's blob is unchanged, ``build(file)`` otherwise."""
    rows: list = []
    reused = rebuilt = 0
    for f in files:
        if previous_blobs.get(f.path) == f.content_key and f.path in previous_by_path:
            rows.extend(previous_by_path[f.path])
            reused += 1
        else:
            rows.extend(build(f))
            rebuilt += 1
    removed = len(set(previous_blobs) - {f.path for f in files})
    return rows, {"files_reused": reused, "files_rebuilt": rebuilt, "files_removed": removed}


def group_by_path(rows: Iterable[Any]) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row.path, []).append(row)
    return grouped


def incremental_graph(
    files: Sequence[SourceFile], previous_blobs: dict[str, str], previous_definitions: Sequence[Definition],
    previous_raw_edges: Sequence[Edge],
) -> tuple[list[Definition], list[Edge], list[Edge], dict[str, int]]:
    """(definitions, raw edges, resolved edges, stats); only files whose blob changed are re-parsed."""
    defs_by_path = group_by_path(previous_definitions)
    edges_by_path = group_by_path(previous_raw_edges)
    definitions: list[Definition] = []
    raw: list[Edge] = []
    reused = rebuilt = 0
    for f in files:
        if previous_blobs.get(f.path) == f.content_key:  # unchanged, even if it held no definitions
            definitions += defs_by_path.get(f.path, [])
            raw += edges_by_path.get(f.path, [])
            reused += 1
        else:
            file_defs, file_edges = extract_file_graph(f.path, f.language, f.text)
            definitions += file_defs
            raw += file_edges
            rebuilt += 1
    resolved = resolve_edges(definitions, raw, [f.path for f in files])
    removed = len(set(previous_blobs) - {f.path for f in files})
    return definitions, raw, resolved, {"files_reused": reused, "files_rebuilt": rebuilt, "files_removed": removed}
