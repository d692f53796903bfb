"""Ranking metrics for file-level retrieval, and latency percentiles. Framework-free.

A ranking is a list of file paths, best first. Rankings are deduplicated here (first occurrence
wins), so callers may pass the raw path of every ranked chunk. Relevance is binary: a file is
relevant iff it is in ``gold``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np


def dedupe_ranking(ranked: Iterable[str]) -> list[str]:
    """Paths in rank order, each kept at its first (best) position."""
    return list(dict.fromkeys(ranked))


def _check(gold: Collection[str], k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not gold:
        raise ValueError("gold is empty: a query needs at least one relevant file to be scored")


def recall_at_k(ranked_files: Sequence[str], gold_files: Collection[str], k: int) -> float:
    """Fraction of the gold files found in the top ``k``."""
    _check(gold_files, k)
    gold = set(gold_files)
    return len(gold.intersection(dedupe_ranking(ranked_files)[:k])) / len(gold)


def mrr_at_k(ranked_files: Sequence[str], gold_files: Collection[str], k: int) -> float:
    """1 / rank of the first gold file within the top ``k``; 0 when none is there."""
    _check(gold_files, k)
    gold = set(gold_files)
    for rank, path in enumerate(dedupe_ranking(ranked_files)[:k], start=1):
        if path in gold:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked_files: Sequence[str], gold_files: Collection[str], k: int) -> float:
    """Binary-relevance nDCG: gain 1 / log2(rank + 1); the ideal puts min(k, |gold|) gold files first."""
    _check(gold_files, k)
    gold = set(gold_files)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, path in enumerate(dedupe_ranking(ranked_files)[:k], start=1)
              if path in gold)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(gold)) + 1))
    return dcg / ideal


def percentile(values: Sequence[float], p: float, *, method: str = "linear") -> float:
    """The ``p``-th percentile (0-100) by ``numpy.percentile`` (``linear``: interpolate between closest
    ranks; ``nearest``: an observed value). The one percentile of the product: metrics, canary
    signals and the load generator all use it."""
    if len(values) == 0:
        raise ValueError("percentile of an empty sequence is undefined")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be within [0, 100], got {p}")
    return float(np.percentile(np.asarray(values, dtype=float), p, method=method))
