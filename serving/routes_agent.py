"""``/v1/agent``: ask for a sandbox run of a recipe, or for the debug agent, on a repository; read
its state and its report.

``POST /v1/agent/run`` checks what a run needs before anything starts (kill-switch, tenant, a
registered repository the caller may see, a known recipe or a test file that exists, a commit that
exists, bubblewrap), takes one of the concurrent-run slots and writes a pending record
(``codex_core.sandbox.pending``), then starts ``feriactl agent run ... --run-id RID --json`` (task
``recipe``: a real ``agent_run`` Dagster run on the CODEX_HOME instance, in the Dagster UI) or
``feriactl agent fix ... --run-id RID --json`` (task ``fix``: the debug agent with the models this
server is configured with) as a detached process that outlives this server, and answers 202 with
the run id. ``GET /v1/agent/runs/{id}`` reads the run store (the stored report, its signed evidence
checked again with ``codex_core.sandbox.evidence``, and a fix run's diagnosis and diff) or, until
the run is stored, the pending record (queued / running / lost).

A tenant's key runs for that tenant only and sees its own runs; admins (and the local user of open
mode) may name any tenant, and admins and analysts see every run. Another tenant's run is
reported missing (404), like another tenant's trace.
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from codex_core.git import GitError, RepoRegistry, is_url, local_worktree, run_git
from codex_core.home import CodexHome
from codex_core.sandbox import RecipeError, RunStore, SandboxUnavailable, WorkdirError, find_recipe, new_run_id
from codex_core.sandbox.confine import find_bwrap
from codex_core.sandbox.evidence import verify_run
from codex_core.sandbox.pending import PendingRuns, TooManyRuns
from codex_core.sandbox.report import StepResult
from codex_core.sandbox.store import RUN_ID_RE
from codex_core.sandbox.workdir import resolve_commit
from codex_core.secrets import redact
from codex_core.snapshot.signing import KEY_ENV, keys_from_env
from serving.deps import Caller, Svc, Who
from serving.schemas import REPO_PATTERN

router = APIRouter(prefix="/v1/agent", tags=["agent"])

# A commit, branch or tag as git takes it; never starting with "-" (it must not read as an option).
COMMIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/~^-]{0,127}$"
RETRY_AFTER_S = 30
OUTPUT_TAIL_LINES = 40
TASKS = {"recipe": "run a recipe (recipes/*.yaml)", "fix": "the debug agent on the failing test inputs.test"}
FIX_RECIPE = "fix"  # the recipe name a debug agent run is stored under
MAX_TEST_ID = 300
# A pytest node id: a path relative to the repository root (starting with a letter, digit or "_", so
# never an option), then optionally ``::names``, the last one optionally with its ``[parameters]``.
TEST_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*(?:(?:::[A-Za-z_][A-Za-z0-9_]*)+(?:\[[^\x00-\x1f\x7f]*\])?)?")


def check_test_id(test: str) -> str:
    """``test`` when it reads as a pytest node id of a file in the repository; ValueError saying why not."""
    path = test.split("::", 1)[0]
    if TEST_ID_RE.fullmatch(test) is None or ".." in path.split("/"):
        raise ValueError(f"{test[:80]!r} is not a pytest node id: a path relative to the repository root, then "
                         "optionally ::names, e.g. tests/test_calc.py::test_add or "
                         "tests/test_calc.py::TestAdd::test_ints[1-2]")
    return test


class AgentInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commit: str | None = Field(None, pattern=COMMIT_PATTERN, description="commit, branch or tag; default HEAD")
    test: str | None = Field(None, min_length=1, max_length=MAX_TEST_ID,
                             description="task fix: the failing test, a pytest node id (tests/test_calc.py::test_add)")

    @field_validator("test")
    @classmethod
    def _node_id(cls, test: str | None) -> str | None:
        return None if test is None else check_test_id(test)


class AgentRunRequest(BaseModel):
    # A misspelt key (``"comit"``) is a 422, not a run on HEAD. The cross-field rules are field
    # validators (task is declared first), so a 422 names the field that is wrong.
    model_config = ConfigDict(extra="forbid")
    task: str = Field("recipe", description="what to run: recipe (a recipe) or fix (the debug agent on inputs.test)")
    note: str | None = Field(None, max_length=500, description="why the run is asked for (kept with the request)")
    recipe: str | None = Field(None, pattern=REPO_PATTERN, validate_default=True,
                               description="task recipe: recipe name (recipes/*.yaml), e.g. ruff, unit-tests; "
                                           "task fix: leave out (or \"fix\")")
    inputs: AgentInputs = Field(default_factory=AgentInputs, validate_default=True)
    repo: str = Field(..., pattern=REPO_PATTERN, description="a registered repository (GET /v1/repos)")
    tenant: str | None = Field(None, pattern=REPO_PATTERN,
                               description="who the run is for: your own tenant unless you are an admin")


    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            known = "; ".join(f"{name!r}: {what}" for name, what in TASKS.items())
            raise ValueError(f"unknown task {task[:80]!r}; the known tasks are {known} (a free-text reason for the "
                             "run goes in 'note')")
        return task

    @field_validator("recipe")
    @classmethod
    def _recipe_for_task(cls, recipe: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task")
        if task == "recipe" and recipe is None:
            raise ValueError("task 'recipe' needs a recipe (e.g. ruff, unit-tests)")
        if task == "fix" and recipe not in (None, FIX_RECIPE):
            raise ValueError(f"task 'fix' runs the debug agent, not recipe {recipe!r}: leave recipe out")
        return FIX_RECIPE if task == "fix" else recipe

    @field_validator("inputs")
    @classmethod
    def _inputs_for_task(cls, inputs: AgentInputs, info: ValidationInfo) -> AgentInputs:
        task = info.data.get("task")
        if task == "fix" and inputs.test is None:
            raise ValueError("task 'fix' needs inputs.test, the failing test's pytest node id "
                             "(e.g. tests/test_calc.py::test_add)")
        if task == "recipe" and inputs.test is not None:
            raise ValueError("inputs.test is for task 'fix' (the debug agent); a recipe runs the commit as it is")
        return inputs


class AgentRunAccepted(BaseModel):
    run_id: str
    status: Literal["queued"] = "queued"


def feriactl_argv() -> list[str]:
    """The ``feriactl`` installed next to this interpreter, or its module where the script is missing."""
    script = Path(sys.executable).parent / "feriactl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "codex_cli.main"]


@dataclass
class AgentRuns:
    """What the agent routes read and start: the run store, the pending runs, the command that runs one."""

    home: CodexHome
    pending: PendingRuns
    store: RunStore
    env: Mapping[str, str] = field(default_factory=dict)  # the app's environment: the evidence keys
    launcher: Sequence[str] = field(default_factory=feriactl_argv)

    @classmethod
    def for_home(cls, home: CodexHome, env: Mapping[str, str]) -> AgentRuns:
        return cls(home, PendingRuns(home), RunStore(home), env)

    def launch_env(self) -> dict[str, str]:
        # The child needs this server's PATH (git, bwrap, the sandbox tools) and the same CODEX_HOME
        # (the CLI derives DAGSTER_HOME from it); nothing here is read as product configuration.
        return {**os.environ, "CODEX_HOME": str(self.home.root)}

    def view(self, run_id: str) -> dict[str, Any] | None:
        """The stored run, else the pending one, else None (a run stored meanwhile is found on the second look)."""
        for _ in range(2):
            try:
                record = self.store.load(run_id)
            except KeyError:
                pass
            else:
                return stored_view(record, self.signature(run_id))
            pending = self.pending.get(run_id)
            if pending is not None:
                return pending_view(pending, detail=True)
        return None

    def signature(self, run_id: str) -> dict[str, Any]:
        """The run's signed evidence checked now (every file re-hashed) with the snapshot keys."""
        try:
            keys = keys_from_env(self.env)  # read when checked: a key too short fails this check, not the start
        except ValueError as exc:
            return {"status": "unverifiable", "ok": False, "problems": [f"{KEY_ENV}: {exc}"]}
        check = verify_run(self.store.run_dir(run_id), keys, run_id=run_id)
        return {"status": check.signature, "ok": check.ok, "key_id": check.key_id,
                "files_checked": check.files_checked, "modified": list(check.modified),
                "missing": list(check.missing), "extra": list(check.extra), "problems": list(check.problems)}


