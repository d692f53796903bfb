"""What one request cost: wall and CPU seconds, and energy — measured where it can be, labelled where not.

``CostMeter`` is shared by every request of one engine; ``meter.start()`` opens one request's
``RequestMeter`` and ``finish()``, in the same thread (thread CPU time is per thread), closes it into
a ``RequestCost``. What is measured:

- ``wall_s``: ``time.perf_counter`` from start to finish.
- ``cpu_s``: CPU seconds of this process, plus those of a local model server when its pid is known.
  This process: when no other request ran at any moment of this one, the CPU time of the whole
  process (``time.process_time``: torch's intra-op threads included — the calling thread alone runs
  only about half of an embedding's CPU on 2 cores, measured here); when requests overlapped, only
  the handling thread's (``time.thread_time``), a lower bound, since the process's CPU would count
  the other requests' work too (``cpu_scope`` says which). A model server: the ``utime + stime`` of
  a local llama-server that ``feriactl llm up --detach`` recorded (``/proc/<pid>/stat``, read at start
  and finish) — when requests overlapped it is shared, and each of them counts it (``overlapped``).
  A remote server's CPU (Ollama elsewhere, a hosted API) is not measured at all.
- ``energy_j``: with a readable GPU, NVML (``energy_method="nvml"``): the difference of the GPUs'
  total-energy counters, or, on GPUs without one, the power at start and finish times the wall
  time; it is the GPUs' energy over the request's wall time, whoever used them. Without one,
  ``cpu_s × watts_per_core`` (``energy_method="estimate:cpu-time"``; ``CODEX_CPU_WATTS_PER_CORE``,
  default 3.5 W: Cloud Carbon Footprint's average power of one AWS vCPU at 100 % load, derived from
  SPECpower_ssj2008 — https://www.cloudcarbonfootprint.org/docs/methodology/ ). An estimate, and
  labelled as one.

Metering never fails a request: a GPU that cannot be read is the CPU estimate, a pid that cannot be
read is no model-server CPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codex_core.llm.local_server import ServerRecords, is_running
from codex_core.llm.types import Usage

NVML = "nvml"
CPU_ESTIMATE = "estimate:cpu-time"
DEFAULT_WATTS_PER_CORE = 3.5
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class EnergyReading:
    """The GPUs now: ``joules``, their total-energy counter (None when a GPU has none); ``watts``, their power."""

    joules: float | None
    watts: float


@dataclass(frozen=True)
class RequestCost:
    wall_s: float
    cpu_s: float  # what the energy estimate multiplies: this process's share plus the model server's
    cpu_scope: str  # "process" | "thread", "+model-server" when a local model server was measured
    thread_cpu_s: float
    process_cpu_s: float  # the whole process, other requests included when they overlapped
    model_server_cpu_s: float | None  # None: no local model server with a known pid
    overlapped: bool  # another request ran at some moment of this one
    energy_j: float
    energy_method: str  # "nvml" | "estimate:cpu-time"
    watts_per_core: float | None  # the estimate's constant; None when NVML measured

    def trace(self, usage: Usage | None) -> dict[str, Any]:
        """The trace's ``cost`` block: this, plus the tokens and calls of the generation walk."""
        usage = usage or Usage()
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "calls": usage.calls,
            "tokens_estimated": usage.estimated,
            "by_model": usage.to_dict()["by_model"],
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "cpu_scope": self.cpu_scope,
            "cpu": {"thread_s": round(self.thread_cpu_s, 4), "process_s": round(self.process_cpu_s, 4),
                    "model_server_s": None if self.model_server_cpu_s is None else round(self.model_server_cpu_s, 4)},
            "overlapped": self.overlapped,
            "energy_j": round(self.energy_j, 4),
            "energy_method": self.energy_method,
            "watts_per_core": self.watts_per_core,
        }


