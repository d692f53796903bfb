"""The one place ``Definitions`` is assembled. Loading it touches no disk, network or model."""

from __future__ import annotations

import dagster as dg

from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_resources import build_resources

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Snapshot a repository, chunk, deduplicate, embed, graph, stage, check and publish its index.",
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=ingestion_assets,
        asset_checks=ingestion_checks,
        jobs=[ingest_job],
        resources=build_resources(),
    )
