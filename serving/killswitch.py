"""The kill-switch: one JSON file the operator flips to stop answering queries, and starting agent
runs (``POST /v1/agent/run``: 503), at once.

``CODEX_HOME/serving/kill_switch.json`` = ``{"on": bool, "reason": str, "set_by": str, "set_at": iso}``.
Serving checks it on every query by its stamp (one ``stat``), so ``feriactl kill-switch on``
takes effect on the next request without a restart. Health, metrics, traces and reading agent runs
ignore it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.fsio import ReloadingFile, write_json_atomic

FILE_NAME = "kill_switch.json"


@dataclass(frozen=True)
class KillSwitchState:
    on: bool = False
    reason: str = ""
    set_by: str = ""
    set_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal(self) -> str:
        """What a refused query is told (the API's 503 and the MCP tools' error): why, since when, and how
        an admin turns it off."""
        return (
            f"queries are stopped by the kill-switch: {self.reason} (since {self.set_at}"
            f"{', by ' + self.set_by if self.set_by else ''}); an admin turns it off with "
            "`feriactl kill-switch off` or POST /v1/admin/kill-switch {\"on\": false}"
        )


class KillSwitch:
    def __init__(self, state_dir: Path):
        self.path = state_dir / FILE_NAME
        self._file = ReloadingFile(self.path, _parse, KillSwitchState())

    def state(self) -> KillSwitchState:
        return self._file.get()

    def set(self, on: bool, reason: str = "", set_by: str = "") -> KillSwitchState:
        if on and not reason.strip():
            reason = "stopped by the operator"
        state = KillSwitchState(on, reason.strip(), set_by, datetime.now(UTC).isoformat(timespec="seconds"))
        write_json_atomic(self.path, state.to_dict(), indent=2, sort_keys=False)
        return self.state()


def _parse(path: Path) -> KillSwitchState:
    raw = json.loads(path.read_text())
    return KillSwitchState(
        bool(raw.get("on")), str(raw.get("reason") or ""), str(raw.get("set_by") or ""), raw.get("set_at")
    )
