"""The one place ``Definitions`` is assembled. Loading it touches no disk, network or model."""

import dagster as dg

from codex_assets.evaluation import eval_assets
from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_resources import build_resources
from codex_sensors import eval_job, git_head_sensor, ingest_job, nightly_eval


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[*ingestion_assets, *eval_assets],
        asset_checks=ingestion_checks,
        jobs=[ingest_job, eval_job],
        schedules=[nightly_eval],
        sensors=[git_head_sensor],
        resources=build_resources(),
    )
