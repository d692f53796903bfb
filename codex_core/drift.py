"""Drift of served queries (Evidently 0.7): recent window vs a reference window.

Columns: query length, language of the top citation, top fused score, confidence, abstention.
The drift share is the fraction of these columns whose distribution moved (K-S for numbers,
Z-test / chi-square for categories, Evidently's defaults at p < 0.05).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from codex_core.querylog import ServedQuery

COLUMNS = ["query_length", "language", "top_score", "confidence", "abstained"]


@dataclass(frozen=True)
class DriftResult:
    status: str  # "ok" | "drift" | "insufficient_data"
    drift_share: float | None
    drifted_columns: list[str]
    reference_rows: int
    current_rows: int
    html_path: str | None


def split_windows(
    records: Sequence[ServedQuery], *, now: datetime, current_hours: float = 24, reference_days: float = 7
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
        language=f["language"].fillna("none"), abstained=f["abstained"].astype(int)
    )
    return prepare(reference), prepare(current)


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, html_path: Path, *, min_rows: int = 30, threshold: float = 0.5
) -> DriftResult:
    if len(reference) < min_rows or len(current) < min_rows:
        return DriftResult("insufficient_data", None, [], len(reference), len(current), None)
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset(drift_share=threshold)]).run(current, reference)
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
    return DriftResult("drift" if share >= threshold else "ok", share, sorted(drifted), len(reference), len(current),
                       str(html_path))
