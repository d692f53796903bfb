"""Agent runs asked for and not stored yet: ``CODEX_HOME/agent/runs/.pending/<run_id>.json`` and ``.log``.

A request for a run (``POST /v1/agent/run``) reserves a slot, writes a pending record (atomically,
under ``.pending/.lock``, so two requests never both take the last slot) and then starts the run as
a detached process (its own session: it outlives the server that started it) whose stdout and
stderr go to ``<run_id>.log``. The ``agent_run`` op (or ``feriactl agent fix``) marks the record
``running`` when it starts; the run store (``RunStore``) holds the result when it is done. What a
run id is, in order:

- stored (``RunStore``): its report's status — this module does not decide that;
- pending, its process alive: ``running`` once the op marked it, ``queued`` before;
- pending, its process gone: ``lost`` (the tail of its log says why: a commit that does not
  exist, no bubblewrap, a killed process).

A process is recognised by its pid and, where ``/proc`` exists, its start time, so a pid reused
by an unrelated process after a reboot does not keep a lost run "running" (and its slot taken).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from codex_core.fsio import file_lock, write_json_atomic
from codex_core.home import CodexHome
from codex_core.liveness import pid_alive
from codex_core.sandbox.store import RUN_ID_RE, RunStore, now_iso

PENDING_DIR = ".pending"
QUEUED, RUNNING, LOST = "queued", "running", "lost"
DEFAULT_LIMIT = 2  # concurrent queued + running runs; each one is a sandbox plus a Dagster process
LAUNCH_GRACE_S = 60.0  # a record without a pid is "queued" this long (the launcher is between write and start)
KEEP_LOST_S = 7 * 24 * 3600.0  # lost records (and their logs) are dropped after a week
LOG_TAIL_LINES = 40


class TooManyRuns(RuntimeError):
    """Every slot is taken by a queued or running run; try again when one finishes."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"{active} agent runs are queued or running, the limit is {limit}: "
                         "retry when one finishes (GET /v1/agent/runs shows them)")
        self.active, self.limit = active, limit


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from ``/proc/<pid>/stat``; None without /proc or that pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name in parentheses may hold spaces
    return fields[0], int(fields[19])


