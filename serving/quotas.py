"""Admission control: token buckets per ``tenant:queue``, in-flight caps, and bounded server queues.

Two layers decide whether a request runs:

1. per tenant (``configs/tenants.quotas.yaml``): a token bucket per ``tenant:queue`` (``rate``
   tokens/s, ``burst`` capacity), an in-flight cap per ``tenant:queue`` and one per tenant across
   queues. These are checked synchronously and never wait.
2. per server queue (``queues:`` in the same file): ``concurrency`` requests execute at once; up to
   ``max_waiting`` more wait, each at most ``max_wait_s``. This is what keeps admitted latency
   bounded when the machine is saturated: excess load is refused with 429 instead of piling up.

Every refusal carries ``retry_after`` in whole seconds (the HTTP ``Retry-After`` header), computed
from the bucket (time until enough tokens) or from the queue (waiting requests x mean service time).

The tenant layer has two implementations (:class:`TenantLimiter`): :class:`LocalLimiter` keeps the
buckets and counts in this process; ``serving.shared_state.SharedLimiter`` keeps them in a database
every replica shares (what the API uses). The server queues always belong to the process: they are
one replica's capacity.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

QUEUES = ("fast", "batch")
REPO_QUOTAS = Path(__file__).resolve().parents[1] / "configs" / "tenants.quotas.yaml"


class QuotaConfigError(ValueError):
    pass


class Throttled(Exception):
    """Refused admission; ``reason`` is one of rate | tenant_inflight | queue_full | queue_timeout."""

    def __init__(self, reason: str, retry_after: float, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.retry_after = max(1, math.ceil(retry_after))
        self.detail = detail


@dataclass(frozen=True)
class QueueLimits:
    rate: float  # tokens per second
    burst: float  # bucket capacity
    max_inflight: int  # per tenant:queue


@dataclass(frozen=True)
class ServerQueue:
    concurrency: int
    max_waiting: int
    max_wait_s: float


@dataclass(frozen=True)
class QuotaConfig:
    queues: dict[str, ServerQueue]
    defaults: dict[str, QueueLimits]
    default_tenant_inflight: int
    tenants: dict[str, dict[str, QueueLimits]] = field(default_factory=dict)
    tenant_inflight: dict[str, int] = field(default_factory=dict)
    source: str = "<built in>"

    def limits(self, tenant: str, queue: str) -> QueueLimits:
        return self.tenants.get(tenant, {}).get(queue, self.defaults[queue])

    def inflight_cap(self, tenant: str) -> int:
        return self.tenant_inflight.get(tenant, self.default_tenant_inflight)


def _limits(raw: Mapping[str, Any], base: QueueLimits | None, where: str) -> QueueLimits:
    unknown = set(raw) - {"rate", "burst", "max_inflight"}
    if unknown:
        raise QuotaConfigError(f"{where}: unknown keys {sorted(unknown)} (use rate, burst, max_inflight)")
    values = {**(base.__dict__ if base else {}), **raw}
    missing = {"rate", "burst", "max_inflight"} - set(values)
    if missing:
        raise QuotaConfigError(f"{where}: missing {sorted(missing)}")
    limits = QueueLimits(float(values["rate"]), float(values["burst"]), int(values["max_inflight"]))
    if limits.rate <= 0 or limits.burst < 1 or limits.max_inflight < 1:
        raise QuotaConfigError(f"{where}: need rate > 0, burst >= 1, max_inflight >= 1, got {limits}")
    return limits


def quota_config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> QuotaConfig:
    try:
        queues = {
            name: ServerQueue(int(q["concurrency"]), int(q["max_waiting"]), float(q["max_wait_s"]))
            for name, q in (data.get("queues") or {}).items()
        }
        defaults_raw = data.get("defaults") or {}
        defaults = {q: _limits(defaults_raw.get(q) or {}, None, f"{source}: defaults.{q}") for q in QUEUES}
        tenants: dict[str, dict[str, QueueLimits]] = {}
        tenant_inflight: dict[str, int] = {}
        for tenant, overrides in (data.get("tenants") or {}).items():
            overrides = dict(overrides or {})
            if "max_inflight" in overrides:
                tenant_inflight[tenant] = int(overrides.pop("max_inflight"))
            for q, raw in overrides.items():
                if q not in QUEUES:
                    raise QuotaConfigError(f"{source}: tenants.{tenant}: unknown queue {q!r} (use {QUEUES})")
                tenants.setdefault(tenant, {})[q] = _limits(raw or {}, defaults[q], f"{source}: tenants.{tenant}.{q}")
    except (KeyError, TypeError) as exc:
        raise QuotaConfigError(f"{source}: malformed quota configuration ({exc!r}); see {REPO_QUOTAS.name}") from exc
    if set(queues) != set(QUEUES):
        raise QuotaConfigError(f"{source}: queues must define exactly {QUEUES}, got {sorted(queues)}")
    return QuotaConfig(queues, defaults, int(defaults_raw.get("max_inflight", 4)), tenants, tenant_inflight, source)


def load_quota_config(path: Path | None = None) -> QuotaConfig:
    """``path`` (``CODEX_QUOTAS_CONFIG`` in the settings), else configs/tenants.quotas.yaml of the repository."""
    path = Path(path or REPO_QUOTAS)
    if not path.is_file():
        raise QuotaConfigError(f"quota configuration {path} not found (set CODEX_QUOTAS_CONFIG or restore it)")
    return quota_config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def queue_inflight_full(tenant: str, queue: str, limits: QueueLimits, retry_after: float) -> Throttled:
    return Throttled("tenant_inflight", retry_after,
                     f"tenant {tenant!r} already has {limits.max_inflight} {queue} requests in flight")


def tenant_inflight_full(tenant: str, cap: int, retry_after: float) -> Throttled:
    return Throttled("tenant_inflight", retry_after,
                     f"tenant {tenant!r} already has {cap} requests in flight across queues")


def over_quota(tenant: str, queue: str, limits: QueueLimits, wait_s: float) -> Throttled:
    return Throttled("rate", wait_s,
                     f"tenant {tenant!r} is over its {queue} quota ({limits.rate:g}/s, burst {limits.burst:g})")


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = now

    def _fill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float, now: float) -> float:
        """0.0 when ``cost`` tokens were taken, else the seconds until they would be available."""
        self._fill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def give_back(self, cost: float) -> None:
        self.tokens = min(self.burst, self.tokens + cost)


@dataclass
class Ticket:
    """An admitted request; ``release()`` exactly once when it finishes (or is refused by the queue).
    ``lease``: its row in the shared state (None in process memory)."""

    tenant: str
    queue: str
    cost: float
    released: bool = False
    lease: str | None = None


class TenantLimiter(Protocol):
    """The tenant layer: token buckets and in-flight caps. ``blocking``: calls do I/O (keep them off the
    event loop)."""

    blocking: bool

    def admit(self, tenant: str, queue: str, cost: float, limits: QueueLimits, tenant_cap: int,
              queues: Collection[str], busy_retry_s: float) -> Ticket:
        """Take ``cost`` tokens and an in-flight slot, or raise :class:`Throttled`."""
        ...

    def release(self, ticket: Ticket, limits: QueueLimits, *, refund: bool = False) -> None:
        """Free the ticket's slot (called once per ticket); ``refund``: give its tokens back."""
        ...

    def close(self) -> None: ...


