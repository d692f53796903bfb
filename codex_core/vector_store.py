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
    (``supports_delta`` only: the embedded index.) Builds a NEW version as a copy of
    ``base_version`` with ``upserts`` written over it and ``deletes`` removed; the base is read,
    never modified. A one-file commit then costs a directory copy plus that file's points, not a
    rebuild of the whole repo.
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

Embedded layout (``root`` is the index directory)::

    root/<repo>/CURRENT.json                      published pointer, replaced with os.replace
    root/<repo>/versions/<version>/shard/         one EdgeShard, written only inside stage()
    root/<repo>/versions/<version>/version.json   written last: the version is complete

Loading an EdgeShard writes into its directory (journal compaction, config and flag files, even
for a load that only queries) and needs write permission. So a version directory is opened by
the engine only inside ``stage()``; every later read (``search``, ``get``, ``iter_payloads``)
opens a private copy in ``reader_dir``, and a published directory stays byte-for-byte immutable.
See docs/vector-store.md for the measurements behind this.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codex_core.liveness import pid_alive

if TYPE_CHECKING:
    import qdrant_edge as qe
    from qdrant_client import QdrantClient

REPO_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
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
    if not isinstance(repo, str) or not REPO_NAME_PATTERN.fullmatch(repo):
        raise ValueError(
            f"invalid repo name {repo!r}: use 1-100 characters from [A-Za-z0-9._-], not starting with "
            "a dot (e.g. 'dagster' or 'my-org.my_repo')"
        )
    return repo


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


def _point_id(raw: str) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise ValueError(
            f"point id {raw!r} is not a uuid string; build ids with codex_core.models.point_id()"
        ) from None


