"""QdrantServerIndex: the same contract on a Qdrant server through ``qdrant-client``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from codex_core.vector_store.interface import (
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    REPO_NAME_PATTERN,
    VERSION_PATTERN,
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
    from qdrant_client import QdrantClient


class QdrantServerIndex(VectorIndex):
    """A Qdrant server (or any ``QdrantClient``): a collection per version, an alias per repo.

    Collections are named ``<prefix>__<repo>__<version>``; the alias ``<prefix>__<repo>`` points at
    the published one and is swapped with a single ``update_collection_aliases`` call. Version
    facts (repo, commit, points, dim, published_at; for a delta its base and changed/deleted ids)
    live in each collection's metadata, so readers get them from the collection the alias names.
    Needs a server recent enough for collection metadata and keyword ``prefix`` indexes (the API
    qdrant-client 1.20 speaks).
    """

    supports_delta = True

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
        """A new collection holding ``base_version``'s points (read through the client: qdrant-client
        1.20 has no server-side collection copy) minus ``deletes``, with ``upserts`` written over them.
        The base collection is only read. Saves what a full stage costs around the copy: reading
        every vector from the embedding cache, the span check of unchanged points, and every
        reader's full reload (a reader holding the base reads only the changed ids)."""
        self._check_stage_args(repo, dim, batch_size, commit)
        base = self.staged_stats(repo, base_version)
        if base.dim != dim:
            raise ValueError(f"base version {base_version} has dim {base.dim}, not {dim}: stage a full version")
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
        """A new sealed version: ``points`` upserted into an empty collection, or into a copy of
        ``base`` (then ``deletes`` removed, as in the embedded index). On any error the new
        collection is deleted and the error re-raised."""
        from qdrant_client import models

        doomed = [checked_point_id(d) for d in deletes]  # a bad id fails before anything is created
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
            if base is not None:
                self._copy_points(self._collection(repo, base.version), name, set(doomed), batch_size)
            received = 0
            written: list[str] = []
            batch: list[models.PointStruct] = []
            for pid, vec, payload in checked_points(points, dim):
                batch.append(models.PointStruct(id=pid, vector=vec.tolist(), payload=payload))
                received += 1
                if base is not None:
                    written.append(pid)
                if len(batch) >= batch_size:
                    self.client.upsert(name, points=batch, wait=True)
                    batch = []
            if batch:
                self.client.upsert(name, points=batch, wait=True)
            for i in range(0, len(doomed), batch_size):
                # Also removes an id that was both upserted and deleted: the embedded order.
                self.client.delete(name, points_selector=doomed[i : i + batch_size], wait=True)
            counted = self.client.count(name, exact=True).count
            sealed: dict[str, Any] = {"codex_points": counted, "codex_received": received, "codex_sealed": True}
            if base is not None:
                sealed |= {
                    "codex_base_version": base.version,
                    "codex_changed_ids": sorted(set(written)),
                    "codex_deleted_ids": sorted(set(doomed)),
                }
            self.client.update_collection(name, metadata=sealed)
            return version
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.delete_collection(name)
            raise

    def _copy_points(self, source: str, target: str, skip: set[str], batch_size: int) -> None:
        from qdrant_client import models

        offset = None
        while True:
            records, offset = self.client.scroll(
                source, offset=offset, limit=batch_size, with_payload=True, with_vectors=True
            )
            batch = [
                models.PointStruct(id=str(r.id), vector=r.vector, payload=r.payload or {})
                for r in records
                if str(r.id) not in skip
            ]
            if batch:
                self.client.upsert(target, points=batch, wait=True)
            if offset is None:
                return

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
            base_version=meta.get("codex_base_version"),
            changed_ids=list(meta.get("codex_changed_ids") or []),
            deleted_ids=list(meta.get("codex_deleted_ids") or []),
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
            wanted = [checked_point_id(i) for i in ids]
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
        checked_vector(query, query.shape[0], "query vector")
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
        return merge_hits(hits, top_k)

    def get(self, repo: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        wanted = [checked_point_id(i) for i in ids]
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

    def refresh(self, repos: Sequence[str] | None = None) -> dict[str, str]:
        """Nothing to open (the server resolves the alias on every request): repo -> current version
        of ``repos`` (all published), unpublished ones left out, as the embedded index answers."""
        names = [validate_repo(r) for r in repos] if repos is not None else self.repos()
        return {name: current.version for name in names if (current := self.current(name)) is not None}

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
