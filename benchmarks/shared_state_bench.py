"""What admission costs when quotas and the kill-switch are shared across replicas.

Compares, in one run on one machine:

* ``memory``      ``LocalLimiter``: token buckets and in-flight counts in this process (before; N replicas
                  would hand out N x every quota)
* ``sqlite``      ``SharedLimiter`` on ``shared_state.sqlite`` in a temporary directory (WAL,
                  ``BEGIN IMMEDIATE``): replicas on one host
* ``postgresql``  ``SharedLimiter`` on PostgreSQL (``SELECT ... FOR UPDATE``): a throwaway local server
                  started by ``tests/support/postgres.py`` (trust auth, fsync off), or ``--pg-url``

Per backend, one thread (what one request pays, without contention):

* ``admit+release``: ``Admission.admit`` then ``Admission.release`` of one tenant: the in-flight caps,
  the bucket refill and take, the lease written and deleted
* ``kill-switch read``: what every query's gate reads; for ``memory`` the previous implementation, one
  ``stat`` of ``kill_switch.json`` (``ReloadingFile``)

Then contention: two "replicas" (two ``SharedState`` connection pools) x ``--threads`` threads each try
to admit one tenant whose burst is ``--burst`` (no refill): exactly ``--burst`` must pass, and the
attempts per second are reported.

Run: ``.venv/bin/python benchmarks/shared_state_bench.py --n 2000``
(writes ``benchmarks/out/shared_state_bench.json``)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _setup  # noqa: F401  (first: the project importable)
from _setup import OUT_DIR

from codex_core.fsio import ReloadingFile, write_json_atomic
from serving.killswitch import KillSwitch
from serving.quotas import Admission, QueueLimits, quota_config_from_dict
from serving.shared_state import SQLITE_FILE, SharedLimiter, SharedState

OPEN_QUOTAS = {
    "queues": {"fast": {"concurrency": 2, "max_waiting": 64, "max_wait_s": 30},
               "batch": {"concurrency": 1, "max_waiting": 64, "max_wait_s": 30}},
    "defaults": {"max_inflight": 10_000, "fast": {"rate": 1e9, "burst": 1e9, "max_inflight": 10_000},
                 "batch": {"rate": 1e9, "burst": 1e9, "max_inflight": 10_000}},
}


def timed(n: int, step: Callable[[], Any]) -> dict[str, float]:
    for _ in range(min(50, n)):  # warm: connections open, tables created, statements cached
        step()
    samples = []
    cpu_started = time.process_time()
    for _ in range(n):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu_started
    samples.sort()
    return {
        # This process's CPU (all threads) per call: steadier than wall time on a shared machine;
        # PostgreSQL's own CPU is in its server process and not counted.
        "client_cpu_us": round(cpu / n * 1e6, 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
        "p50_us": round(samples[len(samples) // 2] * 1e6, 1),
        "p95_us": round(samples[int(len(samples) * 0.95)] * 1e6, 1),
    }


def admission(store: SharedState | None) -> Admission:
    config = quota_config_from_dict(OPEN_QUOTAS)

    async def build() -> Admission:  # its server queues are asyncio objects: made inside a loop
        return Admission(config, limiter=SharedLimiter(store) if store else None)

    return asyncio.run(build())


def single_thread(name: str, store: SharedState | None, n: int, scratch: Path) -> dict[str, Any]:
    adm = admission(store)
    admit_release = timed(n, lambda: adm.release(adm.admit("bench", "fast")))
    if store is None:
        path = scratch / "kill_switch.json"
        write_json_atomic(path, {"on": False, "reason": "", "set_by": "", "set_at": None})
        file = ReloadingFile(path, lambda p: json.loads(p.read_text()), None)
        kill_read = timed(n, file.get)
    else:
        switch = KillSwitch(store)
        switch.set(False, set_by="bench")
        kill_read = timed(n, switch.state)
    adm.limiter.close()
    return {"backend": name, "admit_release": admit_release, "kill_switch_read": kill_read}


def contention(url: str, burst: int, threads: int, attempts: int) -> dict[str, Any]:
    stores = [SharedState(url) for _ in range(2)]
    limits = QueueLimits(rate=1e-6, burst=burst, max_inflight=1_000_000)
    tenant = f"contended-{time.time_ns()}"
    admitted: list[int] = []
    errors: list[str] = []

    def replica_thread(store: SharedState) -> None:
        ok = 0
        try:
            for _ in range(attempts):
                ok += store.take(tenant, "fast", ("batch", "fast"), 1, limits, 1_000_000, "bench", 30).lease is not None
        except Exception as exc:  # reported, not hidden: a lock timeout here is a finding
            errors.append(f"{type(exc).__name__}: {exc}")
        admitted.append(ok)

    workers = [threading.Thread(target=replica_thread, args=(s,)) for s in stores for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    for store in stores:
        store.close()
    tried = len(workers) * attempts
    return {"replicas": 2, "threads_per_replica": threads, "attempts": tried, "burst": burst,
            "admitted": sum(admitted), "exact": sum(admitted) == burst and not errors,
            "attempts_per_s": round(tried / seconds), "errors": errors[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="timed calls per measurement")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="threads per replica in the contention run")
    parser.add_argument("--attempts", type=int, default=200, help="admissions each thread tries")
    parser.add_argument("--pg-url", help="an existing PostgreSQL database (default: start a throwaway server)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    server = None
    pg_url = args.pg_url
    if pg_url is None:
        from tests.support.postgres import PostgresServer, unavailable_reason

        reason = unavailable_reason()
        if reason:
            print(f"PostgreSQL skipped: {reason}")
        else:
            server = PostgresServer.start()
            pg_url = server.create_database("shared_state_bench")
    results: list[dict[str, Any]] = []
    contended: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="codex-shared-state-") as tmp:
            scratch = Path(tmp)
            sqlite_url = f"sqlite:///{scratch / SQLITE_FILE}"
            backends: list[tuple[str, str | None]] = [("memory", None), ("sqlite", sqlite_url)]
            if pg_url:
                backends.append(("postgresql", pg_url))
            for name, url in backends:
                store = SharedState(url) if url else None
                results.append(single_thread(name, store, args.n, scratch))
                if store is not None:
                    store.close()
                    contended[name] = contention(url, args.burst, args.threads, args.attempts)
    finally:
        if server is not None:
            server.stop()

    base = results[0]
    for row in results:
        for what in ("admit_release", "kill_switch_read"):
            row[what]["x_memory_p50"] = round(row[what]["p50_us"] / base[what]["p50_us"], 1)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
              "load_average_before_after": [load_before, os.getloadavg()], "n": args.n,
              "single_thread": results, "contention": contended}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "shared_state_bench.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"machine load average before/after: {load_before} / {os.getloadavg()}")
    print(f"{'backend':<11} {'admit+release p50 / p95 us':>27} {'x memory':>9} {'cpu us':>7} "
          f"{'kill-switch read p50 / p95 us':>30} {'x memory':>9} {'cpu us':>7}")
    for row in results:
        ar, ks = row["admit_release"], row["kill_switch_read"]
        print(f"{row['backend']:<11} {ar['p50_us']:>16.1f} / {ar['p95_us']:<8.1f} {ar['x_memory_p50']:>9} "
              f"{ar['client_cpu_us']:>7.1f} {ks['p50_us']:>19.1f} / {ks['p95_us']:<8.1f} {ks['x_memory_p50']:>9} "
              f"{ks['client_cpu_us']:>7.1f}")
    for name, c in contended.items():
        print(f"contention {name}: {c['admitted']} of {c['attempts']} admitted for a burst of {c['burst']} "
              f"({'exact' if c['exact'] else 'WRONG'}), {c['attempts_per_s']} attempts/s over "
              f"{c['replicas']} replicas x {c['threads_per_replica']} threads"
              + (f"; errors: {c['errors']}" if c['errors'] else ""))


if __name__ == "__main__":
    main()
