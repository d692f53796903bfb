"""``/v1/agent``: ask for a sandbox run of a recipe on a repository; read its state and its report.

``POST /v1/agent/run`` checks what a run needs before anything starts (kill-switch, tenant, a
registered repository the caller may see, a known recipe, a commit that exists, bubblewrap), takes
one of the concurrent-run slots and writes a pending record (``codex_core.sandbox.pending``), then
starts ``feriactl agent run ... --run-id RID --json`` as a detached process and answers 202 with
the run id. The run is therefore a real ``agent_run`` Dagster run on the CODEX_HOME instance (in
the Dagster UI) and outlives this server. ``GET /v1/agent/runs/{id}`` reads the run store (the
stored report, its signed evidence checked again with ``codex_core.sandbox.evidence``) or, until
the run is stored, the pending record (queued / running / lost).

A tenant's key runs for that tenant only and sees its own runs; admins (and the local user of open
mode) may name any tenant, and admins and analysts see every run. Another tenant's run is
reported missing (404), like another tenant's trace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from codex_core.git import GitError, RepoRegistry, is_url, local_worktree
from codex_core.home import CodexHome
from codex_core.sandbox import RecipeError, RunStore, SandboxUnavailable, WorkdirError, find_recipe, new_run_id
from codex_core.sandbox.confine import find_bwrap
from codex_core.sandbox.evidence import verify_run
from codex_core.sandbox.pending import PendingRuns, TooManyRuns
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


class AgentInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commit: str | None = Field(None, pattern=COMMIT_PATTERN, description="commit, branch or tag; default HEAD")


class AgentRunRequest(BaseModel):
    # A misspelt key (``"comit"``) is a 422, not a run on HEAD.
    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(None, max_length=500, description="why the run is asked for (kept with the request)")
    recipe: str = Field(..., pattern=REPO_PATTERN, description="recipe name (recipes/*.yaml), e.g. ruff, unit-tests")
    inputs: AgentInputs = Field(default_factory=AgentInputs)
    repo: str = Field(..., pattern=REPO_PATTERN, description="a registered repository (GET /v1/repos)")
    tenant: str | None = Field(None, pattern=REPO_PATTERN,
                               description="who the run is for: your own tenant unless you are an admin")


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
    return {**{k: record.get(k) for k in keys}, "stored": True, "steps": steps, "artifacts": artifacts,
            "signature": signature}


def pending_view(record: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    view = {"run_id": record["run_id"], "status": record["status"], "repo": record.get("repo"),
            "recipe": record.get("recipe"), "requested_commit": record.get("commit"), "tenant": record.get("tenant"),
            "task": record.get("task"), "requested_at": record.get("requested_at"),
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
    try:
        find_recipe(body.recipe)
    except RecipeError as exc:
        raise HTTPException(422, str(exc)) from None
    source = registered[body.repo].source
    commit = body.inputs.commit or "HEAD"
    if not is_url(source):  # a clone is fetched by the run itself; a local repository is checked now
        try:
            resolve_commit(local_worktree(source), commit)
        except (GitError, WorkdirError) as exc:
            raise HTTPException(422, f"cannot run on {commit!r} of {body.repo!r}: {exc}") from None
    try:
        find_bwrap()
    except SandboxUnavailable as exc:
        raise HTTPException(503, f"agent runs are unavailable on this server: {exc}") from None


# ---------------------------------------------------------------------------------------- routes


@router.post("/run", status_code=202, response_model=AgentRunAccepted, responses={403: {}, 404: {}, 429: {}, 503: {}})
async def start_run(body: AgentRunRequest, request: Request, who: Who, svc: Svc, agent: Agent):
    """Start a sandbox run (the ``agent_run`` Dagster job) in the background; poll ``GET /v1/agent/runs/{run_id}``."""
    request.state.log.update(tenant=who.tenant.name, queue="agent")
    kill = svc.kill_switch.state()
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
    argv = [*agent.launcher, "agent", "run", "--repo", body.repo, "--recipe", body.recipe, "--run-id", run_id,
            "--json"]
    argv += ["--commit", body.inputs.commit] if body.inputs.commit else []
    argv += ["--tenant", tenant] if tenant else []
    try:
        await run_in_threadpool(
            agent.pending.start, run_id, argv, repo=body.repo, recipe=body.recipe, commit=body.inputs.commit or "",
            tenant=tenant, task=body.task or "", env=agent.launch_env(),
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
    """A stored run (status, steps with exit codes, durations, verdicts, artifacts, signature) or a pending one."""
    if RUN_ID_RE.fullmatch(run_id) is None:
        raise HTTPException(422, f"{run_id[:80]!r} is not an agent run id: 32 hex digits, as POST /v1/agent/run "
                                 "answered (GET /v1/agent/runs lists them)")
    view = await run_in_threadpool(agent.view, run_id)
    if view is None or not visible(who, view):
        raise HTTPException(404, f"no agent run {run_id!r} (GET /v1/agent/runs lists the runs you may see)")
    return view
