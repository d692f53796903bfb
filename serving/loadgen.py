"""Open-loop load against a real query endpoint: QPS levels -> P50/P95 of admitted queries, 429s, errors.

Requests are sent on a fixed schedule (``1/qps`` apart) whatever the server does, so an overloaded
server shows up as queueing, 429s or errors rather than as a politely slower client. Each level
writes one CSV row; :func:`plot` draws latency and outcome shares against offered QPS.
Used by ``feriactl simulate``; docs/operations.md records what was measured.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from codex_core.metrics import percentile

DEFAULT_QUERIES = (
    "where is the configuration parsed?",
    "how are failed requests retried?",
    "what does the main entry point do?",
    "how is the index published?",
    "where are errors reported to the user?",
    "how are files read from git?",
    "which function computes the total?",
    "how does the cache evict old entries?",
    "where is the health endpoint implemented?",
    "how are command line arguments handled?",
    "what happens when a request times out?",
    "where are citations verified?",
)
ADMITTED_P95_TARGET_S = 1.5


@dataclass
class LevelResult:
    qps_target: float
    duration_s: float
    sent: int
    ok: int
    throttled_429: int
    errors_5xx: int
    transport_errors: int
    other_4xx: int
    achieved_qps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    ok_fast: int
    ok_batch: int
    p95_fast_ms: float | None
    p95_batch_ms: float | None
    server_p50_ms: float | None = None  # from Server-Timing: time inside the app, without client/TCP queueing
    server_p95_ms: float | None = None
    transport_error_kinds: str = ""  # e.g. "ReadTimeout:2;ConnectError:1"

    @property
    def errors(self) -> int:
        return self.errors_5xx + self.transport_errors

    @property
    def sustainable(self) -> bool:
        """Everything admitted, nothing failed, admitted P95 within target."""
        return (self.throttled_429 == 0 and self.errors == 0 and self.p95_ms is not None
                and self.p95_ms <= ADMITTED_P95_TARGET_S * 1000)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(percentile(values, q * 100, method="nearest"), 1) if values else None


def _server_timing(header: str | None) -> float | None:
    """``app;dur=12.5`` -> 12.5."""
    if not header:
        return None
    for part in header.split(";"):
        if part.strip().startswith("dur="):
            try:
                return float(part.strip()[4:])
            except ValueError:
                return None
    return None


def parse_mix(text: str) -> dict[str, float]:
    """``fast=80,batch=20`` -> {"fast": 0.8, "batch": 0.2}."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("fast", "batch") or not value.strip():
            raise ValueError(f"bad --mix entry {part!r}: use e.g. fast=80,batch=20")
        mix[name] = float(value)
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("--mix shares must add up to more than 0")
    return {k: v / total for k, v in mix.items()}


def _queue_sequence(mix: Mapping[str, float], n: int) -> list[str]:
    """Deterministic interleaving with the requested shares (error-diffusion, no randomness)."""
    credit = dict.fromkeys(mix, 0.0)
    out = []
    for _ in range(n):
        for k in credit:
            credit[k] += mix[k]
        pick = max(credit, key=lambda k: credit[k])
        credit[pick] -= 1.0
        out.append(pick)
    return out


