"""Calibration, part 1: the features a calibrator reads and the metrics it is judged by (ECE, its
noise floor, Brier, precision at coverage, the abstention threshold).

Every metric takes optional per-query ``weights``: the calibration asset reweights the eval set's
question styles to the mix serving sees (``calibration.styles``), and a weighted query counts as
that many queries in every sum (no weights: each counts once)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from codex_core.query_style import is_question

logger = logging.getLogger(__name__)

# Chunk-level signals of the top citation, and the query's length and style (1 for a plain
# question, 0 for commit-message-like text: ``codex_core.query_style``, the rule serving logs).
CORE_FEATURES: tuple[str, ...] = (
    "top_score",
    "margin",
    "agreement",
    "top_dense_cosine",
    "top_lexical",
    "verified_fraction",
    "query_length",
    "question_like",
)
# ... plus how clearly the top-1 *file* stands out (``retrieval._features``).
FEATURES: tuple[str, ...] = (
    *CORE_FEATURES,
    "file_share",
    "file_margin",
    "distinct_files_top10",
    "top_file_dense_rr",
    "top_file_lexical_rr",
)
FEATURE_SETS: dict[str, tuple[str, ...]] = {"core": CORE_FEATURES, "extended": FEATURES}
# 2: ``margin`` and ``file_margin`` measure the top file's evidence lead (retrieval ranks files by
# evidence). A calibrator fitted on other feature definitions is refused, never silently misapplied.
# (``question_like`` is a new name, not a new meaning: a schema-2 calibrator without it reads only
# the features it names and stays valid.)
# 3: ``citations`` (how many citations the retrieval returned) is no longer read. It described the
# request, not the retrieval: the evaluation asks for ``RANK_DEPTH`` (20) citations, one per file, and
# a served query for 5, so a calibrator fitted on ~20 met ~5 and answered ~0 or ~1 whatever the
# evidence (all of koa's, starlette's, ky's and urfave/cli's hand-written questions abstained). A
# schema-2 calibrator is refused: serving uses the heuristic until the next calibration publishes.
SCHEMA = 3
MIN_SAMPLES = 10
DEFAULT_COVERAGE_RANGE = (0.70, 0.80)
# The product's stated abstention targets, reported for every question style: precision at 70 %
# coverage, and the coverage at which precision reaches 0.92.
TARGET_COVERAGE = 0.70
TARGET_PRECISION = 0.92
METHODS = ("platt", "isotonic", "constant")

_WORD = re.compile(r"\w+")


# ---------------------------------------------------------------------------------------------
# Features and metrics
# ---------------------------------------------------------------------------------------------


def query_length(query: str) -> int:
    """Word tokens in the query (letters, digits and underscores)."""
    return len(_WORD.findall(query or ""))


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def feature_vector(features: Mapping[str, Any], query: str, names: Sequence[str] = FEATURES) -> np.ndarray:
    """The features of one retrieval in ``names`` order (missing or non-finite -> 0)."""
    values = {**features, "query_length": query_length(query), "question_like": float(is_question(query))}
    return np.array([_finite(values.get(name)) for name in names], dtype=float)


def _as_arrays(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels: they must pair up one to one")
    return np.clip(p, 0.0, 1.0), y


def _weights(weights: Any, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=float).ravel()
    if w.size != n:
        raise ValueError(f"{w.size} weights for {n} queries: they must pair up one to one")
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    return w


def expected_calibration_error(probs: Any, labels: Any, bins: int = 15, weights: Any = None) -> float:
    """ECE with ``bins`` equal-width bins, each weighted by its share of samples (NaN if empty)."""
    p, y = _as_arrays(probs, labels)
    w = _weights(weights, p.size)
    if p.size == 0 or w.sum() <= 0:
        return float("nan")
    index = np.minimum((p * bins).astype(int), bins - 1)
    sum_p = np.bincount(index, weights=w * p, minlength=bins)
    sum_y = np.bincount(index, weights=w * y, minlength=bins)
    gaps = np.abs(sum_y - sum_p)  # = n_b * |mean(y_b) - mean(p_b)| (an empty bin adds 0)
    return float(gaps.sum() / w.sum())


def ece_noise_floor(
    probs: Any, bins: int = 15, simulations: int = 200, seed: int = 0, weights: Any = None
) -> float:
    """The ECE a *perfectly calibrated* model with these confidences would still show on this many
    queries: the mean ECE when each label is drawn as ``Bernoulli(prob)``. A measured ECE near this
    value cannot be told apart from perfect calibration at this sample size."""
    p = np.clip(np.asarray(probs, dtype=float).ravel(), 0.0, 1.0)
    if p.size == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    return float(np.mean([expected_calibration_error(p, rng.random(p.size) < p, bins, weights)
                          for _ in range(simulations)]))


def brier_score(probs: Any, labels: Any, weights: Any = None) -> float:
    p, y = _as_arrays(probs, labels)
    w = _weights(weights, p.size)
    return float(np.average((p - y) ** 2, weights=w)) if p.size and w.sum() > 0 else float("nan")


def precision_at_coverage(probs: Any, labels: Any, weights: Any = None) -> list[tuple[float, float, float]]:
    """``(coverage, precision, threshold)`` for every distinct threshold, by increasing coverage.

    Answering when ``prob >= threshold`` answers ``coverage`` of the queries, and ``precision``
    of those answers are correct. Tied probabilities are answered (or not) together.
    """
    p, y = _as_arrays(probs, labels)
    w = _weights(weights, p.size)
    if p.size == 0 or w.sum() <= 0:
        return []
    order = np.argsort(-p, kind="stable")
    ps, ys, ws = p[order], y[order], w[order]
    answered = np.cumsum(ws)
    correct = np.cumsum(ws * ys)
    last_of_tie = np.r_[ps[1:] != ps[:-1], True] & (answered > 0)
    total = answered[-1]
    return [(float(answered[i] / total), float(correct[i] / answered[i]), float(ps[i]))
            for i in np.flatnonzero(last_of_tie)]


def precision_at_target_coverage(probs: Any, labels: Any, coverage: float = TARGET_COVERAGE,
                                 weights: Any = None) -> float:
    """Precision when answering the most confident ``coverage`` of the queries (the first threshold
    whose coverage reaches it; ties are answered together). NaN without queries."""
    curve = precision_at_coverage(probs, labels, weights)
    reached = [c for c in curve if c[0] >= coverage - 1e-12]
    return reached[0][1] if reached else float("nan")


def coverage_at_target_precision(probs: Any, labels: Any, precision: float = TARGET_PRECISION,
                                 weights: Any = None) -> float:
    """The largest coverage whose answers are at least ``precision`` correct (0 when none is; NaN
    without queries)."""
    curve = precision_at_coverage(probs, labels, weights)
    if not curve:
        return float("nan")
    return max((c[0] for c in curve if c[1] >= precision - 1e-12), default=0.0)


def _choose(
    probs: Any, labels: Any, coverage_range: tuple[float, float], weights: Any = None
) -> tuple[float, float, float, str | None]:
    curve = precision_at_coverage(probs, labels, weights)
    lo, hi = coverage_range
    if not curve:
        return 0.5, 0.0, 0.0, "no samples: tau defaults to 0.5"
    eps = 1e-12
    inside = [c for c in curve if lo - eps <= c[0] <= hi + eps]
    if inside:
        coverage, precision, tau = max(inside, key=lambda c: (c[1], c[0]))
        return tau, precision, coverage, None

    def distance(c: tuple[float, float, float]) -> float:
        return lo - c[0] if c[0] < lo else c[0] - hi

    coverage, precision, tau = min(curve, key=lambda c: (round(distance(c), 12), -c[1], -c[0]))
    note = (
        f"no threshold gives a coverage within [{lo:.2f}, {hi:.2f}] (tied scores); "
        f"took the nearest achievable coverage {coverage:.3f} (precision {precision:.3f}, tau {tau:.4f})"
    )
    return tau, precision, coverage, note


def choose_threshold(
    probs: Any, labels: Any, coverage_range: tuple[float, float] = DEFAULT_COVERAGE_RANGE, weights: Any = None
) -> tuple[float, float, float]:
    """``(tau, precision, coverage)``: the tau with the best precision at a coverage in range.

    Ties and the out-of-range fallback are described in the module docstring; the fallback is
    logged as a warning.
    """
    tau, precision, coverage, note = _choose(probs, labels, coverage_range, weights)
    if note:
        logger.warning("choose_threshold: %s", note)
    return tau, precision, coverage
