"""Run a recipe on a repository at a commit, in the sandbox, under a policy -> RunReport.

Order of a run: bubblewrap must exist (never a fallback to running bare); every step's executable
is resolved on the sandbox PATH and judged by the policy before anything runs (denylist wins, then
allowlist); a blocked or missing tool stops the run before its first step. Then a throwaway copy of
the commit is made, the steps run one after another in the sandbox (the first one that does not
succeed ends the run; the rest are skipped), declared artifacts are collected with a size cap, and
the copy is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from codex_core.sandbox.confine import SANDBOX_WORKDIR, find_bwrap, run_confined
from codex_core.sandbox.policy import PolicyError, SandboxPolicy
from codex_core.sandbox.recipe import Recipe, RecipeStep
from codex_core.sandbox.report import (
    BLOCKED,
    FAILED,
    OK,
    SKIPPED,
    TIMEOUT,
    UNAVAILABLE,
    ArtifactResult,
    RunReport,
    StepResult,
)
from codex_core.sandbox.workdir import resolve_commit, throwaway_workdir


def default_tools_path() -> str:
    """The sandbox PATH: the product's own environment first (pytest, ruff, ...), then the system's."""
    return os.pathsep.join(dict.fromkeys([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]))


@dataclass(frozen=True)
class Verdict:
    """What the policy says about one executable, before anything runs."""

    status: str  # ok | blocked | unavailable
    executable: str | None
    reason: str = ""


def judge_executable(name: str, policy: SandboxPolicy, path: str) -> Verdict:
    """Resolve ``name`` on ``path`` and judge it: the denylist wins, then it must be allowlisted."""
    deny, allow = set(policy.denylist), set(policy.allowlist)
    where = f"policy {policy.name!r}"
    if "/" in name and not name.startswith("/"):
        return Verdict(BLOCKED, None, f"policy violation: {name!r} runs a file of the repository; "
                                      f"only allowlisted tools may be started ({where})")
    resolved = shutil.which(name, path=path) if not name.startswith("/") else (
        name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
    candidates = {os.path.basename(name), name}
    if resolved:
        real = os.path.realpath(resolved)
        candidates |= {resolved, real, os.path.basename(resolved), os.path.basename(real)}
    denied = sorted(candidates & deny)
    if denied:
        shown = f"{name!r}" + (f" ({resolved})" if resolved else "")
        return Verdict(BLOCKED, resolved, f"policy violation: {shown} is on the denylist of {where} ({denied[0]})")
    # Allowed by the name it is called by on PATH, or by its exact path; not by what a symlink points to.
    allowed_names = {os.path.basename(name), name} | ({resolved, os.path.basename(resolved)} if resolved else set())
    if not allowed_names & allow:
        return Verdict(BLOCKED, resolved, f"policy violation: {name!r} is not on the allowlist of {where} "
                                          f"(allowed: {', '.join(policy.allowlist)})")
    if resolved is None:
        return Verdict(UNAVAILABLE, None, name)
    return Verdict(OK, resolved)


def _preflight(recipe: Recipe, policy: SandboxPolicy, path: str) -> tuple[list[Verdict], str | None]:
    """Per-step verdicts, and the run's status when it must stop before the first step."""
    verdicts = [judge_executable(step.argv[0], policy, path) for step in recipe.steps]
    blocked = next((v for v in verdicts if v.status == BLOCKED), None)
    if blocked:
        return verdicts, f"{BLOCKED}: {blocked.reason}"
    missing = [v.reason for v in verdicts if v.status == UNAVAILABLE]
    missing += [tool for tool in recipe.requires if shutil.which(tool, path=path) is None]
    if missing:
        return verdicts, f"{UNAVAILABLE}: {', '.join(dict.fromkeys(missing))}"
    return verdicts, None


def _not_run(steps: tuple[RecipeStep, ...], verdicts: list[Verdict], why: str) -> list[StepResult]:
    results = []
    for step, verdict in zip(steps, verdicts, strict=True):
        if verdict.status == OK:
            results.append(StepResult(step.run, SKIPPED, executable=verdict.executable, reason=why))
        else:
            results.append(StepResult(step.run, verdict.status, executable=verdict.executable, reason=verdict.reason))
    return results


