"""Scale-out on one machine, in one run: the queued coordinator vs one at a time, 1 vs 2 query replicas.

    .venv/bin/python benchmarks/scale_out_bench.py [--repos koa,ky,marshmallow] [--max-files 30]
                                                   [--phase-seconds 12] [--rounds 5] [--concurrency 8]

Repositories: the first ``--max-files`` files (by path, languages other than plain text) of each bare
clone under ``--source-dir`` (default /work/locrepos), at its HEAD, committed once into a fresh git
repository: one commit, so no evaluation run follows a publish and both modes do the same work.

(a) Ingest of the three, cold (each mode has its own CODEX_HOME: nothing embedded before):

* baseline: ``feriactl ingest`` of each, one after the other, on the embedded default (sqlite Dagster,
  in-process run). Wall = first start to last end; each run pays its process start and model load.
* scale: ``feriactl up --profile scale`` (PostgreSQL, code server, webserver, daemon), the three
  registered at once; ``git_head_sensor`` queues one run each, the daemon launches them through the
  ``QueuedRunCoordinator`` (the project's limits: 2 at once, 1 per repository), each in its own process.
  Wall = the first run's creation to the last run's end (the sensor's tick delay is reported apart,
  as is the stack's start-up). Both modes must publish the same points for every repository.

(b) Query throughput against the scale stack's replicas (extractive answers, the same index): a closed
loop of ``--concurrency`` clients, each sending its next query when the last one returned, for
``--phase-seconds``: 1 replica (its own URL), 2 replicas through the front, 2 replicas with the client
alternating between their URLs (the front's own cost). The phases are interleaved ``--rounds`` times
(short phases, many rounds: the load other work puts on the machine drifts by the minute), and the CPU
time the front process spends per request it forwards is read from /proc.
The quota file raises the tenant limits and the wait queue so that nothing is refused: the server's
concurrency (2 queries executing per replica, configs/tenants.quotas.yaml) is what is measured. Requests
name four tenants in turn; every admission still goes through the replicas' shared quota store (the
profile's PostgreSQL, serving/shared_state.py), as it would in production.

Writes every run and every request to ``benchmarks/out/scale_out_<time>.json`` and the summary to
``benchmarks/scale_out/results.json``. The CPU is shared with whatever else runs: the load average is
recorded at every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _setup  # noqa: E402, F401  (first: sets up the environment)
import httpx
from _setup import OUT_DIR, REPO_ROOT

from codex_cli.dagster_services import BIN
from codex_core import published
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.languages import detect_language
from codex_core.metrics import percentile
from codex_core.vector_store import EmbeddedVectorIndex
from serving.loadgen import free_port

SUMMARY = REPO_ROOT / "benchmarks" / "scale_out" / "results.json"
RUNS_QUERY = """{ runsOrError(filter: {pipelineName: "ingest"}) { ... on Runs { results {
  runId status creationTime startTime endTime tags { key value } } } } }"""
TEMPLATES = ("where is {} implemented?", "how does {} work?", "what calls {}?", "how are errors in {} handled?")
QUOTAS = """# scale_out_bench: nothing refused, so capacity is what is measured (server concurrency as shipped).
queues:
  fast: {concurrency: 2, max_waiting: 256, max_wait_s: 60}
  batch: {concurrency: 1, max_waiting: 4, max_wait_s: 1.0}
defaults:
  max_inflight: 1000
  fast: {rate: 10000, burst: 10000, max_inflight: 1000}
  batch: {rate: 2, burst: 32, max_inflight: 4}
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    done = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, env=env, check=True)
    return done.stdout.decode()


def prepare_repo(bare: Path, dest: Path, max_files: int) -> dict[str, Any]:
    """``max_files`` files of ``bare`` at HEAD, committed once into ``dest``."""
    head = git("--git-dir", str(bare), "rev-parse", "HEAD").strip()
    paths = sorted(p for p in git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "HEAD").splitlines()
                   if detect_language(p) != "text")[:max_files]
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "--git-dir", str(bare), "archive", "HEAD", "--", *paths], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", f"{bare.name} at {head[:12]}: {len(paths)} files", cwd=dest)
    return {"source": str(bare), "source_head": head, "files": len(paths), "path": str(dest)}


def point_ids(home: Path, name: str) -> list[str]:
    index = EmbeddedVectorIndex(CodexHome(home).index_dir)
    try:
        current = index.current(name)
        if current is None:
            return []
        return [pid for pid, _ in index.iter_payloads(name, current.version, with_payload=False)]
    finally:
        index.close()


