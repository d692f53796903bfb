"""The optional rerank stage.

No cross-encoder weights can be installed offline here, so the reranker below is a typed stand-in
for that boundary (it prefers passages mentioning "timeout"); everything around it is real.
"""

from __future__ import annotations

import numpy as np
import pytest

from codex_core.models import content_hash
from codex_core.retrieval import CrossEncoderReranker, HybridRetriever, RepoCorpus, RetrievalConfig

TEXTS = {
    "a.py": "def connect(host):\n    return open_socket(host)",
    "b.py": "def connect_with_timeout(host, timeout):\n    return open_socket(host, timeout=timeout)",
    "c.py": "def close(sock):\n    sock.close()",
}


class MentionsTimeout:
    def score(self, query, passages):
        return [1.0 if "timeout" in p else 0.0 for p in passages]


class FilesOfThePayloads:
    def file_lines(self, repo, commit, path):
        return TEXTS[path].split("\n")


def retriever(reranker=None) -> HybridRetriever:
    points = [
        (f"00000000-0000-0000-0000-00000000000{i}", {
            "repo": "r", "commit": "c", "path": path, "language": "python", "symbol": None, "kind": "function",
            "start_line": 1, "end_line": 2, "text": text, "content_hash": content_hash(text),
        })
        for i, (path, text) in enumerate(TEXTS.items())
    ]
    corpus = RepoCorpus.build("r", "v1", "c", points)
    order = ["a.py", "b.py", "c.py"]
    return HybridRetriever(
        dense_search=lambda vector, repos, k: [("r", corpus.ids[corpus.by_path[p][0]], 0.5) for p in order],
        embed_query=lambda q: np.ones(4, dtype=np.float32),
        corpora=lambda: {"r": corpus},
        graphs=lambda repo: None,
        verifier=FilesOfThePayloads(),
        reranker=reranker,
    )


def test_reranker_reorders_and_is_traced() -> None:
    config = RetrievalConfig(lexical=False, graph_hops=0)
    plain = retriever().retrieve("connect to a host", top_k=3, config=config)
    assert [c.payload["path"] for c in plain.candidates][0] == "a.py"
    reranked = retriever(MentionsTimeout()).retrieve("connect to a host", top_k=3, config=config)
    assert reranked.candidates[0].payload["path"] == "b.py"
    assert reranked.candidates[0].to_trace()["ranks"]["rerank"] == 1
    off = retriever(MentionsTimeout()).retrieve("connect", top_k=3, config=RetrievalConfig(lexical=False,
                                                                                          graph_hops=0, rerank=False))
    assert off.candidates[0].payload["path"] == "a.py"


def test_cross_encoder_needs_a_local_model_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CrossEncoderReranker(str(tmp_path / "missing"))
