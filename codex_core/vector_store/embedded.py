"""EmbeddedVectorIndex: qdrant-edge (Qdrant's embedded Rust engine) shards on a local directory.

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
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codex_core.fsio import FileStamp, copy_tree_sparse, file_manifest, stamp, stamp_of, write_json_atomic
from codex_core.liveness import pid_alive
from codex_core.vector_store.interface import (
    CURRENT_FILE,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    HNSW_MIN_POINTS,
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
    checked_point_id,
    checked_points,
    checked_vector,
    merge_hits,
    new_version_id,
    utc_now,
    validate_repo,
    validate_version,
)

if TYPE_CHECKING:
    import qdrant_edge as qe


@dataclass
class _OpenVersion:
    """A reader's private, loaded copy of one published version."""

    repo: str
    published: PublishedVersion
    index: str
    shard: qe.EdgeShard
    copy_dir: Path
    pointer_key: FileStamp


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
                copy_tree_sparse(source, shard_path)
                copied = {p.relative_to(shard_path).as_posix(): p.stat().st_size
                          for p in shard_path.rglob("*") if p.is_file()}
                if copied != {path: size for path, (size, _) in base.files.items()}:
                    raise RuntimeError(f"base version {base.version} changed while being copied (pruned?)")
                shard = qe.EdgeShard.load(str(shard_path), self._edge_config(dim, hnsw=False))
            received = 0
            written: list[str] = []
            batch: list[qe.Point] = []
            for pid, vec, payload in checked_points(points, dim):
                batch.append(qe.Point(pid, vec.tolist(), payload))
                received += 1
                if base is not None:
                    written.append(pid)
                if len(batch) >= batch_size:
                    shard.update(qe.UpdateOperation.upsert_points(batch))
                    batch = []
            if batch:
                shard.update(qe.UpdateOperation.upsert_points(batch))
            doomed = [checked_point_id(d) for d in deletes]
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
            write_json_atomic(vdir / VERSION_FILE, asdict(staged), indent=1, sort_keys=True)
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
            wanted = [checked_point_id(i) for i in ids]
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
        write_json_atomic(
            self._repo_dir(repo) / CURRENT_FILE, {**asdict(published), "index": staged.index}, indent=1, sort_keys=True
        )
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

    def _read_pointer(self, repo: str) -> tuple[PublishedVersion, str, FileStamp] | None:
        path = self._repo_dir(repo) / CURRENT_FILE
        try:
            with path.open("r", encoding="utf-8") as fh:
                key = stamp_of(os.fstat(fh.fileno()))  # the stamp of exactly the bytes read
                data = json.load(fh)
        except FileNotFoundError:
            return None
        index = data.pop("index", "exact")
        return PublishedVersion(**data), index, key

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
                copy_tree_sparse(source, copy_dir / SHARD_DIR)
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
        if held is not None and held.pointer_key == stamp(self._repo_dir(repo) / CURRENT_FILE):
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
                query = checked_vector(vector, opened.published.dim, f"query vector for repo {opened.repo!r}")
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
            return merge_hits(hits, top_k)

    def get(self, repo: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        wanted = [checked_point_id(i) for i in ids]
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

    def file_scores(
        self, repo: str, paths: Sequence[str], vector: Sequence[float] | np.ndarray, top_k: int
    ) -> dict[str, float]:
        import qdrant_edge as qe

        if top_k <= 0 or not paths:
            return {}
        in_files = qe.Filter(must=[qe.FieldCondition(key="path", match=qe.MatchAny(list(paths)))])
        with self._lock:
            self._require_open()
            (opened,) = self._readers_for([repo])
            query = checked_vector(vector, opened.published.dim, f"query vector for repo {opened.repo!r}")
            scored = opened.shard.query(qe.QueryRequest(
                limit=top_k, query=qe.Query.Nearest(query.tolist()), filter=in_files,
                params=self._search_params(opened.index), with_payload=False,
            ))
        return {str(p.id): float(p.score) for p in scored}

    def close(self) -> None:
        with self._lock:
            for opened in self._open.values():
                self._release(opened)
            self._open.clear()
            self._closed = True