def process_cpu_seconds(pid: int) -> float | None:
    """``utime + stime`` of ``pid`` (all its threads) from ``/proc/<pid>/stat``; None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3 of proc(5), utime 14 and stime 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class LocalModelServers:
    """Pids of the running local model servers that serve ``base_urls``, from the pid records of
    ``feriactl llm up --detach`` (``CODEX_HOME/llm``); re-read at most every ``ttl_s`` seconds."""

    def __init__(self, records_dir: Path, base_urls: Iterable[str], *, ttl_s: float = 10.0) -> None:
        self.records = ServerRecords(records_dir)
        self.endpoints = {_endpoint(url) for url in base_urls}
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._pids: list[int] = []

    def __call__(self) -> list[int]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl_s:
                self._read_at = time.monotonic()
                self._pids = [r.pid for r in self.records.all()
                              if _endpoint(r.base_url) in self.endpoints and is_running(r)]
            return list(self._pids)


def _endpoint(url: str) -> tuple[str, int | None]:
    """(host, port) with every loopback spelling as one host: the record and models.toml may differ."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    with contextlib.suppress(ValueError):
        return ("loopback" if host in _LOOPBACK else host, parts.port)
    return (host, None)


class CostMeter:
    """Opens a ``RequestMeter`` per request and knows which requests overlapped (see the module docstring)."""

    def __init__(
        self, *, watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        gpu_energy: Callable[[], EnergyReading] | None = None,
        model_server_pids: Callable[[], list[int]] | None = None,
    ) -> None:
        if not watts_per_core > 0:
            raise ValueError(f"watts per busy core must be > 0, got {watts_per_core!r} "
                             "(CODEX_CPU_WATTS_PER_CORE; the default is 3.5)")
        self.watts_per_core = watts_per_core
        self.gpu_energy = gpu_energy
        self.model_server_pids = model_server_pids
        self._lock = threading.Lock()
        self._inflight = 0
        self._started = 0

    def start(self) -> RequestMeter:
        with self._lock:
            self._inflight += 1
            self._started += 1
            alone_at_start = self._inflight == 1
            number = self._started
        return RequestMeter(self, number, alone_at_start)

    def _end(self, number: int) -> bool:
        """True when no request started after request ``number`` while it ran; once per request."""
        with self._lock:
            self._inflight -= 1
            return self._started == number

    def _gpu(self) -> EnergyReading | None:
        if self.gpu_energy is None:
            return None
        try:
            return self.gpu_energy()
        except Exception:  # no GPU, no driver, a device that cannot say: the CPU estimate applies
            return None

    def _model_servers(self) -> dict[int, float]:
        if self.model_server_pids is None:
            return {}
        try:
            pids = self.model_server_pids()
        except Exception:  # unreadable records must not fail a request; the figure says "not measured"
            return {}
        return {pid: seconds for pid in pids if (seconds := process_cpu_seconds(pid)) is not None}


class RequestMeter:
    """One request's meter: readings taken at start; ``finish()`` takes them again and tells the cost."""

    def __init__(self, meter: CostMeter, number: int, alone_at_start: bool) -> None:
        self._meter = meter
        self._alone_at_start = alone_at_start
        # A request that raised never calls finish(): dropping its meter ends it, or every later
        # request would count as overlapped.
        self._end = weakref.finalize(self, meter._end, number)
        self._gpu = meter._gpu()
        self._servers = meter._model_servers()
        self._wall = time.perf_counter()
        self._thread = time.thread_time()
        self._process = time.process_time()
        self._cost: RequestCost | None = None

    def finish(self) -> RequestCost:
        """The cost so far; the first call closes the request (later calls return the same cost)."""
        if self._cost is not None:
            return self._cost
        wall = time.perf_counter() - self._wall
        thread = time.thread_time() - self._thread
        process = time.process_time() - self._process
        overlapped = not (self._end() and self._alone_at_start)
        servers_now = self._meter._model_servers()
        shared = [servers_now[pid] - before for pid, before in self._servers.items() if pid in servers_now]
        server = sum(shared) if shared else None
        own = thread if overlapped else process
        cpu = own + (server or 0.0)
        scope = ("thread" if overlapped else "process") + ("+model-server" if server is not None else "")
        energy, method, watts = self._energy(wall, cpu)
        self._cost = RequestCost(wall, cpu, scope, thread, process, server, overlapped, energy, method, watts)
        return self._cost

    def _energy(self, wall: float, cpu: float) -> tuple[float, str, float | None]:
        before, after = self._gpu, (self._meter._gpu() if self._gpu is not None else None)
        if before is not None and after is not None:
            if before.joules is not None and after.joules is not None and after.joules >= before.joules:
                return after.joules - before.joules, NVML, None
            return (before.watts + after.watts) / 2 * wall, NVML, None
        watts = self._meter.watts_per_core
        return cpu * watts, CPU_ESTIMATE, watts
