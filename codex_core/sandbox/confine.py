"""One command under bubblewrap with kernel-enforced caps — the only way the runner starts a step.

Isolation: ``bwrap --unshare-all`` gives the command fresh user, pid, ipc, uts, cgroup and network
namespaces (the network namespace has only a loopback device of its own: no route anywhere, and
the host's 127.0.0.1 is unreachable). The host filesystem is mounted read-only, ``/tmp`` is an empty
tmpfs, and the workdir alone is writable, at :data:`SANDBOX_WORKDIR`.

Caps: ``setrlimit`` in the child before ``bwrap`` execs (inherited by everything it starts):
RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space), RLIMIT_FSIZE (largest file written),
RLIMIT_NPROC (processes of the user; the kernel does not apply it to root), RLIMIT_CORE 0.
The wall-clock timeout kills bwrap's process group; bwrap is pid 1 of the sandbox's pid namespace,
so its death takes every process inside with it (``--die-with-parent`` covers the outer one).

Environment: PATH, HOME=/tmp and LANG only (bwrap adds PWD) — nothing of the parent's environment leaks in.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from codex_core.sandbox.policy import SandboxPolicy

SANDBOX_WORKDIR = "/tmp/work"  # inside the sandbox; /tmp is the sandbox's own tmpfs
TRUNCATION_MARKER = "\n[... output truncated by the sandbox: {omitted} more bytes not kept ...]\n"
INSTALL_HINT = "bubblewrap is required: apt-get install bubblewrap"


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be built on this machine; nothing is ever run without it."""


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(f"{INSTALL_HINT} (no `bwrap` on PATH; the runner never runs a step unsandboxed)")
    return path


def clean_env(path: str) -> dict[str, str]:
    return {"PATH": path, "HOME": "/tmp", "LANG": "C.UTF-8"}


def tool_roots_under_tmp(path: str) -> list[str]:
    """The environments on the sandbox PATH that live under ``/tmp`` (a checkout or virtualenv there,
    as in a CI clone): the sandbox's own empty ``/tmp`` would hide them, so they are bound back,
    read-only. A ``.../bin`` entry stands for its environment (``lib/`` holds its packages)."""
    roots: list[str] = []
    for entry in path.split(os.pathsep):
        if not entry:
            continue
        p = Path(entry).absolute()
        if p.parts[:2] != ("/", "tmp") or len(p.parts) < 3 or not p.is_dir():
            continue
        root = str(p.parent if p.name == "bin" and len(p.parts) > 3 else p)
        if root not in roots:
            roots.append(root)
    return roots


def bwrap_argv(bwrap: str, workdir: Path, argv: Sequence[str], *, path: str = "") -> list[str]:
    rebound = [arg for root in tool_roots_under_tmp(path) for arg in ("--ro-bind", root, root)]
    return [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup namespaces (never --share-net)
        "--die-with-parent",
        "--new-session",  # no TIOCSTI on the caller's terminal
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        *rebound,
        "--bind", str(workdir), SANDBOX_WORKDIR,
        "--chdir", SANDBOX_WORKDIR,
        "--",
        *argv,
    ]


def rlimits(policy: SandboxPolicy) -> Callable[[], None]:
    """The preexec function: caps set in the child between fork and exec of bwrap."""
    limits = [
        (resource.RLIMIT_CPU, policy.cpu_quota),
        (resource.RLIMIT_AS, policy.memory_limit),
        (resource.RLIMIT_FSIZE, policy.max_file_bytes),
        (resource.RLIMIT_NPROC, policy.max_processes),
        (resource.RLIMIT_CORE, 0),
    ]

    def apply() -> None:
        for which, value in limits:
            resource.setrlimit(which, (value, value))

    return apply


class _CappedReader(threading.Thread):
    """Drain a pipe to its end (so the child never blocks on it) but keep only the first ``cap`` bytes."""

    def __init__(self, stream, cap: int) -> None:  # noqa: ANN001 - a binary pipe
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.kept = bytearray()
        self.total = 0

    def run(self) -> None:
        while chunk := self.stream.read(65536):
            self.total += len(chunk)
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
        self.stream.close()

    def text(self) -> tuple[str, bool]:
        text = self.kept.decode("utf-8", "replace")
        if self.total > len(self.kept):
            return text + TRUNCATION_MARKER.format(omitted=self.total - len(self.kept)), True
        return text, False


@dataclass(frozen=True)
class Confined:
    exit_code: int | None  # None when the timeout killed it
    timed_out: bool
    duration_sec: float
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool


def run_confined(argv: Sequence[str], workdir: Path, policy: SandboxPolicy, *, path: str,
                 bwrap: str | None = None) -> Confined:
    """Run ``argv`` in the sandbox on ``workdir`` under ``policy``; the caller has vetted argv[0]."""
    command = bwrap_argv(bwrap or find_bwrap(), workdir, argv, path=path)
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(path),
        cwd=workdir,
        start_new_session=True,  # its own process group, killed as one
        preexec_fn=rlimits(policy),
        close_fds=True,
    )
    readers = [_CappedReader(proc.stdout, policy.max_output_bytes), _CappedReader(proc.stderr, policy.max_output_bytes)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=policy.timeout_sec)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.returncode is None:  # timed out, or interrupted: not reaped yet, so the group id is still ours
            _kill_group(proc)
    duration = time.monotonic() - started
    for reader in readers:
        reader.join(timeout=5)
    (out, out_cut), (err, err_cut) = readers[0].text(), readers[1].text()
    return Confined(None if timed_out else proc.returncode, timed_out, duration, out, err, out_cut, err_cut)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
