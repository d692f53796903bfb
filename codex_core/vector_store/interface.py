"""The :class:`VectorIndex` contract shared by both backends: its data types, naming rules, tuning
constants and the input checks every implementation applies (see :mod:`codex_core.vector_store`)."""

from __future__ import annotations

import re
import secrets
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from codex_core.home import NAME_PATTERN, validate_repo_name

REPO_NAME_PATTERN = NAME_PATTERN  # the one name rule (codex_core.home)
VERSION_PATTERN = re.compile(r"[0-9]{8}T[0-9]{12}Z-[0-9a-f]{6}")

# Exact search stays fast (~11 ms at 80k points, measured) and has recall 1.0; HNSW pays off only
# well past that, and with these parameters (default HNSW loses ~20% recall@10 at 80k).
HNSW_MIN_POINTS = 150_000
HNSW_M = 32
HNSW_EF_CONSTRUCT = 200
HNSW_EF = 512

INDEXED_FIELDS = ("repo", "path")  # keyword indexes; ``path`` also serves prefix matching
CURRENT_FILE = "CURRENT.json"
VERSION_FILE = "version.json"
SHARD_DIR = "shard"
VERSIONS_DIR = "versions"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class IndexPoint:
    """One point to stage: uuid id, vector of the index's dim, JSON-like payload."""

    id: str
    vector: Sequence[float] | np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float  # cosine similarity, higher is better
    payload: dict[str, Any]
    repo: str


@dataclass(frozen=True)
class StoredPoint:
    id: str
    payload: dict[str, Any]
    vector: list[float] | None = None


@dataclass(frozen=True)
class PublishedVersion:
    repo: str
    version: str
    commit: str
    points: int
    dim: int
    published_at: str  # ISO-8601 UTC


@dataclass(frozen=True)
class StagedVersion:
    """A complete (sealed) version, published or not."""

    repo: str
    version: str
    commit: str
    points: int  # counted by the engine after the build
    received: int  # points handed to stage(); more than ``points`` means duplicate ids
    dim: int
    index: str  # "exact" or "hnsw" (embedded); "server" (the Qdrant server decides plain vs HNSW)
    created_at: str
    files: dict[str, list[Any]] = field(default_factory=dict, repr=False)  # embedded: path -> [size, sha256]
    # A delta version (``stage_delta``) is a copy of ``base_version`` with ``changed_ids`` (the
    # ``received`` points) written over it and ``deleted_ids`` removed, so a reader holding the
    # base can switch by reading just those points. A full version has no base and no ids here.
    base_version: str | None = None
    changed_ids: list[str] = field(default_factory=list, repr=False)
    deleted_ids: list[str] = field(default_factory=list, repr=False)


class UnknownRepoError(LookupError):
    """A search or get named a repo that has no published version."""


# --------------------------------------------------------------------------- validation helpers


def validate_repo(repo: str) -> str:
    return validate_repo_name(repo, what="repo", hint=" (e.g. 'dagster' or 'my-org.my_repo')")


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise ValueError(f"invalid version id {version!r}: expected an id returned by stage()")
    return version


