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


def write_log(home: Path, *, shifted: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    log = QueryLog(CodexHome(home).serving_state_dir / QUERY_LOG)
    now = datetime.now(UTC)
    for i in range(120):
        recent = i >= 60
        when = now - (timedelta(hours=rng.uniform(1, 20)) if recent else timedelta(days=rng.uniform(2, 6)))
        moved = shifted and recent
        log.append(ServedQuery(
            ts=when.isoformat(timespec="seconds"), repo="demo",
            query_length=int(rng.integers(25, 40) if moved else rng.integers(4, 12)),
            language=str(rng.choice(["python", "go"])),
            top_score=float(rng.uniform(0.0, 0.01) if moved else rng.uniform(0.02, 0.04)),
            confidence=float(rng.uniform(0.0, 0.3) if moved else rng.uniform(0.5, 1.0)),
            abstained=bool(moved and rng.uniform() < 0.7), latency_ms=50.0,
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