def _collect(workdir: Path, declared: tuple[str, ...], cap: int, into: Path | None) -> list[ArtifactResult]:
    results = []
    root = os.path.realpath(workdir)
    for rel in declared:
        candidate = workdir / rel
        real = os.path.realpath(candidate)
        if os.path.commonpath([root, real]) != root:  # a symlink (or ..) pointing out of the workdir
            results.append(ArtifactResult(rel, "outside_workdir"))
        elif not os.path.lexists(candidate):
            results.append(ArtifactResult(rel, "missing"))
        elif not os.path.isfile(real):
            results.append(ArtifactResult(rel, "not_a_file"))
        elif (size := os.path.getsize(real)) > cap:
            results.append(ArtifactResult(rel, "too_large", size=size))
        else:
            data = Path(real).read_bytes()
            stored = None
            if into is not None:
                target = into / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                stored = str(target)
            results.append(ArtifactResult(rel, "collected", size=len(data),
                                          sha256=hashlib.sha256(data).hexdigest(), stored_at=stored))
    return results


def run_recipe(repo: Path | str, commit: str, recipe: Recipe, policy: SandboxPolicy, *,
               tools_path: str | None = None, artifacts_dir: Path | None = None,
               scratch: Path | None = None) -> RunReport:
    """Run ``recipe`` on ``repo`` at ``commit`` under ``policy``.

    Raises SandboxUnavailable without bubblewrap, PolicyError when the policy is not the one the
    recipe names, WorkdirError for a commit that cannot be exported. Everything a step does —
    failing, timing out, being blocked — is a status in the report, not an exception.
    """
    bwrap = find_bwrap()
    if policy.name != recipe.policy:
        raise PolicyError(f"recipe {recipe.name!r} runs under policy {recipe.policy!r}, "
                          f"not {policy.name!r}: load that policy from configs/sandbox.policy.yaml")
    repo = Path(repo).resolve()
    path = tools_path or default_tools_path()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    sha = resolve_commit(repo, commit)
    sandbox = {
        "mechanism": "bubblewrap (user, pid, net, ipc, uts, cgroup namespaces; host read-only)",
        "network": policy.network,
        "workdir": f"{policy.workdir_mode} at {SANDBOX_WORKDIR}",
        "cpu_seconds": str(policy.cpu_quota),
        "memory_bytes": str(policy.memory_limit),
        "timeout_sec": f"{policy.timeout_sec:g}",
        "max_file_bytes": str(policy.max_file_bytes),
    }

    def report(status: str, steps: list[StepResult], artifacts: list[ArtifactResult] | None = None) -> RunReport:
        return RunReport(recipe.name, policy.name, str(repo), sha, status, tuple(steps), tuple(artifacts or ()),
                         round(time.monotonic() - started, 3), started_at, sandbox)

    verdicts, stop = _preflight(recipe, policy, path)
    if stop is not None:
        return report(stop, _not_run(recipe.steps, verdicts, "not run: the recipe stopped before its first step"))

    steps: list[StepResult] = []
    status = OK
    with throwaway_workdir(repo, sha, scratch) as workdir:
        for step, verdict in zip(recipe.steps, verdicts, strict=True):
            if status != OK:
                steps.append(StepResult(step.run, SKIPPED, executable=verdict.executable,
                                        reason="not run: an earlier step did not succeed"))
                continue
            ran = run_confined(step.argv, workdir, policy, path=path, bwrap=bwrap)
            if ran.timed_out:
                step_status, reason = TIMEOUT, f"killed after {policy.timeout_sec:g} s wall clock"
            else:
                step_status, reason = (OK if ran.exit_code == 0 else FAILED), ""
            steps.append(StepResult(step.run, step_status, ran.exit_code, round(ran.duration_sec, 3),
                                    verdict.executable, reason, ran.stdout, ran.stderr,
                                    ran.stdout_truncated, ran.stderr_truncated))
            status = step_status
        artifacts = _collect(workdir, recipe.artifacts, policy.max_artifact_bytes, artifacts_dir)
    return report(status, steps, artifacts)
