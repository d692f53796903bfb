"""GPU governor: read NVML, and under memory or heat pressure demote generation to the small route
with fewer new tokens.

- :class:`NvmlReader` reads every GPU through pynvml. Without the NVML library (no GPU, as on the
  CI machines) it raises :class:`GpuUnavailable` and the governor is inert: no demotion, GPU gauges
  absent from ``/metrics``, and ``/v1/health`` says ``gpu: {available: false, reason}``.
  ``read_energy`` gives the GPUs' power and energy counters to a request's cost (:mod:`codex_core.cost`).
- :class:`GpuGovernor` turns samples into a :class:`GovernorDecision` (sampled at most every
  ``sample_every_s``), logging every change of decision.
- :class:`GovernedAnswerer` applies the decision to the stock :class:`~codex_core.llm.Answerer`
  without changing it: ``route()`` is demoted to ``small`` and each backend call's ``max_tokens``
  is capped (backends are wrapped when the answerer is built).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from codex_core.cost import EnergyReading
from codex_core.llm import Answerer, ContextChunk, RouteDecision
from codex_core.llm.backends import Backend, ChatReply, make_backend
from codex_core.llm.config import LLMConfig, load_config

log = logging.getLogger("codex.serving.gpu")

MEMORY_THRESHOLD = 0.85  # fraction of VRAM in use
TEMPERATURE_THRESHOLD_C = 83.0
GOVERNED_MAX_NEW_TOKENS = 256


class GpuUnavailable(RuntimeError):
    """NVML cannot be used here (no driver / library, no device); the message says why."""


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: float
    temperature_celsius: float

    @property
    def memory_fraction(self) -> float:
        return self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


class GpuReader(Protocol):
    def read(self) -> list[GpuSample]:
        """Every GPU's current sample; raises :class:`GpuUnavailable` when NVML cannot be used."""
        ...


class NvmlReader:
    """pynvml, initialised on first use; an init failure is remembered (checked again every 60 s)."""

    def __init__(self, retry_init_s: float = 60.0):
        self._ready = False
        self._failed_at: float | None = None
        self._reason = ""
        self._retry = retry_init_s
        self._lock = threading.Lock()

    def _init(self):
        import pynvml  # from nvidia-ml-py (the maintained package; the old `pynvml` wrapper warned)
        if self._ready:
            return pynvml
        if self._failed_at is not None and time.monotonic() - self._failed_at < self._retry:
            raise GpuUnavailable(self._reason)
        try:
            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                raise GpuUnavailable("NVML reports no GPU")
        except GpuUnavailable as exc:
            self._failed_at, self._reason = time.monotonic(), str(exc)
            raise
        except Exception as exc:  # NVMLError_LibraryNotFound, driver mismatch, ...
            self._failed_at = time.monotonic()
            self._reason = f"{type(exc).__name__}: {exc}"
            raise GpuUnavailable(self._reason) from exc
        self._ready = True
        return pynvml

    def read(self) -> list[GpuSample]:
        with self._lock:
            nvml = self._init()
            try:
                samples = []
                for i in range(nvml.nvmlDeviceGetCount()):
                    handle = nvml.nvmlDeviceGetHandleByIndex(i)
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    name = nvml.nvmlDeviceGetName(handle)
                    samples.append(GpuSample(
                        index=i,
                        name=name.decode() if isinstance(name, bytes) else str(name),
                        memory_used_bytes=int(memory.used),
                        memory_total_bytes=int(memory.total),
                        utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                        temperature_celsius=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                    ))
                return samples
            except Exception as exc:
                raise GpuUnavailable(f"NVML read failed: {type(exc).__name__}: {exc}") from exc

    def read_energy(self) -> EnergyReading:
        """Every GPU's power now, summed, and their total-energy counters (None when a GPU has none:
        the counter exists from Volta on); raises :class:`GpuUnavailable` when NVML cannot be used."""
        with self._lock:
            nvml = self._init()
            try:
                watts, joules = 0.0, 0.0
                counted = True
                for i in range(nvml.nvmlDeviceGetCount()):
                    handle = nvml.nvmlDeviceGetHandleByIndex(i)
                    watts += nvml.nvmlDeviceGetPowerUsage(handle) / 1000  # milliwatts
                    try:
                        joules += nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000  # millijoules
                    except nvml.NVMLError:
                        counted = False
                return EnergyReading(joules if counted else None, watts)
            except Exception as exc:
                raise GpuUnavailable(f"NVML power read failed: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class GovernorDecision:
    demote: bool = False
    force_route: str | None = None  # "small" when demoted
    max_new_tokens: int | None = None  # cap for every generation when demoted
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"demote": self.demote, "force_route": self.force_route, "max_new_tokens": self.max_new_tokens,
                "reasons": list(self.reasons)}


INERT = GovernorDecision()


