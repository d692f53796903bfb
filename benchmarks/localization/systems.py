"""The systems the localization benchmark compares, each ``search(query) -> ranked file paths``.

* ``product``      the real retriever as serving runs it: a ``PublishedReader`` over a CODEX_HOME the
                   real ingestion job filled; files in the order of the verified citations (one per
                   file, ``top_k`` 10), then the remaining candidates' files in ranking order.
* ``bm25-file``    a strong whole-file BM25, built as a competent engineer would, independent of the
                   product's own tokenizer: identifiers split on camelCase / snake_case / digits with
                   the whole identifier kept too, English stopwords removed, Snowball stemming
                   (PyStemmer), the file path in the document (its parts as tokens), bm25s "lucene"
                   with the standard k1 = 1.2, b = 0.75.
* ``dense-window`` all-MiniLM-L6-v2 over 60-line windows (stride 30), each embedded as
                   ``path + "\\n" + window``; exact cosine; a file scores its best window.

Every system sees the same files: those the ingestion scan indexes at the pinned commit
(``codex_core.files.scan_repository``: binaries, vendored, generated, oversized files out for all).
Latency is each system's own query time, query embedding included (every product configuration
embeds the question itself: the reader's query-vector cache is cleared before each; torch runs one
thread, as ``feriactl serve`` does).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

from codex_core.metrics import dedupe_ranking

TOP_K = 10
WINDOW_LINES = 60
WINDOW_STRIDE = 30

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*|\d+")
_PART_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)
_STEMMER = Stemmer.Stemmer("english")


@dataclass
class Timed:
    ranking: list[str]
    ms: float


class System:
    name: str = ""

    def search(self, query: str) -> list[str]:
        raise NotImplementedError

    def ask(self, query: str) -> Timed:
        t0 = time.perf_counter()
        ranking = self.search(query)
        return Timed(dedupe_ranking(ranking)[:TOP_K], (time.perf_counter() - t0) * 1000)


def baseline_tokens(text: str) -> list[str]:
    """Identifier parts and whole compound identifiers, lower-cased, stopwords out, Snowball-stemmed."""
    tokens: list[str] = []
    for word in _WORD_RE.findall(text):
        parts = [p.lower() for chunk in word.split("_") for p in _PART_RE.findall(chunk)]
        tokens += [p for p in parts if p not in _STOPWORDS and (len(p) > 1 or p.isdigit())]
        if len(parts) > 1:
            tokens.append(word.lower())
    return _STEMMER.stemWords(tokens)


class Bm25File(System):
    name = "bm25-file"

    def __init__(self, files: Sequence, k1: float = 1.2, b: float = 0.75):
        self.paths = [f.path for f in files]
        corpus = [baseline_tokens(f"{f.path.replace('/', ' ')}\n{f.text}") or ["\u2205"] for f in files]
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._bm25.index(corpus, show_progress=False)
        self._vocab = set(self._bm25.vocab_dict)

    def search(self, query: str) -> list[str]:
        terms = [t for t in baseline_tokens(query) if t in self._vocab]
        if not terms:
            return []
        scores = np.asarray(self._bm25.get_scores(terms), dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:TOP_K]
        return [self.paths[i] for i in order if scores[i] > 0]


def file_windows(files: Sequence) -> tuple[list[str], list[str]]:
    """(path of each window, text embedded for it): 60-line windows, stride 30, blank ones skipped."""
    owners, texts = [], []
    for f in files:
        lines = f.text.split("\n")
        for start in range(0, max(1, len(lines) - WINDOW_STRIDE), WINDOW_STRIDE):
            window = lines[start : start + WINDOW_LINES]
            if any(line.strip() for line in window):
                owners.append(f.path)
                texts.append(f"{f.path}\n" + "\n".join(window))
    return owners, texts


class DenseWindow(System):
    name = "dense-window"

    def __init__(self, embedder, files: Sequence, cache_dir: Path):
        owners, texts = file_windows(files)
        self.embedder = embedder
        self.windows = len(texts)
        self.vectors, self.embed_seconds = _cached_vectors(embedder, texts, cache_dir)
        self.paths = sorted(set(owners))
        position = {p: i for i, p in enumerate(self.paths)}
        self._owner = np.array([position[p] for p in owners], dtype=np.int64)

    def search(self, query: str) -> list[str]:
        if not self.windows:
            return []
        scores = self.vectors @ self.embedder.embed([query])[0]
        best = np.full(len(self.paths), -np.inf, dtype=np.float32)
        np.maximum.at(best, self._owner, scores)
        return [self.paths[i] for i in np.argsort(-best, kind="stable")[:TOP_K]]


def _cached_vectors(embedder, texts: list[str], cache_dir: Path) -> tuple[np.ndarray, float | None]:
    """Window vectors, cached by a fingerprint of every window text; seconds is None on a hit."""
    fingerprint = hashlib.sha256("\x1e".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:24]
    npy = cache_dir / f"windows_{WINDOW_LINES}s{WINDOW_STRIDE}_{fingerprint}.npy"
    if npy.exists():
        return np.load(npy), None
    t0 = time.perf_counter()
    vectors = embedder.embed(texts) if texts else np.zeros((0, 384), dtype=np.float32)
    seconds = time.perf_counter() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(npy, vectors)
    npy.with_suffix(".json").write_text(json.dumps({"windows": len(texts), "embed_seconds": round(seconds, 1)}))
    return vectors, seconds


class Product(System):
    """The served retriever, in process (the ranking the query endpoint returns, without HTTP)."""

    name = "product"

    def __init__(self, reader, repo: str, config=None, label: str = "product", retriever=None):
        """``retriever``: one with another ranker (``reader.retriever_with_ranker``); default the reader's."""
        from codex_core.retrieval import RetrievalConfig

        self.reader = reader
        self.repo = repo
        self.config = replace(config or RetrievalConfig(), max_per_file=1)
        self.name = label
        self.retriever = retriever

    def search(self, query: str) -> list[str]:
        self.reader.forget_query(query)  # every configuration pays the query embedding, as serving does
        retriever = self.retriever if self.retriever is not None else self.reader.retriever
        result = retriever.retrieve(query, repos=[self.repo], top_k=TOP_K, config=self.config)
        cited = [c.payload["path"] for c in result.candidates]
        tail = [c.payload["path"] for c in result.considered
                if not (c.dropped or "").startswith("verification failed")]
        return dedupe_ranking(cited + tail)

