"""A retriever over a handful of (path, symbol, text) chunks: the real BM25 corpus and selection, no
vector store (dense search finds nothing), each file being its chunks in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from codex_core.models import content_hash
from codex_core.retrieval import HybridRetriever, RepoCorpus


class FilesOfTheChunks:
    """The files the chunks were cut from (each file is its chunks in order): what citations verify against."""

    def __init__(self, chunks: Sequence[tuple[str, str, str]]):
        self.chunks = chunks

    def file_lines(self, repo, commit, path):
        return "\n".join(text for p, _, text in self.chunks if p == path).split("\n")


def chunk_retriever(chunks: Sequence[tuple[str, str, str]], language: str = "python", **kwargs: Any) -> HybridRetriever:
    """Every chunk in ``language``; ``kwargs`` go to ``HybridRetriever`` (e.g. ``file_scores``)."""
    points, lines = [], {}
    for i, (path, symbol, text) in enumerate(chunks):
        start = lines.get(path, 0) + 1
        lines[path] = start + text.count("\n")
        points.append((f"00000000-0000-0000-0000-{i:012d}", {
            "repo": "r", "commit": "c", "path": path, "language": language, "symbol": symbol, "kind": "function",
            "start_line": start, "end_line": lines[path], "text": text, "content_hash": content_hash(text),
        }))
    corpus = RepoCorpus.build("r", "v1", "c", points)
    return HybridRetriever(dense_search=lambda vector, repos, k: [],
                           embed_query=lambda q: np.zeros(4, dtype=np.float32), corpora=lambda: {"r": corpus},
                           graphs=lambda repo: None, verifier=FilesOfTheChunks(chunks), **kwargs)
