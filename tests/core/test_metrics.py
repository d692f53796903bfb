"""Ranking metrics and percentiles against values computed by hand on small fixed rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codex_core.metrics import dedupe_ranking, mrr_at_k, ndcg_at_k, percentile, recall_at_k

RANKED = ["b", "a", "c"]
GOLD = {"a", "c"}


def test_recall_counts_the_fraction_of_gold_files_in_the_top_k() -> None:
    assert recall_at_k(RANKED, GOLD, 1) == 0.0
    assert recall_at_k(RANKED, GOLD, 2) == 0.5
    assert recall_at_k(RANKED, GOLD, 3) == 1.0
    assert recall_at_k(RANKED, GOLD, 10) == 1.0  # k beyond the ranking


def test_mrr_is_the_reciprocal_rank_of_the_first_gold_file_within_k() -> None:
    assert mrr_at_k(RANKED, GOLD, 10) == 0.5
    assert mrr_at_k(RANKED, GOLD, 1) == 0.0
    assert mrr_at_k(["x", "y", "z", "a"], {"a"}, 4) == 0.25
    assert mrr_at_k(["x", "y"], {"a"}, 10) == 0.0


def test_ndcg_uses_log2_discount_and_an_ideal_of_min_k_gold_hits() -> None:
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(RANKED, GOLD, 3) == pytest.approx(expected)
    # k=1: the ideal has one gold file at rank 1; the ranking has none there.
    assert ndcg_at_k(RANKED, GOLD, 1) == 0.0
    # k=2: only "a" at rank 2 counts; ideal is two hits.
    assert ndcg_at_k(RANKED, GOLD, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "c", "b"], GOLD, 5) == pytest.approx(1.0)
    # One gold file, k larger than |gold|: the ideal is a single hit at rank 1.
    assert ndcg_at_k(["x", "a"], {"a"}, 5) == pytest.approx(1 / math.log2(3))


def test_rankings_are_deduplicated_first_occurrence_wins() -> None:
    chunks = ["b", "b", "a", "b", "c"]
    assert dedupe_ranking(chunks) == ["b", "a", "c"]
    assert recall_at_k(chunks, GOLD, 2) == 0.5
    assert mrr_at_k(chunks, GOLD, 10) == 0.5
    assert ndcg_at_k(chunks, GOLD, 3) == pytest.approx(ndcg_at_k(RANKED, GOLD, 3))


def test_metrics_refuse_empty_gold_and_nonpositive_k() -> None:
    with pytest.raises(ValueError, match="gold is empty"):
        recall_at_k(RANKED, set(), 5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ndcg_at_k(RANKED, GOLD, 0)


def test_percentile_interpolates_like_numpy() -> None:
    values = [12.0, 3.0, 7.0, 1.0, 100.0, 5.0]
    for p in (0, 5, 50, 90, 95, 99, 100):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([42.0], 95) == 42.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
