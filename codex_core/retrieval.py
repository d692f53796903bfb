"""Hybrid retrieval: dense (Qdrant) + lexical (BM25) fused with RRF, a graph hop, verified citations.

Used by serving and by evaluation. Every decision (which retriever found a candidate, its ranks,
fused score, why it was dropped) is kept in a trace a user can read.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from codex_core.dedup import shingles
from codex_core.files import indexed_text
from codex_core.git import GitError, show_file
from codex_core.lexical import LexicalIndex, code_tokens
from codex_core.models import content_hash, span_text
from codex_core.prose import prose_share
from codex_core.query_style import is_question
from codex_core.ranker import FileFeatures, LearnedRanker, without_asked_flags
from codex_core.ranker import file_features as file_features_of

_log = logging.getLogger(__name__)

RRF_K = 60
IN_FILE_ORDERS = frozenset({"signals", "bm25", "fused"})
# The "signals" in-file order reads the cosines of the cited files' chunks by one search filtered to those files,
# limited to this many per file, summed (a large file can take another's share: its chunks below the
# limit tie, at 1/(1 + rank) under 0.016 each; on the 674 probe retrievals 2 citations moved).
IN_FILE_DENSE_DEPTH = 64
# A cross-encoder reads query and passage together: its rank counts twice a first-stage rank.
RERANK_WEIGHT = 2.0
_TEST_PATH_RE = re.compile(
    r"(^|/)(tests?|__tests__|spec|testing)(/|$)|(^|/)test_[^/]*$|_test\.\w+$|\.(spec|test)\.\w+$"
)
_TEST_QUERY_RE = re.compile(r"\b(tests?|testing|tested|spec|specs|fixtures?|pytest|unittest)\b", re.I)
_DOC_QUERY_RE = re.compile(r"\b(docs?|documentation|readme|guide|explain(ed)? in)\b", re.I)
DOC_LANGUAGES = frozenset({"markdown", "text"})
_CHANGELOG_RE = re.compile(r"(^|/)(changelog|changes|history|news|release[_-]?notes)(\.[a-z]+)?$", re.I)
_CHANGELOG_QUERY_RE = re.compile(r"\b(changelog|changes|release[sd]?|version|history)\b", re.I)
_PATHISH_RE = re.compile(r"[\w./-]+")


def named_files(query: str, paths: Sequence[str]) -> set[str]:
    """Paths the query names by file name (``_client.py``, ``client.py``) or path suffix (``http/_urls``)."""
    # Only words shaped like file names count ("_urls.py", "config_parser", "http/_client"): a plain
    # word such as "retry" names a behaviour, not a file.
    words = {
        w.strip("./").lower() for w in _PATHISH_RE.findall(query)
        if len(w.strip("./")) >= 4 and any(ch in w.strip("./") for ch in "./_")
    }
    if not words:
        return set()
    named = set()
    for path in paths:
        lowered = path.lower()
        name = lowered.rsplit("/", 1)[-1]
        stem = name.rsplit(".", 1)[0]
        no_ext = lowered.rsplit(".", 1)[0]
        if any(w in (name, stem, stem.lstrip("_")) or ("/" in w and (lowered.endswith(w) or no_ext.endswith(w)))
               for w in words):
            named.add(path)
    return named


def is_test_path(path: str) -> bool:
    return bool(_TEST_PATH_RE.search(path))


# Rust keeps unit tests beside the code, in a `mod tests` (or `mod test`) of the source file.
_RUST_TEST_MODULE_RE = re.compile(r"(^|\.)tests?(\.|$)")


def is_test_chunk(payload: dict[str, Any]) -> bool:
    """Test code: a chunk of a test file, or of a Rust source file's inline test module."""
    return is_test_path(payload["path"]) or (
        payload.get("language") == "rust" and bool(_RUST_TEST_MODULE_RE.search(payload.get("symbol") or "")))


class Reranker(Protocol):
    """Optional second stage: scores (query, passage) pairs; higher is better."""

    def score(self, query: str, passages: Sequence[str]) -> Sequence[float]: ...


class CrossEncoderReranker:
    """sentence-transformers CrossEncoder from a LOCAL model directory (no hub access here).

    Off by default: no cross-encoder weights are installable offline on these machines.
    """

    def __init__(self, model_path: str, device: str = "cpu"):
        from sentence_transformers import CrossEncoder

        if not Path(model_path).exists():
            raise FileNotFoundError(f"cross-encoder model directory {model_path} does not exist")
        self._model = CrossEncoder(model_path, device=device)

    def score(self, query: str, passages: Sequence[str]) -> Sequence[float]:
        return [float(s) for s in self._model.predict([(query, p) for p in passages])]


