"""Canary releases of an :class:`~codex_core.configs.AnswerConfig`: sticky traffic split, online
signals per arm, automatic rollback, promotion.

State: ``CODEX_HOME/serving/canary.json`` (written under a file lock by the CLI and by serving)::

    {"champion": ID | null,          # config serving all non-canary traffic (null = built-in default)
     "status": "none" | "running" | "promoted" | "rolled_back",
     "canary": {"id", "challenger", "champion", "traffic", "started_at", "thresholds",
                "arms": {"champion": SIGNALS, "challenger": SIGNALS}, "ended_at", "reason"},
     "history": [previous canaries, newest last]}

Routing is sticky: ``sha256(tenant NUL query)`` picks the arm, so a user asking the same question
gets the same arm, and the challenger's share converges to ``traffic`` percent.

Rollback rule (checked after every challenger outcome once both arms have ``min_samples``):
- challenger error rate > ``error_ratio`` x champion's + ``error_margin``;
- challenger P95 latency > champion's + ``p95_margin_s``;
- challenger abstention rate > champion's + ``abstention_margin``.

One serving process owns the signals of a canary (several workers would each see a share; run
one worker or read the per-arm Prometheus gauges instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.configs import AnswerConfig, ConfigStore
from codex_core.fsio import ReloadingFile, locked_edit
from codex_core.metrics import percentile
from codex_core.retrieval import RetrievalConfig

log = logging.getLogger("codex.serving.canary")

FILE_NAME = "canary.json"
CHAMPION, CHALLENGER = "champion", "challenger"
LATENCY_WINDOW = 500  # latencies kept per arm for P95
PERSIST_EVERY_S = 1.0


class CanaryError(ValueError):
    """A canary operation that does not fit the current state; the message says what to do."""


@dataclass(frozen=True)
class Thresholds:
    min_samples: int = 30
    error_ratio: float = 2.0
    error_margin: float = 0.01
    p95_margin_s: float = 0.5
    abstention_margin: float = 0.15


def arm_for(tenant: str, query: str, traffic_percent: float) -> str:
    """Sticky assignment: the same tenant + query always lands on the same arm."""
    digest = hashlib.sha256(f"{tenant}\x00{query}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000
    return CHALLENGER if bucket < traffic_percent * 100 else CHAMPION


def _p95(values: list[float]) -> float | None:
    return percentile(values, 95, method="nearest") if values else None


@dataclass
class ArmSignals:
    requests: int = 0
    errors: int = 0
    abstentions: int = 0
    latencies_s: list[float] | None = None

    def __post_init__(self) -> None:
        self.latencies_s = list(self.latencies_s or [])

    def record(self, ok: bool, latency_s: float, abstained: bool) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        self.abstentions += 1 if (ok and abstained) else 0
        self.latencies_s.append(round(latency_s, 4))
        del self.latencies_s[:-LATENCY_WINDOW]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def abstention_rate(self) -> float:
        answered = self.requests - self.errors
        return self.abstentions / answered if answered else 0.0

    @property
    def p95_s(self) -> float | None:
        return _p95(self.latencies_s)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
            "abstentions": self.abstentions, "abstention_rate": round(self.abstention_rate, 4),
            "p95_s": None if self.p95_s is None else round(self.p95_s, 4),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "latencies_s": list(self.latencies_s)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ArmSignals:
        data = data or {}
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)), int(data.get("abstentions", 0)),
                   list(data.get("latencies_s") or []))


def rollback_reason(champion: ArmSignals, challenger: ArmSignals, t: Thresholds) -> str | None:
    if champion.requests < t.min_samples or challenger.requests < t.min_samples:
        return None
    if challenger.error_rate > t.error_ratio * champion.error_rate + t.error_margin:
        return (f"challenger error rate {challenger.error_rate:.1%} > {t.error_ratio:g} x champion "
                f"{champion.error_rate:.1%} + {t.error_margin:.0%}")
    if (challenger.p95_s or 0.0) > (champion.p95_s or 0.0) + t.p95_margin_s:
        return (f"challenger P95 {challenger.p95_s:.3f}s > champion {champion.p95_s or 0.0:.3f}s "
                f"+ {t.p95_margin_s:g}s")
    if challenger.abstention_rate > champion.abstention_rate + t.abstention_margin:
        return (f"challenger abstention rate {challenger.abstention_rate:.1%} > champion "
                f"{champion.abstention_rate:.1%} + {t.abstention_margin * 100:.0f} points")
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _no_canary() -> dict[str, Any]:
    return {"champion": None, "status": "none", "canary": None, "history": []}


class CanaryStore:
    """canary.json with read-modify-write under an exclusive file lock (CLI and server both write)."""

    def __init__(self, state_dir: Path, configs: ConfigStore,
                 promote_callback: Callable[[str, dict[str, Any]], None] | None = None):
        self.path = state_dir / FILE_NAME
        self.configs = configs
        # Called after a promotion with (config id, canary record); the lead wires the MLflow alias here.
        self.promote_callback = promote_callback

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return _no_canary()
        return json.loads(self.path.read_text())

    def edit(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Read-modify-write of canary.json under canary.lock."""
        return locked_edit(self.path, _no_canary, indent=2, sort_keys=False)

    def champion(self, state: dict[str, Any]) -> str | None:
        """The champion config: the one the MLflow alias names (mirrored by ``ChampionService``, so a
        promotion by ``ab_judgement`` counts too), else the last canary promotion, else None."""
        return self.configs.served() or state.get("champion")

    def load_config(self, config_id: str) -> AnswerConfig:
        try:
            return self.configs.load(config_id)
        except KeyError as exc:
            raise CanaryError(exc.args[0]) from exc

    # ------------------------------------------------------------ operator actions

    def start(self, config_id: str, traffic: float, thresholds: Thresholds | None = None) -> dict[str, Any]:
        if not 0 < traffic <= 50:
            raise CanaryError(f"--traffic must be within (0, 50] percent, got {traffic:g}")
        self.load_config(config_id)  # fail now, not on the first routed query
        with self.edit() as state:
            if state.get("status") == "running":
                raise CanaryError(
                    f"canary {state['canary']['id']} of config {state['canary']['challenger']} is already running: "
                    f"promote or roll it back first (feriactl canary promote|rollback)"
                )
            if config_id == self.champion(state):
                raise CanaryError(f"config {config_id} is already the champion")
            if state.get("canary"):
                state.setdefault("history", []).append(state["canary"])
            state["status"] = "running"
            state["canary"] = {
                "id": uuid.uuid4().hex[:12], "challenger": config_id, "champion": self.champion(state),
                "traffic": traffic, "started_at": _now(), "thresholds": asdict(thresholds or Thresholds()),
                "arms": {CHAMPION: ArmSignals().to_dict(), CHALLENGER: ArmSignals().to_dict()},
                "ended_at": None, "reason": None,
            }
            return dict(state)

    def promote(self, reason: str = "promoted by the operator") -> dict[str, Any]:
        with self.edit() as state:
            canary = state.get("canary")
            if state.get("status") != "running" or not canary:
                raise CanaryError(f"no running canary to promote (status: {state.get('status', 'none')})")
            state["champion"] = canary["challenger"]
            state["status"] = "promoted"
            canary.update(ended_at=_now(), reason=reason)
            result = dict(state)
        log.warning(json.dumps({"ts": time.time(), "svc": "codex-serving", "event": "canary_promoted",
                                "config": canary["challenger"], "canary": canary["id"]}))
        if self.promote_callback is not None:
            self.promote_callback(canary["challenger"], canary)
        return result

    def rollback(self, reason: str = "rolled back by the operator", *, canary_id: str | None = None) -> dict[str, Any]:
        with self.edit() as state:
            canary = state.get("canary")
            if state.get("status") != "running" or not canary:
                raise CanaryError(f"no running canary to roll back (status: {state.get('status', 'none')})")
            if canary_id is not None and canary["id"] != canary_id:
                return dict(state)  # the operator already moved on
            state["status"] = "rolled_back"
            canary.update(ended_at=_now(), reason=reason)
            result = dict(state)
        log.warning(json.dumps({"ts": time.time(), "svc": "codex-serving", "event": "canary_rolled_back",
                                "config": canary["challenger"], "canary": canary["id"], "reason": reason}))
        return result

    def status(self) -> dict[str, Any]:
        state = self.read()
        canary = state.get("canary")
        if canary:
            canary = {**canary, "arms": {arm: ArmSignals.from_dict(s).summary() for arm, s in canary["arms"].items()}}
        return {"champion": self.champion(state), "status": state.get("status", "none"), "canary": canary,
                "history": len(state.get("history", []))}