def agent_runs(request: Request) -> AgentRuns:
    return request.app.state.agent_runs


Agent = Annotated[AgentRuns, Depends(agent_runs)]


# ---------------------------------------------------------------------------------------- views


def _tail(text: str | None) -> str:
    lines = (text or "").rstrip("\n").splitlines()[-OUTPUT_TAIL_LINES:]
    return redact("\n".join(lines))


def stored_view(record: dict[str, Any], signature: dict[str, Any]) -> dict[str, Any]:
    """A stored run as the API shows it: per-step exit codes, durations, verdicts and output tails
    (secrets masked like ingested files), artifacts, and what checking its signed evidence found."""
    keys = ("run_id", "status", "repo", "recipe", "policy", "commit", "requested_commit", "tenant", "started_at",
            "finished_at", "duration_sec", "dagster_run_id")
    steps = [
        {"command": s.get("command"), "status": s.get("status"), "verdict": s.get("verdict") or s.get("status"),
         "exit_code": s.get("exit_code"), "duration_sec": s.get("duration_sec"), "reason": s.get("reason") or None,
         "stdout_tail": _tail(s.get("stdout")), "stderr_tail": _tail(s.get("stderr")),
         "output_truncated": bool(s.get("stdout_truncated") or s.get("stderr_truncated"))}
        for s in record.get("steps") or []
    ]
    artifacts = [{k: a.get(k) for k in ("path", "status", "size", "sha256", "stored_at")}
                 for a in record.get("artifacts") or []]
    view = {**{k: record.get(k) for k in keys}, "stored": True, "steps": steps, "artifacts": artifacts,
            "signature": signature}
    if isinstance(record.get("fix"), dict):
        view.update(task="fix", fix=fix_view(record["fix"]))
    else:
        view["task"] = "recipe"
    return view


