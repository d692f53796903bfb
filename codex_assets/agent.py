"""The ``agent_run`` job: one sandboxed recipe run on a repository, visible in the Dagster UI.

One op, no assets: a run's product is its stored report (``CODEX_HOME/agent/runs/<run_id>/``), not
a versioned table. The job is partitioned by repository (the ``repos`` dynamic partition) and the
run is tagged ``codex/recipe`` and ``codex/tenant``; the op's output metadata carries the Markdown
report, the run id, the status and the per-step table.

A step that fails is a completed run with status ``failed`` (the run succeeds in Dagster, the
report says what failed). What keeps a recipe from running at all — no bubblewrap, an unknown or
bad recipe, a policy that does not load, a commit that does not exist — fails the Dagster run
with that message.

The run id is new, or ``config.run_id`` when the API asked for the run (it answered with that id
before the run started; the op marks its pending record running). One JSON line per run start and
finish goes to the ``codex.agent`` logger (masked like the access log), with both run ids.
"""

import tempfile
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from codex_assets.ingestion import repos_partitions
from codex_core.git import GitError, open_or_clone
from codex_core.home import validate_repo_name
from codex_core.jsonlog import log_run_event
from codex_core.sandbox import (
    PolicyError,
    RecipeError,
    RunReport,
    RunStore,
    SandboxUnavailable,
    WorkdirError,
    find_recipe,
    load_policy,
    new_run_id,
    run_recipe,
)
from codex_core.sandbox.pending import PendingRuns
from codex_core.sandbox.store import RUN_ID_RE, now_iso
from codex_resources import CodexHomeResource

NO_TENANT = "-"  # the codex/tenant tag of a run nobody asked for on a tenant's behalf (Dagster tags are strings)


class AgentRunConfig(dg.Config):
    recipe: str = Field(description="recipe name (recipes/*.yaml), e.g. ruff or unit-tests")
    commit: str = Field(default="", description="commit to run on; empty = the repository's HEAD")
    tenant: str = Field(default="", description="tenant the run is done for (a tag and in the report)")
    run_id: str = Field(default="", description="the run id to store the run under (32 hex digits); empty = a new "
                                                "one. The API passes the id it already answered with.")


def run_tags(recipe: str, tenant: str = "") -> dict[str, str]:
    return {"codex/recipe": recipe, "codex/tenant": tenant or NO_TENANT}


def steps_table(report: RunReport) -> str:
    lines = ["| # | command | status | exit | seconds |", "|---|---|---|---|---|"]
    for index, step in enumerate(report.steps, 1):
        exit_code = "" if step.exit_code is None else str(step.exit_code)
        command = step.command.replace("|", "\\|")
        lines.append(f"| {index} | `{command}` | {step.verdict} | {exit_code} | {step.duration_sec:.2f} |")
    return "\n".join(lines)


@dg.op(description="Run a recipe on the partition's repository in the sandbox and store its report.")
def sandbox_run(context: dg.OpExecutionContext, config: AgentRunConfig, codex_home: CodexHomeResource) -> dg.Output:
    repo = context.partition_key
    if config.tenant:
        validate_repo_name(config.tenant, what="tenant", hint="")
    if config.run_id and RUN_ID_RE.fullmatch(config.run_id) is None:
        raise dg.Failure(description=f"run_id {config.run_id!r} is not a run id: 32 hex digits, or empty for a new one")
    # Tags from the launch (CLI) are kept; a run started from the launchpad gets them here.
    context.instance.add_run_tags(context.run_id, run_tags(config.recipe, config.tenant))
    home = codex_home.home
    store = RunStore(home)
    run_id = config.run_id or new_run_id()
    if store.run_dir(run_id).exists():
        raise dg.Failure(description=f"agent run {run_id} is already stored ({store.run_dir(run_id)}): "
                                     "leave run_id empty for a new run")
    PendingRuns(home).mark_running(run_id, dagster_run_id=context.run_id)
    who = {"run_id": run_id, "dagster_run_id": context.run_id, "repo": repo, "recipe": config.recipe,
           "tenant": config.tenant or None}
    log_run_event("agent_run_start", **who, status="running", commit=config.commit or "HEAD")
    clock = time.monotonic()

    def fail(message: str) -> dg.Failure:
        log_run_event("agent_run_finish", **who, status="error", duration_sec=round(time.monotonic() - clock, 3),
                      error=message)
        return dg.Failure(description=message)

    try:
        recipe = find_recipe(config.recipe)
        policy = load_policy(recipe.policy)
        worktree = open_or_clone(codex_home.registry.get(repo).source, home.checkout_dir(repo))
    except (RecipeError, PolicyError, GitError, KeyError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)) from None
    started = now_iso()
    context.log.info(f"agent run {run_id}: recipe {recipe.name} (policy {policy.name}) on {repo} "
                     f"at {config.commit or 'HEAD'}")
    with tempfile.TemporaryDirectory(prefix="codex-agent-artifacts-") as artifacts:
        try:
            report = run_recipe(worktree, config.commit or "HEAD", recipe, policy, artifacts_dir=Path(artifacts),
                                codex_home=home.root)
        except (SandboxUnavailable, PolicyError, WorkdirError) as exc:
            raise fail(str(exc)) from None
        record = store.save(
            report, run_id=run_id, repo=repo, tenant=config.tenant, requested_commit=config.commit,
            started_at=started, artifacts_from=Path(artifacts), dagster_run_id=context.run_id,
        )
    run_dir = store.run_dir(run_id)
    log_run_event("agent_run_finish", **who, status=report.status, duration_sec=report.duration_sec,
                  commit=report.commit)
    context.log.info(f"agent run {run_id}: {report.status} in {report.duration_sec:.2f} s ({run_dir})")
    return dg.Output(
        run_id,
        metadata={
            "run_id": run_id,
            "status": report.status,
            "repo": repo,
            "recipe": recipe.name,
            "policy": policy.name,
            "commit": report.commit,
            "tenant": config.tenant or NO_TENANT,
            "duration_sec": report.duration_sec,
            "steps": dg.MetadataValue.md(steps_table(report)),
            "report": dg.MetadataValue.md((run_dir / "report.md").read_text()),
            "report_dir": dg.MetadataValue.path(str(run_dir)),
            "artifacts": dg.MetadataValue.json(
                [{"path": a["path"], "status": a["status"], "sha256": a["sha256"]} for a in record["artifacts"]]),
        },
    )


agent_run_job = dg.GraphDefinition(name="agent_run", node_defs=[sandbox_run]).to_job(
    description="Run a sandbox recipe (recipes/*.yaml) on one repository; the report is stored and shown here.",
    partitions_def=repos_partitions,
    executor_def=dg.in_process_executor,
    tags={"codex/kind": "agent"},
)
