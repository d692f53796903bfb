"""The one place ``Definitions`` is assembled. Loading it touches no disk, network or model."""

import dagster as dg

from codex_assets.agent import agent_run_job
from codex_assets.evaluation import eval_assets
from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_assets.lifecycle import lifecycle_assets
from codex_assets.snapshots import SnapshotKeyResource, snapshot_assets
from codex_resources import build_resources
from codex_sensors import (
    daily_drift,
    drift_job,
    drift_recalibration_sensor,
    eval_job,
    first_eval_sensor,
    git_head_sensor,
    ingest_job,
    nightly_eval,
    nightly_snapshot,
    recalibrate_job,
    snapshot_job,
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[*ingestion_assets, *eval_assets, *lifecycle_assets, *snapshot_assets],
        asset_checks=ingestion_checks,
        jobs=[ingest_job, eval_job, recalibrate_job, drift_job, snapshot_job, agent_run_job],
        schedules=[nightly_eval, daily_drift, nightly_snapshot],
        sensors=[git_head_sensor, first_eval_sensor, drift_recalibration_sensor],
        # The snapshot key is read when a snapshot runs (never at load), with a clear error if unset.
        resources={**build_resources(), "snapshot_key": SnapshotKeyResource()},
    )