def symbols(home: Path, name: str) -> list[str]:
    from codex_core import catalog

    chunks = catalog.read_chunks(CodexHome(home).repo_dir(name) / catalog.UNIQUE_CHUNKS)
    return sorted({c.symbol.split(".")[-1] for c in chunks if c.symbol and len(c.symbol.split(".")[-1]) > 3})


# ------------------------------------------------------------------ (a) ingest


def baseline_ingest(home: Path, repos: dict[str, Path], env: dict[str, str]) -> dict[str, Any]:
    runs = []
    t0 = time.time()
    for name, path in repos.items():
        started = time.time()
        done = subprocess.run([str(BIN / "feriactl"), "ingest", str(path), "--name", name, "--json"],
                              env={**env, "CODEX_HOME": str(home)}, capture_output=True, text=True)
        ended = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"feriactl ingest {name} failed:\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout)
        runs.append({"repo": name, "start": started, "end": ended, "seconds": round(ended - started, 2),
                     "unique_chunks": summary.get("unique_chunks"),
                     "embeddings_computed": summary.get("embeddings_computed"), "load_after": load()})
        log(f"baseline: {name} in {ended - started:.1f} s ({summary.get('unique_chunks')} chunks)")
    return {"runs": runs, "wall_s": round(time.time() - t0, 2)}


