"""Lifecycle assets that watch the product in use: drift of served queries."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from codex_core.drift import drift_report as compute_drift
from codex_core.drift import split_windows
from codex_core.querylog import QUERY_LOG_FILE, QueryLog
from codex_resources import CodexHomeResource

QUERY_LOG = QUERY_LOG_FILE


@dg.asset(group_name="lifecycle", kinds={"evidently"})
def drift_report(context: dg.AssetExecutionContext, codex_home: CodexHomeResource) -> dg.MaterializeResult:
    """Served queries of the last 24 h vs the 7 days before (Evidently).

    Columns: query length, language of the top citation, top score, confidence, abstention, and
    question style (question-like vs commit-message-like; the share of question-like queries in
    each window is in the metadata).

    Drift above the threshold, or a drifted question style on its own (the calibrator is fitted for
    the served mix of styles), makes `drift_recalibration_sensor` re-run evaluation and calibration.
    """
    home = codex_home.home
    now = datetime.now(UTC)
    records = list(QueryLog(home.serving_state_dir / QUERY_LOG).read(since=now - timedelta(days=8)))
    reference, current = split_windows(records, now=now)
    html = home.root / "drift" / f"drift-{now.strftime('%Y%m%dT%H%M%SZ')}.html"
    result = compute_drift(reference, current, html)
    repos = sorted({r.repo for r in records if r.repo})
    return dg.MaterializeResult(
        metadata={
            "status": result.status,
            "drift_share": result.drift_share,
            "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
            "style_drift": result.style_drift,
            "question_share_reference": result.question_share_reference,
            "question_share_current": result.question_share_current,
            "notes": dg.MetadataValue.json(result.notes),
            "reference_rows": result.reference_rows,
            "current_rows": result.current_rows,
            "repos": dg.MetadataValue.json(repos),
            "report": dg.MetadataValue.path(result.html_path) if result.html_path else None,
        }
    )


lifecycle_assets = [drift_report]