@dataclass
class RepoCorpus:
    """One repository's published chunks, as loaded by a reader: payloads plus a BM25 index."""

    repo: str
    version: str
    commit: str
    ids: list[str]
    payloads: list[dict[str, Any]]
    lexical: LexicalIndex
    by_id: dict[str, int] = field(default_factory=dict)
    by_symbol: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    by_path: dict[str, list[int]] = field(default_factory=dict)
    # Whole files as BM25 documents (path + every chunk's text): ``file_paths[i]`` is document i.
    file_paths: list[str] = field(default_factory=list)
    file_lexical: LexicalIndex | None = None
    # Chunk index -> share of its lines that are comments or docstrings (``prose_shares``, on demand).
    prose: dict[int, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        repo: str,
        version: str,
        commit: str,
        points: Sequence[tuple[str, dict[str, Any]]],
        previous: RepoCorpus | None = None,
    ) -> RepoCorpus:
        """``previous`` (an older version of the same repo) lends the tokens of unchanged chunks:
        tokenizing is most of the cost of loading a new version."""
        ids = [pid for pid, _ in points]
        payloads = [p for _, p in points]
        docs = [f"{p['path']} {p.get('symbol') or ''} {p.get('symbol') or ''}\n{p['text']}" for p in payloads]
        reuse: dict[tuple[str, str | None], list[str]] = {}
        if previous is not None:
            reuse = {
                (pid, p.get("symbol")): toks
                for pid, p, toks in zip(previous.ids, previous.payloads, previous.lexical.tokens, strict=True)
            }
        tokens = [reuse.get((pid, p.get("symbol"))) for pid, p in points]
        corpus = cls(repo, version, commit, ids, payloads, LexicalIndex(docs, tokens=tokens))
        for i, p in enumerate(payloads):
            corpus.by_id[ids[i]] = i
            corpus.by_path.setdefault(p["path"], []).append(i)
            if p.get("symbol"):
                corpus.by_symbol.setdefault((p["path"], p["symbol"]), []).append(i)
        for members in corpus.by_path.values():
            members.sort(key=lambda i: payloads[i]["start_line"])
        corpus._index_files()
        return corpus

    def prose_shares(self, members: Sequence[int]) -> np.ndarray:
        """``prose_share`` of each chunk in ``members`` (computed once per chunk of this version)."""
        for i in members:
            if i not in self.prose:
                self.prose[i] = prose_share(self.payloads[i]["text"], self.payloads[i].get("language"))
        return np.array([self.prose[i] for i in members])

    def _index_files(self) -> None:
        """The file-level BM25 index, from the chunk tokens already computed: each chunk's document
        starts with its path and symbol (``build``), which a file counts once, by its path."""
        self.file_paths = sorted(self.by_path)
        tokens = []
        for path in self.file_paths:
            file_tokens = code_tokens(path)
            for i in self.by_path[path]:
                p = self.payloads[i]
                header = len(code_tokens(f"{p['path']} {p.get('symbol') or ''} {p.get('symbol') or ''}"))
                file_tokens += self.lexical.tokens[i][header:]
            tokens.append(file_tokens)
        self.file_lexical = LexicalIndex(self.file_paths, tokens=tokens)

    def chunk_for(self, path: str, symbol: str | None, line: int | None = None) -> int | None:
        """The chunk holding a definition: by qualified symbol, else the chunk covering ``line``."""
        if symbol and (path, symbol) in self.by_symbol:
            return self.by_symbol[(path, symbol)][0]
        if symbol:
            # Merged chunks are named after their first symbol; a method may live in its class chunk.
            for owner in _symbol_prefixes(symbol):
                if (path, owner) in self.by_symbol:
                    return self.by_symbol[(path, owner)][0]
        if line is not None:
            for i in self.by_path.get(path, []):
                p = self.payloads[i]
                if p["start_line"] <= line <= p["end_line"]:
                    return i
        return None


