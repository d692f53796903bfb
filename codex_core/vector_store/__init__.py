"""Versioned vector index: build a complete new version, check it, then publish it atomically.

One interface, :class:`VectorIndex`, two implementations:

* :class:`EmbeddedVectorIndex` — qdrant-edge (Qdrant's embedded Rust engine) on a local directory.
  The laptop/CI default; exact search up to 150k points per repo, HNSW above.
* :class:`QdrantServerIndex` — a Qdrant server through ``qdrant-client`` (``QDRANT_URL``); one
  collection per version and an alias per repo swapped atomically.

Writer side (one writer per repo at a time; the pipeline guarantees it, nothing here locks):

``stage(repo, dim, points, commit=...) -> version``
    Builds a NEW immutable version holding exactly ``points`` (cosine distance). Readers do not see
    it. If ``points`` raises mid-way, the half-built version is removed and the error re-raised;
    the published version is untouched.
``staged_stats(repo, version) -> StagedVersion``
    Points counted by the engine after the build, points received, dim, commit, index kind.
``stage_delta(repo, dim, base_version, upserts, deletes, commit=...) -> version``
    (``supports_delta``: both indexes.) Builds a NEW version as a copy of ``base_version`` with
    ``upserts`` written over it and ``deletes`` removed; the base is read, never modified. Embedded,
    a one-file commit then costs a directory copy plus that file's points, not a rebuild of the
    whole repo; on a server the base's points are copied through the client. The version records
    its base and the changed/deleted ids, so a reader holding the base reads only those.
``iter_payloads(repo, version, ids=None, with_payload=True)``
    Every point's ``(id, payload)`` (or only ``ids``) — for the blocking checks before ``publish``.
``publish(repo, version, commit=...) -> PublishedVersion``
    Atomic swap: a reader sees the old version or the new one, never a mix. Publishing an older
    version that still exists is a rollback.
``discard(repo, version)``, ``prune(repo, keep=2)``
    Drop a version that failed its checks; delete old versions (never the current one).
``current(repo)``, ``repos()``, ``versions(repo)``
    The published pointer, the repos that have one, every complete version of a repo.

Reader side:

``search(vector, repos=None, top_k=10, path_prefix=None, where=None) -> list[SearchHit]``
    Cosine similarity, best first, over the CURRENT version of each requested repo (all
    published repos when ``repos`` is None). Each call re-checks the published pointer (a ``stat``
    for the embedded index, server-side alias resolution for Qdrant), so a reader switches to a
    newly published version on its next search without restarting.
``get(repo, ids, with_vectors=False) -> list[StoredPoint]``
    Points of the current version by id, in the order asked (missing ids are skipped). With
    ``with_vectors=True`` a writer can reuse the stored vector of an unchanged chunk.
``close()``

Point ids are uuid strings (``codex_core.models.point_id``); payloads are arbitrary JSON-like dicts.
``repo`` and ``path`` payload fields get keyword indexes (``path`` with prefix matching).
Repo names may contain only ``[A-Za-z0-9._-]`` and must not start with a dot (so they can never
escape the index root); anything else is a ``ValueError``.

Modules: :mod:`~codex_core.vector_store.interface` (the contract, data types, constants),
:mod:`~codex_core.vector_store.embedded` (qdrant-edge, and its on-disk layout),
:mod:`~codex_core.vector_store.server` (Qdrant server); manifests, atomic JSON writes and sparse
copies come from :mod:`codex_core.fsio`. Import from this package.
See docs/vector-store.md for the measurements behind the embedded design.
"""

from codex_core.fsio import file_manifest
from codex_core.vector_store.embedded import EmbeddedVectorIndex
from codex_core.vector_store.interface import (
    CURRENT_FILE,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    HNSW_MIN_POINTS,
    INDEXED_FIELDS,
    REPO_NAME_PATTERN,
    SHARD_DIR,
    VERSION_FILE,
    VERSION_PATTERN,
    VERSIONS_DIR,
    IndexPoint,
    PublishedVersion,
    SearchHit,
    StagedVersion,
    StoredPoint,
    UnknownRepoError,
    VectorIndex,
    new_version_id,
    utc_now,
    validate_repo,
    validate_version,
)
from codex_core.vector_store.server import QdrantServerIndex

__all__ = [
    "CURRENT_FILE",
    "HNSW_EF",
    "HNSW_EF_CONSTRUCT",
    "HNSW_M",
    "HNSW_MIN_POINTS",
    "INDEXED_FIELDS",
    "REPO_NAME_PATTERN",
    "SHARD_DIR",
    "VERSIONS_DIR",
    "VERSION_FILE",
    "VERSION_PATTERN",
    "EmbeddedVectorIndex",
    "IndexPoint",
    "PublishedVersion",
    "QdrantServerIndex",
    "SearchHit",
    "StagedVersion",
    "StoredPoint",
    "UnknownRepoError",
    "VectorIndex",
    "file_manifest",
    "new_version_id",
    "utc_now",
    "validate_repo",
    "validate_version",
]
