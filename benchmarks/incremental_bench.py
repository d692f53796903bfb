"""Freshness: a one-file commit, from sensor tick to queryable, against a full re-index (same run).

    .venv/bin/python benchmarks/incremental_bench.py [--chunks 20000] [--home benchmarks/out/incremental]

Builds a git repository from Python sources installed in the venv (until it holds about
``--chunks`` chunks), ingests it once (the embedding cache under ``--home`` makes later runs
cheap), then:

1. commits a change to one function,
2. ticks ``git_head_sensor`` (its run request is what ``dagster dev`` would launch),
3. runs the ingestion assets in process for that request (incremental: cached chunks, MinHash
   signatures, graph extraction and embeddings for every unchanged file),
4. waits until a serving ``QueryEngine`` answers from the new commit.

It then re-indexes the same commit from scratch in a second CODEX_HOME that shares only the
embedding cache (so both sides pay the same for embeddings) and prints both timings and their
ratio. Dagster run-launch overhead of ``dagster dev`` (a subprocess per run) is not included; the
model load such a process pays before embedding the changed chunks is measured and printed apart.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--home", default="benchmarks/out/incremental")
    args = parser.parse_args()

    import dagster as dg

    from codex_core.git import RepoRegistry
    from codex_core.home import CodexHome
    from codex_resources import CodexHomeResource
    from codex_sensors import git_head_sensor
    from serving.engine import QueryEngine

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

        from tests.serving.test_query import offline_answerer

        engine = QueryEngine(CodexHome(home), answerer=offline_answerer(), refresh_every_s=0.0)
        engine.refresh(force=True)

        target = next(p for p in sorted(repo.rglob("*.py")) if "def " in p.read_text(errors="replace"))
        text = target.read_text()
        marker = "    # freshness probe: the index must serve this line\n"
        lines = text.split("\n")
        index = next(i for i, line in enumerate(lines) if line.startswith("def "))
        lines.insert(index + 1, marker.rstrip("\n"))
        target.write_text("\n".join(lines))
        git(repo, "commit", "-qam", "Probe freshness")
        head = git(repo, "rev-parse", "HEAD")

        # A run that embeds anything must load the model first (dagster dev: a process per run); it is
        # reported on its own so the comparison below is between pipelines, not model loads.
        from codex_resources import shared_embedder

        t0 = time.perf_counter()
        shared_embedder(None, "all-MiniLM-L6-v2", "cpu").embed(["warm up"])
        model_load_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        context = dg.build_sensor_context(instance=instance, cursor=tick.cursor,
                                          resources={"codex_home": CodexHomeResource(root=str(home))})
        requests = git_head_sensor(context).run_requests
        assert len(requests) == 1, requests
        tick_s = time.perf_counter() - t0
        rerun = ingest(home, repo, instance)
        run_s = time.perf_counter() - t0 - tick_s
        while engine.query("freshness probe: the index must serve this line", repo="bench")["index_commit"] != head:
            time.sleep(0.05)
        incremental_s = time.perf_counter() - t0
        steps = {e.step_key: e for e in rerun.all_events if e.event_type_value == "STEP_SUCCESS"}
        engine.close()

        full_home = root / "full-home"
        shutil.rmtree(full_home, ignore_errors=True)
        (full_home / "embeddings").mkdir(parents=True)
        shutil.copy(home / "embeddings" / "cache.sqlite", full_home / "embeddings" / "cache.sqlite")
        RepoRegistry(full_home / "repos.json").add("bench", str(repo))
        t0 = time.perf_counter()
        ingest(full_home, repo, instance)
        full_s = time.perf_counter() - t0
    report = {
        "chunks": meta["unique_chunks"],
        "sensor_tick_s": round(tick_s, 3),
        "model_load_s (paid once per run process)": round(model_load_s, 2),
        "incremental_run_s": round(run_s, 2),
        "commit_to_queryable_s": round(incremental_s, 2),
        "full_reindex_warm_embeddings_s": round(full_s, 2),
        "full_over_incremental_ratio": round(full_s / incremental_s, 2),
        "steps": sorted(steps),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
