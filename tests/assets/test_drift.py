"""Drift of served queries: Evidently report + the sensor that asks for recalibration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np

from codex_assets.lifecycle import QUERY_LOG, drift_report
from codex_core.home import CodexHome
from codex_core.querylog import QueryLog, ServedQuery
from codex_resources import CodexHomeResource
from codex_sensors import drift_recalibration_sensor


def write_log(
    home: Path, *, shifted: bool, seed: int = 0, question_share: tuple[float, float] = (0.3, 0.3),
    styled: tuple[bool, bool] = (True, True),
) -> None:
    """120 served queries, 60 in the reference week and 60 in the last day. ``shifted`` moves their
    shape (length, scores, confidence, abstention); ``question_share`` is the share of question-like
    queries in (reference, current); ``styled`` False writes lines as logged before styles were."""
    rng = np.random.default_rng(seed)
    log = QueryLog(CodexHome(home).serving_state_dir / QUERY_LOG)
    now = datetime.now(UTC)
    for i in range(120):
        recent = i >= 60
        when = now - (timedelta(hours=rng.uniform(1, 20)) if recent else timedelta(days=rng.uniform(2, 6)))
        moved = shifted and recent
        style = "question" if rng.uniform() < question_share[recent] else "commit"
        log.append(ServedQuery(
            ts=when.isoformat(timespec="seconds"), repo="demo",
            query_length=int(rng.integers(25, 40) if moved else rng.integers(4, 12)),
            language=str(rng.choice(["python", "go"])),
            top_score=float(rng.uniform(0.0, 0.01) if moved else rng.uniform(0.02, 0.04)),
            confidence=float(rng.uniform(0.0, 0.3) if moved else rng.uniform(0.5, 1.0)),
            abstained=bool(moved and rng.uniform() < 0.7), latency_ms=50.0,
            query_style=style if styled[recent] else None,
        ))


def run_requests(instance) -> list[dg.RunRequest]:
    """One tick of the asset sensor on the latest drift_report materialization."""
    produced = drift_recalibration_sensor(dg.build_sensor_context(instance=instance))
    return [r for r in produced if isinstance(r, dg.RunRequest)]


def materialize_drift(home: Path, instance) -> dict:
    result = dg.materialize([drift_report], instance=instance,
                            resources={"codex_home": CodexHomeResource(root=str(home))})
    (event,) = result.asset_materializations_for_node("drift_report")
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_drift_detected_triggers_recalibration(tmp_path: Path) -> None:
    write_log(tmp_path, shifted=True)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", ["demo"])
        report = materialize_drift(tmp_path, instance)
        assert report["status"] == "drift"
        assert {"query_length", "confidence"} <= set(report["drifted_columns"])
        assert Path(report["report"]).stat().st_size > 10_000  # the Evidently HTML
        requests = run_requests(instance)
        assert [r.partition_key for r in requests] == ["demo"]
        assert requests[0].tags["codex/reason"] == "drift"


def test_stable_traffic_requests_nothing(tmp_path: Path) -> None:
    write_log(tmp_path, shifted=False)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", ["demo"])
        report = materialize_drift(tmp_path, instance)
        assert report["status"] == "ok" and report["drift_share"] < 0.5
        assert run_requests(instance) == []


def test_too_few_queries_is_reported_not_guessed(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        report = materialize_drift(tmp_path, instance)
    assert report["status"] == "insufficient_data" and report["drift_share"] is None


def test_a_shift_in_question_style_alone_triggers_recalibration(tmp_path: Path) -> None:
    """Users start asking plain questions instead of pasting commit-like text: nothing else moves,
    but the calibrator was fitted for the old mix, so evaluation and calibration are re-run."""
    write_log(tmp_path, shifted=False, question_share=(0.15, 0.85))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", ["demo"])
        report = materialize_drift(tmp_path, instance)
        assert report["drifted_columns"] == ["query_style"]
        assert report["drift_share"] < 0.5  # one column of six: below the share threshold on its own
        assert report["status"] == "drift" and report["style_drift"] is True
        assert report["question_share_reference"] < 0.3 < 0.7 < report["question_share_current"]
        requests = run_requests(instance)
        assert [r.partition_key for r in requests] == ["demo"]
        assert requests[0].tags["codex/reason"] == "drift"


def test_lines_logged_before_styles_leave_the_style_out(tmp_path: Path) -> None:
    write_log(tmp_path, shifted=False, question_share=(0.0, 0.9), styled=(False, True))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", ["demo"])
        report = materialize_drift(tmp_path, instance)
    assert report["status"] == "ok" and not report["style_drift"]
    assert report["question_share_reference"] is None and report["question_share_current"] > 0.7
    assert any("query_style left out" in note for note in report["notes"])


def test_served_question_share_is_what_calibration_weights_for(tmp_path: Path) -> None:
    from codex_core.drift import served_question_share

    write_log(tmp_path, shifted=False, question_share=(0.1, 0.9))
    records = list(QueryLog(CodexHome(tmp_path).serving_state_dir / QUERY_LOG).read())
    share, n = served_question_share(records, now=datetime.now(UTC), repo="demo")
    assert n == 60 and share > 0.75  # the last day, which holds enough queries
    share, n = served_question_share(records, now=datetime.now(UTC), repo="demo", min_rows=100)
    assert n == 120 and 0.35 < share < 0.65  # too few in the last day: both windows
    assert served_question_share(records, now=datetime.now(UTC), repo="other") == (None, 0)