async def run_level(
    url: str, qps: float, duration_s: float, *, mix: Mapping[str, float], queries: Sequence[str] = DEFAULT_QUERIES,
    tenants: int = 4, headers: Mapping[str, str] | None = None, timeout_s: float = 30.0,
) -> LevelResult:
    total = max(1, int(round(qps * duration_s)))
    queues = _queue_sequence(mix, total)
    outcomes: list[tuple[str, int | None, float]] = []  # (queue, status or None, seconds)
    server_ms: list[float] = []  # Server-Timing of admitted requests: time inside the app
    failures: dict[str, int] = {}
    # keepalive_expiry under uvicorn's 5 s keep-alive: never reuse a connection the server is closing.
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, headers=dict(headers or {}), timeout=timeout_s, limits=limits) as client:

        async def one(i: int) -> None:
            body: dict[str, Any] = {"query": queries[i % len(queries)], "top_k": 5, "mode": queues[i]}
            if tenants > 0:
                body["tenant"] = f"sim-{i % tenants}"
            started = time.perf_counter()
            try:
                response = await client.post("/v1/query", json=body)
                outcomes.append((queues[i], response.status_code, time.perf_counter() - started))
                timing = _server_timing(response.headers.get("server-timing"))
                if response.status_code == 200 and timing is not None:
                    server_ms.append(timing)
            except httpx.HTTPError as exc:
                outcomes.append((queues[i], None, time.perf_counter() - started))
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

        t0 = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = t0 + i / qps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    ok = [s * 1000 for _, st, s in outcomes if st == 200]
    ok_by = {q: [s * 1000 for qq, st, s in outcomes if st == 200 and qq == q] for q in ("fast", "batch")}
    return LevelResult(
        qps_target=qps, duration_s=duration_s, sent=total, ok=len(ok),
        throttled_429=sum(1 for _, st, _ in outcomes if st == 429),
        errors_5xx=sum(1 for _, st, _ in outcomes if st is not None and st >= 500),
        transport_errors=sum(1 for _, st, _ in outcomes if st is None),
        other_4xx=sum(1 for _, st, _ in outcomes if st is not None and 400 <= st < 500 and st != 429),
        achieved_qps=round(total / elapsed, 2),
        p50_ms=_percentile(ok, 0.50), p95_ms=_percentile(ok, 0.95), p99_ms=_percentile(ok, 0.99),
        max_ms=round(max(ok), 1) if ok else None,
        ok_fast=len(ok_by["fast"]), ok_batch=len(ok_by["batch"]),
        p95_fast_ms=_percentile(ok_by["fast"], 0.95), p95_batch_ms=_percentile(ok_by["batch"], 0.95),
        server_p50_ms=_percentile(server_ms, 0.50), server_p95_ms=_percentile(server_ms, 0.95),
        transport_error_kinds=";".join(f"{k}:{v}" for k, v in sorted(failures.items())),
    )


def sweep(url: str, levels: Sequence[float], duration_s: float, *, pause_s: float = 2.0, **kwargs: Any
          ) -> list[LevelResult]:
    results = []
    for i, qps in enumerate(levels):
        if i:
            time.sleep(pause_s)  # let token buckets refill between levels
        results.append(asyncio.run(run_level(url, qps, duration_s, **kwargs)))
    return results


def default_levels(qps: float) -> list[float]:
    return sorted({round(q, 2) for q in (qps / 2, qps, 2 * qps) if q > 0})


def write_csv(results: Sequence[LevelResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(LevelResult)] + ["errors", "sustainable"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for r in results:
            writer.writerow({**asdict(r), "errors": r.errors, "sustainable": r.sustainable})
    return path


def plot(results: Sequence[LevelResult], path: Path, title: str = "Precision Codex query API") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qps = [r.qps_target for r in results]
    fig, (lat, share) = plt.subplots(1, 2, figsize=(11, 4))
    lat.plot(qps, [r.p50_ms or float("nan") for r in results], "o-", label="P50 (admitted)")
    lat.plot(qps, [r.p95_ms or float("nan") for r in results], "s-", label="P95 (admitted)")
    lat.plot(qps, [r.server_p95_ms or float("nan") for r in results], "^--", label="P95 inside the server")
    lat.axhline(ADMITTED_P95_TARGET_S * 1000, color="red", linestyle="--", label="P95 target 1.5 s")
    lat.set_xlabel("offered QPS")
    lat.set_ylabel("latency (ms)")
    lat.legend()
    lat.grid(alpha=0.3)
    sent = [max(1, r.sent) for r in results]
    share.plot(qps, [r.ok / s for r, s in zip(results, sent, strict=True)], "o-", label="200")
    share.plot(qps, [r.throttled_429 / s for r, s in zip(results, sent, strict=True)], "s-", label="429")
    share.plot(qps, [r.errors / s for r, s in zip(results, sent, strict=True)], "x-", label="5xx / transport")
    share.set_xlabel("offered QPS")
    share.set_ylabel("share of requests")
    share.set_ylim(-0.05, 1.05)
    share.legend()
    share.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------ a local server to drive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``uvicorn serving.app:create_app`` on 127.0.0.1 in a child process (its own session), for one run."""

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None, startup_s: float = 180.0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env, self._log_path, self._startup = dict(env), log_path, startup_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self._log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=Path(__file__).resolve().parents[1], env=self._env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self._startup
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the query API exited with {self.proc.returncode}; see {self._log_path}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the query API did not answer /v1/health within {self._startup:g}s; see {self._log_path}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
