"""Drift of served queries (Evidently 0.7): recent window vs a reference window.

Columns: query length, language of the top citation, top fused score, confidence, abstention, and
the question style of the query (``codex_core.query_style``: question-like or commit-like). The drift
share is the fraction of these columns whose distribution moved (K-S for numbers,
Z-test / chi-square for categories, Evidently's defaults at p < 0.05; distances on large windows).

Status ``drift`` (which makes ``drift_recalibration_sensor`` re-run evaluation and calibration):
the drift share reaches ``threshold``, **or** the question-style column drifted on its own. The
calibrator is fitted for the served mix of question styles (``calibration.styles``), so a moved mix
alone makes it stale. The style column is judged by the same per-column test as every other column:
no second threshold. Query-log lines written before the style was logged have no style. While
either window holds such a line, the style column is left out of the report, and the result says
so in ``notes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from codex_core.query_style import QUESTION
from codex_core.querylog import ServedQuery

STYLE_COLUMN = "query_style"
COLUMNS = ["query_length", "language", "top_score", "confidence", "abstained", STYLE_COLUMN]
UNKNOWN_STYLE = "unknown"
MIN_ROWS = 30
CURRENT_HOURS = 24
REFERENCE_DAYS = 7


@dataclass(frozen=True)
class DriftResult:
    status: str  # "ok" | "drift" | "insufficient_data"
    drift_share: float | None
    drifted_columns: list[str]
    reference_rows: int
    current_rows: int
    html_path: str | None
    # Share of question-like queries in each window (None: no styled rows in it).
    question_share_reference: float | None = None
    question_share_current: float | None = None
    style_drift: bool = False
    notes: list[str] = field(default_factory=list)


def split_windows(
    records: Sequence[ServedQuery], *, now: datetime, current_hours: float = CURRENT_HOURS,
    reference_days: float = REFERENCE_DAYS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current): the last ``current_hours`` against the ``reference_days`` before them."""
    frame = pd.DataFrame([asdict(r) for r in records], columns=[*ServedQuery.__dataclass_fields__])
    if frame.empty:
        return frame[COLUMNS], frame[COLUMNS]
    ts = pd.to_datetime(frame["ts"], utc=True)
    current_from = now - timedelta(hours=current_hours)
    reference_from = current_from - timedelta(days=reference_days)
    current = frame[ts >= current_from]
    reference = frame[(ts >= reference_from) & (ts < current_from)]
    prepare = lambda f: f[COLUMNS].assign(  # noqa: E731 - one shared cleanup
        language=f["language"].fillna("none"), abstained=f["abstained"].astype(int),
        query_style=f[STYLE_COLUMN].fillna(UNKNOWN_STYLE),
    )
    return prepare(reference), prepare(current)


def question_share(window: pd.DataFrame) -> float | None:
    """Share of question-like queries among the rows whose style is known (None: none is)."""
    styles = window[STYLE_COLUMN] if STYLE_COLUMN in window else pd.Series(dtype=object)
    known = styles[styles != UNKNOWN_STYLE]
    return float((known == QUESTION).mean()) if len(known) else None


def served_question_share(
    records: Sequence[ServedQuery], *, now: datetime, repo: str | None = None, min_rows: int = MIN_ROWS
) -> tuple[float | None, int]:
    """(share of question-like queries, queries it was measured on) that serving sees now.

    The drift report's current window (the last 24 h) when it holds ``min_rows`` styled queries,
    else the whole 8 days (reference and current windows together); ``(None, n)`` when even
    that is too few. Only queries whose top citation is in ``repo``, when given.
    """
    chosen = [r for r in records if r.query_style and (repo is None or r.repo == repo)]
    reference, current = split_windows(chosen, now=now)
    for window in (current, pd.concat([reference, current])):
        if len(window) >= min_rows:
            return question_share(window), len(window)
    return None, len(reference) + len(current)


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, html_path: Path, *, min_rows: int = MIN_ROWS,
    threshold: float = 0.5,
) -> DriftResult:
    shares = {"question_share_reference": question_share(reference), "question_share_current": question_share(current)}
    if len(reference) < min_rows or len(current) < min_rows:
        return DriftResult("insufficient_data", None, [], len(reference), len(current), None, **shares)
    notes: list[str] = []
    columns = [c for c in COLUMNS if c in reference and c in current]
    if STYLE_COLUMN in columns and ((reference[STYLE_COLUMN] == UNKNOWN_STYLE).any()
                                    or (current[STYLE_COLUMN] == UNKNOWN_STYLE).any()):
        columns.remove(STYLE_COLUMN)
        notes.append("query_style left out: some served queries were logged before their style was")
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset(drift_share=threshold)]).run(current[columns], reference[columns])
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    share, drifted = 0.0, []
    for metric in snapshot.dict()["metrics"]:
        name = metric["metric_name"]
        if name.startswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif name.startswith("ValueDrift("):
            # Evidently picks the test by data size: p-values drift when small, distances when large.
            value, config = float(metric["value"]), metric["config"]
            limit = float(config.get("threshold") or 0.05)
            moved = value < limit if "p_value" in str(config.get("method", name)) else value >= limit
            if moved:
                drifted.append(config["column"])
    style_drift = STYLE_COLUMN in drifted
    status = "drift" if share >= threshold or style_drift else "ok"
    return DriftResult(status, share, sorted(drifted), len(reference), len(current), str(html_path), **shares,
                       style_drift=style_drift, notes=notes)
