"""A repository's own Python dependencies: from a wheel cache, never from the network inside the sandbox.

A recipe names its requirement files (``dependencies: [requirements.txt]``); a policy names where
wheels come from:

- ``wheel_cache: /dir`` — wheels already there (``pip download -d /dir -r requirements.txt`` run
  by whoever prepares the machine). It is bound read-only into the sandbox, where ``pip install
  --no-index --find-links`` puts them under ``.codex-deps/`` of the copy (on ``PYTHONPATH`` for every
  step). No network is needed, and none is there.
- ``index_mirror: URL`` (with ``wheel_cache``) — a package index mirror the *runner* resolves the
  requirements against before the run, outside the sandbox, into the cache:
  ``pip download --only-binary=:all:`` — wheels only, so no build script of a dependency runs
  outside. The requirement lines are read from the commit's git objects and must be plain
  requirements (name, extras, versions, markers): an option (``--index-url``, ``-e``, ``-r``), a URL
  or a path in the file would redirect that download, and is refused before anything is fetched.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from codex_core.git import GitError, run_git
from codex_core.sandbox.policy import SandboxPolicy
from codex_core.sandbox.report import BLOCKED, FAILED, OK, SKIPPED, StepResult

DEPS_DIR = ".codex-deps"  # in the copy; on PYTHONPATH for every step
WHEELS_MOUNT = "/tmp/codex-wheels"  # where the cache is bound, read-only
_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*"  # name
    r"(\[[A-Za-z0-9._,\s-]*\])?"  # extras
    r"\s*((===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+(\s*,\s*(===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+)*)?"
    r"\s*(;[^#]*)?$"  # environment marker
)


def plain_requirements(text: str, source: str) -> tuple[list[str], str]:
    """The requirement lines of a requirements file, or why the file is refused."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if _REQUIREMENT.match(line) is None:
            return [], (f"policy violation: {source} line {number} is not a plain requirement ({line[:80]!r}); "
                        "options, URLs and paths are refused")
        lines.append(line)
    return lines, ""


def requirement_files(repo: Path, sha: str, declared: tuple[str, ...]) -> dict[str, str]:
    """The declared requirement files that exist at the commit, with their text (from git objects)."""
    found = {}
    for path in declared:
        try:
            found[path] = run_git(repo, "show", f"{sha}:{path}").decode("utf-8", "replace")
        except GitError:
            continue
    return found


def fill_cache(requirements: list[str], mirror: str, cache: Path, timeout: float) -> StepResult:
    """Outside the sandbox: wheels of ``requirements`` (and their dependencies) from ``mirror`` into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--index-url", mirror,
            "--dest", str(cache), "--disable-pip-version-check", "--no-input", "-r", handle.name]
    command = f"pip download --only-binary=:all: --index-url {mirror} --dest {cache} ({len(requirements)} requirements)"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir(), "PIP_NO_INPUT": "1"})
    except subprocess.TimeoutExpired:
        return StepResult(command, "timeout", None, round(time.monotonic() - started, 3), sys.executable,
                          f"killed after {timeout:g} s")
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return StepResult(command, OK if done.returncode == 0 else FAILED, done.returncode,
                      round(time.monotonic() - started, 3), sys.executable, "", done.stdout[-20000:],
                      done.stderr[-20000:])


def install_policy(policy: SandboxPolicy) -> SandboxPolicy:
    """The recipe policy's caps, allowing only the interpreter that runs pip."""
    return replace(policy, name=f"{policy.name}:dependencies", allowlist=("python", "python3"), denylist=())


def install_command(requirement_file: str) -> str:
    return (f"python -m pip install --no-index --find-links {WHEELS_MOUNT} --only-binary=:all: --target {DEPS_DIR} "
            f"--disable-pip-version-check --no-input --no-cache-dir --quiet -r {requirement_file}")


def not_installed(declared: tuple[str, ...], status: str, reason: str) -> StepResult:
    return StepResult(f"dependencies: {', '.join(declared)}", status, reason=reason)


def skipped(declared: tuple[str, ...], reason: str) -> StepResult:
    return not_installed(declared, SKIPPED, reason)


def blocked(declared: tuple[str, ...], reason: str) -> StepResult:
    return not_installed(declared, BLOCKED, reason)
