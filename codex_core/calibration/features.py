"""Calibration, part 1: the features a calibrator reads and the metrics it is judged by (ECE, its
noise floor, Brier, precision at coverage, the abstention threshold)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Chunk-level signals of the top citation and the query.
CORE_FEATURES: tuple[str, ...] = (
    "top_score",
    "margin",
    "agreement",
    "top_dense_cosine",
    "top_lexical",
    "verified_fraction",
    "citations",
    "query_length",
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
SCHEMA = 2
MIN_SAMPLES = 10
DEFAULT_COVERAGE_RANGE = (0.70, 0.80)
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
    values = {**features, "query_length": query_length(query)}
    return np.array([_finite(values.get(name)) for name in names], dtype=float)


def _as_arrays(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels: they must pair up one to one")
    return np.clip(p, 0.0, 1.0), y


def expected_calibration_error(probs: Any, labels: Any, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins, each weighted by its share of samples (NaN if empty)."""
    p, y = _as_arrays(probs, labels)
    if p.size == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    used = counts > 0
    gaps = np.abs(sum_y[used] - sum_p[used])  # = n_b * |mean(y_b) - mean(p_b)|
    return float(gaps.sum() / p.size)


def ece_noise_floor(probs: Any, bins: int = 15, simulations: int = 200, seed: int = 0) -> float:
    """The ECE a *perfectly calibrated* model with these confidences would still show on this many
    queries: the mean ECE when each label is drawn as ``Bernoulli(prob)``. A measured ECE near this
    value cannot be told apart from perfect calibration at this sample size."""
    p = np.clip(np.asarray(probs, dtype=float).ravel(), 0.0, 1.0)
    if p.size == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    return float(np.mean([expected_calibration_error(p, rng.random(p.size) < p, bins) for _ in range(simulations)]))


def brier_score(probs: Any, labels: Any) -> float:
    p, y = _as_arrays(probs, labels)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def precision_at_coverage(probs: Any, labels: Any) -> list[tuple[float, float, float]]:
    """``(coverage, precision, threshold)`` for every distinct threshold, by increasing coverage.

    Answering when ``prob >= threshold`` answers ``coverage`` of the queries, and ``precision``
    of those answers are correct. Tied probabilities are answered (or not) together.
    """
    p, y = _as_arrays(probs, labels)
    if p.size == 0:
        return []
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    correct = np.cumsum(ys)
    last_of_tie = np.r_[ps[1:] != ps[:-1], True]
    n = p.size
    return [(float((i + 1) / n), float(correct[i] / (i + 1)), float(ps[i])) for i in np.flatnonzero(last_of_tie)]


def _choose(
    probs: Any, labels: Any, coverage_range: tuple[float, float]
) -> tuple[float, float, float, str | None]:
    curve = precision_at_coverage(probs, labels)
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
    probs: Any, labels: Any, coverage_range: tuple[float, float] = DEFAULT_COVERAGE_RANGE
) -> tuple[float, float, float]:
    """``(tau, precision, coverage)``: the tau with the best precision at a coverage in range.

    Ties and the out-of-range fallback are described in the module docstring; the fallback is
    logged as a warning.
    """
    tau, precision, coverage, note = _choose(probs, labels, coverage_range)
    if note:
        logger.warning("choose_threshold: %s", note)
    return tau, precision, coverage
