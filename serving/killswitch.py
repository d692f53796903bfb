"""The kill-switch: one JSON file the operator flips to stop answering queries at once.

``CODEX_HOME/serving/kill_switch.json`` = ``{"on": bool, "reason": str, "set_by": str, "set_at": iso}``.
Serving checks it on every query by modification time (one ``stat``), so ``feriactl kill-switch on``
takes effect on the next request without a restart. Health, metrics and traces ignore it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_NAME = "kill_switch.json"


@dataclass(frozen=True)
class KillSwitchState:
    on: bool = False
    reason: str = ""
    set_by: str = ""
    set_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KillSwitch:
    def __init__(self, state_dir: Path):
        self.path = state_dir / FILE_NAME
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._state = KillSwitchState()

    def state(self) -> KillSwitchState:
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            with self._lock:
                if stamp is None:
                    self._state = KillSwitchState()
                else:
                    raw = json.loads(self.path.read_text())
                    self._state = KillSwitchState(
                        bool(raw.get("on")), str(raw.get("reason") or ""), str(raw.get("set_by") or ""),
                        raw.get("set_at"),
                    )
                self._stamp = stamp
        return self._state

    def set(self, on: bool, reason: str = "", set_by: str = "") -> KillSwitchState:
        if on and not reason.strip():
            reason = "stopped by the operator"
        state = KillSwitchState(on, reason.strip(), set_by, datetime.now(UTC).isoformat(timespec="seconds"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(state.to_dict(), indent=2))
        os.replace(tmp, self.path)
        return self.state()
