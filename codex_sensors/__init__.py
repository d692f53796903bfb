"""Schedules and sensors. Cheap by rule: they read refs and the instance, never clone or embed."""

import dagster as dg

eval_job = dg.define_asset_job(
    "evaluate",
    selection=dg.AssetSelection.groups("eval"),
    description="Mine the eval set, run the retriever with ablations, refit calibration (one MLflow run each).",
)


@dg.schedule(
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job=eval_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly self-evaluation of every repository at 03:00 UTC.",
)
def nightly_eval(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "adhoc"
    repos = context.instance.get_dynamic_partitions("repos")
    if not repos:
        return dg.SkipReason("no repositories ingested yet")
    return [dg.RunRequest(run_key=f"{repo}:{day}", partition_key=repo) for repo in sorted(repos)]
