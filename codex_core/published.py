"""What is published for a repository, and whether the freshness worker is alive: one reader and
one writer for each, so serving, the worker, the sensor and ``feriactl status`` agree.

- ``repos/<repo>/published_index.json``: the index version serving reads (commit, version, points,
  published_at, masker_version). Written by the ``published_index`` asset and by a snapshot restore,
  after the index pointer swap.
- ``repos/<repo>/graph_state.json``: the commit the code graph was last built for (``code_graph``).
- ``CODEX_HOME/freshness_worker.json``: the worker's heartbeat (pid, beat_at, interval_s). While it is
  fresh, ``git_head_sensor`` leaves local repositories to the worker.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from codex_core import catalog
from codex_core.fsio import write_json_atomic
from codex_core.home import CodexHome
from codex_core.liveness import pid_alive

HEARTBEAT = "freshness_worker.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_published(home: CodexHome, name: str) -> dict[str, Any] | None:
    """The published state of ``name`` (None before the first publish, or unreadable)."""
    return _read(home.repo_dir(name) / catalog.PUBLISHED)


def write_published(home: CodexHome, name: str, state: dict[str, Any]) -> None:
    """Record what serving now reads for ``name`` (after the index pointer swap)."""
    repo_dir = home.repo_dir(name)
    repo_dir.mkdir(parents=True, exist_ok=True)
    catalog.write_json(repo_dir / catalog.PUBLISHED, state)


def published_commit(home: CodexHome, name: str) -> str | None:
    """The commit serving answers from for ``name`` (None before the first publish)."""
    state = read_published(home, name)
    return state.get("commit") if state else None


def graph_commit(home: CodexHome, name: str) -> str | None:
    """The commit the code graph of ``name`` was last built for."""
    state = _read(home.repo_dir(name) / catalog.GRAPH_STATE)
    return state.get("commit") if state else None


def write_graph_commit(home: CodexHome, name: str, commit: str) -> None:
    catalog.write_json(home.repo_dir(name) / catalog.GRAPH_STATE, {"commit": commit})


# --------------------------------------------------------------------------- worker heartbeat


def beat(home: CodexHome, interval_s: float) -> None:
    """The worker is alive (this process, beating every ``interval_s`` seconds)."""
    write_json_atomic(home.root / HEARTBEAT, {"pid": os.getpid(), "beat_at": time.time(), "interval_s": interval_s},
                      indent=None, sort_keys=False)


def stop_beating(home: CodexHome) -> None:
    """Remove this process's heartbeat (another worker's is left alone)."""
    path = home.root / HEARTBEAT
    beat_data = _read(path)
    if beat_data and beat_data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def worker_alive(home: CodexHome, now: float | None = None) -> dict[str, Any] | None:
    """The heartbeat of a live worker (beat within 3 intervals, at least 10 s, process alive), else None."""
    beat_data = _read(home.root / HEARTBEAT)
    if beat_data is None:
        return None
    now = time.time() if now is None else now
    fresh = now - float(beat_data.get("beat_at", 0)) <= max(10.0, 3 * float(beat_data.get("interval_s", 1)))
    return beat_data if fresh and pid_alive(int(beat_data.get("pid", -1))) else None