def _verdict(step: dict[str, Any] | None) -> dict[str, Any] | None:
    """A step of a fix run in brief (its output tail is in ``steps``)."""
    if not step:
        return None
    result = StepResult(**{f.name: step[f.name] for f in fields(StepResult) if f.name in step})
    return {"command": result.command, "verdict": result.verdict, "exit_code": result.exit_code}


def fix_view(fix: dict[str, Any]) -> dict[str, Any]:
    """The debug agent's result as the API shows it: verdict, cited suspects, each attempt, the diff.

    Snippets, explanations, errors and diffs were masked when stored; they are masked again here,
    like step output, so a run stored by an older version shows no more than a new one.
    """
    suspects = [{"ref": s.get("ref"), "path": s.get("path"), "line_start": s.get("line_start"),
                 "line_end": s.get("line_end"), "source": s.get("source"), "symbol": s.get("symbol"),
                 "score": s.get("score"), "snippet": redact(s.get("snippet") or "", path=s.get("path"))}
                for s in fix.get("suspects") or []]
    attempts = [{"status": a.get("status"), "model": a.get("model"), "error": redact(a.get("error") or "") or None,
                 "explanation": redact(a.get("explanation") or "") or None, "seconds": a.get("seconds"),
                 "test": _verdict(a.get("test")), "lint": _verdict(a.get("lint")), "diff": redact(a.get("diff") or "")}
                for a in fix.get("attempts") or []]
    return {"status": fix.get("status"), "reason": redact(fix.get("reason") or ""), "test_id": fix.get("test_id"),
            "commit": fix.get("commit"), "model": fix.get("model"), "duration_sec": fix.get("duration_sec"),
            "before": _verdict(fix.get("before")), "suspects": suspects, "attempts": attempts,
            "diff": redact(fix.get("diff") or "")}


