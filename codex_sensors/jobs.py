"""The jobs sensors and schedules request: one asset selection each, partitioned by repository."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Snapshot a repository, chunk, deduplicate, embed, graph, stage, check and publish its index.",
    # One process per run, not per step: a step subprocess costs seconds of imports (and a model
    # load for embedding steps), which would dominate a one-file re-index. The steps form a
    # chain anyway, so nothing is lost in parallelism.
    executor_def=dg.in_process_executor,
)

eval_job = dg.define_asset_job(
    "evaluate",
    selection=dg.AssetSelection.groups("eval"),
    description="Mine the eval set, run the retriever with ablations, refit calibration (one MLflow run each).",
)


recalibrate_job = dg.define_asset_job(
    "recalibrate",
    selection=dg.AssetSelection.assets("retrieval_eval", "calibration"),
    description="Re-run evaluation and refit calibration (requested when served queries drift).",
)

drift_job = dg.define_asset_job("drift", selection=dg.AssetSelection.assets("drift_report"))

snapshot_job = dg.define_asset_job(
    "snapshot",
    selection=dg.AssetSelection.assets("index_snapshot"),
    description="Write a signed snapshot of a repository's published state and apply retention (7 daily).",
)
