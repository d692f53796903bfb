"""Files are ranked by their evidence (best chunks weighted 1, d, d^2), not by their best chunk alone.

Real BM25 over a small corpus: ``settings.py`` holds one chunk that matches the query best;
``loader.py`` holds three chunks that each match it a little less. A user asking where config
values are parsed should be sent to the file that does it throughout.
"""

from __future__ import annotations

import numpy as np
import pytest

from codex_core.retrieval import Candidate, HybridRetriever, RetrievalConfig, _by_file_evidence
from tests.support.corpus import chunk_retriever

CHUNKS = [
    ("settings.py", "parse_config_value", "def parse_config_value(raw):\n    # parse a config value\n    return raw"),
    ("loader.py", "read_config", "def read_config(path):\n    # read config lines\n    return open(path)"),
    ("loader.py", "split_value", "def split_value(line):\n    # split a config value\n    return line"),
    ("loader.py", "load", "def load(path):\n    # parse every config line\n    return path"),
    ("colors.py", "paint", "def paint(canvas):\n    return canvas.fill('red')"),
]
QUERY = "parse config value"
LEXICAL_ONLY = {"dense": False, "graph_hops": 0, "file_lexical_weight": 0.0}  # chunk evidence alone


def retriever() -> HybridRetriever:
    return chunk_retriever(CHUNKS)


def paths(result) -> list[str]:
    return [c.payload["path"] for c in result.candidates]


def test_the_file_with_more_evidence_comes_first_and_its_chunks_stay_together() -> None:
    by_best_chunk = retriever().retrieve(QUERY, top_k=5, config=RetrievalConfig(**LEXICAL_ONLY, file_evidence_decay=0))
    assert paths(by_best_chunk)[0] == "settings.py"  # the single best chunk
    assert by_best_chunk.considered[0].payload["path"] == "settings.py"

    result = retriever().retrieve(QUERY, top_k=5, config=RetrievalConfig(**LEXICAL_ONLY))
    assert paths(result) == ["loader.py", "loader.py", "settings.py"]  # max_per_file=2 still holds
    loader = [c for c in result.considered if c.payload["path"] == "loader.py"]
    assert [c.score for c in loader] == sorted((c.score for c in loader), reverse=True)
    weights = [1.0, 0.5, 0.25]
    assert loader[0].file_score == pytest.approx(sum(w * c.score for w, c in zip(weights, loader, strict=True)))
    assert result.candidates[0].to_trace()["file_score"] == pytest.approx(loader[0].file_score, abs=1e-5)


def test_only_chunks_near_the_best_match_add_evidence() -> None:
    # loader.py's other chunks score less than 99 % of the best chunk (in settings.py): they no
    # longer count, and the single best match wins again.
    strict = RetrievalConfig(**LEXICAL_ONLY, file_evidence_min_share=0.99)
    result = retriever().retrieve(QUERY, top_k=5, config=strict)
    assert paths(result)[0] == "settings.py"
    loader = [c for c in result.considered if c.payload["path"] == "loader.py"]
    assert loader[0].file_score == loader[0].score


def test_without_decay_files_rank_by_their_best_chunk() -> None:
    for config in (RetrievalConfig(**LEXICAL_ONLY, file_evidence_decay=0),
                   RetrievalConfig(**LEXICAL_ONLY, file_evidence_chunks=1)):
        result = retriever().retrieve(QUERY, top_k=5, config=config)
        best: dict[str, float] = {}
        for c in result.considered:
            best[c.payload["path"]] = max(best.get(c.payload["path"], 0.0), c.score)
        files = list(dict.fromkeys(c.payload["path"] for c in result.considered))
        assert files == sorted(best, key=lambda path: -best[path])
        assert files[0] == "settings.py"