class Profile:
    """``feriactl up --profile scale`` in a child process; its output lines collected."""

    def __init__(self, home: Path, env: dict[str, str], replicas: int = 2):
        base = free_port()
        while any(not _free(p) for p in range(base, base + replicas + 1)):
            base = free_port()
        self.ports = {"front": base, **{f"replica-{i}": base + i for i in range(1, replicas + 1)},
                      "dagster": free_port(), "mlflow": free_port(), "pg": free_port()}
        cmd = [str(BIN / "feriactl"), "up", "--profile", "scale", "--replicas", str(replicas),
               "--port", str(base), "--dagster-port", str(self.ports["dagster"]),
               "--mlflow-port", str(self.ports["mlflow"]), "--pg-port", str(self.ports["pg"])]
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, env={**env, "CODEX_HOME": str(home), "PYTHONUNBUFFERED": "1"},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
        self.lines.append("<exit>")

    def wait_up(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while not any("Ctrl-C stops everything" in line for line in self.lines):
            if "<exit>" in self.lines or time.monotonic() > deadline:
                raise RuntimeError("the scale profile did not come up:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.5)
        return round(time.time() - self.started, 1)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> float:
        if self.proc.poll() is not None:
            return 0.0
        t0 = time.time()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        return round(time.time() - t0, 1)


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ingest_runs(profile: Profile) -> list[dict[str, Any]]:
    response = httpx.post(f"{profile.url('dagster')}/graphql", json={"query": RUNS_QUERY}, timeout=30).json()
    return response["data"]["runsOrError"]["results"]


def queued_ingest(home: Path, repos: dict[str, Path], profile: Profile, timeout: float = 3600) -> dict[str, Any]:
    registry = RepoRegistry(CodexHome(home).registry_path)
    registered = time.time()
    for name, path in repos.items():  # what `feriactl ingest` records; the sensor does the rest
        registry.add(name, str(path))
    log("scale: registered the repositories; waiting for git_head_sensor and the daemon")
    deadline = time.monotonic() + timeout
    peak_in_flight, load_samples = 0, []
    while True:
        runs = ingest_runs(profile)
        statuses = [r["status"] for r in runs]
        peak_in_flight = max(peak_in_flight, sum(s in ("STARTING", "STARTED") for s in statuses))
        load_samples.append(load()[0])
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        if len(done) >= len(repos) and all(published.published_commit(CodexHome(home), n) for n in repos):
            break
        if any(r["status"] == "FAILURE" for r in runs):
            raise RuntimeError(f"an ingest run failed: {runs}; see {home}/logs")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the queued runs did not finish: {runs}")
        time.sleep(1)
    records = []
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        records.append({"run_id": run["runId"], "repo": tags.get("codex/repo"), "status": run["status"],
                        "created": run["creationTime"], "start": run["startTime"], "end": run["endTime"],
                        "queued_s": round(run["startTime"] - run["creationTime"], 2),
                        "seconds": round(run["endTime"] - run["startTime"], 2)})
    first_created = min(r["created"] for r in records)
    return {"runs": sorted(records, key=lambda r: r["created"]),
            "wall_s": round(max(r["end"] for r in records) - first_created, 2),
            "sensor_delay_s": round(first_created - registered, 2), "peak_runs_in_flight": peak_in_flight,
            "load_1m_max": max(load_samples)}


# ------------------------------------------------------------------ (b) queries


async def closed_loop(urls: list[str], requests: list[dict[str, Any]], concurrency: int, seconds: float,
                      offset: int) -> dict[str, Any]:
    records: list[tuple[float, int | None, float]] = []  # (start offset s, status, latency s)
    counter = iter(range(offset, 10**9))
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter()

        async def worker() -> None:
            while (now := time.perf_counter()) - t0 < seconds:
                i = next(counter)
                try:
                    response = await client.post(f"{urls[i % len(urls)]}/v1/query", json=requests[i % len(requests)])
                    status: int | None = response.status_code
                except httpx.HTTPError:
                    status = None
                records.append((now - t0, status, time.perf_counter() - now))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ok = [lat * 1000 for _, status, lat in records if status == 200]
    return {
        "urls": urls, "concurrency": concurrency, "seconds": round(elapsed, 2), "sent": len(records),
        "ok": len(ok), "non_200": sum(1 for _, s, _ in records if s is not None and s != 200),
        "transport_errors": sum(1 for _, s, _ in records if s is None),
        "qps": round(len(ok) / elapsed, 2),
        "p50_ms": round(percentile(ok, 50), 1) if ok else None,
        "p95_ms": round(percentile(ok, 95), 1) if ok else None,
        "latencies_ms": [round(x, 1) for x in ok], "load_after": load(),
        "offset": offset,
    }


def query_phases(profile: Profile, requests: list[dict[str, Any]], args) -> dict[str, Any]:
    phases = {
        "1 replica": [profile.url("replica-1")],
        "2 replicas, front": [profile.url("front")],
        "2 replicas, client alternates": [profile.url("replica-1"), profile.url("replica-2")],
    }
    # Warm-up: model pages, BM25 corpora and graph loaded in both replicas before anything is timed.
    for url in (profile.url("replica-1"), profile.url("replica-2")):
        for body in requests[-20:]:
            httpx.post(f"{url}/v1/query", json=body, timeout=120).raise_for_status()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
    front_pid = next(pid for pid, cmd in processes() if "codex_cli.front_proxy" in cmd
                     and f"--port {profile.ports['front']}" in cmd)
    offset = 0
    for round_no in range(args.rounds):
        for name, urls in phases.items():
            time.sleep(1)
            front_cpu = cpu_seconds(front_pid)
            result = asyncio.run(closed_loop(urls, requests, args.concurrency, args.phase_seconds, offset))
            if urls == [profile.url("front")]:
                result["front_cpu_ms_per_request"] = round(
                    1000 * (cpu_seconds(front_pid) - front_cpu) / max(1, result["sent"]), 2)
            offset += result["sent"]  # later phases ask other questions: no query-vector cache hit across phases
            result["round"] = round_no + 1
            results[name].append(result)
            log(f"queries: {name}, round {round_no + 1}: {result['qps']} QPS, P50 {result['p50_ms']} ms, "
                f"P95 {result['p95_ms']} ms, non-200 {result['non_200'] + result['transport_errors']}, "
                f"load {result['load_after']}")
    return results


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in results for x in r["latencies_ms"]]
    seconds = sum(r["seconds"] for r in results)
    stats = {"qps": round(len(latencies) / seconds, 2), "p50_ms": round(percentile(latencies, 50), 1),
             "p95_ms": round(percentile(latencies, 95), 1), "ok": len(latencies),
             "refused_or_failed": sum(r["non_200"] + r["transport_errors"] for r in results),
             "qps_per_round": [r["qps"] for r in results], "load_1m_per_round": [r["load_after"][0] for r in results]}
    front = [r["front_cpu_ms_per_request"] for r in results if "front_cpu_ms_per_request" in r]
    if front:
        stats["front_cpu_ms_per_request"] = round(sum(front) / len(front), 2)
    return stats


def paired(results: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> list[float]:
    """QPS over the 1-replica QPS of the same round (the phases of one round ran within a minute)."""
    return [round(r["qps"] / b["qps"], 2) for r, b in zip(results, baseline, strict=True)]


def processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source-dir", default="/work/locrepos")
    parser.add_argument("--repos", default="koa,ky,marshmallow")
    parser.add_argument("--max-files", type=int, default=30)
    parser.add_argument("--phase-seconds", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary CODEX_HOMEs")
    args = parser.parse_args()

    names = [n.strip() for n in args.repos.split(",") if n.strip()]
    work = Path(tempfile.mkdtemp(prefix="codex-scale-out-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as 'postgres' and must reach the scale CODEX_HOME
    quotas = work / "quotas.yaml"
    quotas.write_text(QUOTAS)
    env = {k: v for k, v in os.environ.items() if k not in ("CODEX_DAGSTER_PG_URL", "MLFLOW_TRACKING_URI")}
    env.update({"CODEX_QUOTAS_CONFIG": str(quotas), "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}"})  # extractive
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "load_at_start": load(),
        "note": "CPU shared with other engineers' work (tests, builds) during the run: see the load averages"}}
    sources = {name: prepare_repo(Path(args.source_dir) / name, work / "repos" / name, args.max_files)
               for name in names}
    repos = {name: Path(info["path"]) for name, info in sources.items()}
    report["repositories"] = sources
    log("prepared " + ", ".join(f"{n} ({s['files']} files)" for n, s in sources.items()) + f" in {work}")

    # The model's files in the page cache before either mode is timed (neither pays the first read).
    # The model the settings name (the packaged MiniLM by default), as ingestion loads it: never a hub name.
    subprocess.run([sys.executable, "-c", "from codex_core.settings import Settings; "
                    "from codex_resources import shared_embedder; s = Settings.from_env(); "
                    "shared_embedder(s.embedding_model_path, s.embedding_model_id, s.embedding_device)"
                    ".embed(['warm'])"], env=env, check=True, cwd=REPO_ROOT)

    baseline_home, scale_home = work / "home-embedded", work / "home-scale"
    log("baseline: one at a time on the embedded default")
    report["baseline"] = baseline_ingest(baseline_home, repos, env)

    log("scale: starting feriactl up --profile scale --replicas 2")
    profile = Profile(scale_home, env)
    try:
        report["scale_startup_s"] = profile.wait_up()
        log(f"scale: up in {report['scale_startup_s']} s")
        report["scale"] = queued_ingest(scale_home, repos, profile)
        log(f"scale: three runs in {report['scale']['wall_s']} s after the first was queued")
        report["same_points"] = {n: sorted(point_ids(baseline_home, n)) == sorted(point_ids(scale_home, n))
                                 and bool(point_ids(scale_home, n)) for n in names}
        report["chunks"] = {n: len(point_ids(scale_home, n)) for n in names}

        requests = [{"query": t.format(s), "repo": n, "top_k": 5}
                    for t in TEMPLATES for n in names for s in symbols(scale_home, n)]
        requests.sort(key=lambda r: (zlib.crc32(r["query"].encode()), r["repo"]))  # repos and templates mixed
        for i, body in enumerate(requests):
            body["tenant"] = f"bench-{i % 4}"  # as `feriactl simulate` does: four tenants share the quota store
        report["distinct_queries"] = len(requests)
        report["queries"] = query_phases(profile, requests, args)
    finally:
        report["scale_stop_s"] = profile.stop()
        (work / "profile.out").write_text("\n".join(profile.lines))

    base, scale = report["baseline"], report["scale"]
    summary_queries = {name: pooled(results) for name, results in report["queries"].items()}
    one = summary_queries["1 replica"]
    summary = {
        "run": report["started"], "machine": report["machine"],
        "repositories": {n: {"source": s["source"], "source_head": s["source_head"], "files": s["files"],
                             "chunks": report["chunks"][n]} for n, s in sources.items()},
        "ingest": {
            "baseline_one_at_a_time_embedded_s": base["wall_s"],
            "baseline_runs_s": {r["repo"]: r["seconds"] for r in base["runs"]},
            "queued_coordinator_postgres_s": scale["wall_s"],
            "queued_runs": [{k: r[k] for k in ("repo", "queued_s", "seconds")} for r in scale["runs"]],
            "peak_runs_in_flight": scale["peak_runs_in_flight"],
            "speedup_vs_baseline": round(base["wall_s"] / scale["wall_s"], 2),
            "sensor_delay_s": scale["sensor_delay_s"], "scale_stack_startup_s": report["scale_startup_s"],
            "same_points_in_both_modes": report["same_points"],
        },
        "queries": {
            "concurrency": args.concurrency, "phase_seconds": args.phase_seconds, "rounds": args.rounds,
            "distinct_queries": report["distinct_queries"],
            **{name: {**stats, "qps_vs_1_replica": round(stats["qps"] / one["qps"], 2),
                      "qps_vs_1_replica_per_round": paired(report["queries"][name], report["queries"]["1 replica"]),
                      "p95_vs_1_replica": round(stats["p95_ms"] / one["p95_ms"], 2)}
               for name, stats in summary_queries.items()},
        },
        "raw": None,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw_path = OUT_DIR / f"scale_out_{report['started'].replace(':', '')}.json"
    raw_path.write_text(json.dumps(report, indent=1))
    summary["raw"] = str(raw_path.relative_to(REPO_ROOT))
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(report["same_points"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