def new_version_id() -> str:
    """Sortable by creation time: ``20250101T120000123456Z-1a2b3c``."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z-{secrets.token_hex(3)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def checked_point_id(raw: str) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise ValueError(
            f"point id {raw!r} is not a uuid string; build ids with codex_core.models.point_id()"
        ) from None


def checked_vector(raw: Sequence[float] | np.ndarray, dim: int, what: str) -> np.ndarray:
    vec = np.asarray(raw, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim:
        raise ValueError(f"{what} has {vec.shape[0]} dimensions, the index expects {dim}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{what} contains NaN or infinity")
    if not np.any(vec):
        raise ValueError(f"{what} is all zeros; cosine similarity is undefined for it")
    return vec


def checked_points(points: Iterable[IndexPoint], dim: int) -> Iterator[tuple[str, np.ndarray, dict]]:
    for point in points:
        pid = checked_point_id(point.id)
        if not isinstance(point.payload, dict):
            raise ValueError(f"point {pid}: payload must be a dict, got {type(point.payload).__name__}")
        yield pid, checked_vector(point.vector, dim, f"vector of point {pid}"), point.payload


def merge_hits(hits: list[SearchHit], top_k: int) -> list[SearchHit]:
    hits.sort(key=lambda h: (-h.score, h.repo, h.id))
    return hits[:top_k]


# --------------------------------------------------------------------------- interface


class VectorIndex(ABC):
    """Versioned, atomically published vector index; see the package docstring for the contract."""

    # writer side
    @abstractmethod
    def stage(
        self, repo: str, dim: int, points: Iterable[IndexPoint], *, commit: str, batch_size: int = 512
    ) -> str: ...

    supports_delta = False

    def stage_delta(
        self,
        repo: str,
        dim: int,
        base_version: str,
        upserts: Iterable[IndexPoint],
        deletes: Sequence[str],
        *,
        commit: str,
        batch_size: int = 512,
    ) -> str:
        """A new version = ``base_version`` + ``upserts`` - ``deletes`` (only if ``supports_delta``)."""
        raise NotImplementedError(f"{type(self).__name__} stages full versions only; call stage()")

    @abstractmethod
    def staged_stats(self, repo: str, version: str) -> StagedVersion: ...

    @abstractmethod
    def iter_payloads(
        self, repo: str, version: str, *, ids: Sequence[str] | None = None, with_payload: bool = True
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(id, payload)`` of every point of a version (or of ``ids``, those that exist);
        ``with_payload=False`` gives empty payloads, cheaper when only ids are wanted."""

    @abstractmethod
    def publish(self, repo: str, version: str, *, commit: str) -> PublishedVersion: ...

    @abstractmethod
    def discard(self, repo: str, version: str) -> None: ...

    @abstractmethod
    def prune(self, repo: str, keep: int = 2) -> list[str]: ...

    @abstractmethod
    def current(self, repo: str) -> PublishedVersion | None: ...

    @abstractmethod
    def repos(self) -> list[str]: ...

    @abstractmethod
    def versions(self, repo: str) -> list[StagedVersion]: ...

    # reader side
    @abstractmethod
    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        repos: Sequence[str] | None = None,
        top_k: int = 10,
        path_prefix: str | None = None,
        where: Mapping[str, str | int | bool] | None = None,
    ) -> list[SearchHit]: ...

    @abstractmethod
    def get(self, repo: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]: ...

    def file_scores(
        self, repo: str, paths: Sequence[str], vector: Sequence[float] | np.ndarray, top_k: int
    ) -> dict[str, float]:
        """Cosine of ``vector`` to the best ``top_k`` chunks of the files ``paths`` in ``repo``'s
        published version, by point id: a search filtered to those files (payload index on
        ``path``), what retrieval's ``in_file_order = "signals"`` reads per query. This default searches
        file by file."""
        out: dict[str, float] = {}
        for path in paths:
            out |= {h.id: h.score for h in self.search(vector, repos=[repo], top_k=top_k, where={"path": path})}
        return dict(sorted(out.items(), key=lambda item: -item[1])[:top_k])

    def refresh(self, repos: Sequence[str] | None = None) -> dict[str, str]:
        """Prepare to read the current versions of ``repos`` now rather than on the next search
        (embedded: copy and load them). Nothing to prepare for a server; returns repo -> version."""
        return {}

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # shared rules
    @staticmethod
    def _check_stage_args(repo: str, dim: int, batch_size: int, commit: str) -> None:
        validate_repo(repo)
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not commit:
            raise ValueError("commit must name the source commit the points were built from")

    @staticmethod
    def _check_commit(staged: StagedVersion, commit: str) -> None:
        if staged.commit != commit:
            raise ValueError(
                f"version {staged.version} of {staged.repo!r} was staged for commit {staged.commit!r}, "
                f"not {commit!r}; stage a new version for {commit!r} instead"
            )

    @staticmethod
    def _to_prune(staged: list[str], current: str | None, keep: int) -> list[str]:
        """Versions (oldest first) beyond the newest ``keep``, never ``current``."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1 (the current version), got {keep}")
        survivors = set(sorted(staged)[-keep:])
        if current:
            survivors.add(current)
        return [v for v in sorted(staged) if v not in survivors]
