"""What the sandbox tests share: the bubblewrap skip, a test policy, probe steps, process lookup."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from codex_core.sandbox import SandboxPolicy
from codex_core.sandbox.recipe import recipe_from_mapping

HAS_BWRAP = any((Path(d) / "bwrap").exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d)
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is required: apt-get install bubblewrap")
PY = shlex.quote(sys.executable)


def policy(**overrides) -> SandboxPolicy:
    values = {"name": "unit_tests", "allowlist": ("python", "python3", "pytest"), "timeout_sec": 60.0,
              "cpu_quota": 60, "memory_limit": 2 * 1024**3, "max_file_bytes": 16 * 1024**2}
    return SandboxPolicy(**{**values, **overrides})


def recipe(*runs: str, artifacts: tuple[str, ...] = (), name: str = "probe", policy_name: str = "unit_tests"):
    return recipe_from_mapping({"name": name, "policies": policy_name, "steps": [{"run": r} for r in runs],
                                "artifacts": [{"path": a} for a in artifacts]})


def python_step(code: str) -> str:
    return f"{PY} -c {shlex.quote(code)}"


def processes_with(marker: str) -> list[str]:
    """Pids of the host's processes whose command line contains ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except OSError:
            pass
    return found