def _spawn_detached(argv: Sequence[str], log: Path, env: Mapping[str, str] | None) -> int:
    """Start ``argv`` in its own session, stdin from /dev/null, stdout and stderr appended to ``log``.

    ``os.posix_spawnp`` rather than ``subprocess.Popen``: the process is meant to outlive this one,
    and a Popen object dropped while its child runs warns and is reaped behind our back.
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawnp(argv[0], list(argv), dict(env if env is not None else os.environ),
                           file_actions=actions, setsid=True)


def _age_s(iso: str | None) -> float:
    if not iso:
        return float("inf")
    try:
        return time.time() - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return float("inf")


class PendingRuns:
    """Pending agent runs of one CODEX_HOME: start one (within ``limit``), read their states, mark one running."""

    def __init__(self, home: CodexHome, *, limit: int = DEFAULT_LIMIT):
        self.store = RunStore(home)  # read only: is a run stored yet
        self.root = self.store.root / PENDING_DIR
        self.limit = limit
        # Processes this object started are reaped here, or a finished child would stay a zombie that
        # still answers kill(pid, 0). Their exit codes are kept (None: reaped by someone else).
        self._running: set[int] = set()
        self._exit_codes: dict[int, int | None] = {}

    def record_path(self, run_id: str) -> Path:
        self.store.run_dir(run_id)  # KeyError with the store's message for anything but 32 hex digits
        return self.root / f"{run_id}.json"

    def log_path(self, run_id: str) -> Path:
        return self.record_path(run_id).with_suffix(".log")

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / ".lock")

    # ------------------------------------------------------------------ starting

    def start(self, run_id: str, argv: Sequence[str], *, repo: str, recipe: str, commit: str = "",
              tenant: str = "", task: str = "", note: str = "", test: str = "",
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Reserve a slot, write the record, start ``argv`` detached; the record (with ``pid``).

        ``task`` is what runs (``recipe``, or ``fix``: the debug agent on ``test``), ``note`` why.

        Raises TooManyRuns when ``limit`` runs are queued or running, FileExistsError when the id is
        taken, OSError when the process cannot start (the record is removed again).
        """
        path, log = self.record_path(run_id), self.log_path(run_id)
        with self._lock():
            self._prune()
            active = self.active()
            if active >= self.limit:
                raise TooManyRuns(active, self.limit)
            if path.exists() or self.store.run_dir(run_id).exists():
                raise FileExistsError(f"agent run {run_id} already exists")
            record: dict[str, Any] = {
                "run_id": run_id, "repo": repo, "recipe": recipe, "commit": commit or None, "tenant": tenant or None,
                "task": task or None, "note": note or None, "test": test or None, "requested_at": now_iso(),
                "pid": None, "pid_start": None,
                "running_at": None, "dagster_run_id": None, "log": log.name,
            }
            write_json_atomic(path, record)
            try:
                pid = _spawn_detached(argv, log, env)
            except OSError:
                path.unlink(missing_ok=True)
                log.unlink(missing_ok=True)
                raise
            self._running.add(pid)
            stat = _proc_stat(pid)
            record.update(pid=pid, pid_start=stat[1] if stat else None)
            write_json_atomic(path, record)
        return record

    def mark_running(self, run_id: str, *, dagster_run_id: str = "") -> bool:
        """The op started the sandbox for a pending run (False when the run was not started as pending)."""
        path = self.record_path(run_id)
        with self._lock():
            record = self._read(path)
            if record is None:
                return False
            record.update(running_at=now_iso(), dagster_run_id=dagster_run_id or None)
            write_json_atomic(path, record)
        return True

    # ------------------------------------------------------------------ reading

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The pending record with its ``status`` (queued / running / lost), None when there is none.

        A lost run carries ``log_tail`` (and ``exit_code`` when this object started it). Callers
        look in the run store first: a stored run's record here is only waiting to be pruned.
        """
        record = self._read(self.record_path(run_id))
        if record is None:
            return None
        view = self._with_state(record)
        # Stored after all (checked after the state: a run stored, then exited, is not "lost").
        return None if self._stored(run_id) else view

    def list(self) -> list[dict[str, Any]]:
        """Every pending record of a run not stored yet, with its status, newest request first."""
        views = [self._with_state(r) for r in self._records()]
        views = [v for v in views if not self._stored(v["run_id"])]
        return sorted(views, key=lambda r: r.get("requested_at") or "", reverse=True)

    def active(self) -> int:
        """How many runs hold a slot (queued or running)."""
        return sum(1 for r in self._records() if self._state(r) in (QUEUED, RUNNING))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # gone, or a stray that is not ours
            return None

    def _records(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        records = []
        for path in self.root.glob("*.json"):
            if RUN_ID_RE.fullmatch(path.stem) and (record := self._read(path)) is not None:
                records.append(record)
        return records

    def _stored(self, run_id: str) -> bool:
        return self.store.run_dir(run_id).exists()

    def _alive(self, record: dict[str, Any]) -> bool:
        pid = record.get("pid")
        if not isinstance(pid, int):
            return False
        if pid in self._running:
            return self._poll_child(pid)
        if pid in self._exit_codes:
            return False
        stat = _proc_stat(pid)
        if stat is None:  # the pid is gone, or there is no /proc here and the pid alone has to do
            return not Path("/proc/self/stat").exists() and pid_alive(pid)
        state, started = stat
        return state != "Z" and (record.get("pid_start") in (None, started))

    def _state(self, record: dict[str, Any]) -> str:
        if record.get("pid") is None:
            return QUEUED if _age_s(record.get("requested_at")) < LAUNCH_GRACE_S else LOST
        if self._alive(record):
            return RUNNING if record.get("running_at") else QUEUED
        return LOST

    def _with_state(self, record: dict[str, Any]) -> dict[str, Any]:
        status = self._state(record)
        out = {**record, "status": status}
        if status == LOST:
            out["log_tail"] = self._log_tail(record["run_id"])
            out["exit_code"] = self._exit_codes.get(record.get("pid") or -1)
        return out

    def _poll_child(self, pid: int) -> bool:
        """Whether a process this object started still runs (reaping it, and keeping its exit code, when not)."""
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: gone, exit code unknown
            done, status = pid, None
        if done == 0:
            return True
        self._running.discard(pid)
        self._exit_codes[pid] = None if status is None else os.waitstatus_to_exitcode(status)
        return False

    def _log_tail(self, run_id: str) -> str:
        try:
            with open(self.log_path(run_id), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.rstrip("\n").splitlines()[-LOG_TAIL_LINES:])

    def _prune(self) -> None:
        """Drop records (and logs) of runs that are stored and whose process is gone, and old lost ones."""
        for record in self._records():
            run_id = record["run_id"]
            stored = self._stored(run_id)
            state = self._state(record)
            if (stored and state == LOST) or (state == LOST and _age_s(record.get("requested_at")) > KEEP_LOST_S):
                self.record_path(run_id).unlink(missing_ok=True)
                self.log_path(run_id).unlink(missing_ok=True)
                self._exit_codes.pop(record.get("pid") or -1, None)
