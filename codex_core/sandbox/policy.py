"""``configs/sandbox.policy.yaml``: what a sandboxed run may use — named policies, read strictly.

A policy says which executables a recipe's steps may start (allowlist; the denylist wins), and the
caps the kernel enforces on them (CPU seconds, address space, file size, process count, wall
clock). ``network`` and ``workdir_mode`` have one accepted value each today; they are spelled out
so that a policy file says what it gets, and a value the runner cannot honour is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from codex_core.strict import check_keys

REPO_POLICIES = Path(__file__).resolve().parents[2] / "configs" / "sandbox.policy.yaml"

NETWORK_MODES = ("disabled",)
WORKDIR_MODES = ("copy-on-write",)
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class PolicyError(ValueError):
    """The policy file is missing, malformed, or names a policy that does not exist."""


@dataclass(frozen=True)
class SandboxPolicy:
    name: str
    allowlist: tuple[str, ...]  # executable names (``pytest``) or absolute paths
    denylist: tuple[str, ...] = ()
    network: str = "disabled"
    cpu_quota: int = 60  # CPU seconds per step (RLIMIT_CPU), not a share of a core
    memory_limit: int = 1024**3  # bytes of address space per process (RLIMIT_AS)
    timeout_sec: float = 300.0  # wall clock per step; the whole process tree is killed
    workdir_mode: str = "copy-on-write"
    max_output_bytes: int = 1024**2  # per stream (stdout, stderr) kept in the report
    max_file_bytes: int = 64 * 1024**2  # largest file a step may write (RLIMIT_FSIZE)
    max_artifact_bytes: int = 16 * 1024**2  # largest artifact collected after the run
    max_processes: int = 256  # RLIMIT_NPROC (the kernel does not apply it to root)
    max_workdir_bytes: int = 2 * 1024**3  # all the copy may hold (it lives on the host's disk)
    max_files: int = 200_000  # files and links the copy may hold
    wheel_cache: str | None = None  # a directory of wheels for the repository's own dependencies
    index_mirror: str | None = None  # a package index the runner fills wheel_cache from, outside the sandbox


_FIELDS = tuple(SandboxPolicy.__dataclass_fields__)
_SIZE_FIELDS = ("memory_limit", "max_output_bytes", "max_file_bytes", "max_artifact_bytes", "max_workdir_bytes")
_INT_FIELDS = ("cpu_quota", "max_processes", "max_files")


def parse_size(value: Any, where: str) -> int:
    """``1048576``, ``"512M"``, ``"2G"``, ``"64KiB"`` -> bytes (binary units)."""
    if isinstance(value, bool):
        raise PolicyError(f"{where}: expected a size (bytes or e.g. '512M'), got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    else:
        raise PolicyError(f"{where}: expected a size (bytes or e.g. '512M', '2G'), got {value!r}")
    if size <= 0:
        raise PolicyError(f"{where}: must be positive, got {value!r}")
    return size


def _positive_number(value: Any, where: str, *, integer: bool) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise PolicyError(f"{where}: expected {kind}, got {value!r}")
    return value


def _executables(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyError(f"{where}: expected a list of executable names or absolute paths, got {value!r}")
    for entry in value:
        if "/" in entry and not entry.startswith("/"):
            raise PolicyError(f"{where}: {entry!r} is a relative path; use a bare name or an absolute path")
    return tuple(value)


def policy_from_mapping(name: str, data: Any, source: str = "<mapping>") -> SandboxPolicy:
    where = f"{source}: policy {name!r}"
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    check_keys(data, _FIELDS, where, PolicyError)
    if "name" in data:
        raise PolicyError(f"{where}: 'name' is the policy's key in the file, not a setting")
    if "allowlist" not in data:
        raise PolicyError(f"{where}: 'allowlist' is required (the executables its steps may start)")
    values: dict[str, Any] = {"name": name}
    for key, value in data.items():
        at = f"{where}: {key}"
        if key in ("allowlist", "denylist"):
            values[key] = _executables(value, at)
        elif key == "network":
            if value not in NETWORK_MODES:
                raise PolicyError(f"{at}: {value!r} is not supported; the sandbox offers only "
                                  f"{', '.join(NETWORK_MODES)} (no network, loopback included)")
            values[key] = value
        elif key == "workdir_mode":
            if value not in WORKDIR_MODES:
                raise PolicyError(f"{at}: {value!r} is not supported; use {', '.join(WORKDIR_MODES)}")
            values[key] = value
        elif key in _SIZE_FIELDS:
            values[key] = parse_size(value, at)
        elif key in _INT_FIELDS:
            values[key] = _positive_number(value, at, integer=True)
        elif key == "timeout_sec":
            values[key] = float(_positive_number(value, at, integer=False))
        elif key == "wheel_cache":
            if not isinstance(value, str) or not value.startswith("/"):
                raise PolicyError(f"{at}: expected an absolute directory path, got {value!r}")
            values[key] = value
        elif key == "index_mirror":
            if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
                raise PolicyError(f"{at}: expected an http(s) URL of a package index, got {value!r}")
            values[key] = value
    if values.get("index_mirror") and not values.get("wheel_cache"):
        raise PolicyError(f"{where}: index_mirror needs wheel_cache (the directory the mirror's wheels are put in)")
    return SandboxPolicy(**values)


def load_policies(path: Path | str = REPO_POLICIES) -> dict[str, SandboxPolicy]:
    """Every policy of the file, by name; a malformed file raises PolicyError naming the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"sandbox policy file {path} not found: create it "
                          f"(see configs/sandbox.policy.yaml in the repository)") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("policies"), dict) or not data["policies"]:
        raise PolicyError(f"{path}: expected a top-level 'policies:' mapping of name -> settings")
    check_keys(data, ("policies",), str(path), PolicyError)
    return {str(name): policy_from_mapping(str(name), body, str(path)) for name, body in data["policies"].items()}


def load_policy(name: str, path: Path | str = REPO_POLICIES) -> SandboxPolicy:
    policies = load_policies(path)
    if name not in policies:
        raise PolicyError(f"{path}: no policy named {name!r}; known policies: {', '.join(sorted(policies))}")
    return policies[name]
