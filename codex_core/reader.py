"""What readers (serving, evaluation) see: the current published version of every repository.

Holds, per repository, the published chunk payloads with their BM25 index and the code graph,
and a :class:`HybridRetriever` over them. Newly published versions are picked up by cheap pointer
reads (at most once per ``refresh_every_s``) and swapped in as one consistent view.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codex_core.embedding import Embedder
from codex_core.fsio import ReloadingFile
from codex_core.git import RepoRegistry, is_url
from codex_core.graph import EDGES_FILE, CodeGraph, load_graph
from codex_core.home import CodexHome
from codex_core.ranker import LearnedRanker, load_published, shipped_ranker
from codex_core.retrieval import GitVerificationSource, HybridRetriever, RepoCorpus, Reranker
from codex_core.settings import Settings
from codex_core.vector_store import EmbeddedVectorIndex, PublishedVersion, QdrantServerIndex, VectorIndex


def open_index(home: CodexHome, settings: Settings | None = None) -> VectorIndex:
    """The index the settings name: ``QDRANT_URL`` (a server, with ``QDRANT_API_KEY``) or the embedded
    one under CODEX_HOME."""
    settings = settings or Settings.from_env()
    if settings.qdrant_url:
        return QdrantServerIndex(settings.qdrant_client(), owns_client=True)
    return EmbeddedVectorIndex(home.index_dir)


QUERY_VECTOR_CACHE = 4096


def reranker_from_settings(settings: Settings | None = None) -> Reranker | None:
    """``CODEX_RERANKER_PATH``: a local sentence-transformers CrossEncoder directory (off when unset)."""
    path = (settings or Settings.from_env()).reranker_path
    if not path:
        return None
    from codex_core.retrieval import CrossEncoderReranker

    return CrossEncoderReranker(path)


@dataclass(frozen=True)
class PublishedView:
    corpora: dict[str, RepoCorpus]
    graphs: dict[str, CodeGraph | None]


class Shipped(enum.Enum):
    """The default of ``PublishedReader(fallback_ranker=...)``: the general ranker the product ships."""

    RANKER = "codex_core/global_ranker.json"


SHIPPED = Shipped.RANKER


class PublishedReader:
    def __init__(
        self,
        home: CodexHome,
        index: VectorIndex,
        embedder: Embedder,
        *,
        reranker: Reranker | None = None,
        refresh_every_s: float = 1.0,
        fallback_ranker: LearnedRanker | Shipped | None = SHIPPED,
    ):
        """``fallback_ranker``: re-orders a repository without a published ranker of its own (when the
        config's ``global_ranker`` is on): ``SHIPPED`` the product's general ranker, or a given one, or
        None (the hand-set order)."""
        self.home = home
        self.index = index
        self.embedder = embedder
        self._registry = RepoRegistry(home.registry_path)
        self._view = PublishedView({}, {})
        self._graph_files: dict[str, ReloadingFile[CodeGraph | None]] = {}
        self._lock = threading.Lock()
        self._refresh_every = refresh_every_s
        self._last_refresh = float("-inf")
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # not the refresh lock: a reload must not stall queries
        self._verifier = GitVerificationSource(self.worktree_of)
        self._reranker = reranker
        self._ranker_files: dict[str, ReloadingFile[LearnedRanker | None]] = {}
        self.fallback_ranker = shipped_ranker() if fallback_ranker is SHIPPED else fallback_ranker
        self.retriever = self._retriever(self.ranker_of, self.fallback_ranker)

    @property
    def view(self) -> PublishedView:
        return self._view

    def worktree_of(self, repo: str) -> Path | None:
        try:
            source = self._registry.get(repo).source
        except KeyError:
            return None
        return self.home.checkout_dir(repo) if is_url(source) else Path(source)

    def ranker_of(self, repo: str) -> LearnedRanker | None:
        """The repository's published learned ranker (re-read when its file changes), or None."""
        held = self._ranker_files.get(repo)
        if held is None:
            held = self._ranker_files.setdefault(
                repo, ReloadingFile(self.home.ranker_path(repo), load_published, None)
            )
        return held.get()

    def retriever_with_ranker(self, ranker: LearnedRanker | None) -> HybridRetriever:
        """A retriever over this reader's published view (same corpora, graphs, dense search, query
        cache and verifier) that re-orders files with ``ranker`` instead of the published one: how a
        candidate ranker is judged before anything is published (None: the hand-set order)."""
        return self._retriever(lambda repo: ranker, None)

    def _retriever(
        self, rankers: Callable[[str], LearnedRanker | None], fallback: LearnedRanker | None
    ) -> HybridRetriever:
        return HybridRetriever(
            dense_search=self._dense_search,
            embed_query=self._embed_query,
            corpora=lambda: self._view.corpora,
            graphs=lambda repo: self._view.graphs.get(repo),
            verifier=self._verifier,
            reranker=self._reranker,
            rankers=rankers,
            fallback_ranker=fallback,
            file_scores=self.index.file_scores,
        )

    def refresh(self, force: bool = False) -> PublishedView:
        now = time.monotonic()
        if not force and now - self._last_refresh < self._refresh_every:
            return self._view
        with self._lock:
            self._last_refresh = now
            corpora = dict(self._view.corpora)
            graphs = dict(self._view.graphs)
            for repo in self.index.repos():
                current = self.index.current(repo)
                if current is None:
                    continue
                held = corpora.get(repo)
                if held is None or held.version != current.version:
                    corpora[repo] = self._load_corpus(repo, current, held)
                # The graph is written after the index is published (ingestion's last step): reload
                # it whenever its files change, not only when the index version does.
                if repo not in self._graph_files:
                    edges = self.home.graph_dir(repo) / EDGES_FILE
                    self._graph_files[repo] = ReloadingFile(edges, lambda path: load_graph(path.parent), None)
                graphs[repo] = self._graph_files[repo].get()
            self._view = PublishedView(corpora, graphs)
            return self._view

    def _load_corpus(self, repo: str, current: PublishedVersion, held: RepoCorpus | None) -> RepoCorpus:
        """The corpus of the published version. A delta on the version this reader holds reads only
        the rewritten points (the index keeps the changed ids); anything else reads every point."""
        self.index.refresh([repo])  # embedded: open the private copy once; search and the reads below share it
        staged = self.index.staged_stats(repo, current.version)
        if held is not None and staged.base_version == held.version:
            changed = dict(self.index.iter_payloads(repo, current.version, ids=staged.changed_ids))
            if len(changed) == len(staged.changed_ids):
                gone = set(staged.deleted_ids) | set(changed)
                points = [(pid, p) for pid, p in zip(held.ids, held.payloads, strict=True) if pid not in gone]
                points += changed.items()
                points.sort(key=lambda point: point[0])  # the order a full read gives (by id)
                return RepoCorpus.build(repo, current.version, current.commit, points, previous=held)
        points = sorted(self.index.iter_payloads(repo, current.version), key=lambda point: point[0])
        return RepoCorpus.build(repo, current.version, current.commit, points, previous=held)

    def forget_query(self, query: str) -> None:
        """Drop ``query``'s cached vector: the next retrieval embeds it again (benchmarks that time
        several configurations on the same question)."""
        with self._cache_lock:
            self._query_vectors.pop(query, None)

    def _embed_query(self, query: str) -> np.ndarray:
        # Repeated questions (ablations, A/B arms, retries, popular queries) skip the model.
        with self._cache_lock:
            cached = self._query_vectors.get(query)
            if cached is not None:
                self._query_vectors.move_to_end(query)
                return cached
        vector = self.embedder.embed([query])[0]
        with self._cache_lock:
            self._query_vectors[query] = vector
            while len(self._query_vectors) > QUERY_VECTOR_CACHE:
                self._query_vectors.popitem(last=False)
        return vector

    def _dense_search(self, vector: np.ndarray, repos, k: int) -> list[tuple[str, str, float]]:
        hits = self.index.search(vector, repos=list(repos), top_k=k)
        return [(h.repo, h.id, float(h.score)) for h in hits]

    def close(self) -> None:
        self.index.close()
