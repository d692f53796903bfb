"""Freshness: a one-file commit, from sensor tick to queryable, against a full re-index (same run).

    .venv/bin/python benchmarks/incremental_bench.py [--chunks 21500] [--home benchmarks/out/incremental]

Builds a git repository from Python sources installed in the venv (until it holds about
``--chunks`` chunks), ingests it once (the embedding cache under ``--home`` makes later runs
cheap), opens a serving ``QueryEngine`` on it, then ``--probes`` times:

1. commits a one-line change inside one function,
2. ticks ``git_head_sensor`` (its run request is what ``dagster dev`` would launch),
3. runs the ingestion job in process for that request (incremental: cached files, chunks,
   MinHash signatures and embeddings for every unchanged file, a delta index version, the graph
   repaired after publishing) while a thread checks serving's view every 100 ms,
4. records when serving answers from the new commit (and that the changed line is cited).

It then re-indexes the same commit from scratch in a second CODEX_HOME that shares only the
embedding cache (so both sides pay the same for embeddings) and prints the timings and ratio.
What ``dagster dev`` adds per run (a fresh run process loading the code location, then the
model before it can embed the changed chunks) is measured in fresh processes and printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _setup import REPO_ROOT  # noqa: E402  (first: sets up the environment)

SOURCES = ["dagster", "pandas", "sqlalchemy", "mlflow", "sklearn", "starlette", "pydantic"]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "b@x"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def build_repo(target: Path, chunks_wanted: int) -> int:
    from codex_core.chunking import chunk_file

    site = Path(sys.executable).parent.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = site / "site-packages"
    target.mkdir(parents=True)
    git(target, "init", "-q", "-b", "main")
    total = 0
    for package in SOURCES:
        for path in sorted((site / package).rglob("*.py")):
            if total >= chunks_wanted:
                break
            text = path.read_text(errors="replace")
            if not text.strip() or len(text) > 512 * 1024:
                continue
            dest = target / package / path.relative_to(site / package)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            total += len(chunk_file(str(dest), text, "python"))
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "import sources")
    return total


def _fresh_process_seconds(code: str) -> float:
    """Wall time of ``code`` in a new interpreter (what a run process started by ``dagster dev`` pays)."""
    script = f"import time, sys; sys.path.insert(0, {str(REPO_ROOT)!r}); " \
             f"t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _probe_commit(repo: Path, target: Path, n: int) -> tuple[str, str]:
    """Insert a marker line into the first function of ``target`` and commit it: (marker, head)."""
    import secrets

    # A word no other line has: the question must find this line, not an earlier probe's.
    marker = f"    # freshness probe {n} zq{secrets.token_hex(4)}: the index must serve this line"
    lines = target.read_text().split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith("def "))
    lines.insert(index + 1, marker)
    target.write_text("\n".join(lines))
    git(repo, "commit", "-qam", f"Probe freshness {n}")
    return marker, git(repo, "rev-parse", "HEAD")


def _start_poller(home: Path, head: str, marker: str) -> subprocess.Popen:
    """Serving in its own process (as `feriactl serve`), checking every 100 ms; returns once it is warm."""
    poller = subprocess.Popen(
        [sys.executable, __file__, "--poll", str(home), head, marker.strip().lstrip("# ") or "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert poller.stdout.readline().strip() == "ready"  # holds the current version
    return poller


def worker_probes(home: Path, repo: Path, targets: list[Path], first: int, count: int) -> list[dict]:
    """The deployment path of `feriactl up`: commits picked up by a running `feriactl worker`."""
    env = {**os.environ, "CODEX_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    (home / "freshness_worker.json").unlink(missing_ok=True)  # a killed earlier worker may have left one
    log = open(home / "worker-bench.log", "ab")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([str(Path(sys.executable).parent / "feriactl"), "worker", "--interval", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    heartbeat = home / "freshness_worker.json"
    try:
        deadline = time.time() + 180
        while not heartbeat.exists():  # written after the model is loaded and the first pass is done
            assert worker.poll() is None and time.time() < deadline, "worker did not start"
            time.sleep(0.2)
        probes = []
        for n in range(first, first + count):
            target = targets[(len(targets) // (first + count + 1)) * (n + 1)]
            poller = _start_poller(home, "next", "")  # waits for whatever commit comes next
            marker, head = _probe_commit(repo, target, n)
            t0 = time.time()
            poller.stdin.write(marker.strip().lstrip("# ") + "\n")  # the question, known only now
            poller.stdin.flush()
            seen = json.loads(poller.communicate(timeout=300)[0])
            assert seen["commit"] == head, (seen["commit"], head)
            rel = str(target.relative_to(repo))
            cited = any(c["path"] == rel and marker.strip() in c["snippet"] for c in seen["answer"]["citations"])
            probes.append({"commit_to_queryable_s": round(seen["seen_at"] - t0, 2),
                           "line_in_served_index": seen["line_in_served_index"], "probe_line_cited": cited})
            print(json.dumps({"worker": probes[-1]}), file=sys.stderr)
            # Let the run finish (the graph is repaired after publishing) before the next commit.
            state = home / "repos" / "bench" / "graph_state.json"
            while time.time() - t0 < 120 and json.loads(state.read_text()).get("commit") != head:
                time.sleep(0.2)
        return probes
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()


def _meta(result, node: str) -> dict:
    (event,) = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def ingest(home: Path, repo: Path, instance, partition: str = "bench"):
    import dagster as dg

    from codex_assets.ingestion import ingestion_assets, ingestion_checks
    from codex_resources import CodexHomeResource, EmbeddedVectorStoreResource, EmbedderResource

    codex_home = CodexHomeResource(root=str(home))
    resources = {
        "codex_home": codex_home,
        "embedder": EmbedderResource(codex_home=codex_home),
        "vector_store": EmbeddedVectorStoreResource(codex_home=codex_home),
    }
    return dg.materialize([*ingestion_assets, *ingestion_checks], instance=instance, resources=resources,
                          partition_key=partition)


def poll(home: str, head: str, question: str) -> int:
    """Serving side of the benchmark (a separate process): report when the index serves ``head``
    (``next``: any commit other than the one served at start)."""
    from codex_core.home import CodexHome
    from serving.engine import QueryEngine
    from tests.serving.test_query import offline_answerer

    engine = QueryEngine(CodexHome(Path(home)), answerer=offline_answerer(), refresh_every_s=0.0)
    engine.refresh(force=True)
    engine.query(question if question != "-" else "warm up", repo="bench", top_k=10)  # warm: model loaded
    start = engine.reader.view.corpora["bench"].commit
    print("ready", flush=True)

    def arrived(commit: str) -> bool:
        return commit != start if head == "next" else commit == head

    if question == "-":  # asked once the commit exists (its marker is random)
        question = sys.stdin.readline().strip()
    while not arrived(engine.reader.refresh(force=True).corpora["bench"].commit):
        time.sleep(0.1)
    answer = engine.query(question, repo="bench", top_k=10).model_dump()
    seen_at = time.time()
    # The changed line is in what serving searches (a chunk of the new version holds it).
    in_index = any(question in p["text"] for p in engine.reader.view.corpora["bench"].payloads)
    print(json.dumps({"seen_at": seen_at, "answer": answer, "commit": answer["index_commit"],
                      "line_in_served_index": in_index}))
    engine.close()
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--poll":
        return poll(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=21500)
    parser.add_argument("--home", default="benchmarks/out/incremental")
    parser.add_argument("--probes", type=int, default=3, help="one-file commits to time, one after another")
    args = parser.parse_args()

    import dagster as dg

    from codex_core.git import RepoRegistry
    from codex_core.retrieval import is_test_path
    from codex_resources import CodexHomeResource
    from codex_sensors import git_head_sensor

    root = Path(args.home).resolve() / f"c{args.chunks}"
    repo, home = root / "repo", root / "home"
    if not repo.exists():
        print(f"building a repo of ~{args.chunks} chunks ...", file=sys.stderr)
        build_repo(repo, args.chunks)
    RepoRegistry(home / "repos.json").add("bench", str(repo))
    with dg.instance_for_test() as instance:
        t0 = time.perf_counter()
        first = dg.build_sensor_context(instance=instance, resources={"codex_home": CodexHomeResource(root=str(home))})
        tick = git_head_sensor(first)
        instance.add_dynamic_partitions("repos", ["bench"])
        initial = ingest(home, repo, instance)
        initial_s = time.perf_counter() - t0
        meta = {k: getattr(v, "value", v)
                for k, v in initial.asset_materializations_for_node("unique_chunks")[0].metadata.items()}
        print(f"initial ingest: {initial_s:.1f}s, {meta['unique_chunks']} unique chunks", file=sys.stderr)

        # The run process in this benchmark is warm (model loaded), like a long-lived worker.
        from codex_resources import shared_embedder

        shared_embedder(None, "all-MiniLM-L6-v2", "cpu").embed(["warm up"])

        # What `dagster dev` adds per run, measured in fresh processes: the run process loading
        # the code location, and the model load a run pays before embedding the changed chunks.
        cold_model_s = _fresh_process_seconds(
            "from codex_core.embedding import SentenceTransformerEmbedder; SentenceTransformerEmbedder().embed(['x'])")
        code_load_s = _fresh_process_seconds("import codex_assets.definitions as d; d.defs()")

        probes = []
        # Probes go into non-test modules: test files are down-weighted for questions that do not
        # ask about tests, which would make "is the changed line cited" a ranking question.
        targets = [p for p in sorted(repo.rglob("*.py"))
                   if not is_test_path(str(p.relative_to(repo))) and "\ndef " in p.read_text(errors="replace")]
        cursor = tick.cursor
        for n in range(args.probes):
            target = targets[(len(targets) // (2 * args.probes + 1)) * (n + 1)]
            marker, head = _probe_commit(repo, target, n)
            poller = _start_poller(home, head, marker)
            t0 = time.time()
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              resources={"codex_home": CodexHomeResource(root=str(home))})
            result = git_head_sensor(context)
            cursor = result.cursor
            assert len(result.run_requests) == 1, result.run_requests
            tick_s = time.time() - t0
            rerun = ingest(home, repo, instance)
            run_s = time.time() - t0
            seen = json.loads(poller.communicate(timeout=300)[0])
            queryable_s, answer = seen["seen_at"] - t0, seen["answer"]
            rel = str(target.relative_to(repo))
            cited = any(c["path"] == rel and marker.strip() in c["snippet"] for c in answer["citations"])
            steps = {e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
                     for e in rerun.all_events if e.event_type_value == "STEP_SUCCESS"}
            probes.append({"sensor_tick_s": round(tick_s, 3), "tick_to_queryable_s": round(queryable_s, 2),
                           "tick_to_run_done_s": round(run_s, 2), "line_in_served_index": seen["line_in_served_index"],
                           "probe_line_cited": cited,
                           "staged_mode": _meta(rerun, "staged_index")["mode"], "steps_s": steps})
            print(json.dumps(probes[-1]), file=sys.stderr)

        worker = worker_probes(home, repo, targets, args.probes, args.probes)

        full_home = root / "full-home"
        shutil.rmtree(full_home, ignore_errors=True)
        (full_home / "embeddings").mkdir(parents=True)
        shutil.copy(home / "embeddings" / "cache.sqlite", full_home / "embeddings" / "cache.sqlite")
        RepoRegistry(full_home / "repos.json").add("bench", str(repo))
        t0 = time.perf_counter()
        ingest(full_home, repo, instance)
        full_s = time.perf_counter() - t0
    queryable = sorted(p["tick_to_queryable_s"] for p in probes)
    report = {
        "chunks": meta["unique_chunks"],
        "probes": probes,
        "tick_to_queryable_s_median": queryable[len(queryable) // 2],
        "tick_to_queryable_s_max": queryable[-1],
        "feriactl_worker_commit_to_queryable_s": [p["commit_to_queryable_s"] for p in worker],
        "changed_line_in_served_index_every_time": all(p["line_in_served_index"] for p in [*probes, *worker]),
        "changed_line_cited_by_a_query_for_it": f"{sum(p['probe_line_cited'] for p in [*probes, *worker])} "
                                                f"of {len(probes) + len(worker)}",
        "full_reindex_warm_embeddings_s": round(full_s, 2),
        "full_over_incremental_ratio": round(full_s / queryable[len(queryable) // 2], 2),
        "dagster_dev_extra_per_run_s": {
            "code_location_load_in_fresh_process": round(code_load_s, 2),
            "model_load_in_fresh_process": round(cold_model_s, 2),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
