"""The kill-switch: the operator's one switch to stop answering queries, and starting agent runs
(``POST /v1/agent/run``: 503), at once — on every replica.

Its state ``{on, reason, set_by, set_at}`` is a row of the shared serving state
(``serving/shared_state.py``: PostgreSQL, or sqlite under CODEX_HOME/serving/). Every request reads it
(no cache), so ``feriactl kill-switch on`` or ``POST /v1/admin/kill-switch`` through any replica stops
every replica on its next request, without a restart. Health, metrics, traces and reading agent runs
ignore it.

Earlier versions kept it in ``CODEX_HOME/serving/kill_switch.json``. The first read adopts such a
file (a switch left on stays on, unless the shared state already has one) and renames it
``kill_switch.json.migrated``; nothing reads or writes the file afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.shared_state import KillSwitchRow, SharedState, sqlite_url

if TYPE_CHECKING:
    from codex_core.settings import Settings

log = logging.getLogger("codex.serving")
LEGACY_FILE = "kill_switch.json"


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
    """``KillSwitch(store, legacy_dir=...)``; ``KillSwitch(state_dir)`` is the sqlite store in that
    directory (what serving uses when no database is configured)."""

    def __init__(self, where: SharedState | Path, *, legacy_dir: Path | None = None):
        if isinstance(where, SharedState):
            self.store = where
        else:
            self.store = SharedState(sqlite_url(where))
            legacy_dir = legacy_dir or Path(where)
        self._legacy = legacy_dir / LEGACY_FILE if legacy_dir else None
        self._adopting = threading.Lock()

    @classmethod
    def for_serving(cls, settings: Settings, state_dir: Path) -> KillSwitch:
        """The kill-switch every replica configured like ``settings`` sees."""
        return cls(SharedState.for_serving(settings, state_dir), legacy_dir=state_dir)

    def state(self) -> KillSwitchState:
        """Raises ``StateStoreUnavailable`` when the shared state cannot be read."""
        self._adopt_legacy_file()
        row = self.store.kill_switch()
        return KillSwitchState() if row is None else KillSwitchState(row.on, row.reason, row.set_by, row.set_at)

    def set(self, on: bool, reason: str = "", set_by: str = "") -> KillSwitchState:
        self._adopt_legacy_file()
        if on and not reason.strip():
            reason = "stopped by the operator"
        row = KillSwitchRow(on, reason.strip(), set_by, datetime.now(UTC).isoformat(timespec="seconds"))
        self.store.set_kill_switch(row)
        return self.state()

    def _adopt_legacy_file(self) -> None:
        if self._legacy is None:
            return
        with self._adopting:
            legacy, self._legacy = self._legacy, None
            if legacy is not None and legacy.is_file():
                self._adopt(legacy)

    def _adopt(self, legacy: Path) -> None:
        try:
            raw = json.loads(legacy.read_text())
            row = KillSwitchRow(bool(raw.get("on")), str(raw.get("reason") or ""), str(raw.get("set_by") or ""),
                                raw.get("set_at"))
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring the unreadable old kill-switch file %s (%s)", legacy, exc)
            return
        try:
            self.store.set_kill_switch(row, only_if_unset=True)
        except Exception:
            self._legacy = legacy  # try again on the next read
            raise
        try:
            os.replace(legacy, legacy.with_name(LEGACY_FILE + ".migrated"))
        except FileNotFoundError:  # another replica adopted it first
            pass
        log.info("kill-switch file %s adopted into the shared serving state (%s)", legacy, self.store.where)
