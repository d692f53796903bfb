"""One command under bubblewrap with kernel-enforced caps — the only way the runner starts a step.

Isolation: ``bwrap --unshare-all --unshare-user --disable-userns`` gives the command fresh user,
pid, ipc, uts, cgroup and network namespaces (the network namespace has only a loopback device of
its own: no route anywhere, and the host's 127.0.0.1 is unreachable) and forbids it to create
further user namespaces. The host filesystem is mounted read-only, ``/tmp`` is an empty tmpfs, the
directories that must stay unseen — the caller's home, CODEX_HOME, the source checkout (``hide``)
— are covered by empty tmpfs mounts, and the workdir alone is writable, at :data:`SANDBOX_WORKDIR`.

No capabilities: started by root, bwrap maps root into the sandbox's user namespace *with* every
capability of that namespace — enough to remount the read-only host read-write. So a root caller
never hands the step to bwrap directly: a launcher (``/bin/sh`` + ``setpriv``, the runner's own,
not a step) first caps the pid namespace's ``pid_max``, then clears the bounding, inheritable and
ambient sets and sets no_new_privs before it execs the step, which therefore runs with none. An
unprivileged caller's bwrap drops every capability itself.

Caps: ``setrlimit`` in the child before ``bwrap`` execs (inherited by everything it starts):
RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space), RLIMIT_FSIZE (largest file written),
RLIMIT_NPROC (processes of the user — the kernel never applies it to root, so a root caller's
process cap is the pid namespace's ``pid_max``, Linux ≥ 6.14), RLIMIT_CORE 0. The wall-clock
timeout kills bwrap's process group, and so does a workdir that grows past ``max_workdir_bytes``
or ``max_files`` (measured every half second while the step runs: the copy lives on the host's
disk). bwrap is pid 1 of the sandbox's pid namespace, so its death takes every process inside
with it (``--die-with-parent`` covers the outer one).

Environment: PATH, HOME=/tmp and LANG only (bwrap adds PWD), plus the toolchain variables the
sandbox itself sets (``RUSTUP_HOME`` when cargo is a rustup proxy) — nothing of the parent's
environment leaks in.
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
from dataclasses import dataclass, field
from pathlib import Path

from codex_core.sandbox.policy import SandboxPolicy

SANDBOX_WORKDIR = "/tmp/work"  # inside the sandbox; /tmp is the sandbox's own tmpfs
TRUNCATION_MARKER = "\n[... output truncated by the sandbox: {omitted} more bytes not kept ...]\n"
INSTALL_HINT = "bubblewrap is required: apt-get install bubblewrap"
PID_MAX_MIN = 301  # the kernel refuses a smaller pid_max
WATCH_INTERVAL = 0.5  # seconds between two measurements of the workdir while a step runs
# The root launcher: cap the pid namespace, then exec the step with no capability left.
_ROOT_LAUNCHER = ('echo "$1" > /proc/sys/kernel/pid_max 2>/dev/null; shift; '
                  'exec setpriv --bounding-set=-all --inh-caps=-all --ambient-caps=-all --no-new-privs -- "$@"')


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be built on this machine; nothing is ever run without it."""


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(f"{INSTALL_HINT} (no `bwrap` on PATH; the runner never runs a step unsandboxed)")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        raise SandboxUnavailable("setpriv (util-linux) is required to drop the capabilities a root caller's "
                                 "sandbox would otherwise keep: apt-get install util-linux")
    return path


@dataclass(frozen=True)
class Mounts:
    """What of the host the sandbox sees besides the read-only root, and the variables that go with it."""

    hidden: tuple[str, ...] = ()  # directories covered by an empty tmpfs
    rebound: tuple[str, ...] = ()  # directories bound back read-only (tool environments under a hidden one)
    env: dict[str, str] = field(default_factory=dict)
    binds: tuple[tuple[str, str], ...] = ()  # (host directory, place inside) bound read-only, e.g. a wheel cache


def clean_env(path: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"PATH": path, "HOME": "/tmp", "LANG": "C.UTF-8", **(extra or {})}


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _env_root(bin_dir: Path) -> Path:
    """A ``.../bin`` directory stands for its environment (``lib/`` holds its packages)."""
    return bin_dir.parent if bin_dir.name == "bin" and len(bin_dir.parts) > 3 else bin_dir


def tool_roots(path: str, hidden: Sequence[Path] = ()) -> list[str]:
    """The environments on the sandbox PATH that a hidden directory (``/tmp`` always) would cover — a
    virtualenv in a CI clone under /tmp, cargo under the caller's home — to be bound back read-only.
    The interpreter a virtualenv's ``bin/python`` links to counts too when it lives under one."""
    covered = [Path("/tmp"), *hidden]
    roots: list[str] = []

    def add(candidate: Path) -> None:
        if _under(candidate, covered) and candidate not in covered and str(candidate) not in roots:
            roots.append(str(candidate))

    for entry in path.split(os.pathsep):
        if not entry:
            continue
        bin_dir = Path(entry).absolute()
        if not bin_dir.is_dir():
            continue
        add(_env_root(bin_dir))
        for name in ("python", "python3"):
            target = bin_dir / name
            if target.is_symlink():
                add(_env_root(Path(os.path.realpath(target)).parent))
    return roots