class LocalLimiter:
    """Buckets and in-flight counts in this process: right for one process, N x the quota for N replicas."""

    blocking = False

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._inflight: dict[tuple[str, str], int] = {}
        self._tenant_inflight: dict[str, int] = {}

    def admit(self, tenant: str, queue: str, cost: float, limits: QueueLimits, tenant_cap: int,
              queues: Collection[str], busy_retry_s: float) -> Ticket:
        now = self._clock()
        with self._lock:
            key = (tenant, queue)
            if self._inflight.get(key, 0) >= limits.max_inflight:
                raise queue_inflight_full(tenant, queue, limits, busy_retry_s)
            if self._tenant_inflight.get(tenant, 0) >= tenant_cap:
                raise tenant_inflight_full(tenant, tenant_cap, busy_retry_s)
            bucket = self._buckets.get(key)
            if bucket is None or (bucket.rate, bucket.burst) != (limits.rate, limits.burst):
                bucket = self._buckets[key] = TokenBucket(limits.rate, limits.burst, now)
            wait = bucket.take(cost, now)
            if wait > 0:
                raise over_quota(tenant, queue, limits, wait)
            self._inflight[key] = self._inflight.get(key, 0) + 1
            self._tenant_inflight[tenant] = self._tenant_inflight.get(tenant, 0) + 1
        return Ticket(tenant, queue, cost)

    def release(self, ticket: Ticket, limits: QueueLimits, *, refund: bool = False) -> None:
        with self._lock:
            key = (ticket.tenant, ticket.queue)
            self._inflight[key] -= 1
            self._tenant_inflight[ticket.tenant] -= 1
            if refund and key in self._buckets:
                self._buckets[key].give_back(ticket.cost)

    def close(self) -> None:
        pass