@dataclass(frozen=True)
class ArmChoice:
    arm: str | None  # None when no canary is running
    config_id: str | None  # None = built-in default RetrievalConfig
    retrieval: RetrievalConfig | None
    canary_id: str | None = None

    def to_trace(self) -> dict[str, Any]:
        return {"arm": self.arm or CHAMPION, "config_id": self.config_id, "canary_id": self.canary_id}


class CanaryRouter:
    """Serving side: picks the arm per query, records outcomes, persists signals, rolls back."""

    def __init__(self, store: CanaryStore, on_signals: Callable[[str, ArmSignals], None] | None = None):
        self.store = store
        self._on_signals = on_signals
        self._lock = threading.Lock()
        self._file = ReloadingFile(store.path, lambda _path: store.read(), _no_canary())
        self._served = ReloadingFile(store.configs.served_path, lambda _path: store.configs.served(), None)
        self._state: dict[str, Any] = {}
        self._configs: dict[str, RetrievalConfig] = {}
        self._arms: dict[str, ArmSignals] = {}
        self._dirty_since: float | None = None

    def _refresh(self) -> None:
        if self._file.get() is self._state:  # the same object until canary.json changes
            return
        with self._lock:
            state = self._file.get()  # again under the lock: a slower thread never adopts an older state
            canary = state.get("canary") if state.get("status") == "running" else None
            held = self._state.get("canary") if self._state.get("status") == "running" else None
            if canary and (not held or held["id"] != canary["id"]):
                self._arms = {arm: ArmSignals.from_dict(canary["arms"].get(arm)) for arm in (CHAMPION, CHALLENGER)}
                self._dirty_since = None
            self._state = state

    def _retrieval(self, config_id: str | None) -> RetrievalConfig | None:
        if config_id is None:
            return None
        if config_id not in self._configs:
            self._configs[config_id] = self.store.load_config(config_id).retrieval
        return self._configs[config_id]

    def choose(self, tenant: str, query: str) -> ArmChoice:
        self._refresh()
        state = self._state
        if state.get("status") != "running":
            champion = self._served.get() or state.get("champion")
            return ArmChoice(None, champion, self._retrieval(champion))
        canary = state["canary"]
        arm = arm_for(tenant, query, float(canary["traffic"]))
        config_id = canary["challenger"] if arm == CHALLENGER else canary.get("champion")
        return ArmChoice(arm, config_id, self._retrieval(config_id), canary["id"])

    def champion_of(self, choice: ArmChoice) -> ArmChoice:
        """The champion arm of the same canary (a failing challenger query is re-served by it)."""
        canary = self._state.get("canary") or {}
        champion = canary.get("champion")
        return ArmChoice(CHAMPION, champion, self._retrieval(champion), choice.canary_id)

    def record(self, choice: ArmChoice, *, ok: bool, latency_s: float, abstained: bool) -> str | None:
        """Count one outcome; returns the rollback reason when this outcome triggered a rollback."""
        if choice.arm is None:
            return None
        with self._lock:
            canary = self._state.get("canary") or {}
            if self._state.get("status") != "running" or canary.get("id") != choice.canary_id:
                return None
            signals = self._arms[choice.arm]
            signals.record(ok, latency_s, abstained)
            if self._on_signals:
                self._on_signals(choice.arm, signals)
            reason = None
            if choice.arm == CHALLENGER:
                reason = rollback_reason(
                    self._arms[CHAMPION], self._arms[CHALLENGER], Thresholds(**canary.get("thresholds", {}))
                )
            now = time.monotonic()
            self._dirty_since = self._dirty_since or now
            due = reason is not None or now - self._dirty_since >= PERSIST_EVERY_S
            arms = {arm: s.to_dict() for arm, s in self._arms.items()} if due else None
            if due:
                self._dirty_since = None
        if arms is not None:
            self._persist(choice.canary_id, arms)
        if reason is not None:
            self.store.rollback(f"automatic: {reason}", canary_id=choice.canary_id)
        return reason

    def flush(self) -> None:
        with self._lock:
            canary = self._state.get("canary") or {}
            if self._dirty_since is None or self._state.get("status") != "running":
                return
            arms = {arm: s.to_dict() for arm, s in self._arms.items()}
            self._dirty_since = None
        self._persist(canary.get("id"), arms)

    def _persist(self, canary_id: str | None, arms: dict[str, Any]) -> None:
        with self.store.edit() as state:
            canary = state.get("canary") or {}
            if canary.get("id") == canary_id:
                canary["arms"] = arms

    def health(self) -> dict[str, Any]:
        self._refresh()
        state = self._state
        champion = self._served.get() or state.get("champion")
        out: dict[str, Any] = {"status": state.get("status", "none"), "champion": champion}
        if state.get("status") == "running":
            canary = state["canary"]
            out |= {"challenger": canary["challenger"], "traffic": canary["traffic"],
                    "arms": {arm: s.summary() for arm, s in self._arms.items()}}
        return out
