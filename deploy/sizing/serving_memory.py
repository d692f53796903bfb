"""Memory a serving replica holds per published chunk (docs/scaling.md, "Serving memory").

A serving process keeps every published repository it may answer for in RAM: the payloads (path,
lines, symbol, text, hashes) and the BM25 indexes built from them (codex_core.retrieval.RepoCorpus).
This measures that cost on the same real code as benchmarks/scale_bench.py (installed packages'
.py files, chunked by the product chunker, payloads exactly as ingestion publishes them):

1. chunk N chunks, serialize their payloads to JSON (what a reader receives from the index), free
   everything else;
2. RSS before, then decode the payloads and RepoCorpus.build(...) as the reader does; RSS after.

    .venv/bin/python deploy/sizing/serving_memory.py --points 80000

Not included: the code graph, the embedding model (~0.1 GB of weights) and the interpreter with its
libraries, which a replica pays once whatever it holds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import psutil  # noqa: E402
import scale_bench  # noqa: E402  (benchmarks/: its corpus builder, shared on purpose)

from codex_core.catalog import point_payload  # noqa: E402
from codex_core.retrieval import RepoCorpus  # noqa: E402


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=80_000)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    files, chunks = scale_bench.package_files(args.points)
    wire = [json.dumps([c.point_id, point_payload(c)]) for c in chunks]
    text_bytes = sum(len(c.text.encode()) for c in chunks)
    del files, chunks
    gc.collect()
    chunked_s = time.perf_counter() - t0

    before = rss_mb()
    t1 = time.perf_counter()
    points = [tuple(json.loads(w)) for w in wire]
    corpus = RepoCorpus.build(scale_bench.REPO, "v1", scale_bench.COMMIT, points)
    build_s = time.perf_counter() - t1
    gc.collect()
    after = rss_mb()

    n = len(corpus.ids)
    result = {
        "points": n,
        "mean_chunk_text_bytes": round(text_bytes / n),
        "mean_payload_json_bytes": round(sum(map(len, wire)) / n),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "corpus_mb": round(after - before, 1),
        "bytes_per_chunk": round((after - before) * 2**20 / n),
        "build_s": round(build_s, 1),
        "chunking_s": round(chunked_s, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
