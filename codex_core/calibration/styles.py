"""Calibration, part 4: question styles. The held-out split, the weights for the served mix, and
the report per style.

The eval set holds two styles of question (each item's ``style``, :mod:`codex_core.evalsets`):
``mined`` commit messages and ``plain`` questions like the ones users type. A calibrator fitted on
commit messages alone is miscalibrated on plain questions, so the calibration asset fits on both and
reports each. Three rules:

* **Held-out split** (``holdout_mask``). Within each style, the ``HOLDOUT_FRACTION`` of the items
  whose ``sha256(seed:id)`` is smallest are held out (rounded to the nearest item). The calibrator is
  fitted, and its method and tau chosen by cross-validation, on the other items only. Every number
  per style is measured by that calibrator, the one serving loads, on held-out items only. An
  item's side depends only on its id and on how many items share its style, so tomorrow's run
  splits today's set the same way.
* **Weights** (``style_weights``). The calibrator is fitted for the mix of questions serving
  sees: each item is weighted by ``served share / eval-set share`` of its query style. The query
  style is the rule serving logs (``codex_core.query_style``: question-like or commit-like), not
  the item's origin: the query log knows the rule's verdict, never where a question came from. A ratio is capped to
  ``[1 / MAX_WEIGHT_RATIO, MAX_WEIGHT_RATIO]`` so that a handful of items cannot carry the whole
  fit. The weights are normalised to a mean of 1. With fewer than ``MIN_SERVED_QUERIES`` served queries,
  or when the eval set holds only one query style, every item weighs 1: both styles pooled.
* **Report** (``style_report``). For each style and for all of them: the number of items, the
  positive rate, ECE and its noise floor, the Brier score, precision at 70 % coverage, coverage
  at 0.92 precision, and precision and coverage at tau.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from codex_core.calibration.features import (
    TARGET_COVERAGE,
    TARGET_PRECISION,
    brier_score,
    coverage_at_target_precision,
    ece_noise_floor,
    expected_calibration_error,
    precision_at_target_coverage,
)
from codex_core.query_style import COMMIT, QUESTION

HOLDOUT_FRACTION = 0.3
MAX_WEIGHT_RATIO = 10.0
MIN_SERVED_QUERIES = 30  # the fewest rows the drift report compares (``drift.drift_report``'s min_rows)
ALL = "all"
REPORT_COLUMNS = [
    "n", "positive_rate", "ece", "ece_noise_floor", "brier", "precision_at_70_coverage",
    "coverage_at_092_precision", "precision_at_tau", "coverage_at_tau",
]


def holdout_mask(ids: Sequence[str], styles: Sequence[str], fraction: float = HOLDOUT_FRACTION,
                 seed: int = 0) -> np.ndarray:
    """True for the items held out from fitting: per style, the ``fraction`` with the smallest hash."""
    if len(ids) != len(styles):
        raise ValueError(f"{len(ids)} ids but {len(styles)} styles: they must pair up one to one")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(len(ids), dtype=bool)
    by_style: dict[str, list[int]] = {}
    for index, style in enumerate(styles):
        by_style.setdefault(style, []).append(index)
    for indices in by_style.values():
        ranked = sorted(indices, key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).hexdigest())
        mask[ranked[: int(fraction * len(ranked) + 0.5)]] = True
    return mask


def style_weights(query_styles: Sequence[str], served_question_share: float | None,
                  served_queries: int = MIN_SERVED_QUERIES) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(weights or None, what was done and why): the served mix of query styles over the eval set's."""
    n = len(query_styles)
    counts = Counter(query_styles)
    info: dict[str, Any] = {
        "served_question_share": served_question_share, "served_queries": served_queries,
        "eval_question_share": counts[QUESTION] / n if n else None, "weights": None,
    }
    if served_question_share is None or served_queries < MIN_SERVED_QUERIES:
        info["note"] = (f"pooled, unweighted: {served_queries} served queries classified (reweighting needs "
                        f"{MIN_SERVED_QUERIES})")
        return None, info
    if counts[QUESTION] == 0 or counts[COMMIT] == 0:
        info["note"] = "pooled, unweighted: the eval set holds one query style only"
        return None, info
    served = {QUESTION: served_question_share, COMMIT: 1.0 - served_question_share}
    ratio = {s: float(np.clip(served[s] / (counts[s] / n), 1 / MAX_WEIGHT_RATIO, MAX_WEIGHT_RATIO))
             for s in (QUESTION, COMMIT)}
    raw = np.array([ratio[s] for s in query_styles])
    scale = float(raw.mean())
    weights = raw / scale
    info["weights"] = {s: ratio[s] / scale for s in (QUESTION, COMMIT)}
    info["note"] = (f"weighted to the served mix: {served_question_share:.0%} of {served_queries} served queries "
                    f"are question-like, {info['eval_question_share']:.0%} of the eval set's")
    return weights, info


def group_metrics(probs: Any, labels: Any, tau: float, weights: Any = None) -> dict[str, float | None]:
    """The report columns (``REPORT_COLUMNS``) for one group of queries; None where undefined."""
    p = np.asarray(probs, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    w = None if weights is None else np.asarray(weights, dtype=float).ravel()
    if p.size == 0:
        return {"n": 0} | {column: None for column in REPORT_COLUMNS[1:]}
    answered = p >= tau
    unit = np.ones_like(p) if w is None else w

    def finite(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    return {
        "n": int(p.size),
        "positive_rate": float(np.average(y, weights=unit)),
        "ece": finite(expected_calibration_error(p, y, weights=w)),
        "ece_noise_floor": finite(ece_noise_floor(p, weights=w)),
        "brier": finite(brier_score(p, y, w)),
        "precision_at_70_coverage": finite(precision_at_target_coverage(p, y, TARGET_COVERAGE, w)),
        "coverage_at_092_precision": finite(coverage_at_target_precision(p, y, TARGET_PRECISION, w)),
        "precision_at_tau": float(np.average(y[answered], weights=unit[answered])) if answered.any() else None,
        "coverage_at_tau": float(unit[answered].sum() / unit.sum()),
    }


def style_report(probs: Any, labels: Any, styles: Sequence[str], tau: float,
                 weights: Any = None) -> dict[str, dict[str, float | None]]:
    """``group_metrics`` per style (sorted) and for ``"all"`` of them; with ``weights``, also for
    ``"all (served mix)"``: the same queries weighted to the mix serving sees."""
    p = np.asarray(probs, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    groups = np.asarray(list(styles), dtype=object)
    if not p.size == y.size == groups.size:
        raise ValueError(f"{p.size} probabilities, {y.size} labels and {groups.size} styles must pair up")
    report = {str(s): group_metrics(p[groups == s], y[groups == s], tau) for s in sorted(set(styles))}
    report[ALL] = group_metrics(p, y, tau)
    if weights is not None:
        report[f"{ALL} (served mix)"] = group_metrics(p, y, tau, weights)
    return report
