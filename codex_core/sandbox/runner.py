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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from codex_core.sandbox import deps
from codex_core.sandbox.confine import (
    SANDBOX_WORKDIR,
    Mounts,
    SandboxUnavailable,
    find_bwrap,
    pid_cap,
    plan_mounts,
    run_confined,
)
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

TOOLS_ENV_VAR = "CODEX_SANDBOX_TOOLS"
REPO_TOOLS_ENV = Path(__file__).resolve().parents[2] / ".sandbox-tools"  # made by `make sandbox-tools`


def tools_env_bin(env: Mapping[str, str] = os.environ) -> Path | None:
    """The ``bin/`` of the recipe tools environment (configs/sandbox-tools.txt): ``$CODEX_SANDBOX_TOOLS``
    when set, else the repository's ``.sandbox-tools/`` when it exists, else None."""
    configured = env.get(TOOLS_ENV_VAR, "").strip()
    if not configured:
        return REPO_TOOLS_ENV / "bin" if (REPO_TOOLS_ENV / "bin").is_dir() else None
    root = Path(configured).expanduser().absolute()
    if not (root / "bin").is_dir():
        # Set on purpose but wrong: running with fewer tools would report them `unavailable` and hide why.
        raise SandboxUnavailable(
            f"{TOOLS_ENV_VAR}={configured} is not a tools environment (no {root / 'bin'}): create it with "
            f"`python -m venv {root} && {root}/bin/pip install -r configs/sandbox-tools.txt`, or unset it")
    return root / "bin"


