"""``feriactl agent run | fix | runs | show | verify`` (wired by ``register(subparsers)``).

``agent fix`` runs the debug agent (``codex_core.sandbox.debug``) in this process and stores its
run (diagnosis, attempts, diff) like any agent run, signed. Like ``agent run`` it takes the API's
hidden ``--run-id`` (and ``--tenant``): it marks the pending record running and stores under that id.

``agent run`` executes the ``agent_run`` Dagster job in-process on the CODEX_HOME instance (so the
run, its tags and its report are in the Dagster UI) and prints the stored report; ``runs``,
``show`` and ``verify`` read ``CODEX_HOME/agent/runs`` only (no Dagster import). ``verify`` checks a
run's signed evidence with the snapshot keys (``CODEX_SNAPSHOT_KEY``, ``CODEX_SNAPSHOT_PREVIOUS_KEYS``).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
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


def _create_instance_storage(home) -> None:
    """Open the Dagster instance once under a lock before the run opens it: the API starts runs side by
    side, and two processes creating a fresh sqlite storage at once both stamp its schema (alembic then
    finds two heads and every later open of the instance fails)."""
    import dagster as dg

    from codex_core.fsio import file_lock

    with file_lock(home.dagster_home / ".storage-init.lock"):
        dg.DagsterInstance.get().dispose()


def _check_run_options(args: argparse.Namespace) -> None:
    """``--repo``, ``--tenant`` and the API's ``--run-id``, as ``agent run`` and ``agent fix`` take them."""
    from codex_core.sandbox.store import RUN_ID_RE

    validate_repo_name(args.repo)
    if args.tenant:
        validate_repo_name(args.tenant, what="tenant", hint="")
    if args.run_id and RUN_ID_RE.fullmatch(args.run_id) is None:
        raise CliError(f"--run-id {args.run_id!r} is not a run id: 32 hex digits (leave it out for a new one)")


def cmd_run(args: argparse.Namespace) -> int:
    from codex_core.git import RepoRegistry
    from codex_core.sandbox import RunStore, find_recipe

    home = _home()
    _check_run_options(args)
    RepoRegistry(home.registry_path).get(args.repo)  # unknown repository: a clear error, no run
    find_recipe(args.recipe)  # unknown or bad recipe: a clear error, no run

    from codex_assets.agent import run_tags

    ensure_instance_dir(home)
    _create_instance_storage(home)
    config = {"recipe": args.recipe, "commit": args.commit or "", "tenant": args.tenant or "",
              "run_id": args.run_id or ""}
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
    _emit(args, record, store.markdown(args.run_id).rstrip("\n") + "\n\n" + _evidence_line(record))
    return 0


def _evidence_line(record: dict[str, Any]) -> str:
    """What the run's report.json claims about its evidence; `agent verify` is what checks it."""
    claim = record.get("evidence")
    if not claim:
        return "evidence: none (stored before agent runs were signed)"
    if not claim.get("signed"):
        return "evidence: UNSIGNED (stored without CODEX_SNAPSHOT_KEY)"
    return f"evidence: signed, key {claim.get('key_id')} (feriactl agent verify {record['run_id']} checks it)"


def cmd_verify(args: argparse.Namespace) -> int:
    from codex_core.sandbox import RunStore
    from codex_core.snapshot import keys_from_env

    try:
        keys = keys_from_env()
    except ValueError as exc:  # a configured key that is too short
        raise CliError(f"CODEX_SNAPSHOT_KEY: {exc}") from exc
    check = RunStore(_home(), keys=keys).verify(args.run_id)  # an unknown run id: KeyError, exit 2
    if check.ok:
        human = (f"OK  {check.run_id}: signature valid (key {check.key_id}); {check.files_checked} files match "
                 "manifest.json, none missing, none added")
    else:
        human = "\n".join([f"FAILED  {check.run_id}: {', '.join(check.offending)}",
                           *(f"  {problem}" for problem in check.problems)])
    _emit(args, check.to_dict(), human)
    return 0 if check.ok else 1


def _style_for(name: str, requested: str) -> str:
    """``rewrite`` for small models (≤ 3B parameters by the name, or no size in it), else ``json``."""
    if requested != "auto":
        return requested
    size = re.search(r"(\d+(?:\.\d+)?)\s*([bm])\b", name.lower())
    if size is None or size.group(2) == "m":
        return "rewrite"
    return "rewrite" if float(size.group(1)) <= 3 else "json"


def _fix_model(args: argparse.Namespace):
    """The model to ask: ``--llm-url`` (an OpenAI-compatible server), or the first reachable model of
    configs/models.toml's routes, small first. (model or None, why none)."""
    from codex_core.llm.backends import BackendError, OpenAICompatibleBackend, make_backend
    from codex_core.llm.config import load_config
    from codex_core.sandbox.debug import Model, resolve_model
    from codex_core.settings import Settings

    if args.llm_url:
        backend = OpenAICompatibleBackend(args.llm_url, connect_timeout=2.0)
        name = args.model
        if not name:
            try:
                served = backend.list_models(5.0)
            except BackendError as exc:
                return None, str(exc)
            name = served[0] if served else "default"
        return resolve_model([Model(backend, name, style=_style_for(name, args.patch_style))], timeout=5.0)
    config = load_config(Settings.from_env().models_config)
    specs = list(dict.fromkeys(spec for route in ("small", "medium", "large") for spec in config.chain(route)))
    if args.model:
        specs = [spec for spec in specs if spec.name == args.model]
    candidates = [Model(make_backend(spec.backend, spec.base_url, connect_timeout=config.connect_timeout,
                                     api_key=config.api_key(spec)),
                        spec.name, spec.context_window, spec.timeout, _style_for(spec.name, args.patch_style))
                  for spec in specs]
    return resolve_model(candidates, timeout=config.health_timeout)