def _vector(raw: Sequence[float] | np.ndarray, dim: int, what: str) -> np.ndarray:
    vec = np.asarray(raw, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim:
        raise ValueError(f"{what} has {vec.shape[0]} dimensions, the index expects {dim}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{what} contains NaN or infinity")
    if not np.any(vec):
        raise ValueError(f"{what} is all zeros; cosine similarity is undefined for it")
    return vec


def _checked_points(points: Iterable[IndexPoint], dim: int) -> Iterator[tuple[str, np.ndarray, dict]]:
    for point in points:
        pid = _point_id(point.id)
        if not isinstance(point.payload, dict):
            raise ValueError(f"point {pid}: payload must be a dict, got {type(point.payload).__name__}")
        yield pid, _vector(point.vector, dim, f"vector of point {pid}"), point.payload


def _merge_hits(hits: list[SearchHit], top_k: int) -> list[SearchHit]:
    hits.sort(key=lambda h: (-h.score, h.repo, h.id))
    return hits[:top_k]


# --------------------------------------------------------------------------- interface


class VectorIndex(ABC):
    """Versioned, atomically published vector index; see the module docstring for the contract."""

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


# --------------------------------------------------------------------------- embedded (qdrant-edge)


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


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
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


def _copy_tree_sparse(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=lambda s, d: _copy_file_sparse(Path(s), Path(d)))


@dataclass
class _OpenVersion:
    """A reader's private, loaded copy of one published version."""

    repo: str
    published: PublishedVersion
    index: str
    shard: qe.EdgeShard
    copy_dir: Path
    pointer_key: tuple[int, int, int]


class EmbeddedVectorIndex(VectorIndex):
    """qdrant-edge shards on disk, one immutable directory per version, a JSON pointer per repo.

    ``reader_dir`` holds the reader's private copies of published versions (default: a
    ``codex-vector-readers`` folder in the system temp dir); copies left behind by dead processes
    are swept when a reader starts. ``refresh_interval_s`` bounds how often ``search`` re-checks
    the pointers (0 = every call; a check is one ``stat`` per repo).
    """

    def __init__(
        self,
        root: Path | str,
        *,
        reader_dir: Path | str | None = None,
        hnsw_min_points: int = HNSW_MIN_POINTS,
        refresh_interval_s: float = 0.0,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reader_dir = Path(reader_dir) if reader_dir else Path(tempfile.gettempdir()) / "codex-vector-readers"
        self.hnsw_min_points = hnsw_min_points
        self.supports_delta = True
        self.refresh_interval_s = refresh_interval_s
        self._open: dict[str, _OpenVersion] = {}
        self._lock = threading.RLock()
        self._last_refresh = 0.0
        self._swept = False
        self._closed = False

    # ---- paths

    def _repo_dir(self, repo: str) -> Path:
        return self.root / validate_repo(repo)

    def _version_dir(self, repo: str, version: str) -> Path:
        return self._repo_dir(repo) / VERSIONS_DIR / validate_version(version)

    # ---- engine configuration

    @staticmethod
    def _edge_config(dim: int, *, hnsw: bool) -> qe.EdgeConfig:
        import qdrant_edge as qe

        vectors = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
        if not hnsw:
            # indexing_threshold=0 disables HNSW building: every segment stays a plain (exact) index.
            return qe.EdgeConfig(
                vectors=vectors, optimizers=qe.EdgeOptimizersConfig(indexing_threshold=0), wal_enabled=False
            )
        return qe.EdgeConfig(
            vectors=vectors,
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=10_000),
            wal_enabled=False,
        )

    @staticmethod
    def _search_params(index: str) -> qe.SearchParams:
        import qdrant_edge as qe

        return qe.SearchParams(exact=True) if index == "exact" else qe.SearchParams(hnsw_ef=HNSW_EF)

    # ---- writer side

    def stage(self, repo: str, dim: int, points: Iterable[IndexPoint], *, commit: str, batch_size: int = 512) -> str:
        self._check_stage_args(repo, dim, batch_size, commit)
        return self._build(repo, dim, points, (), commit=commit, batch_size=batch_size, base=None)

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
        self._check_stage_args(repo, dim, batch_size, commit)
        base = self._read_staged(repo, base_version)
        if base.dim != dim:
            raise ValueError(f"base version {base_version} has dim {base.dim}, not {dim}: stage a full version")
        if base.index != "exact":
            raise ValueError(f"base version {base_version} is an HNSW index: stage a full version")
        return self._build(repo, dim, upserts, deletes, commit=commit, batch_size=batch_size, base=base)

    def _build(
        self,
        repo: str,
        dim: int,
        points: Iterable[IndexPoint],
        deletes: Sequence[str],
        *,
        commit: str,
        batch_size: int,
        base: StagedVersion | None,
    ) -> str:
        """A new sealed version: ``points`` upserted into an empty shard, or into a copy of ``base``
        (then ``deletes`` removed). The base directory is only read (copied), never loaded."""
        import qdrant_edge as qe

        version = new_version_id()
        vdir = self._version_dir(repo, version)
        vdir.mkdir(parents=True)
        shard_path = vdir / SHARD_DIR
        shard: qe.EdgeShard | None = None
        try:
            # No WAL: a version is only ever used after the final flush; a crash leaves an
            # incomplete directory (no version.json) that prune() removes.
            if base is None:
                shard = qe.EdgeShard.create(str(shard_path), self._edge_config(dim, hnsw=False))
                shard.update(qe.UpdateOperation.create_field_index("repo", qe.PayloadSchemaType.Keyword))
                shard.update(qe.UpdateOperation.create_field_index("path", qe.KeywordIndexParams(prefix=True)))
            else:
                source = self._version_dir(repo, base.version) / SHARD_DIR
                _copy_tree_sparse(source, shard_path)
                copied = {p.relative_to(shard_path).as_posix(): p.stat().st_size
                          for p in shard_path.rglob("*") if p.is_file()}
                if copied != {path: size for path, (size, _) in base.files.items()}:
                    raise RuntimeError(f"base version {base.version} changed while being copied (pruned?)")
                shard = qe.EdgeShard.load(str(shard_path), self._edge_config(dim, hnsw=False))
            received = 0
            written: list[str] = []
            batch: list[qe.Point] = []
            for pid, vec, payload in _checked_points(points, dim):
                batch.append(qe.Point(pid, vec.tolist(), payload))
                received += 1
                if base is not None:
                    written.append(pid)
                if len(batch) >= batch_size:
                    shard.update(qe.UpdateOperation.upsert_points(batch))
                    batch = []
            if batch:
                shard.update(qe.UpdateOperation.upsert_points(batch))
            doomed = [_point_id(d) for d in deletes]
            for i in range(0, len(doomed), batch_size):
                shard.update(qe.UpdateOperation.delete_points(doomed[i : i + batch_size]))
            shard.flush()
            counted = shard.count(qe.CountRequest(exact=True))
            shard.close()
            shard = None

            index = "hnsw" if counted >= self.hnsw_min_points else "exact"
            # Seal: a load rewrites journal/config files once; doing it here, while the writer still
            # owns the directory, leaves a directory whose later loads (of copies) change nothing.
            shard = qe.EdgeShard.load(str(shard_path), self._edge_config(dim, hnsw=index == "hnsw"))
            if index == "hnsw":
                shard.optimize()
                shard.flush()
            recount = shard.count(qe.CountRequest(exact=True))
            shard.close()
            shard = None
            if recount != counted:
                raise RuntimeError(f"staged shard {shard_path} reloaded with {recount} points, wrote {counted}")

            staged = StagedVersion(
                repo=repo,
                version=version,
                commit=commit,
                points=counted,
                received=received,
                dim=dim,
                index=index,
                created_at=utc_now(),
                files=file_manifest(shard_path),
                base_version=base.version if base else None,
                changed_ids=sorted(set(written)),
                deleted_ids=sorted(set(doomed)),
            )
            _write_json_atomic(vdir / VERSION_FILE, asdict(staged))
            return version
        except BaseException:
            if shard is not None:
                with contextlib.suppress(Exception):
                    shard.close()
            shutil.rmtree(vdir, ignore_errors=True)
            raise

    def _read_staged(self, repo: str, version: str) -> StagedVersion:
        path = self._version_dir(repo, version) / VERSION_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LookupError(
                f"no complete version {version!r} of repo {repo!r} under {self.root} "
                "(never staged, discarded, pruned, or its stage did not finish)"
            ) from None
        known = StagedVersion.__dataclass_fields__
        return StagedVersion(**{k: v for k, v in data.items() if k in known})  # newer writers may add fields

    def staged_stats(self, repo: str, version: str) -> StagedVersion:
        return self._read_staged(repo, version)

    def versions(self, repo: str) -> list[StagedVersion]:
        vroot = self._repo_dir(repo) / VERSIONS_DIR
        if not vroot.is_dir():
            return []
        found = []
        for entry in sorted(vroot.iterdir()):
            if VERSION_PATTERN.fullmatch(entry.name) and (entry / VERSION_FILE).is_file():
                found.append(self._read_staged(repo, entry.name))
        return found

    def check_files(self, repo: str, version: str) -> list[str]:
        """Files of a version whose size or sha256 differ from what stage() recorded (empty = intact)."""
        staged = self._read_staged(repo, version)
        actual = file_manifest(self._version_dir(repo, version) / SHARD_DIR)
        return sorted(k for k in set(staged.files) | set(actual) if staged.files.get(k) != actual.get(k))

    def iter_payloads(
        self, repo: str, version: str, *, ids: Sequence[str] | None = None, with_payload: bool = True
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        staged = self._read_staged(repo, version)  # fail here, not at the first next()
        with self._lock:
            opened = None if self._closed else self._open.get(repo)
            if opened is not None and opened.published.version == staged.version:
                # This reader already holds a private copy of that version: read it, copy nothing.
                # Read under the lock (a search could otherwise switch the copy away mid-read).
                return iter(list(self._iter_shard(opened.shard, ids, with_payload)))
        return self._scroll_copy(repo, staged.version, ids, with_payload)

    @staticmethod
    def _iter_shard(
        shard: qe.EdgeShard, ids: Sequence[str] | None, with_payload: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Page through a loaded shard (1024 points at a time), or fetch ``ids``."""
        import qdrant_edge as qe

        if ids is not None:
            wanted = [_point_id(i) for i in ids]
            for i in range(0, len(wanted), 1024):
                for r in shard.retrieve(wanted[i : i + 1024], with_payload=with_payload, with_vector=False):
                    yield str(r.id), dict(r.payload or {})
            return
        offset = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=1024, with_payload=with_payload))
            for r in records:
                yield str(r.id), dict(r.payload or {})
            if offset is None:
                return

    def _scroll_copy(
        self, repo: str, version: str, ids: Sequence[str] | None, with_payload: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:

        shard, copy_dir = self._open_copy(repo, version)
        try:
            yield from self._iter_shard(shard, ids, with_payload)
        finally:
            shard.close()
            shutil.rmtree(copy_dir, ignore_errors=True)

    def publish(self, repo: str, version: str, *, commit: str) -> PublishedVersion:
        staged = self._read_staged(repo, version)
        self._check_commit(staged, commit)
        published = PublishedVersion(
            repo=repo,
            version=version,
            commit=commit,
            points=staged.points,
            dim=staged.dim,
            published_at=utc_now(),
        )
        _write_json_atomic(self._repo_dir(repo) / CURRENT_FILE, {**asdict(published), "index": staged.index})
        return published

    def discard(self, repo: str, version: str) -> None:
        vdir = self._version_dir(repo, version)
        current = self.current(repo)
        if current is not None and current.version == version:
            raise ValueError(f"version {version} is the published version of {repo!r}; publish another first")
        shutil.rmtree(vdir, ignore_errors=True)

    def prune(self, repo: str, keep: int = 2) -> list[str]:
        vroot = self._repo_dir(repo) / VERSIONS_DIR
        if not vroot.is_dir():
            return []
        current = self.current(repo)
        complete = [v.version for v in self.versions(repo)]
        doomed = self._to_prune(complete, current.version if current else None, keep)
        # Directories without version.json are stages that died (one writer per repo: none is running).
        doomed += [e.name for e in vroot.iterdir() if e.name not in complete and e.is_dir()]
        for name in doomed:
            shutil.rmtree(vroot / name, ignore_errors=True)
        return sorted(doomed)

    def current(self, repo: str) -> PublishedVersion | None:
        pointer = self._read_pointer(repo)
        return pointer[0] if pointer else None

    def _read_pointer(self, repo: str) -> tuple[PublishedVersion, str, tuple[int, int, int]] | None:
        path = self._repo_dir(repo) / CURRENT_FILE
        try:
            with path.open("r", encoding="utf-8") as fh:
                st = os.fstat(fh.fileno())
                data = json.load(fh)
        except FileNotFoundError:
            return None
        index = data.pop("index", "exact")
        return PublishedVersion(**data), index, (st.st_ino, st.st_mtime_ns, st.st_size)

    def repos(self) -> list[str]:
        return sorted(
            e.name for e in self.root.iterdir() if REPO_NAME_PATTERN.fullmatch(e.name) and (e / CURRENT_FILE).is_file()
        )

    # ---- reader side

    def _sweep_dead_copies(self) -> None:
        self.reader_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.reader_dir.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        self._swept = True

    def _open_copy(self, repo: str, version: str) -> tuple[qe.EdgeShard, Path]:
        """Copy a version's shard to a private directory and load it there.

        Raises ``FileNotFoundError`` if the version disappears (is pruned) before or during the copy.
        """
        import qdrant_edge as qe

        if not self._swept:
            self._sweep_dead_copies()
        try:
            expected = {path: size for path, (size, _) in self._read_staged(repo, version).files.items()}
        except LookupError as exc:
            raise FileNotFoundError(str(exc)) from None
        source = self._version_dir(repo, version) / SHARD_DIR
        copy_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{repo}-{version}-", dir=self.reader_dir))
        try:
            try:
                _copy_tree_sparse(source, copy_dir / SHARD_DIR)
            except shutil.Error as exc:  # copytree collects per-file errors, e.g. files pruned mid-copy
                raise FileNotFoundError(f"copy of {source} failed: {exc}") from exc
            copied = {
                p.relative_to(copy_dir / SHARD_DIR).as_posix(): p.stat().st_size
                for p in (copy_dir / SHARD_DIR).rglob("*")
                if p.is_file()
            }
            if copied != expected:
                raise FileNotFoundError(f"{source} changed while being copied (pruned?)")
            return qe.EdgeShard.load(str(copy_dir / SHARD_DIR)), copy_dir
        except BaseException:
            shutil.rmtree(copy_dir, ignore_errors=True)
            raise

    def _open_current(self, repo: str) -> _OpenVersion | None:
        """The reader's copy of ``repo``'s current version, switching if a newer one was published."""
        held = self._open.get(repo)
        path = self._repo_dir(repo) / CURRENT_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        if held is not None and st is not None and held.pointer_key == (st.st_ino, st.st_mtime_ns, st.st_size):
            return held
        for attempt in range(3):
            pointer = self._read_pointer(repo)
            if pointer is None:
                return held  # unpublished: keep serving what we had (None if nothing)
            published, index, key = pointer
            if held is not None and held.published.version == published.version:
                held.pointer_key = key  # re-published the same version (e.g. a rollback no-op)
                held.published = published
                return held
            try:
                shard, copy_dir = self._open_copy(repo, published.version)
            except FileNotFoundError:
                # Pruned between reading the pointer and copying it: the pointer has moved on; re-read.
                if attempt == 2:
                    raise
                continue
            opened = _OpenVersion(repo, published, index, shard, copy_dir, key)
            self._open[repo] = opened
            if held is not None:
                self._release(held)
            return opened
        return held

    @staticmethod
    def _release(opened: _OpenVersion) -> None:
        with contextlib.suppress(Exception):
            opened.shard.close()
        shutil.rmtree(opened.copy_dir, ignore_errors=True)

    def refresh(self, repos: Sequence[str] | None = None) -> dict[str, str]:
        """Open (or switch to) the current version of ``repos`` (all published); returns repo -> version.

        ``search`` does this itself; serving may call it after start-up to pay the copy+load up front.
        """
        with self._lock:
            self._require_open()
            names = [validate_repo(r) for r in repos] if repos is not None else self.repos()
            result = {}
            for name in names:
                opened = self._open_current(name)
                if opened is not None:
                    result[name] = opened.published.version
            self._last_refresh = time.monotonic()
            return result

    def _readers_for(self, repos: Sequence[str] | None) -> list[_OpenVersion]:
        due = time.monotonic() - self._last_refresh >= self.refresh_interval_s
        if repos is None:
            names = self.repos() if due or not self._open else sorted(self._open)
        else:
            names = [validate_repo(r) for r in repos]
        readers = []
        for name in names:
            opened = self._open_current(name) if due or name not in self._open else self._open[name]
            if opened is None:
                raise UnknownRepoError(
                    f"repo {name!r} has no published version in {self.root}; stage and publish one first "
                    f"(published repos: {self.repos()})"
                )
            readers.append(opened)
        if due:
            self._last_refresh = time.monotonic()
        return readers

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EmbeddedVectorIndex was closed; create a new one")

    @staticmethod
    def _filter(path_prefix: str | None, where: Mapping[str, str | int | bool] | None) -> qe.Filter | None:
        import qdrant_edge as qe

        must: list[Any] = []
        if path_prefix:
            must.append(qe.FieldCondition(key="path", match=qe.MatchPrefix(path_prefix)))
        for key, value in (where or {}).items():
            must.append(qe.FieldCondition(key=key, match=qe.MatchValue(value)))
        return qe.Filter(must=must) if must else None

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        repos: Sequence[str] | None = None,
        top_k: int = 10,
        path_prefix: str | None = None,
        where: Mapping[str, str | int | bool] | None = None,
    ) -> list[SearchHit]:
        import qdrant_edge as qe

        if top_k <= 0:
            return []
        query_filter = self._filter(path_prefix, where)
        with self._lock:
            self._require_open()
            hits: list[SearchHit] = []
            for opened in self._readers_for(repos):
                query = _vector(vector, opened.published.dim, f"query vector for repo {opened.repo!r}")
                scored = opened.shard.query(
                    qe.QueryRequest(
                        limit=top_k,
                        query=qe.Query.Nearest(query.tolist()),
                        filter=query_filter,
                        params=self._search_params(opened.index),
                        with_payload=True,
                    )
                )
                hits += [SearchHit(str(p.id), float(p.score), dict(p.payload or {}), opened.repo) for p in scored]
            return _merge_hits(hits, top_k)

    def get(self, repo: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        wanted = [_point_id(i) for i in ids]
        if not wanted:
            return []
        with self._lock:
            self._require_open()
            (opened,) = self._readers_for([repo])
            records = opened.shard.retrieve(wanted, with_payload=True, with_vector=with_vectors)
        by_id = {str(r.id): r for r in records}
        return [
            StoredPoint(
                pid, dict(by_id[pid].payload or {}), [float(x) for x in by_id[pid].vector] if with_vectors else None
            )
            for pid in wanted
            if pid in by_id
        ]

    def close(self) -> None:
        with self._lock:
            for opened in self._open.values():
                self._release(opened)
            self._open.clear()
            self._closed = True


# --------------------------------------------------------------------------- Qdrant server


class QdrantServerIndex(VectorIndex):
    """A Qdrant server (or any ``QdrantClient``): a collection per version, an alias per repo.

    Collections are named ``<prefix>__<repo>__<version>``; the alias ``<prefix>__<repo>`` points at
    the published one and is swapped with a single ``update_collection_aliases`` call. Version
    facts (repo, commit, points, dim, published_at) live in each collection's metadata, so readers
    get them from the collection the alias names. Needs a server recent enough for collection
    metadata and keyword ``prefix`` indexes (the API qdrant-client 1.20 speaks).
    """

    def __init__(
        self,
        client: QdrantClient,
        *,
        prefix: str = "codex",
        owns_client: bool = False,
        hnsw_ef: int = HNSW_EF,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9-]+", prefix):
            raise ValueError(f"collection prefix {prefix!r} may contain only letters, digits and '-'")
        self.client = client
        self.prefix = prefix
        self.owns_client = owns_client
        self.hnsw_ef = hnsw_ef

    @classmethod
    def from_url(cls, url: str, *, api_key: str | None = None, prefix: str = "codex") -> QdrantServerIndex:
        from qdrant_client import QdrantClient

        return cls(QdrantClient(url=url, api_key=api_key), prefix=prefix, owns_client=True)

    def _alias(self, repo: str) -> str:
        return f"{self.prefix}__{validate_repo(repo)}"

    def _collection(self, repo: str, version: str) -> str:
        return f"{self._alias(repo)}__{validate_version(version)}"

    def _metadata(self, name: str) -> dict[str, Any]:
        info = self.client.get_collection(name)
        return dict(info.config.metadata or {})

    def stage(self, repo: str, dim: int, points: Iterable[IndexPoint], *, commit: str, batch_size: int = 512) -> str:
        from qdrant_client import models

        self._check_stage_args(repo, dim, batch_size, commit)
        version = new_version_id()
        name = self._collection(repo, version)
        meta = {
            "codex_repo": repo,
            "codex_version": version,
            "codex_commit": commit,
            "codex_dim": dim,
            "codex_created_at": utc_now(),
            "codex_sealed": False,
        }
        self.client.create_collection(
            name,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT),
            metadata=meta,
        )
        try:
            self.client.create_payload_index(name, "repo", field_schema=models.PayloadSchemaType.KEYWORD)
            self.client.create_payload_index(
                name, "path", field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, prefix=True)
            )
            received = 0
            batch: list[models.PointStruct] = []
            for pid, vec, payload in _checked_points(points, dim):
                batch.append(models.PointStruct(id=pid, vector=vec.tolist(), payload=payload))
                received += 1
                if len(batch) >= batch_size:
                    self.client.upsert(name, points=batch, wait=True)
                    batch = []
            if batch:
                self.client.upsert(name, points=batch, wait=True)
            counted = self.client.count(name, exact=True).count
            self.client.update_collection(
                name, metadata={"codex_points": counted, "codex_received": received, "codex_sealed": True}
            )
            return version
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.delete_collection(name)
            raise

    def _staged_from_meta(self, meta: dict[str, Any]) -> StagedVersion:
        return StagedVersion(
            repo=meta["codex_repo"],
            version=meta["codex_version"],
            commit=meta["codex_commit"],
            points=int(meta["codex_points"]),
            received=int(meta["codex_received"]),
            dim=int(meta["codex_dim"]),
            index="server",
            created_at=meta["codex_created_at"],
        )

    def staged_stats(self, repo: str, version: str) -> StagedVersion:
        name = self._collection(repo, version)
        if not self.client.collection_exists(name):
            raise LookupError(f"no version {version!r} of repo {repo!r} (collection {name} does not exist)")
        meta = self._metadata(name)
        if not meta.get("codex_sealed"):
            raise LookupError(f"version {version!r} of repo {repo!r} is incomplete (its stage did not finish)")
        return self._staged_from_meta(meta)

    def versions(self, repo: str) -> list[StagedVersion]:
        found = []
        for name in self._version_collections(repo):
            meta = self._metadata(name)
            if meta.get("codex_sealed"):
                found.append(self._staged_from_meta(meta))
        return sorted(found, key=lambda s: s.version)

    def _version_collections(self, repo: str) -> list[str]:
        head = f"{self._alias(repo)}__"
        names = []
        for c in self.client.get_collections().collections:
            tail = c.name[len(head) :] if c.name.startswith(head) else ""
            if VERSION_PATTERN.fullmatch(tail):
                names.append(c.name)
        return sorted(names)

    def iter_payloads(
        self, repo: str, version: str, *, ids: Sequence[str] | None = None, with_payload: bool = True
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.staged_stats(repo, version)  # fail here, not at the first next()
        return self._scroll(self._collection(repo, version), ids, with_payload)

    def _scroll(
        self, name: str, ids: Sequence[str] | None, with_payload: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        if ids is not None:
            wanted = [_point_id(i) for i in ids]
            for i in range(0, len(wanted), 1024):
                for record in self.client.retrieve(name, ids=wanted[i : i + 1024], with_payload=with_payload):
                    yield str(record.id), dict(record.payload or {})
            return
        offset = None
        while True:
            records, offset = self.client.scroll(name, offset=offset, limit=1024, with_payload=with_payload)
            for record in records:
                yield str(record.id), dict(record.payload or {})
            if offset is None:
                break

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def publish(self, repo: str, version: str, *, commit: str) -> PublishedVersion:
        from qdrant_client import models

        staged = self.staged_stats(repo, version)
        self._check_commit(staged, commit)
        name, alias = self._collection(repo, version), self._alias(repo)
        published_at = utc_now()
        self.client.update_collection(name, metadata={"codex_published_at": published_at})
        operations: list[Any] = []
        if alias in self._aliases():
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name=alias))
        )
        self.client.update_collection_aliases(change_aliases_operations=operations)  # one atomic request
        return PublishedVersion(repo, version, commit, staged.points, staged.dim, published_at)

    def discard(self, repo: str, version: str) -> None:
        name = self._collection(repo, version)
        if self._aliases().get(self._alias(repo)) == name:
            raise ValueError(f"version {version} is the published version of {repo!r}; publish another first")
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def prune(self, repo: str, keep: int = 2) -> list[str]:
        current = self.current(repo)
        complete = [v.version for v in self.versions(repo)]
        doomed = self._to_prune(complete, current.version if current else None, keep)
        head = f"{self._alias(repo)}__"
        doomed += [n[len(head) :] for n in self._version_collections(repo) if n[len(head) :] not in complete]
        for version in doomed:
            self.client.delete_collection(self._collection(repo, version))
        return sorted(doomed)

    def current(self, repo: str) -> PublishedVersion | None:
        name = self._aliases().get(self._alias(repo))
        if name is None:
            return None
        meta = self._metadata(name)
        return PublishedVersion(
            repo=meta["codex_repo"],
            version=meta["codex_version"],
            commit=meta["codex_commit"],
            points=int(meta["codex_points"]),
            dim=int(meta["codex_dim"]),
            published_at=meta.get("codex_published_at", ""),
        )

    def repos(self) -> list[str]:
        head = f"{self.prefix}__"
        return sorted(
            a[len(head) :]
            for a in self._aliases()
            if a.startswith(head) and REPO_NAME_PATTERN.fullmatch(a[len(head) :])
        )

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        repos: Sequence[str] | None = None,
        top_k: int = 10,
        path_prefix: str | None = None,
        where: Mapping[str, str | int | bool] | None = None,
    ) -> list[SearchHit]:
        from qdrant_client import models

        if top_k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        _vector(query, query.shape[0], "query vector")
        names = [validate_repo(r) for r in repos] if repos is not None else self.repos()
        must: list[Any] = []
        if path_prefix:
            must.append(models.FieldCondition(key="path", match=models.MatchPrefix(prefix=path_prefix)))
        for key, value in (where or {}).items():
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
        query_filter = models.Filter(must=must) if must else None
        aliases = self._aliases()
        hits: list[SearchHit] = []
        for repo in names:
            alias = self._alias(repo)
            if alias not in aliases:
                raise UnknownRepoError(
                    f"repo {repo!r} has no published version (no alias {alias}); stage and publish one first"
                )
            # Querying the alias: the server resolves it per request, so a swap is seen immediately.
            response = self.client.query_points(
                alias,
                query=query.tolist(),
                limit=top_k,
                query_filter=query_filter,
                with_payload=True,
                search_params=models.SearchParams(hnsw_ef=self.hnsw_ef),
            )
            hits += [SearchHit(str(p.id), float(p.score), dict(p.payload or {}), repo) for p in response.points]
        return _merge_hits(hits, top_k)

    def get(self, repo: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        wanted = [_point_id(i) for i in ids]
        alias = self._alias(repo)
        if alias not in self._aliases():
            raise UnknownRepoError(f"repo {repo!r} has no published version (no alias {alias})")
        if not wanted:
            return []
        records = self.client.retrieve(alias, ids=wanted, with_payload=True, with_vectors=with_vectors)
        by_id = {str(r.id): r for r in records}
        out = []
        for pid in wanted:
            record = by_id.get(pid)
            if record is None:
                continue
            vec = [float(x) for x in record.vector] if with_vectors and isinstance(record.vector, list) else None
            out.append(StoredPoint(pid, dict(record.payload or {}), vec))
        return out

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