def default_tools_path(env: Mapping[str, str] = os.environ) -> str:
    """The sandbox PATH: the recipe tools environment first (pytest, coverage, ruff, mypy, ...), then the
    product's own environment, then the system's."""
    tools = tools_env_bin(env)
    entries = [str(tools)] if tools else []
    entries += [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
    return os.pathsep.join(dict.fromkeys(entries))


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


def _dependencies(repo: Path, sha: str, recipe: Recipe, policy: SandboxPolicy, sandbox: Sandbox) -> list[StepResult]:
    """The repository's requirement files installed into the copy from the policy's wheel cache
    (filled from its index mirror first, outside the sandbox): one step per file, or one saying why not."""
    files = deps.requirement_files(repo, sha, recipe.dependencies)
    if not files:
        return []  # none of the declared files at this commit: nothing to install
    if not policy.wheel_cache:
        return [deps.skipped(recipe.dependencies, f"policy {policy.name!r} names no wheel_cache: the repository's "
                                                  "own dependencies are not installed (the network is off)")]
    results = []
    for name, text in files.items():
        requirements, refused = deps.plain_requirements(text, name)
        if refused:
            return [*results, deps.blocked((name,), refused)]
        if policy.index_mirror and requirements:
            filled = deps.fill_cache(requirements, policy.index_mirror, Path(policy.wheel_cache), policy.timeout_sec)
            results.append(filled)
            if filled.status != OK:
                return results
        if not Path(policy.wheel_cache).is_dir():
            return [*results, deps.skipped((name,), f"wheel_cache {policy.wheel_cache} does not exist")]
        results.append(sandbox.run(deps.install_command(name), deps.install_policy(policy)))
        if results[-1].status != OK:
            return results
    return results


def default_hidden(repo: Path, codex_home: Path | str | None = None) -> list[Path]:
    """What a step must not even see: the source checkout, CODEX_HOME (index, keys, other runs) and
    the caller's home directory (credentials, SSH keys)."""
    hidden = [repo, Path.home()]
    home = codex_home or os.environ.get("CODEX_HOME")
    if home:
        hidden.append(Path(home))
    return hidden


class Sandbox:
    """A throwaway copy of one commit and the only way to run commands on it: judged, then confined.

    Several commands share the copy (a debug agent runs a test, patches the copy, runs it again);
    each is judged by the policy it is run under before it starts.
    """

    def __init__(self, workdir: Path, policy: SandboxPolicy, *, path: str, bwrap: str, mounts: Mounts,
                 skipped: tuple[str, ...] = ()) -> None:
        self.workdir, self.policy, self.path, self.bwrap, self.mounts = workdir, policy, path, bwrap, mounts
        self.skipped = skipped  # members of the commit left out of the copy (links out of the repository)

    def judge(self, argv: tuple[str, ...], policy: SandboxPolicy | None = None) -> Verdict:
        return judge_executable(argv[0], policy or self.policy, self.path)

    def run(self, command: str | RecipeStep, policy: SandboxPolicy | None = None) -> StepResult:
        """Run one command (a recipe step, or a command line split like one) unless the policy blocks it."""
        step = command if isinstance(command, RecipeStep) else RecipeStep(command)
        policy = policy or self.policy
        if not step.argv:
            return StepResult(step.run, BLOCKED, reason="policy violation: an empty command")
        verdict = self.judge(step.argv, policy)
        if verdict.status != OK:
            return StepResult(step.run, verdict.status, executable=verdict.executable, reason=verdict.reason)
        ran = run_confined(step.argv, self.workdir, policy, path=self.path, bwrap=self.bwrap, mounts=self.mounts)
        if ran.timed_out:
            status, reason = TIMEOUT, f"killed after {policy.timeout_sec:g} s wall clock"
        elif ran.killed:
            status, reason = FAILED, ran.killed
        else:
            status, reason = (OK if ran.exit_code == 0 else FAILED), ""
        return StepResult(step.run, status, ran.exit_code, round(ran.duration_sec, 3), verdict.executable, reason,
                          ran.stdout, ran.stderr, ran.stdout_truncated, ran.stderr_truncated)

    def describe(self) -> dict[str, str]:
        policy = self.policy
        processes = (f"{pid_cap(policy)} (pid namespace pid_max)" if pid_cap(policy) is not None
                     else f"{policy.max_processes} (RLIMIT_NPROC)")
        return {
            "mechanism": "bubblewrap (user, pid, net, ipc, uts, cgroup namespaces; no capabilities; "
                         "host read-only)",
            "network": policy.network,
            "workdir": f"{policy.workdir_mode} at {SANDBOX_WORKDIR}",
            "hidden": ", ".join(self.mounts.hidden) or "-",
            "tools_bound_back": ", ".join(self.mounts.rebound) or "-",
            "cpu_seconds": str(policy.cpu_quota),
            "memory_bytes": str(policy.memory_limit),
            "timeout_sec": f"{policy.timeout_sec:g}",
            "max_file_bytes": str(policy.max_file_bytes),
            "max_processes": processes,
            "max_workdir": f"{policy.max_workdir_bytes} bytes, {policy.max_files} files",
            **({"left_out": "; ".join(self.skipped)} if self.skipped else {}),
        }


@contextmanager
def open_sandbox(repo: Path | str, commit: str, policy: SandboxPolicy, *, tools_path: str | None = None,
                 scratch: Path | None = None, hide: Sequence[Path | str] = (),
                 codex_home: Path | str | None = None, wheel_cache: Path | str | None = None) -> Iterator[Sandbox]:
    """A :class:`Sandbox` on a throwaway copy of ``repo`` at ``commit`` (a full sha or any revision);
    the copy is removed when the block ends. ``wheel_cache`` (an existing directory) is bound
    read-only for :mod:`codex_core.sandbox.deps`. Raises SandboxUnavailable, WorkdirError."""
    bwrap = find_bwrap()
    repo = Path(repo).resolve()
    path = tools_path or default_tools_path()
    sha = resolve_commit(repo, commit)
    mounts = plan_mounts(path, [*default_hidden(repo, codex_home), *hide])
    if wheel_cache is not None and Path(wheel_cache).is_dir():
        mounts = replace(mounts, binds=((str(Path(wheel_cache).resolve()), deps.WHEELS_MOUNT),),
                         env={**mounts.env, "PYTHONPATH": f"{SANDBOX_WORKDIR}/{deps.DEPS_DIR}"})
    with throwaway_workdir(repo, sha, scratch) as copy:
        yield Sandbox(copy.path, policy, path=path, bwrap=bwrap, mounts=mounts, skipped=copy.skipped)


def run_recipe(repo: Path | str, commit: str, recipe: Recipe, policy: SandboxPolicy, *,
               tools_path: str | None = None, artifacts_dir: Path | None = None,
               scratch: Path | None = None, codex_home: Path | str | None = None) -> RunReport:
    """Run ``recipe`` on ``repo`` at ``commit`` under ``policy``.

    Raises SandboxUnavailable without bubblewrap, PolicyError when the policy is not the one the
    recipe names, WorkdirError for a commit that cannot be exported. Everything a step does —
    failing, timing out, being blocked — is a status in the report, not an exception.
    """
    find_bwrap()
    if policy.name != recipe.policy:
        raise PolicyError(f"recipe {recipe.name!r} runs under policy {recipe.policy!r}, "
                          f"not {policy.name!r}: load that policy from configs/sandbox.policy.yaml")
    repo = Path(repo).resolve()
    path = tools_path or default_tools_path()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    sha = resolve_commit(repo, commit)

    def report(status: str, steps: list[StepResult], artifacts: list[ArtifactResult] | None = None,
               sandbox: dict[str, str] | None = None) -> RunReport:
        return RunReport(recipe.name, policy.name, str(repo), sha, status, tuple(steps), tuple(artifacts or ()),
                         round(time.monotonic() - started, 3), started_at, sandbox or {})

    verdicts, stop = _preflight(recipe, policy, path)
    if stop is not None:
        return report(stop, _not_run(recipe.steps, verdicts, "not run: the recipe stopped before its first step"))

    steps: list[StepResult] = []
    status = OK
    if recipe.dependencies and policy.index_mirror and policy.wheel_cache:
        Path(policy.wheel_cache).mkdir(parents=True, exist_ok=True)  # bound now, filled from the mirror below
    with open_sandbox(repo, sha, policy, tools_path=path, scratch=scratch, codex_home=codex_home,
                      wheel_cache=policy.wheel_cache) as sandbox:
        if recipe.dependencies:
            steps += _dependencies(repo, sha, recipe, policy, sandbox)
            status = next((s.status for s in steps if s.status not in (OK, SKIPPED)), OK)
        for step, verdict in zip(recipe.steps, verdicts, strict=True):
            if status != OK:
                steps.append(StepResult(step.run, SKIPPED, executable=verdict.executable,
                                        reason="not run: an earlier step did not succeed"))
                continue
            result = sandbox.run(step)
            steps.append(result)
            status = result.status
        artifacts = _collect(sandbox.workdir, recipe.artifacts, policy.max_artifact_bytes, artifacts_dir)
        described = sandbox.describe()
    return report(status, steps, artifacts, described)