def pending_view(record: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    view = {"run_id": record["run_id"], "status": record["status"], "repo": record.get("repo"),
            "recipe": record.get("recipe"), "requested_commit": record.get("commit"), "tenant": record.get("tenant"),
            "task": record.get("task"), "note": record.get("note"), "test": record.get("test"),
            "requested_at": record.get("requested_at"),
            "started_at": record.get("running_at"), "dagster_run_id": record.get("dagster_run_id"), "stored": False}
    if detail and record["status"] == "lost":
        view["exit_code"] = record.get("exit_code")
        view["log_tail"] = redact(record.get("log_tail") or "")
        view["hint"] = ("the run's process ended without storing a report; log_tail is the end of its output "
                        "(POST again once the cause is fixed)")
    return view


def summary(view: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "status", "repo", "recipe", "commit", "requested_commit", "tenant", "requested_at",
            "started_at", "finished_at", "duration_sec")
    return {k: view.get(k) for k in keys if k in view}


def visible(who: Caller, view: dict[str, Any]) -> bool:
    return who.mode == "open" or who.tenant.can_read_operations or view.get("tenant") == who.tenant.name


# ---------------------------------------------------------------------------------------- checks


def run_tenant(who: Caller, named: str | None, known: set[str]) -> str:
    """Who the run is for: a tenant key runs for itself; an admin (or open mode's local user) may name anyone."""
    if who.mode == "open":
        return named or ""
    if not who.tenant.is_admin:
        if named and named != who.tenant.name:
            raise HTTPException(403, f"tenant {who.tenant.name!r} may only start agent runs for itself, not for "
                                     f"{named!r} (leave tenant out, or ask an admin)")
        return who.tenant.name
    if named and named not in known:
        raise HTTPException(422, f"no tenant {named!r} (GET /v1/admin/tenants lists them)")
    return named or who.tenant.name


def check_runnable(agent: AgentRuns, who: Caller, body: AgentRunRequest) -> None:
    """Everything that would make the run fail before its first step, as a 4xx/503 now."""
    registered = RepoRegistry(agent.home.registry_path).all()
    if body.repo not in registered or not who.tenant.may_see(body.repo):
        names = ", ".join(who.tenant.visible(registered)) or "none"
        raise HTTPException(404, f"no repository {body.repo!r} you may run on (registered for you: {names}; "
                                 "an operator registers one with `feriactl ingest PATH --name NAME`)")
    if body.task == "recipe":
        try:
            find_recipe(body.recipe)
        except RecipeError as exc:
            raise HTTPException(422, str(exc)) from None
    source = registered[body.repo].source
    commit = body.inputs.commit or "HEAD"
    if not is_url(source):  # a clone is fetched by the run itself; a local repository is checked now
        try:
            worktree = local_worktree(source)
            sha = resolve_commit(worktree, commit)
        except (GitError, WorkdirError) as exc:
            raise HTTPException(422, f"cannot run on {commit!r} of {body.repo!r}: {exc}") from None
        if body.inputs.test is not None:
            check_test_path(worktree, sha, body.inputs.test, commit, body.repo)
    try:
        find_bwrap()
    except SandboxUnavailable as exc:
        raise HTTPException(503, f"agent runs are unavailable on this server: {exc}") from None


def check_test_path(worktree: Path, sha: str, test: str, commit: str, repo: str) -> None:
    """The file (or directory) a node id names exists at the commit: else pytest would only say "not found"."""
    path = posixpath.normpath(test.split("::", 1)[0])
    if path == ".":
        return
    try:
        run_git(worktree, "cat-file", "-e", f"{sha}:{path}")
    except GitError:
        raise HTTPException(422, f"no {path!r} at {commit!r} of {repo!r}: inputs.test names a test file of the "
                                 "repository, relative to its root (e.g. tests/test_calc.py::test_add)") from None


def launch_argv(agent: AgentRuns, body: AgentRunRequest, run_id: str, tenant: str) -> list[str]:
    """The detached command: ``agent run`` for a recipe, ``agent fix`` for the debug agent.

    A fix run asks the models of this server's configs/models.toml (CODEX_MODELS_CONFIG): a request
    never names a model server, so it cannot make this server call an address of its choosing.
    """
    if body.task == "fix":
        argv = [*agent.launcher, "agent", "fix", "--repo", body.repo, "--test", body.inputs.test]
    else:
        argv = [*agent.launcher, "agent", "run", "--repo", body.repo, "--recipe", body.recipe]
    argv += ["--run-id", run_id, "--json"]
    argv += ["--commit", body.inputs.commit] if body.inputs.commit else []
    argv += ["--tenant", tenant] if tenant else []
    return argv


# ---------------------------------------------------------------------------------------- routes


@router.post("/run", status_code=202, response_model=AgentRunAccepted, responses={403: {}, 404: {}, 429: {}, 503: {}})
async def start_run(body: AgentRunRequest, request: Request, who: Who, svc: Svc, agent: Agent):
    """Start a sandbox run (task recipe: the ``agent_run`` Dagster job; task fix: the debug agent) in the
    background; poll ``GET /v1/agent/runs/{run_id}``."""
    request.state.log.update(tenant=who.tenant.name, queue="agent")
    kill = await run_in_threadpool(svc.kill_switch.state)  # the shared state: maybe a database round trip
    if kill.on:  # the operator's "stop doing things": no new sandbox runs either (reading them still works)
        request.state.log.update(admit=False, throttle="kill_switch")
        raise HTTPException(
            503, f"agent runs are stopped by the kill-switch: {kill.reason} (since {kill.set_at}); an admin turns "
                 "it off with `feriactl kill-switch off` or POST /v1/admin/kill-switch {\"on\": false}",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    tenant = run_tenant(who, body.tenant, set(svc.tenants.tenants()))
    await run_in_threadpool(check_runnable, agent, who, body)
    run_id = new_run_id()
    argv = launch_argv(agent, body, run_id, tenant)
    try:
        await run_in_threadpool(
            agent.pending.start, run_id, argv, repo=body.repo, recipe=body.recipe, commit=body.inputs.commit or "",
            tenant=tenant, task=body.task, note=body.note or "", test=body.inputs.test or "", env=agent.launch_env(),
        )
    except TooManyRuns as exc:
        request.state.log.update(admit=False, throttle="agent_runs")
        return JSONResponse({"detail": f"{exc}; retry in {RETRY_AFTER_S}s", "reason": "agent_runs",
                             "retry_after_s": RETRY_AFTER_S},
                            status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)})
    request.state.log.update(admit=True, run_id=run_id)
    return AgentRunAccepted(run_id=run_id)


