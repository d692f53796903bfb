"""Schedules and sensors (jobs in ``jobs``, the first evaluation in ``first_eval``). Sensors are cheap
by rule: they read refs, never clone or embed."""

import json

import dagster as dg

from codex_core.git import GitError, head_sha, is_url, remote_head_sha
from codex_core.published import published_commit, worker_alive
from codex_resources import CodexHomeResource
from codex_sensors.first_eval import first_eval_sensor
from codex_sensors.jobs import drift_job, eval_job, ingest_job, recalibrate_job, snapshot_job

__all__ = [
    "daily_drift",
    "drift_job",
    "drift_recalibration_sensor",
    "eval_job",
    "first_eval_sensor",
    "git_head_sensor",
    "ingest_job",
    "nightly_eval",
    "nightly_snapshot",
    "recalibrate_job",
    "snapshot_job",
]


def _daily_run_per_repo(context: dg.ScheduleEvaluationContext, run_key_prefix: str):
    """One run request per ingested repository, keyed by repository and day (idempotent per day)."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    repos = context.instance.get_dynamic_partitions("repos")
    if not repos:
        return dg.SkipReason("no repositories ingested yet")
    return [dg.RunRequest(run_key=f"{run_key_prefix}{repo}:{day}", partition_key=repo) for repo in sorted(repos)]


@dg.schedule(
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    job=drift_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily drift report of served queries at 04:00 UTC.",
)
def daily_drift(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"drift:{context.scheduled_execution_time.strftime('%Y-%m-%d')}")


@dg.asset_sensor(
    asset_key=dg.AssetKey("drift_report"),
    job=recalibrate_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a drift report finds drift, re-evaluate and recalibrate every repo that was queried.",
)
def drift_recalibration_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    materialization = asset_event.asset_materialization
    values = {k: getattr(v, "value", v) for k, v in (materialization.metadata if materialization else {}).items()}
    if values.get("status") != "drift":
        return dg.SkipReason(f"latest drift report: {values.get('status', 'unknown')}")
    known = set(context.instance.get_dynamic_partitions("repos"))
    repos = [r for r in values.get("repos") or [] if r in known]
    return [
        dg.RunRequest(run_key=f"drift:{asset_event.run_id}:{repo}", partition_key=repo,
                      tags={"codex/repo": repo, "codex/reason": "drift"})
        for repo in repos
    ] or dg.SkipReason("drift found, but no known repository was queried")


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-ingests a repository when its HEAD moves (cursor: {repo: sha}); adds new repos as partitions.",
)
def git_head_sensor(context: dg.SensorEvaluationContext, codex_home: CodexHomeResource) -> dg.SensorResult:
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions("repos"))
    requests, new_partitions, unreadable, left_to_worker = [], [], [], []
    worker = worker_alive(codex_home.home)
    for name, entry in sorted(codex_home.registry.all().items()):
        if worker and not is_url(entry.source):
            # The warm freshness worker (codex_sensors/worker.py) re-indexes local repositories
            # within seconds; the cursor is left alone so this sensor catches up if it stops.
            left_to_worker.append(name)
            if name not in known:
                new_partitions.append(name)
            continue
        try:
            sha = remote_head_sha(entry.source) if is_url(entry.source) else head_sha(entry.source)
        except GitError as exc:
            unreadable.append(name)
            context.log.warning(f"{name}: cannot read HEAD ({exc}); will retry next tick")
            continue
        if name not in known:
            new_partitions.append(name)
        # Without a cursor entry, what is already published counts as seen: no redundant first run.
        seen = cursor.get(name) or published_commit(codex_home.home, name)
        if seen != sha:
            tags = {"codex/repo": name, "codex/commit": sha}
            requests.append(dg.RunRequest(run_key=f"{name}:{sha}", partition_key=name, tags=tags))
        cursor[name] = sha
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(cursor, sort_keys=True),
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest("repos", new_partitions)] if new_partitions else [],
        skip_reason=None if requests else dg.SkipReason(
            "no HEAD moved"
            + (f"; unreadable: {', '.join(unreadable)}" if unreadable else "")
            + (f"; left to the freshness worker (pid {worker['pid']}): {', '.join(left_to_worker)}"
               if left_to_worker else "")
        ),
    )


@dg.schedule(
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job=eval_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly self-evaluation of every repository at 03:00 UTC.",
)
def nightly_eval(context: dg.ScheduleEvaluationContext):
    return _daily_run_per_repo(context, "")


@dg.schedule(
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    job=snapshot_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily signed snapshot of every repository at 02:30 UTC (start it once CODEX_SNAPSHOT_KEY is set).",
)
def nightly_snapshot(context: dg.ScheduleEvaluationContext):
    return _daily_run_per_repo(context, "snapshot:")
