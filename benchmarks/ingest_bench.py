"""Ingestion throughput: the whole pipeline against the bare embedder, measured in the same run.

    .venv/bin/python benchmarks/ingest_bench.py REPO_DIR [--name NAME] [--embedder-sample 256]

Runs `feriactl ingest` (real Dagster materialization) into a fresh, temporary CODEX_HOME so every
embedding is computed, then embeds a sample of the same chunk documents with the bare model.
Prints files/s, chunks/s, embedder-only chunks/s, the pipeline/embedder ratio (overhead) and peak
RSS. A second ingest of the unchanged repo shows the cached path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import _setup  # noqa: E402, F401  (first: sets up the environment)


def peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, child_kb) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--embedder-sample", type=int, default=256)
    parser.add_argument("--keep-home", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="codex-bench-"))
    os.environ["CODEX_HOME"] = str(home)
    from codex_cli.main import run_ingest
    from codex_core import catalog
    from codex_core.embedding import embedding_document
    from codex_resources import shared_embedder

    t0 = time.perf_counter()
    cold = run_ingest(args.repo, args.name, show_progress=False)
    cold_s = time.perf_counter() - t0
    if not cold["success"]:
        print(json.dumps(cold, indent=2), file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    warm = run_ingest(args.repo, args.name, show_progress=False)
    warm_s = time.perf_counter() - t0

    chunks = catalog.read_chunks(home / "repos" / args.name / catalog.UNIQUE_CHUNKS)
    sample = [embedding_document(c) for c in chunks[: args.embedder_sample]]
    model = shared_embedder(None, "all-MiniLM-L6-v2", "cpu")
    model.embed(sample[:8])  # loaded already; make sure nothing lazy is timed
    t0 = time.perf_counter()
    for start in range(0, len(sample), 64):
        model.embed(sample[start : start + 64])
    embedder_only = len(sample) / (time.perf_counter() - t0)

    files = cold["files_indexed"] or 0
    n_chunks = cold["chunks"] or 0
    pipeline_cps = (cold["unique_chunks"] or 0) / cold_s
    report = {
        "repo": args.repo,
        "files_indexed": files,
        "chunks": n_chunks,
        "unique_chunks": cold["unique_chunks"],
        "cold_seconds": round(cold_s, 2),
        "warm_seconds": round(warm_s, 2),
        "warm_embeddings_computed": warm["embeddings_computed"],
        "files_per_s": round(files / cold_s, 2),
        "chunks_per_s": round(pipeline_cps, 2),
        "embedder_only_chunks_per_s": round(embedder_only, 2),
        "pipeline_vs_embedder_ratio": round(pipeline_cps / embedder_only, 3),
        "cold_over_warm_ratio": round(cold_s / warm_s, 2),
        "seconds_per_stage": cold["seconds_per_stage"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(report, indent=2))
    if not args.keep_home:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