def test_confidence_features_describe_the_cited_file() -> None:
    result = retriever().retrieve(QUERY, top_k=5, config=RetrievalConfig(**LEXICAL_ONLY))
    loader_best = min(c.ranks["lexical"] for c in result.considered if c.payload["path"] == "loader.py")
    assert loader_best == 2  # settings.py holds the best chunk
    assert result.features["top_file_lexical_rr"] == pytest.approx(1 / loader_best)
    assert result.features["top_lexical"] == result.candidates[0].raw_scores["lexical"]


@pytest.mark.parametrize("bad", [{"file_evidence_decay": -0.1}, {"file_evidence_decay": 1.5},
                                 {"file_evidence_chunks": 0}, {"file_evidence_min_share": 2.0}])
def test_bad_file_evidence_settings_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="file_evidence"):
        RetrievalConfig(**bad)


def candidate(path: str, score: float, **ranks: int) -> Candidate:
    return Candidate("r", 0, {"path": path}, ranks=dict(ranks), score=score)


def test_a_match_every_retriever_ranked_first_keeps_its_file_on_top() -> None:
    # A precise question: one chunk is first for dense and lexical alike, while another file
    # holds a close second and a supporting chunk above the min share (the case that surfaced
    # when a new function was queried right after its commit).
    exact = candidate("metrics.py", 0.0328, dense=1, lexical=1)
    close = candidate("chunking.py", 0.0291, dense=2, lexical=17)
    support = candidate("chunking.py", 0.0194, dense=49, lexical=38)
    order = _by_file_evidence([exact, close, support], RetrievalConfig())
    assert [c.payload["path"] for c in order] == ["metrics.py", "chunking.py", "chunking.py"]
    assert close.file_score > exact.file_score  # the evidence still says otherwise, and the trace shows it

    # Without that agreement (first for one retriever only), the evidence decides.
    lone = candidate("metrics.py", 0.0328, dense=1)
    order = _by_file_evidence([lone, close, support], RetrievalConfig())
    assert [c.payload["path"] for c in order][0] == "chunking.py"
    assert _by_file_evidence([], RetrievalConfig()) == []


def test_whole_file_bm25_brings_in_a_file_the_chunk_searches_missed() -> None:
    """With the chunk-level lexical search cut to its single best chunk, ``loader.py`` (whose words
    are spread over three chunks) is found only by the file-level BM25, enters with its best chunk
    and is cited; with the signal off it is not there at all."""
    narrow = {**LEXICAL_ONLY, "lexical_k": 1}
    off = retriever().retrieve(QUERY, top_k=5, config=RetrievalConfig(**narrow))
    assert "loader.py" not in paths(off)
    on = retriever().retrieve(QUERY, top_k=5, config=RetrievalConfig(**{**narrow, "file_lexical_weight": 1.0}))
    loader = [c for c in on.candidates if c.payload["path"] == "loader.py"]
    assert loader and loader[0].via == "file_lexical" and loader[0].file_score > 0
    assert "file_lexical_ms" in on.timings_ms


def test_the_calibrator_reads_the_same_features_at_evaluation_and_at_serving() -> None:
    """A calibrator is fitted on features of the evaluation's retrieval (``RANK_DEPTH`` citations,
    one per file) and applied to the features of a served query (5 by default, ``max_per_file`` as
    configured). Every feature it reads must describe the retrieval, not the request: the number of
    citations did not (20 when fitted, 5 when served), which sent calibrated confidence to ~0 or ~1
    on questions users ask (docs/benchmarks.md, "Confidence on hand-written questions")."""
    from dataclasses import replace

    from codex_core.calibration import feature_vector
    from codex_core.evaluation import RANK_DEPTH

    config = RetrievalConfig(**LEXICAL_ONLY)
    evaluated = retriever().retrieve(QUERY, top_k=RANK_DEPTH, config=replace(config, max_per_file=1))
    served = retriever().retrieve(QUERY, top_k=5, config=config)
    assert len(evaluated.candidates) != len(served.candidates)  # the requests differ ...
    np.testing.assert_allclose(feature_vector(evaluated.features, QUERY),  # ... what is read does not
                               feature_vector(served.features, QUERY))