def decide(
    samples: list[GpuSample], *, memory_threshold: float = MEMORY_THRESHOLD,
    temperature_threshold_c: float = TEMPERATURE_THRESHOLD_C, max_new_tokens: int = GOVERNED_MAX_NEW_TOKENS,
) -> GovernorDecision:
    """Demote when any GPU is above the VRAM fraction or the temperature threshold."""
    reasons = []
    for s in samples:
        if s.memory_fraction > memory_threshold:
            reasons.append(f"gpu{s.index} VRAM {s.memory_fraction:.0%} > {memory_threshold:.0%}")
        if s.temperature_celsius > temperature_threshold_c:
            reasons.append(f"gpu{s.index} {s.temperature_celsius:.0f}C > {temperature_threshold_c:.0f}C")
    if not reasons:
        return INERT
    return GovernorDecision(True, "small", max_new_tokens, tuple(reasons))


@dataclass
class GpuGovernor:
    reader: GpuReader = field(default_factory=NvmlReader)
    memory_threshold: float = MEMORY_THRESHOLD
    temperature_threshold_c: float = TEMPERATURE_THRESHOLD_C
    max_new_tokens: int = GOVERNED_MAX_NEW_TOKENS
    sample_every_s: float = 2.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._sampled_at = float("-inf")
        self._samples: list[GpuSample] = []
        self._unavailable: str | None = None
        self._decision = INERT

    def _sample(self) -> None:
        now = time.monotonic()
        if now - self._sampled_at < self.sample_every_s:
            return
        with self._lock:
            if now - self._sampled_at < self.sample_every_s:
                return
            self._sampled_at = now
            try:
                self._samples, self._unavailable = self.reader.read(), None
            except GpuUnavailable as exc:
                self._samples, self._unavailable = [], str(exc)
            decision = decide(
                self._samples, memory_threshold=self.memory_threshold,
                temperature_threshold_c=self.temperature_threshold_c, max_new_tokens=self.max_new_tokens,
            )
            if decision != self._decision:
                log.warning(json.dumps({
                    "ts": time.time(), "svc": "codex-serving", "event": "gpu_governor",
                    "decision": decision.to_dict(), "previous": self._decision.to_dict(),
                }))
            self._decision = decision

    def decision(self) -> GovernorDecision:
        self._sample()
        return self._decision

    def samples(self) -> list[GpuSample]:
        self._sample()
        return list(self._samples)

    def health(self) -> dict[str, Any]:
        self._sample()
        if self._unavailable is not None:
            return {"available": False, "reason": self._unavailable, "governor": "inert"}
        return {
            "available": True,
            "governor": "demoting" if self._decision.demote else "normal",
            "decision": self._decision.to_dict(),
            "gpus": [
                {"index": s.index, "name": s.name, "memory_fraction": round(s.memory_fraction, 4),
                 "utilization_percent": s.utilization_percent, "temperature_celsius": s.temperature_celsius}
                for s in self._samples
            ],
        }


class _CappedBackend:
    """A backend whose ``max_tokens`` is capped while the governor demotes."""

    def __init__(self, inner: Backend, governor: GpuGovernor):
        self.inner, self.governor = inner, governor

    def chat(self, model: str, messages: list[dict[str, str]], *, max_tokens: int, **kwargs: Any) -> ChatReply:
        cap = self.governor.decision().max_new_tokens
        return self.inner.chat(model, messages, max_tokens=min(max_tokens, cap) if cap else max_tokens, **kwargs)

    def chat_stream(self, model: str, messages: list[dict[str, str]], *, max_tokens: int,
                    **kwargs: Any) -> Iterator[str | ChatReply]:
        cap = self.governor.decision().max_new_tokens
        return self.inner.chat_stream(model, messages, max_tokens=min(max_tokens, cap) if cap else max_tokens, **kwargs)

    def list_models(self, timeout: float) -> list[str]:
        return self.inner.list_models(timeout)

    def close(self) -> None:
        self.inner.close()


class GovernedAnswerer(Answerer):
    """The stock Answerer, with routes and token budgets taken down while the GPU is under pressure."""

    def __init__(self, config: LLMConfig, governor: GpuGovernor, *, backends: Mapping[str, Backend] | None = None):
        self.governor = governor
        built: dict[str, Backend] = dict(backends or {})
        for spec in config.models.values():
            if spec.backend_id not in built:
                built[spec.backend_id] = make_backend(
                    spec.backend, spec.base_url, connect_timeout=config.connect_timeout, api_key=config.api_key(spec)
                )
        super().__init__(config, backends={bid: _CappedBackend(b, governor) for bid, b in built.items()})

    @classmethod
    def governed(cls, governor: GpuGovernor, path: Path | None = None, **kwargs: Any) -> GovernedAnswerer:
        return cls(load_config(path, **kwargs), governor)

    def route(self, query: str, contexts: list[ContextChunk]) -> RouteDecision:
        decision = super().route(query, contexts)
        forced = self.governor.decision().force_route
        if forced and decision.route != forced:
            return replace(decision, route=forced)
        return decision