def toolchain_env(path: str) -> tuple[list[str], dict[str, str]]:
    """Toolchains that need more than their ``bin``: a rustup-managed ``cargo`` reads its toolchains
    from RUSTUP_HOME (``~/.rustup`` unless set), exposed read-only and named in the environment."""
    cargo = shutil.which("cargo", path=path)
    if cargo is None or os.path.basename(os.path.realpath(cargo)) != "rustup":
        return [], {}
    rustup_home = Path(os.environ.get("RUSTUP_HOME") or Path.home() / ".rustup")
    if not rustup_home.is_dir():
        return [], {}
    return [str(rustup_home)], {"RUSTUP_HOME": str(rustup_home)}


def plan_mounts(path: str, hide: Sequence[Path | str] = ()) -> Mounts:
    """Hidden directories (existing ones, never ``/``, nested ones folded), and what must be bound back."""
    candidates = sorted({Path(os.path.realpath(h)) for h in hide if h}, key=lambda p: len(p.parts))
    hidden: list[Path] = []
    for candidate in candidates:
        if candidate == Path("/") or not candidate.is_dir() or _under(candidate, [Path("/tmp"), *hidden]):
            continue
        hidden.append(candidate)
    exposed, env = toolchain_env(path)
    rebound = tool_roots(path, hidden)
    rebound += [e for e in exposed if _under(Path(e), [Path("/tmp"), *hidden]) and e not in rebound]
    return Mounts(tuple(str(h) for h in hidden), tuple(rebound), env)


def bwrap_argv(bwrap: str, workdir: Path, argv: Sequence[str], *, path: str = "",
               mounts: Mounts | None = None, pid_max: int | None = None) -> list[str]:
    """The bwrap command line; ``pid_max`` set means a root caller: the launcher drops capabilities."""
    mounts = mounts or plan_mounts(path)
    hidden = [arg for h in mounts.hidden for arg in ("--tmpfs", h)]
    rebound = [arg for root in mounts.rebound for arg in ("--ro-bind", root, root)]
    rebound += [arg for source, inside in mounts.binds for arg in ("--ro-bind", source, inside)]
    launcher = ["/bin/sh", "-c", _ROOT_LAUNCHER, "codex-sandbox", str(pid_max)] if pid_max is not None else []
    return [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup namespaces (never --share-net)
        "--unshare-user",
        "--disable-userns",  # no nested user namespace: no way back to capabilities
        "--die-with-parent",
        "--new-session",  # no TIOCSTI on the caller's terminal
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        *hidden,
        "--tmpfs", "/tmp",
        *rebound,
        "--bind", str(workdir), SANDBOX_WORKDIR,
        "--chdir", SANDBOX_WORKDIR,
        "--",
        *launcher,
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
    killed: str = ""  # why the runner killed it before it ended (a workdir cap), else ""


def workdir_over_cap(workdir: Path, policy: SandboxPolicy) -> str:
    """Why the workdir is past its caps (bytes written, number of files), or "" — counted without
    following links, stopping as soon as a cap is passed."""
    total = files = 0
    stack = [str(workdir)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    files += 1
                    total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
                if total > policy.max_workdir_bytes:
                    return f"killed: the workdir grew past max_workdir_bytes ({policy.max_workdir_bytes} bytes)"
                if files > policy.max_files:
                    return f"killed: the workdir holds more than max_files ({policy.max_files} files)"
    return ""


def pid_cap(policy: SandboxPolicy) -> int | None:
    """The pid namespace's pid_max for a root caller (RLIMIT_NPROC does not bind root); None otherwise."""
    return max(policy.max_processes, PID_MAX_MIN) if os.geteuid() == 0 else None


def run_confined(argv: Sequence[str], workdir: Path, policy: SandboxPolicy, *, path: str,
                 bwrap: str | None = None, mounts: Mounts | None = None) -> Confined:
    """Run ``argv`` in the sandbox on ``workdir`` under ``policy``; the caller has vetted argv[0]."""
    mounts = mounts or plan_mounts(path)
    command = bwrap_argv(bwrap or find_bwrap(), workdir, argv, path=path, mounts=mounts, pid_max=pid_cap(policy))
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(path, mounts.env),
        cwd=workdir,
        start_new_session=True,  # its own process group, killed as one
        preexec_fn=rlimits(policy),
        close_fds=True,
    )
    readers = [_CappedReader(proc.stdout, policy.max_output_bytes), _CappedReader(proc.stderr, policy.max_output_bytes)]
    for reader in readers:
        reader.start()
    timed_out, killed = False, ""
    deadline = started + policy.timeout_sec
    interval = WATCH_INTERVAL
    try:
        # One thread waits and watches: the workdir is measured between short waits, so the group
        # is only ever killed here, while the process is not yet reaped (its group id still ours).
        while True:
            try:
                proc.wait(timeout=max(0.0, min(interval, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                measured = time.monotonic()
                killed = workdir_over_cap(workdir, policy)
                if killed:
                    break
                interval = max(WATCH_INTERVAL, 5 * (time.monotonic() - measured))  # a large tree: measure less often
    finally:
        if proc.returncode is None:  # timed out, over a cap, or interrupted
            _kill_group(proc)
    if not killed and not timed_out:
        killed = workdir_over_cap(workdir, policy)  # written just before it ended
    duration = time.monotonic() - started
    for reader in readers:
        reader.join(timeout=5)
    (out, out_cut), (err, err_cut) = readers[0].text(), readers[1].text()
    return Confined(None if timed_out or (killed and proc.returncode < 0) else proc.returncode, timed_out, duration,
                    out, err, out_cut, err_cut, killed)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
