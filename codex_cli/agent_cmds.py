"""``feriactl agent run | runs | show`` (wired by ``register(subparsers)``).

``agent run`` executes the ``agent_run`` Dagster job in-process on the CODEX_HOME instance (so the
run, its tags and its report are in the Dagster UI) and prints the stored report; ``runs`` and
``show`` read ``CODEX_HOME/agent/runs`` only (no Dagster import).
"""

from __future__ import annotations

import argparse
from typing import Any

from codex_cli.common import CliError, ensure_instance_dir, execute_job
from codex_cli.common import emit as _emit
from codex_cli.common import home as _home
from codex_core.home import validate_repo_name

JOB, OP = "agent_run", "sandbox_run"


def _failures(instance, run_id: str) -> list[str]:
    messages = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.event_type_value != "STEP_FAILURE":
            continue
        data = event.event_specific_data
        user = getattr(data, "user_failure_data", None)
        if user is not None and user.description:
            messages.append(user.description)
        else:
            messages.append(data.error.message.strip() if data.error else "failed")
    return messages


def cmd_run(args: argparse.Namespace) -> int:
    from codex_core.git import RepoRegistry
    from codex_core.sandbox import RunStore, find_recipe

    home = _home()
    validate_repo_name(args.repo)
    if args.tenant:
        validate_repo_name(args.tenant, what="tenant", hint="")
    RepoRegistry(home.registry_path).get(args.repo)  # unknown repository: a clear error, no run
    find_recipe(args.recipe)  # unknown or bad recipe: a clear error, no run

    from codex_assets.agent import run_tags

    ensure_instance_dir(home)
    config = {"recipe": args.recipe, "commit": args.commit or "", "tenant": args.tenant or ""}
    instance, dagster_run_id, result = execute_job(
        JOB, args.repo, stages=1, show_progress=False, run_config={"ops": {OP: {"config": config}}},
        tags=run_tags(args.recipe, args.tenant or ""),
    )
    if not result.success:
        raise CliError(f"agent run did not complete (Dagster run {dagster_run_id}): "
                       + "; ".join(_failures(instance, dagster_run_id) or ["see the Dagster UI"]))
    store = RunStore(home)
    run_id = result.output_for_node(OP)
    record = store.load(run_id)
    _emit(args, record, store.markdown(run_id).rstrip("\n") + f"\n\n(Dagster run {dagster_run_id})")
    return 0 if record["status"] == "ok" else 1


def _row(record: dict[str, Any]) -> str:
    status = record.get("status") or "?"
    status = status if len(status) <= 28 else status[:27] + "…"
    return (f"{record['run_id']}  {record.get('repo') or '?':<20} {record.get('recipe') or '?':<16} {status:<28} "
            f"{record.get('duration_sec') or 0:>8.2f}  {(record.get('finished_at') or '')[:19]}")


def cmd_runs(args: argparse.Namespace) -> int:
    from codex_core.sandbox import RunStore

    store = RunStore(_home())
    records = store.list()
    lines = [f"{len(records)} agent runs under {store.root}"]
    if records:
        lines.append(f"{'run id':<32}  {'repo':<20} {'recipe':<16} {'status':<28} {'seconds':>8}  finished (UTC)")
        lines += [_row(r) for r in records]
    else:
        lines.append("  none yet: feriactl agent run --repo NAME --recipe ruff")
    keys = ("run_id", "repo", "recipe", "status", "duration_sec", "commit", "tenant", "started_at", "finished_at")
    _emit(args, [{k: r.get(k) for k in keys} for r in records], "\n".join(lines))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from codex_core.sandbox import RunStore

    store = RunStore(_home())
    record = store.load(args.run_id)  # KeyError with a clear message: exit 2
    _emit(args, record, store.markdown(args.run_id).rstrip("\n"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="run a repository's own checks in the sandbox (recipes/*.yaml); reports")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)

    p = agent_sub.add_parser("run", help="run a recipe on a registered repository (the agent_run Dagster job); "
                                         "exit 0 ok, 1 when a step did not succeed")
    p.add_argument("--repo", required=True)
    p.add_argument("--recipe", required=True, help="recipe name, e.g. ruff, unit-tests, mypy")
    p.add_argument("--commit", help="commit to run on (default: HEAD of the repository's source)")
    p.add_argument("--tenant", help="tenant the run is done for (tag and report)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = agent_sub.add_parser("runs", help="stored agent runs, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = agent_sub.add_parser("show", help="a stored run's Markdown report")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
