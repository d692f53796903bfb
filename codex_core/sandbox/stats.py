"""What the stored agent runs add up to (for ``/metrics``): runs by recipe and status, durations, violations.

Runs happen in other processes (``feriactl agent run``, the Dagster UI), so the numbers are read
from the run store, not counted as they happen. A stored run never changes, so :class:`RunTotals`
reads each ``report.json`` once and re-lists the runs directory only when its stamp moved (a run
is renamed into place there): a scrape with no new run costs one ``stat``.

Sandbox violations — a guard of the sandbox that fired, by ``kind``:

- ``policy``: the run was blocked before its first step (an executable off the allowlist or on
  the denylist);
- ``timeout``: a step was killed at the policy's wall clock;
- ``output_cap``: a step's stdout or stderr went past ``max_output_bytes`` (the rest was dropped);
- ``workdir_cap``: a step was killed because the copy grew past ``max_workdir_bytes`` or ``max_files``;
- ``artifact_cap``: a declared artifact was larger than ``max_artifact_bytes`` (not collected);
- ``artifact_escape``: a declared artifact resolved outside the workdir (a symlink or ``..``).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from codex_core.fsio import stamp
from codex_core.sandbox.report import BLOCKED, TIMEOUT
from codex_core.sandbox.store import REPORT_JSON, RUN_ID_RE, RunStore

VIOLATION_KINDS = ("policy", "timeout", "output_cap", "workdir_cap", "artifact_cap", "artifact_escape")
_ARTIFACT_VIOLATIONS = {"too_large": "artifact_cap", "outside_workdir": "artifact_escape"}


def status_label(status: str | None) -> str:
    """A run's status as a metric label: ``blocked: policy violation ...`` -> ``blocked`` (the reason
    is unbounded text; a label must take few values)."""
    return (status or "unknown").split(":", 1)[0].strip() or "unknown"


def violations(record: dict[str, Any]) -> Counter[str]:
    """The sandbox guards that fired in one stored run (kinds as in this module's docstring)."""
    found: Counter[str] = Counter()
    if status_label(record.get("status")) == BLOCKED:
        found["policy"] += 1
    for step in record.get("steps") or []:
        if step.get("status") == TIMEOUT:
            found["timeout"] += 1
        if step.get("stdout_truncated") or step.get("stderr_truncated"):
            found["output_cap"] += 1
        if str(step.get("reason") or "").startswith("killed: the workdir"):
            found["workdir_cap"] += 1
    for artifact in record.get("artifacts") or []:
        kind = _ARTIFACT_VIOLATIONS.get(artifact.get("status"))
        if kind:
            found[kind] += 1
    return found


@dataclass(frozen=True)
class RunSummary:
    recipe: str
    status: str  # normalised by status_label
    duration_sec: float
    violations: Counter[str] = field(default_factory=Counter)


def summarize(record: dict[str, Any]) -> RunSummary:
    return RunSummary(str(record.get("recipe") or "unknown"), status_label(record.get("status")),
                      float(record.get("duration_sec") or 0.0), violations(record))


class RunTotals:
    """Summaries of every stored run, re-read only when the runs directory changed."""

    def __init__(self, store: RunStore):
        self.store = store
        self._lock = threading.Lock()
        self._stamp: Any = None
        self._summaries: dict[str, RunSummary] = {}

    def summaries(self) -> list[RunSummary]:
        with self._lock:
            current = stamp(self.store.root)
            if current != self._stamp:
                self._rescan()
                self._stamp = current
            return list(self._summaries.values())

    def _rescan(self) -> None:
        if not self.store.root.is_dir():
            self._summaries = {}
            return
        present = {e.name for e in self.store.root.iterdir() if RUN_ID_RE.fullmatch(e.name)}
        kept = {run_id: s for run_id, s in self._summaries.items() if run_id in present}
        for run_id in present - kept.keys():
            try:
                kept[run_id] = summarize(json.loads((self.store.root / run_id / REPORT_JSON).read_text()))
            except (OSError, ValueError):
                continue  # not a complete run: skipped, and read again on the next change
        self._summaries = kept