@router.get("/runs")
async def list_runs(who: Who, agent: Agent, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """Runs you may see, newest first: pending ones (queued / running / lost) and stored ones."""

    def collect() -> list[dict[str, Any]]:
        views = [pending_view(p) for p in agent.pending.list()] + agent.store.list()
        views = [summary(v) for v in views if visible(who, v)]
        return sorted(views, key=lambda v: v.get("finished_at") or v.get("requested_at") or "", reverse=True)

    views = await run_in_threadpool(collect)
    return {"runs": views[:limit], "total": len(views)}


@router.get("/runs/{run_id}", responses={404: {}, 422: {}})
async def get_run(run_id: str, who: Who, agent: Agent) -> dict:
    """A stored run (status, steps with exit codes, durations, verdicts, artifacts, signature; a fix run's
    diagnosis, attempts and diff) or a pending one."""
    if RUN_ID_RE.fullmatch(run_id) is None:
        raise HTTPException(422, f"{run_id[:80]!r} is not an agent run id: 32 hex digits, as POST /v1/agent/run "
                                 "answered (GET /v1/agent/runs lists them)")
    view = await run_in_threadpool(agent.view, run_id)
    if view is None or not visible(who, view):
        raise HTTPException(404, f"no agent run {run_id!r} (GET /v1/agent/runs lists the runs you may see)")
    return view