def _symbol_prefixes(symbol: str) -> list[str]:
    parts = symbol.split(".")
    return [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


@dataclass
class Candidate:
    repo: str
    index: int
    payload: dict[str, Any]
    ranks: dict[str, int] = field(default_factory=dict)
    raw_scores: dict[str, float] = field(default_factory=dict)
    fused: float = 0.0
    score: float = 0.0
    file_score: float = 0.0  # the evidence of this candidate's file (RetrievalConfig.file_evidence_*)
    via: str = ""  # "dense", "lexical", "dense+lexical", "graph:calls<-path::symbol"
    dropped: str | None = None
    verified: bool | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.repo, self.index)

    @property
    def ref(self) -> str:
        p = self.payload
        return f"{p['path']}:{p['start_line']}-{p['end_line']}"

    def to_trace(self) -> dict[str, Any]:
        p = self.payload
        return {
            "repo": self.repo, "path": p["path"], "lines": [p["start_line"], p["end_line"]], "symbol": p.get("symbol"),
            "via": self.via, "ranks": self.ranks, "raw_scores": {k: round(v, 4) for k, v in self.raw_scores.items()},
            "fused": round(self.fused, 5), "score": round(self.score, 5), "file_score": round(self.file_score, 5),
            "dropped": self.dropped,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class RetrievalConfig:
    dense: bool = True
    lexical: bool = True
    dense_k: int = 50
    lexical_k: int = 50
    graph_hops: int = 1
    graph_budget: int = 4
    graph_decay: float = 0.5
    test_penalty: float = 0.5  # test code (``is_test_chunk``) the question did not ask for
    doc_penalty: float = 0.5
    changelog_penalty: float = 0.5  # CHANGELOG/HISTORY/NEWS mention everything; rarely the answer
    named_file_boost: float = 1.5  # the query names this file ("where in _urls.py ...")
    # Module-level code (imports, constants) rarely implements a behaviour; definitions do.
    module_penalty: float = 0.85
    dedup_jaccard: float = 0.8
    max_per_file: int = 2
    rerank: bool = True  # only applies when a reranker is configured
    # Files are ranked by their evidence: the scores of their best ``file_evidence_chunks``
    # chunks weighted 1, d, d^2, ... (d = ``file_evidence_decay``); d = 0 ranks a file by its best
    # chunk alone. A file with several matching chunks usually is the one that implements the
    # behaviour (measured in docs/evaluation.md). Beyond a file's best chunk, only chunks scoring
    # at least ``file_evidence_min_share`` of the query's best chunk count: weak matches must
    # not lift a file over the one a strong match is in.
    file_evidence_decay: float = 0.5
    file_evidence_chunks: int = 3
    file_evidence_min_share: float = 0.5
    # Whole-file BM25 next to the chunk-level one: a file's evidence gains
    # ``file_lexical_weight / (RRF_K + its file-BM25 rank)`` (times the file's path penalties), and a
    # file that only the file-level search found enters with its best chunk. Strong where a commit
    # touches a large file whose words are spread over many chunks. 0 turns it off. 1.0 was chosen on
    # the tune half of the localization benchmark (docs/benchmarks.md §1): +0.019 macro nDCG@5.
    file_lexical_weight: float = 1.0
    file_lexical_k: int = 50
    # Re-order the top files with the repository's learned ranker (``codex_core.ranker``) when one is
    # published for it. False: the hand-set order above, always.
    learned_ranker: bool = True
    # A repository without a ranker of its own (too little history, or none trained yet) is re-ordered
    # by the general ranker the product ships (``codex_core/global_ranker.json``: fitted on the older
    # questions of the 12 localization repositories): +0.015 macro nDCG@5 on the tune half, where it was
    # chosen, +0.009 held out (docs/benchmarks.md §1). False: such a repository gets the hand-set
    # order. Needs learned_ranker.
    global_ranker: bool = True
    # Which of a file's chunks are cited once the file order is set (for the first files, as many as
    # fill top_k). "bm25": every chunk of the file, pooled or not, by its BM25 score for the question
    # (module-level code times module_penalty); the best leads unless it is module-level code, then
    # the file's best chunk by fused score does. "signals": the file's best chunk by fused score leads;
    # the others follow by BM25 and by cosine to the question (one dense search filtered to the cited
    # files), the two ranks fused as 1/(1 + rank). "fused": the retrievers' repository-wide fused
    # scores alone, which only know the chunks in the first-stage pools (the order before 2026-12).
    # Chosen on held-out question sets committed before they were run (docs/benchmarks.md §5, "Which
    # part of the file"): "signals" over "fused" on the seventh, "bm25" with in_file_prose_weight 0.5
    # over "signals" on the ninth (gold span among the first 3 citations 44 vs 41 of 60).
    in_file_order: str = "bm25"
    # In the in-file order, a chunk's score times (1 - this x the share of its lines that are comments
    # or docstrings, ``codex_core.prose``): a question's words match a doc comment better than the code
    # it describes, and a class header with a long docstring was cited before the method that does the
    # work. 0: off (the order before 2026-12-05).
    in_file_prose_weight: float = 0.5

    @property
    def general_ranker_serves(self) -> bool:
        """Whether a repository without a ranker of its own is re-ordered by the shipped general one."""
        return self.learned_ranker and self.global_ranker

    def __post_init__(self) -> None:
        if not 0.0 <= self.file_evidence_decay <= 1.0:
            raise ValueError(f"file_evidence_decay must be within [0, 1], got {self.file_evidence_decay}")
        if not 0.0 <= self.file_evidence_min_share <= 1.0:
            raise ValueError(f"file_evidence_min_share must be within [0, 1], got {self.file_evidence_min_share}")
        if self.file_evidence_chunks < 1:
            raise ValueError(f"file_evidence_chunks must be at least 1, got {self.file_evidence_chunks}")
        if not 0.0 <= self.in_file_prose_weight <= 1.0:
            raise ValueError(f"in_file_prose_weight must be within [0, 1], got {self.in_file_prose_weight}")
        if self.in_file_order not in IN_FILE_ORDERS:
            raise ValueError(f"in_file_order must be one of {sorted(IN_FILE_ORDERS)}, got {self.in_file_order!r}")


@dataclass
class RetrievalResult:
    candidates: list[Candidate]  # the returned, verified citations, best first
    considered: list[Candidate]  # everything seen, with drop reasons
    timings_ms: dict[str, float]
    features: dict[str, float]
    # The learned ranker's rows for the top files in the hand-set order (``collect_file_features``).
    file_features: FileFeatures | None = None
    ranked_by: str = "hand-set"  # or "learned:<ranker id>"


class VerificationSource(Protocol):
    def file_lines(self, repo: str, commit: str, path: str) -> list[str] | None: ...


class GitVerificationSource:
    """Reads files at the indexed commit from each repository's git object store (LRU cached)."""

    def __init__(self, worktree_of: Callable[[str], Path | None], max_files: int = 512):
        self._worktree_of = worktree_of
        self._cache: OrderedDict[tuple[str, str, str], list[str] | None] = OrderedDict()
        self._max = max_files

    def file_lines(self, repo: str, commit: str, path: str) -> list[str] | None:
        key = (repo, commit, path)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        worktree = self._worktree_of(repo)
        lines: list[str] | None = None
        if worktree is not None:
            try:
                lines = indexed_text(show_file(worktree, commit, path), path).split("\n")
            except GitError:
                lines = None
        self._cache[key] = lines
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return lines


def verify_citation(payload: dict[str, Any], source: VerificationSource, repo: str) -> str | None:
    """None when the cited lines at the indexed commit still hash to the indexed content, else why not."""
    lines = source.file_lines(repo, payload["commit"], payload["path"])
    if lines is None:
        return f"file {payload['path']} unreadable at {payload['commit'][:12]}"
    start, end = payload["start_line"], payload["end_line"]
    if end > len(lines):
        return f"lines {start}-{end} beyond end of file ({len(lines)} lines)"
    if content_hash(span_text(lines, start, end)) != payload["content_hash"]:
        return "cited lines no longer hash to the indexed content"
    return None


def _jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


class HybridRetriever:
    """Dense + lexical + graph-hop retrieval over the published corpora of one or more repositories."""

    def __init__(
        self,
        *,
        dense_search: Callable[[np.ndarray, Sequence[str], int], list[tuple[str, str, float]]],
        embed_query: Callable[[str], np.ndarray],
        corpora: Callable[[], dict[str, RepoCorpus]],
        graphs: Callable[[str], Any],
        verifier: VerificationSource,
        reranker: Reranker | None = None,
        rankers: Callable[[str], LearnedRanker | None] = lambda repo: None,
        fallback_ranker: LearnedRanker | None = None,
        file_scores: Callable[[str, Sequence[str], np.ndarray, int], dict[str, float]] | None = None,
    ):
        """``dense_search(vector, repos, k)`` -> [(repo, point id, cosine)]; ``graphs(repo)`` -> CodeGraph or
        None; ``rankers(repo)`` -> the repository's published learned ranker or None; ``fallback_ranker``
        re-orders a repository that has none (``RetrievalConfig.global_ranker``); ``file_scores(repo, paths,
        vector, k)`` -> {point id: cosine} of the best k chunks of those files, for the in-file order
        (None: BM25 alone orders a file's chunks)."""
        self._dense_search = dense_search
        self._embed_query = embed_query
        self._corpora = corpora
        self._graphs = graphs
        self._verifier = verifier
        self._reranker = reranker
        self._rankers = rankers
        self._fallback_ranker = fallback_ranker
        self._file_scores = file_scores
        self._symbol_tokens: dict[tuple[str, str, str], list[set[str]]] = {}

    def embed_query(self, query: str) -> np.ndarray:
        """The query's vector (the embedder behind this retriever; cached by serving's reader)."""
        return self._embed_query(query)

    def retrieve(
        self,
        query: str,
        *,
        repos: Sequence[str] | None = None,
        top_k: int = 5,
        config: RetrievalConfig | None = None,
        collect_file_features: bool = False,
    ) -> RetrievalResult:
        cfg = config or RetrievalConfig()
        timings: dict[str, float] = {}
        corpora = self._corpora()
        # None means every repo; an empty list means none (a tenant with no repos sees nothing).
        wanted = [r for r in (list(corpora) if repos is None else repos) if r in corpora]
        pool: dict[tuple[str, int], Candidate] = {}
        vector: np.ndarray | None = None

        def add(repo: str, index: int, retriever: str, rank: int, raw: float) -> None:
            corpus = corpora[repo]
            cand = pool.get((repo, index))
            if cand is None:
                cand = pool[(repo, index)] = Candidate(repo, index, corpus.payloads[index])
            cand.ranks[retriever] = rank
            cand.raw_scores[retriever] = raw

        t0 = time.perf_counter()
        if cfg.dense and wanted:
            vector = self._embed_query(query)
            timings["embed_ms"] = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            for rank, (repo, pid, score) in enumerate(self._dense_search(vector, wanted, cfg.dense_k), start=1):
                idx = corpora[repo].by_id.get(pid) if repo in corpora else None
                if idx is not None:
                    add(repo, idx, "dense", rank, score)
            timings["dense_ms"] = (time.perf_counter() - t1) * 1000
        chunk_scores: dict[str, np.ndarray | None] = {}
        if cfg.lexical and wanted:
            t1 = time.perf_counter()
            merged = []
            for repo in wanted:
                chunk_scores[repo] = corpora[repo].lexical.scores(query)
                found = corpora[repo].lexical.search(query, cfg.lexical_k, scores=chunk_scores[repo])
                merged += [(score, repo, i) for i, score in found]
            merged.sort(key=lambda x: -x[0])
            for rank, (score, repo, i) in enumerate(merged[: cfg.lexical_k], start=1):
                add(repo, i, "lexical", rank, score)
            timings["lexical_ms"] = (time.perf_counter() - t1) * 1000
        ranker = self._rankers(wanted[0]) if cfg.learned_ranker and len(wanted) == 1 else None
        if ranker is None and cfg.general_ranker_serves and len(wanted) == 1:
            ranker = self._fallback_ranker
        file_ranks: dict[tuple[str, str], int] = {}
        if cfg.lexical and wanted and (cfg.file_lexical_weight > 0 or ranker is not None or collect_file_features):
            t1 = time.perf_counter()
            file_ranks = self._file_lexical(query, wanted, corpora, chunk_scores, pool, cfg)
            timings["file_lexical_ms"] = (time.perf_counter() - t1) * 1000

        for cand in pool.values():
            cand.fused = sum(1.0 / (RRF_K + r) for r in cand.ranks.values())
            cand.via = "+".join(sorted(cand.ranks)) or cand.via  # "file_lexical": found by no chunk search
        t1 = time.perf_counter()
        self._graph_hop(pool, corpora, cfg)
        timings["graph_ms"] = (time.perf_counter() - t1) * 1000

        wants_tests = bool(_TEST_QUERY_RE.search(query))
        wants_docs = bool(_DOC_QUERY_RE.search(query))
        wants_changes = bool(_CHANGELOG_QUERY_RE.search(query))
        named = named_files(query, sorted({c.payload["path"] for c in pool.values()}))

        def path_factor(payload: dict[str, Any]) -> float:
            """What the query says about this chunk's file: named by it, or a test/doc/changelog it did not ask for."""
            factor = cfg.named_file_boost if payload["path"] in named else 1.0
            if not wants_changes and _CHANGELOG_RE.search(payload["path"]):
                factor *= cfg.changelog_penalty
            if not wants_tests and is_test_chunk(payload):
                factor *= cfg.test_penalty
            if not wants_docs and payload.get("language") in DOC_LANGUAGES:
                factor *= cfg.doc_penalty
            return factor

        file_bonus: dict[tuple[str, str], float] = {}
        for cand in pool.values():
            cand.score = cand.fused * path_factor(cand.payload)
            if cand.payload.get("kind") == "module":
                cand.score *= cfg.module_penalty
            f = (cand.repo, cand.payload["path"])
            if f in file_ranks and f not in file_bonus:
                file_bonus[f] = cfg.file_lexical_weight * path_factor(cand.payload) / (RRF_K + file_ranks[f])
        ranked = sorted(pool.values(), key=lambda c: (-c.score, c.payload["path"], c.payload["start_line"]))

        if self._reranker is not None and cfg.rerank and ranked:
            t1 = time.perf_counter()
            head = ranked[:30]
            for cand, s in zip(head, self._reranker.score(query, [c.payload["text"] for c in head]), strict=True):
                cand.raw_scores["rerank"] = float(s)
            order = sorted(head, key=lambda c: -c.raw_scores["rerank"])
            for rank, cand in enumerate(order, start=1):
                cand.ranks["rerank"] = rank
                cand.score = cand.score + RERANK_WEIGHT / (RRF_K + rank)
            ranked = sorted(pool.values(), key=lambda c: (-c.score, c.payload["path"], c.payload["start_line"]))
            timings["rerank_ms"] = (time.perf_counter() - t1) * 1000

        # Confidence features read the chunk order; citations follow the file order.
        features_order = ranked
        ranked = _by_file_evidence(ranked, cfg, file_bonus)
        file_features = None
        ranked_by = "hand-set"
        if ranker is not None or collect_file_features:
            t1 = time.perf_counter()
            file_features = file_features_of(
                query, ranked, file_ranks=file_ranks, named=named,
                symbols_of=lambda repo, path: self._symbols_of(corpora[repo], path),
                degree_of=lambda repo, path: g.file_degree(path) if (g := self._graphs(repo)) is not None else 0,
                flags_of=lambda payload: (
                    is_test_path(payload["path"]), payload.get("language") in DOC_LANGUAGES,
                    bool(_CHANGELOG_RE.search(payload["path"])),
                ),
            )
            if ranker is not None:
                # Only for a plain question: in commit-message text (what rankers learn from) "test",
                # "docs" or "release" rarely mean the user wants one, and the learned demotion holds.
                asks = is_question(query)
                rows = without_asked_flags(file_features, tests=asks and wants_tests, docs=asks and wants_docs,
                                           changelog=asks and wants_changes)
                ranked = _in_file_order(ranked, ranker.order(rows))
                ranked_by = f"learned:{ranker.meta.get('id', '?')}"
            timings["learned_rank_ms"] = (time.perf_counter() - t1) * 1000
        in_fused_order = ranked
        if cfg.in_file_order != "fused" and cfg.max_per_file > 1:  # with one citation per file, the lead is it
            t1 = time.perf_counter()
            ranked = self._order_in_files(ranked, top_k, cfg, corpora, chunk_scores, vector, wants_tests)
            timings["in_file_ms"] = (time.perf_counter() - t1) * 1000
        t1 = time.perf_counter()
        chosen = self._select(ranked, top_k, cfg)
        timings["select_verify_ms"] = (time.perf_counter() - t1) * 1000
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        # Confidence describes how clearly the first cited file was found: its best chunk by the
        # retrievers' fused score, whichever of its chunks the in-file order cites first (a
        # calibrator was fitted on that chunk's scores).
        top = None
        if chosen:
            first_file = (chosen[0].repo, chosen[0].payload["path"])
            top = next((c for c in in_fused_order
                        if (c.repo, c.payload["path"]) == first_file and c.verified is not False), chosen[0])
        return RetrievalResult(
            chosen, ranked, {k: round(v, 2) for k, v in timings.items()}, _features(chosen, features_order, top),
            file_features, ranked_by,
        )

    def _order_in_files(
        self,
        ranked: list[Candidate],
        top_k: int,
        cfg: RetrievalConfig,
        corpora: dict[str, RepoCorpus],
        chunk_scores: dict[str, np.ndarray | None],
        vector: np.ndarray | None,
        wants_tests: bool = False,
    ) -> list[Candidate]:
        """``ranked`` (grouped by file, files in their final order) with the chunks of its first
        files (as many as can fill ``top_k`` citations at ``max_per_file`` each) re-ordered by
        ``cfg.in_file_order``; later files are left as they were. Chunks that enter here are
        candidates ``via="in_file"``; ties keep the retrievers' order, then line order.

        - ``"bm25"``: every chunk of the file, pooled or not, by its BM25 score for the question,
          times ``module_penalty`` for module-level code (imports and constants rarely implement
          what is asked, as in the fused order); if the best is module-level code, the file's best
          chunk by fused score leads instead. A file no question term occurs in keeps its order.
        - ``"signals"``: the file's best chunk by fused score stays first; the others follow, ranked
          within the file by BM25 and by cosine to ``vector`` and scored sum(1 / (1 + rank)), times
          ``module_penalty`` for module-level code. If the files' dense search fails, BM25 alone
          orders them (logged).

        In both, each chunk's score is also times (1 - ``in_file_prose_weight`` x its share of
        comment and docstring lines, ``RepoCorpus.prose_shares``), and times ``test_penalty`` for
        test code (a Rust file's inline ``mod tests``) unless the question asks for tests."""
        files: list[tuple[str, str]] = []
        slots = 0
        for cand in ranked:
            f = (cand.repo, cand.payload["path"])
            if f not in files:
                files.append(f)
                slots += min(cfg.max_per_file, len(corpora[cand.repo].by_path.get(cand.payload["path"], [])) or 1)
                if slots >= top_k:
                    break
        by_key = {c.key: c for c in ranked}
        position = {c.key: i for i, c in enumerate(ranked)}
        keep_lead = cfg.in_file_order == "signals"
        cosines = self._cosines_in(files, corpora, vector) if keep_lead else {}
        head: list[Candidate] = []
        for repo, path in files:
            corpus = corpora[repo]
            members = corpus.by_path.get(path, [])
            pooled = [c for c in ranked if c.repo == repo and c.payload["path"] == path]
            scores = chunk_scores.get(repo)
            if len(members) <= 1 or (scores is None and not keep_lead):
                head += pooled
                continue
            tie = [(position.get((repo, i), len(ranked)), corpus.payloads[i]["start_line"]) for i in members]
            penalty = np.array([cfg.module_penalty if corpus.payloads[i].get("kind") == "module" else 1.0
                                for i in members])
            # A Rust file's inline `mod tests` (a test file's chunks all take the penalty: no change in order).
            if not wants_tests and corpus.payloads[members[0]].get("language") == "rust" and not is_test_path(path):
                penalty = penalty * np.array([cfg.test_penalty if is_test_chunk(corpus.payloads[i]) else 1.0
                                              for i in members])
            if cfg.in_file_prose_weight:
                penalty = penalty * (1.0 - cfg.in_file_prose_weight * corpus.prose_shares(members))
            if keep_lead:
                fused = _rank_fused(members, tie, corpus, scores, cosines) * penalty
            else:
                fused = np.asarray(scores, dtype=float)[members] * penalty
            if not fused.any():
                head += pooled
                continue
            file_score = pooled[0].file_score if pooled else 0.0
            lead = pooled[0].index if pooled else None
            if not keep_lead:  # BM25's best leads, unless it is module-level code
                best = min(range(len(members)), key=lambda j: (-fused[j], tie[j]))
                if corpus.payloads[members[best]].get("kind") != "module" or lead is None:
                    lead = members[best]
            for j in sorted(range(len(members)), key=lambda j: (members[j] != lead, -fused[j], tie[j])):
                cand = by_key.get((repo, members[j]))
                if cand is None:
                    cand = Candidate(repo, members[j], corpus.payloads[members[j]],
                                     via="in_file", file_score=file_score)
                cand.raw_scores["in_file"] = round(float(fused[j]), 4)
                head.append(cand)
        chosen_files = set(files)
        return head + [c for c in ranked if (c.repo, c.payload["path"]) not in chosen_files]

    def _cosines_in(
        self, files: list[tuple[str, str]], corpora: dict[str, RepoCorpus], vector: np.ndarray | None
    ) -> dict[str, float]:
        """Point id -> cosine to ``vector`` of the best chunks of ``files`` (one dense search per
        repository, filtered to its files); {} without a query vector, or if a search fails (logged:
        BM25 alone then orders those files)."""
        if vector is None or self._file_scores is None:
            return {}
        out: dict[str, float] = {}
        for repo in dict.fromkeys(r for r, _ in files):
            corpus = corpora[repo]
            paths = [p for r, p in files if r == repo and len(corpus.by_path.get(p, [])) > 1]
            depth = sum(min(len(corpus.by_path[p]), IN_FILE_DENSE_DEPTH) for p in paths)
            if not paths:
                continue
            try:
                out |= self._file_scores(repo, paths, vector, depth)
            except Exception as exc:  # an enhancement: the query is answered without it
                _log.warning("in-file order in %s without cosine: the search of %s failed (%s: %s)",
                             repo, ", ".join(paths), type(exc).__name__, exc)
        return out

    def _symbols_of(self, corpus: RepoCorpus, path: str) -> list[set[str]]:
        """Token sets of the names defined in ``path`` (cached per corpus version)."""
        key = (corpus.repo, corpus.version, path)
        cached = self._symbol_tokens.get(key)
        if cached is None:
            names = {corpus.payloads[i].get("symbol") or "" for i in corpus.by_path.get(path, [])}
            cached = [set(code_tokens(name.rsplit(".", 1)[-1])) for name in sorted(names) if name]
            if len(self._symbol_tokens) > 50_000:
                self._symbol_tokens.clear()
            self._symbol_tokens[key] = cached
        return cached

    @staticmethod
    def _file_lexical(
        query: str,
        repos: Sequence[str],
        corpora: dict[str, RepoCorpus],
        chunk_scores: dict[str, np.ndarray | None],
        pool: dict[tuple[str, int], Candidate],
        cfg: RetrievalConfig,
    ) -> dict[tuple[str, str], int]:
        """Whole-file BM25 ranks (1 = best) of the top ``file_lexical_k`` files over ``repos``. A file
        with no candidate yet enters the pool with its best chunk by chunk-level BM25 (via
        ``file_lexical``, no retriever rank of its own: only its file evidence lifts it)."""
        merged = []
        for repo in repos:
            corpus = corpora[repo]
            if corpus.file_lexical is not None:
                found = corpus.file_lexical.search(query, cfg.file_lexical_k)
                merged += [(score, repo, corpus.file_paths[i]) for i, score in found]
        merged.sort(key=lambda x: -x[0])
        in_pool = {(c.repo, c.payload["path"]) for c in pool.values()}
        ranks: dict[tuple[str, str], int] = {}
        for rank, (score, repo, path) in enumerate(merged[: cfg.file_lexical_k], start=1):
            ranks[(repo, path)] = rank
            if (repo, path) in in_pool:
                continue
            scores = chunk_scores.get(repo)
            members = corpora[repo].by_path[path]
            best = max(members, key=lambda i: float(scores[i])) if scores is not None else members[0]
            cand = Candidate(repo, best, corpora[repo].payloads[best], via="file_lexical")
            cand.raw_scores["file_lexical"] = score
            pool[(repo, best)] = cand
        return ranks

    def _graph_hop(
        self, pool: dict[tuple[str, int], Candidate], corpora: dict[str, RepoCorpus], cfg: RetrievalConfig
    ) -> None:
        if cfg.graph_hops <= 0 or cfg.graph_budget <= 0:
            return
        seeds = sorted(pool.values(), key=lambda c: -c.fused)[:3]
        added = 0
        for seed in seeds:
            graph = self._graphs(seed.repo)
            if graph is None:
                continue
            corpus = corpora[seed.repo]
            p = seed.payload
            for path, symbol, hops, edge_type in graph.neighbors(p["path"], p.get("symbol"), hops=cfg.graph_hops):
                idx = corpus.chunk_for(path, symbol)
                if idx is None or (seed.repo, idx) in pool:
                    continue
                cand = Candidate(seed.repo, idx, corpus.payloads[idx])
                cand.fused = seed.fused * (cfg.graph_decay**hops)
                cand.raw_scores["graph"] = cand.fused
                cand.via = f"graph:{edge_type}~{p['path']}::{p.get('symbol') or ''}"
                pool[(seed.repo, idx)] = cand
                added += 1
                if added >= cfg.graph_budget:
                    return

    def _select(self, ranked: list[Candidate], top_k: int, cfg: RetrievalConfig) -> list[Candidate]:
        chosen: list[Candidate] = []
        kept_shingles: list[set[bytes]] = []
        per_file: dict[tuple[str, str], int] = defaultdict(int)
        for cand in ranked:
            if len(chosen) >= top_k:
                cand.dropped = cand.dropped or "below top_k"
                continue
            file_key = (cand.repo, cand.payload["path"])
            if per_file[file_key] >= cfg.max_per_file:
                cand.dropped = f"file already has {cfg.max_per_file} citations"
                continue
            sh = shingles(cand.payload["text"])
            if any(_jaccard(sh, other) > cfg.dedup_jaccard for other in kept_shingles):
                cand.dropped = "near-duplicate of a higher-ranked snippet"
                continue
            problem = verify_citation(cand.payload, self._verifier, cand.repo)
            cand.verified = problem is None
            if problem:
                cand.dropped = f"verification failed: {problem}"
                continue
            chosen.append(cand)
            kept_shingles.append(sh)
            per_file[file_key] += 1
        return chosen


def _by_file_evidence(
    ranked: list[Candidate], cfg: RetrievalConfig, file_bonus: dict[tuple[str, str], float] | None = None
) -> list[Candidate]:
    """``ranked`` (best chunk first) regrouped by file: files in order of their evidence, each
    file's chunks best first, equal evidence in chunk order (with a decay of 0 the evidence is
    the best chunk's score, so files keep the order of their best chunks).

    A best chunk that every retriever ranked first (two or more of them) keeps its file on top:
    such a match is precise. In a one-off offline check on the pytest set, the files that
    outvoted one were right only 14 times out of 47 (docs/evaluation.md)."""
    if not ranked:
        return ranked
    floor = cfg.file_evidence_min_share * ranked[0].score
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cand in ranked:
        kept = scores[(cand.repo, cand.payload["path"])]
        if not kept or cand.score >= floor:
            kept.append(cand.score)
    bonus = file_bonus or {}
    evidence = {
        f: sum(s * cfg.file_evidence_decay**i for i, s in enumerate(ss[: cfg.file_evidence_chunks])) + bonus.get(f, 0.0)
        for f, ss in scores.items()
    }
    first: dict[tuple[str, str], int] = {}
    for position, cand in enumerate(ranked):
        f = (cand.repo, cand.payload["path"])
        first.setdefault(f, position)
        cand.file_score = evidence[f]
    top = ranked[0]
    unanimous = (top.repo, top.payload["path"]) if len(top.ranks) >= 2 and set(top.ranks.values()) == {1} else None
    return sorted(ranked, key=lambda c: (
        (c.repo, c.payload["path"]) != unanimous, -c.file_score, first[(c.repo, c.payload["path"])]
    ))


def _rank_fused(members: Sequence[int], tie: Sequence[tuple[int, int]], corpus: RepoCorpus,
                scores: np.ndarray | None, cosines: Mapping[str, float]) -> np.ndarray:
    """sum(1 / (1 + rank)) of ``members`` over the in-file signals there are: BM25 ``scores`` and the
    ``cosines`` by point id (none of the file's: no search, or another version); zeros without any."""
    signals: list[np.ndarray] = []
    if scores is not None:
        signals.append(np.asarray(scores, dtype=float)[list(members)])
    if any(corpus.ids[i] in cosines for i in members):
        signals.append(np.array([cosines.get(corpus.ids[i], -np.inf) for i in members]))
    fused = np.zeros(len(members))
    for values in signals:
        order = sorted(range(len(members)), key=lambda j: (-values[j], tie[j]))
        for rank, j in enumerate(order):
            fused[j] += 1.0 / (1 + rank)
    return fused


def _in_file_order(ranked: list[Candidate], files: list[tuple[str, str]]) -> list[Candidate]:
    """``ranked`` with ``files`` first in the given order (each file's chunks keep their order), the
    other files after them as they were."""
    position = {f: i for i, f in enumerate(files)}
    tail = len(files)
    return sorted(ranked, key=lambda c: position.get((c.repo, c.payload["path"]), tail))


def _features(chosen: list[Candidate], ranked: list[Candidate], top: Candidate | None = None) -> dict[str, float]:
    """Signals for confidence from ``ranked`` in chunk order (best chunk first, ``file_score`` set):
    the top citation's fused score, retriever agreement, dense cosine and BM25 score, verification,
    and how clearly the top-1 *file* (what the calibrated confidence is about) stands out: its
    evidence lead over the next file (``margin``, and relative: ``file_margin``), its share of the
    top-10 score mass, how many distinct files the top 10 spread over, and the best dense /
    lexical rank any of its chunks reached. ``top`` is the first cited file's best chunk by fused
    score (default: the first citation)."""
    if top is None:
        top = chosen[0] if chosen else None
    features = {
        "top_score": top.score if top else 0.0,
        "margin": 0.0,
        "agreement": float(len(top.ranks)) if top else 0.0,
        "top_dense_cosine": top.raw_scores.get("dense", 0.0) if top else 0.0,
        "top_lexical": top.raw_scores.get("lexical", 0.0) if top else 0.0,
        "verified_fraction": sum(1 for c in ranked if c.verified)
        / max(1, sum(1 for c in ranked if c.verified is not None)),
        "citations": float(len(chosen)),
        "file_share": 0.0,
        "file_margin": 0.0,
        "distinct_files_top10": 0.0,
        "top_file_dense_rr": 0.0,
        "top_file_lexical_rr": 0.0,
    }
    if top is None:
        return features
    top_file = (top.repo, top.payload["path"])
    evidence: dict[tuple[str, str], float] = {}
    for cand in ranked:
        evidence.setdefault((cand.repo, cand.payload["path"]), cand.file_score)
    others = sorted((s for f, s in evidence.items() if f != top_file), reverse=True)
    lead = evidence.get(top_file, top.file_score)
    head = ranked[:10]
    mass = sum(max(c.score, 0.0) for c in head)
    in_top = [c for c in ranked if (c.repo, c.payload["path"]) == top_file]
    dense = [c.ranks["dense"] for c in in_top if "dense" in c.ranks]
    lexical = [c.ranks["lexical"] for c in in_top if "lexical" in c.ranks]
    features.update(
        margin=lead - (others[0] if others else 0.0),
        file_share=sum(max(c.score, 0.0) for c in head if (c.repo, c.payload["path"]) == top_file) / mass
        if mass > 0 else 0.0,
        file_margin=(lead - others[0]) / lead if others and lead > 0 else 1.0,
        distinct_files_top10=float(len({(c.repo, c.payload["path"]) for c in head})),
        top_file_dense_rr=1.0 / min(dense) if dense else 0.0,
        top_file_lexical_rr=1.0 / min(lexical) if lexical else 0.0,
    )
    return features


def heuristic_confidence(features: dict[str, float]) -> float:
    """Uncalibrated stand-in until a fitted calibrator is published (evaluation issue).

    A logistic blend of dense cosine, lexical evidence and agreement between retrievers.
    """
    if features.get("citations", 0) == 0:
        return 0.0
    z = (
        -3.0
        + 5.0 * features.get("top_dense_cosine", 0.0)
        + 0.8 * min(features.get("top_lexical", 0.0), 5.0) / 5.0
        + 0.7 * (features.get("agreement", 0.0) - 1.0)
    )
    return float(1.0 / (1.0 + np.exp(-z)))