def _fix_retriever(home, repo: str, blobs):
    """Citations of the repository's published index for a failure (the query engine's own retrieval,
    champion config, embedder from the settings), or None when the repository is not indexed."""
    from codex_core import published
    from codex_core.sandbox.debug import Suspect

    if published.published_commit(home, repo) is None:
        return None
    from serving.engine import QueryEngine

    engine = QueryEngine(home)

    def retrieve(query: str) -> list[Suspect]:
        found = []
        for cand in engine.retrieve(query, repo=repo, top_k=5).result.candidates:
            p = cand.payload
            snippet = blobs.span(p["path"], p["start_line"], p["end_line"])
            if snippet is not None:  # the file is at the run's commit, too
                found.append(Suspect(p["path"], p["start_line"], p["end_line"], snippet, "retrieval",
                                     round(cand.score, 4), p.get("symbol")))
        return found

    return retrieve


def cmd_fix(args: argparse.Namespace) -> int:
    from codex_core.git import RepoRegistry, is_url, open_or_clone
    from codex_core.jsonlog import log_run_event
    from codex_core.sandbox import RunStore, load_policy, new_run_id
    from codex_core.sandbox.debug import Blobs, fix_failing_test, fix_report
    from codex_core.sandbox.pending import PendingRuns
    from codex_core.sandbox.store import now_iso
    from codex_core.sandbox.workdir import resolve_commit

    home = _home()
    _check_run_options(args)
    source = RepoRegistry(home.registry_path).get(args.repo).source  # unknown repository: a clear error
    run_id = args.run_id or new_run_id()
    store = RunStore(home)
    if store.run_dir(run_id).exists():
        raise CliError(f"agent run {run_id} is already stored ({store.run_dir(run_id)}): leave --run-id out "
                       "for a new run")
    PendingRuns(home).mark_running(run_id)  # an API run: queued -> running (no-op for a CLI run)
    worktree = open_or_clone(source, home.checkout_dir(args.repo)) if is_url(source) else Path(source)
    sha = resolve_commit(worktree, args.commit or "HEAD")
    model, why = (None, "--no-llm") if args.no_llm else _fix_model(args)
    retrieve = None if args.no_retrieval else _fix_retriever(home, args.repo, Blobs(worktree.resolve(), sha))
    started = now_iso()
    who = {"run_id": run_id, "repo": args.repo, "recipe": "fix", "tenant": args.tenant or "-"}
    log_run_event("agent_run_start", **who, status="running", commit=sha, test=args.test)
    result = fix_failing_test(worktree, args.test, commit=sha, test_policy=load_policy("unit_tests"),
                              lint_policy=load_policy("linting"), model=model, no_model_reason=why,
                              retrieve=retrieve, codex_home=home.root)
    log_run_event("agent_run_finish", **who, status=result.status, duration_sec=result.duration_sec, commit=sha,
                  model=result.model or "-")
    report, files = fix_report(result, worktree, started)
    with tempfile.TemporaryDirectory(prefix="codex-fix-") as scratch:
        for name, text in files.items():
            (Path(scratch) / name).write_text(text)
        record = store.save(report, run_id=run_id, repo=args.repo, tenant=args.tenant or "",
                            requested_commit=args.commit or "", started_at=started, artifacts_from=Path(scratch),
                            markdown=result.to_markdown(), extra={"fix": result.to_dict()})
    _emit(args, record, store.markdown(run_id).rstrip("\n") + f"\n\n(agent run {run_id})")
    return 0 if result.status in ("fixed", "not_failing") else 1


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="run a repository's own checks in the sandbox (recipes/*.yaml); reports")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)

    p = agent_sub.add_parser("run", help="run a recipe on a registered repository (the agent_run Dagster job); "
                                         "exit 0 ok, 1 when a step did not succeed")
    p.add_argument("--repo", required=True)
    p.add_argument("--recipe", required=True, help="recipe name, e.g. ruff, unit-tests, mypy")
    p.add_argument("--commit", help="commit to run on (default: HEAD of the repository's source)")
    p.add_argument("--tenant", help="tenant the run is done for (tag and report)")
    # The API's detached launch: store the run under the id POST /v1/agent/run already answered with.
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = agent_sub.add_parser("fix", help="the debug agent: run a failing test in the sandbox, cite the suspects, "
                                         "ask the LLM for a patch, test it on a copy; prints the diff (exit 0 "
                                         "fixed, 1 not fixed or diagnosis only)")
    p.add_argument("--repo", required=True)
    p.add_argument("--test", required=True, help="pytest node id, e.g. tests/test_calc.py::test_add")
    p.add_argument("--commit", help="commit to run on (default: HEAD of the repository's source)")
    p.add_argument("--llm-url", help="an OpenAI-compatible server (llama-server); default: configs/models.toml")
    p.add_argument("--model", help="model name to ask (default: the first reachable one)")
    p.add_argument("--patch-style", choices=("auto", "rewrite", "json"), default="auto",
                   help="rewrite: the whole corrected function (small models); json: edits or a diff")
    p.add_argument("--no-llm", action="store_true", help="stop after the diagnosis")
    p.add_argument("--no-retrieval", action="store_true", help="do not load the index to cite more suspects")
    p.add_argument("--tenant", help="tenant the run is done for (in the report)")
    # The API's detached launch (task "fix"): store the run under the id POST /v1/agent/run answered with.
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fix)

    p = agent_sub.add_parser("runs", help="stored agent runs, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = agent_sub.add_parser("show", help="a stored run's Markdown report")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = agent_sub.add_parser("verify", help="check a stored run's signed evidence (logs, reports, artifacts); "
                                            "exit 0 intact and signed, 1 tampered or unsigned")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