class Admission:
    """Tenant layer (a :class:`TenantLimiter`, in process memory by default) + asyncio server-queue layer.
    Create inside the serving event loop."""

    def __init__(self, config: QuotaConfig, clock=time.monotonic, limiter: TenantLimiter | None = None):
        self.config = config
        self.limiter: TenantLimiter = limiter or LocalLimiter(clock)
        self._released_lock = threading.Lock()
        self._pending: set[asyncio.Future] = set()  # releases running off the event loop
        self._slots = {q: asyncio.Semaphore(c.concurrency) for q, c in config.queues.items()}
        self._waiting = dict.fromkeys(config.queues, 0)
        self._running = dict.fromkeys(config.queues, 0)
        self._service_s = {q: deque(maxlen=50) for q in config.queues}

    # ------------------------------------------------------------ tenant layer

    def admit(self, tenant: str, queue: str, cost: float = 1.0) -> Ticket:
        """Take ``cost`` tokens and an in-flight slot for ``tenant:queue`` or raise :class:`Throttled`.
        With a blocking limiter this waits for its store: from the event loop use :meth:`admit_async`."""
        limits = self.config.limits(tenant, queue)
        if cost > limits.burst:
            raise Throttled(
                "rate", 1,
                f"a request costing {cost:g} tokens can never fit tenant {tenant!r}'s {queue} burst of "
                f"{limits.burst:g}: send smaller batches",
            )
        return self.limiter.admit(tenant, queue, cost, limits, self.config.inflight_cap(tenant),
                                  tuple(self.config.queues), self._mean_service(queue))

    async def admit_async(self, tenant: str, queue: str, cost: float = 1.0) -> Ticket:
        """:meth:`admit` without holding up the event loop when the limiter waits for a database."""
        if not self.limiter.blocking:
            return self.admit(tenant, queue, cost)
        return await asyncio.to_thread(self.admit, tenant, queue, cost)

    def _claim(self, ticket: Ticket) -> bool:
        """True the first time a ticket is released (a ticket frees its slot once)."""
        with self._released_lock:
            if ticket.released:
                return False
            ticket.released = True
            return True

    def release(self, ticket: Ticket, *, refund: bool = False) -> None:
        if self._claim(ticket):
            self.limiter.release(ticket, self.config.limits(ticket.tenant, ticket.queue), refund=refund)

    def _release_soon(self, ticket: Ticket, *, refund: bool = False) -> None:
        """Release from the event loop: a blocking limiter's write runs in a thread, nobody waits for it."""
        if not self.limiter.blocking:
            self.release(ticket, refund=refund)
            return
        if not self._claim(ticket):
            return
        limits = self.config.limits(ticket.tenant, ticket.queue)
        future = asyncio.get_running_loop().run_in_executor(
            None, lambda: self.limiter.release(ticket, limits, refund=refund))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Wait for releases still being written, then close the limiter (a shared one frees this
        replica's remaining slots)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=10)
        if self.limiter.blocking:
            await asyncio.to_thread(self.limiter.close)
        else:
            self.limiter.close()

    # ------------------------------------------------------------ server queue layer

    def _mean_service(self, queue: str) -> float:
        samples = self._service_s[queue]
        return sum(samples) / len(samples) if samples else 1.0

    def depth(self, queue: str) -> int:
        """Requests admitted to ``queue`` and not finished: waiting + running."""
        return self._waiting[queue] + self._running[queue]

    async def run(self, ticket: Ticket, work):
        """Wait (bounded) for a server slot of the ticket's queue, then ``await work()``.

        Raises :class:`Throttled` (and refunds the tenant's tokens) when the queue is full or the
        wait would exceed ``max_wait_s``.
        """
        queue, limits = ticket.queue, self.config.queues[ticket.queue]
        try:
            if self._waiting[queue] >= limits.max_waiting and self._slots[queue].locked():
                raise Throttled(
                    "queue_full",
                    (self._waiting[queue] + 1) * self._mean_service(queue) / limits.concurrency,
                    f"the {queue} queue is full ({limits.max_waiting} waiting, {limits.concurrency} running)",
                )
            self._waiting[queue] += 1
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can drop an acquired permit at the deadline.
                async with asyncio.timeout(limits.max_wait_s):
                    await self._slots[queue].acquire()
            except TimeoutError:
                raise Throttled(
                    "queue_timeout",
                    self._waiting[queue] * self._mean_service(queue) / limits.concurrency,
                    f"no {queue} slot became free within {limits.max_wait_s:g}s",
                ) from None
            finally:
                self._waiting[queue] -= 1
        except Throttled:
            self._release_soon(ticket, refund=True)
            raise
        self._running[queue] += 1
        started = time.perf_counter()
        try:
            return await work()
        finally:
            self._service_s[queue].append(time.perf_counter() - started)
            self._running[queue] -= 1
            self._slots[queue].release()
            self._release_soon(ticket)

    def snapshot(self) -> dict[str, Any]:
        return {
            q: {"waiting": self._waiting[q], "running": self._running[q], **self.config.queues[q].__dict__}
            for q in self.config.queues
        }

