"""Retrieval latency at scale: the serving retriever over an 80k-point published index.

What is built (all in a temporary ``CODEX_HOME``):

* Payloads: REAL code. ``.py`` files of installed packages (dagster, mlflow, pandas, ... in a fixed
  order) chunked by the product chunker (``chunk_file``, ``target_tokens=550`` so a chunk is ~40
  lines) until ``--points`` chunks; each payload is exactly what ingestion publishes
  (``catalog.point_payload``: path, symbol, kind, lines, content hash, text, ...).
* Vectors: SYNTHETIC. All-MiniLM-L6-v2 vectors of the first ``--real`` chunks (really embedded,
  cached under ``benchmarks/out/``), then point i gets real vector ``i % real`` plus Gaussian
  noise of norm 0.3, renormalised (384-dim unit vectors, clustered like real ones).
* ``EmbeddedVectorIndex.stage`` + ``publish`` (the embedded default; exact search below 150k points),
  ``RepoCorpus.build`` over the published payloads (BM25 index), the code graph of the same files
  (``build_graph``), and a ``HybridRetriever`` wired as ``serving/engine.py`` wires it. Citations
  are verified against the files on disk (hash of the cited lines), the same check serving does
  against git objects.
* Queries: ``--queries`` real natural-language / identifier queries (docstring first lines and
  split function names from the same files).

Measured over every query (after warm-up), in one run, the five measurements interleaved per query:

* ``retrieve (embedding excluded)``: ``HybridRetriever.retrieve`` with precomputed query vectors;
  per stage too (dense, lexical, graph, select+verify).
* ``retrieve (embedding included)``: the same with the real embedder, the query embedded per call.
* baseline ``numpy brute force``: exact cosine of the query against the same 80k vectors
  (float32 matmul + top-50), embedding excluded and included.
* ``retrieve (embedding excluded), in_file_order=fused``: the order of a file's chunks before the
  in-file order (no per-file searches), paired with the first, so its cost shows as a ratio.

Target: retrieval P95 <= 50 ms. Run: ``.venv/bin/python benchmarks/scale_bench.py --points 80000``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _setup  # noqa: E402  (first: sets up the environment)
import numpy as np
from _setup import OUT_DIR

from codex_core.metrics import percentile  # noqa: E402
from codex_core.retrieval import RetrievalConfig as _Defaults  # noqa: E402

RETRIEVAL_DEFAULTS = _Defaults()

PACKAGES = ("dagster", "mlflow", "pandas", "sqlalchemy", "torch", "numpy", "sklearn", "scipy", "pydantic",
            "fastapi", "starlette", "uvicorn", "evidently", "plotly", "matplotlib")
REPO = "scale"
COMMIT = "0" * 40
TARGET_P95_MS = 50.0
TARGET_TOKENS = 550  # ~40 lines per chunk on this code (the ingest default, 300, gives ~25)
DENSE_K = 50
WARMUP = 10
NOISE_NORM = 0.3


@dataclass
class CorpusFile:
    path: str  # relative to its site-packages directory
    root: Path
    text: str


def package_files(points: int) -> tuple[list[CorpusFile], list[Any]]:
    """Real ``.py`` files, chunked, in a fixed order until ``points`` chunks (files cut at the limit)."""
    from codex_core.chunking import chunk_file
    from codex_core.models import Chunk

    files: list[CorpusFile] = []
    chunks: list[Chunk] = []
    seen: set[str] = set()  # identical chunks of one file share a point id; ingestion dedups them too
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        pkg_dir = Path(next(iter(spec.submodule_search_locations)))
        for file in sorted(pkg_dir.rglob("*.py")):
            data = file.read_bytes()
            if len(data) > 1024 * 1024 or b"\0" in data[:8192]:
                continue
            rel = file.relative_to(pkg_dir.parent).as_posix()
            text = data.decode("utf-8", "replace")
            spans = chunk_file(rel, text, "python", target_tokens=TARGET_TOKENS)
            if not spans:
                continue
            files.append(CorpusFile(rel, pkg_dir.parent, text))
            for span in spans:
                chunk = Chunk.from_span(span, repo=REPO, commit=COMMIT)
                if chunk.point_id not in seen:
                    seen.add(chunk.point_id)
                    chunks.append(chunk)
            if len(chunks) >= points:
                return files, chunks[:points]
    raise SystemExit(f"only {len(chunks)} chunks available from {PACKAGES}; lower --points")


def mine_queries(files: list[CorpusFile], count: int, seed: int = 0) -> list[str]:
    """Half docstring first lines, half 'how to <split function name>', sampled reproducibly."""
    return _setup.mine_queries((f.text for f in files[:1500]), count, seed, async_names=False)


def cached_embeddings(embedder, name: str, texts: list[str]) -> np.ndarray:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    fingerprint = str(uuid.uuid5(uuid.NAMESPACE_OID, "\x1e".join(texts)))
    npy = OUT_DIR / f"scale_{name}_{fingerprint[:12]}.npy"
    if npy.exists():
        return np.load(npy)
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    print(f"embedded {len(texts)} {name} texts in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    np.save(npy, vectors)
    return vectors


def jittered(real: np.ndarray, total: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((total, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real[:total]
    for start in range(len(real), total, len(real)):
        stop = min(total, start + len(real))
        base = real[: stop - start]
        noise = rng.standard_normal(base.shape).astype(np.float32) * (NOISE_NORM / np.sqrt(real.shape[1]))
        copy = base + noise
        out[start:stop] = copy / np.linalg.norm(copy, axis=1, keepdims=True)
    return out


class DiskVerificationSource:
    """Serving verifies citations against git objects; here the files are plain files on disk."""

    def __init__(self, files: list[CorpusFile]):
        self._roots = {f.path: f.root for f in files}
        self._cache: dict[str, list[str]] = {}

    def file_lines(self, repo: str, commit: str, path: str) -> list[str] | None:
        if path not in self._cache:
            root = self._roots.get(path)
            if root is None:
                return None
            self._cache[path] = (root / path).read_bytes().decode("utf-8", "replace").split("\n")
        return self._cache[path]


def measure(systems: dict[str, Callable[[str], Any]], queries: list[str]) -> dict[str, tuple[list[float], list[Any]]]:
    """Latency of every system on every query, interleaved per query.

    Interleaving means a burst of other load on the machine hits all systems alike instead of
    whichever happened to be running at the time.
    """
    for q in queries[:WARMUP]:
        for fn in systems.values():
            fn(q)
    out: dict[str, tuple[list[float], list[Any]]] = {name: ([], []) for name in systems}
    for q in queries:
        for name, fn in systems.items():
            t0 = time.perf_counter()
            result = fn(q)
            out[name][0].append((time.perf_counter() - t0) * 1000)
            out[name][1].append(result)
    return out


def summarize(name: str, latencies: list[float], notes: str = "") -> dict[str, Any]:
    return {"name": name, "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "mean_ms": float(np.mean(latencies)), "notes": notes}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_points(chunks, vectors: np.ndarray) -> Iterator[Any]:
    from codex_core.catalog import point_payload
    from codex_core.vector_store import IndexPoint

    for chunk, vector in zip(chunks, vectors, strict=True):
        yield IndexPoint(id=chunk.point_id, vector=vector, payload=point_payload(chunk))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=80_000)
    parser.add_argument("--real", type=int, default=500, help="chunks really embedded; the rest are jittered copies")
    parser.add_argument("--queries", type=int, default=220)
    parser.add_argument("--top-k", type=int, default=10, help="citations returned per query")
    parser.add_argument(
        "--torch-threads", type=int, default=None,
        help="torch intra-op threads for query embedding (default: torch's, = cores, as serving runs today)",
    )
    parser.add_argument("--file-lexical-weight", type=float, default=RETRIEVAL_DEFAULTS.file_lexical_weight,
                        help="RetrievalConfig.file_lexical_weight (default: the product default)")
    parser.add_argument("--learned-ranker", action="store_true",
                        help="re-order with a learned ranker, as serving does for a repository that has one")
    args = parser.parse_args(argv)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    from codex_core.embedding import SentenceTransformerEmbedder, embedding_document
    from codex_core.files import SourceFile
    from codex_core.graph import CodeGraph
    from codex_core.ingest import build_graph
    from codex_core.retrieval import HybridRetriever, RepoCorpus, RetrievalConfig
    from codex_core.vector_store import EmbeddedVectorIndex

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    files, chunks = package_files(args.points)
    timings["chunk_s"] = time.perf_counter() - t0
    line_counts = [c.end_line - c.start_line + 1 for c in chunks]
    print(f"{len(chunks)} chunks from {len(files)} files (mean {np.mean(line_counts):.1f} lines) "
          f"in {timings['chunk_s']:.1f} s", file=sys.stderr)

    embedder = SentenceTransformerEmbedder()
    real = cached_embeddings(embedder, f"chunks{args.real}", [embedding_document(c) for c in chunks[: args.real]])
    vectors = jittered(real, len(chunks))
    queries = mine_queries(files, args.queries)
    query_vectors = dict(zip(queries, cached_embeddings(embedder, f"queries{len(queries)}", queries), strict=True))

    home = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        index = EmbeddedVectorIndex(home / "index", reader_dir=home / "readers")
        t0 = time.perf_counter()
        version = index.stage(REPO, vectors.shape[1], stage_points(chunks, vectors), commit=COMMIT)
        index.publish(REPO, version, commit=COMMIT)
        timings["stage_publish_s"] = time.perf_counter() - t0
        staged = index.staged_stats(REPO, version)

        t0 = time.perf_counter()
        corpus = RepoCorpus.build(REPO, version, COMMIT, list(index.iter_payloads(REPO, version)))
        timings["corpus_build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sources = [SourceFile(f.path, "python", len(f.text), "", f.text, f.text.count("\n") + 1, False) for f in files]
        graph = CodeGraph(*build_graph(sources))
        timings["graph_build_s"] = time.perf_counter() - t0
        print(f"staged+published {staged.points} points ({staged.index}) in {timings['stage_publish_s']:.1f} s; "
              f"corpus {timings['corpus_build_s']:.1f} s; graph {timings['graph_build_s']:.1f} s", file=sys.stderr)

        def dense_search(vector: np.ndarray, repos, k: int) -> list[tuple[str, str, float]]:
            return [(h.repo, h.id, float(h.score)) for h in index.search(vector, repos=list(repos), top_k=k)]

        # A learned ranker costs the same whatever its weights: one with fixed, arbitrary weights
        # measures the feature computation and re-ordering every query then pays.
        ranker = None
        if args.learned_ranker:
            from codex_core.ranker import FEATURES, LearnedRanker

            ranker = LearnedRanker(mean=[0.0] * len(FEATURES), scale=[1.0] * len(FEATURES),
                                   coef=[1.0 / (i + 1) for i in range(len(FEATURES))], intercept=0.0)

        def retriever(embed_query: Callable[[str], np.ndarray]) -> HybridRetriever:
            return HybridRetriever(
                dense_search=dense_search, embed_query=embed_query, corpora=lambda: {REPO: corpus},
                graphs=lambda repo: graph, verifier=DiskVerificationSource(files), rankers=lambda repo: ranker,
                file_scores=index.file_scores,  # as PublishedReader wires it
            )

        config = RetrievalConfig(dense_k=DENSE_K, file_lexical_weight=args.file_lexical_weight)
        stage_times: dict[str, list[float]] = {}

        def excluded(q: str):
            result = precomputed.retrieve(q, repos=[REPO], top_k=args.top_k, config=config)
            for key, value in result.timings_ms.items():
                stage_times.setdefault(key, []).append(value)
            return result

        # The in-file order before it (a file's chunks by fused score only): what the stored-vector
        # reads of the default order cost, paired per query.
        fused_config = replace(config, in_file_order="fused")

        def excluded_fused(q: str):
            return precomputed.retrieve(q, repos=[REPO], top_k=args.top_k, config=fused_config)

        precomputed = retriever(lambda q: query_vectors[q])
        live = retriever(lambda q: embedder.embed([q])[0])

        def included(q: str):
            result = live.retrieve(q, repos=[REPO], top_k=args.top_k, config=config)
            stage_times.setdefault("embed_ms (embedding-included run)", []).append(result.timings_ms["embed_ms"])
            return result

        matrix = vectors.copy()

        def brute(vector: np.ndarray) -> list[int]:
            scores = matrix @ vector
            top = np.argpartition(-scores, DENSE_K)[:DENSE_K]
            return top[np.argsort(-scores[top])].tolist()

        measured = measure(
            {
                "excluded": excluded,
                "included": included,
                "numpy_excluded": lambda q: brute(query_vectors[q]),
                "numpy_included": lambda q: brute(embedder.embed([q])[0]),
                "excluded_fused": excluded_fused,
            },
            queries,
        )
        lat_excl, results = measured["excluded"]
        lat_incl, lat_np_excl, lat_np_incl, lat_fused = (
            measured[k][0] for k in ("included", "numpy_excluded", "numpy_included", "excluded_fused"))
        index.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)

    rows = [
        summarize("retrieve, embedding excluded", lat_excl, f"HybridRetriever.retrieve top_k={args.top_k}, dense_k=50"),
        summarize("retrieve, embedding included", lat_incl, "same, query embedded by MiniLM per call"),
        summarize("baseline numpy brute force, embedding excluded", lat_np_excl, "float32 matmul + top-50"),
        summarize("baseline numpy brute force, embedding included", lat_np_incl, "MiniLM embed + matmul + top-50"),
        summarize("retrieve, embedding excluded, in_file_order=fused", lat_fused,
                  "the order before 2026-12: no per-file searches"),
    ]
    stages = {k: summarize(k, v[WARMUP:]) for k, v in stage_times.items() if k not in ("total_ms", "embed_ms")}
    citations = [len(r.candidates) for r in results]
    result = {
        "points": len(chunks), "files": len(files), "real_vectors": int(args.real), "queries": len(queries),
        "mean_chunk_lines": float(np.mean(line_counts)), "index_kind": staged.index,
        "timings_s": {k: round(v, 2) for k, v in timings.items()}, "rows": rows, "stages": stages,
        "mean_citations": float(np.mean(citations)), "peak_rss_mb": rss_mb(),
        "target_p95_ms": TARGET_P95_MS, "met": rows[0]["p95_ms"] <= TARGET_P95_MS,
        "met_including_embedding": rows[1]["p95_ms"] <= TARGET_P95_MS,
        "ratio_p95_vs_numpy_excl": rows[0]["p95_ms"] / rows[2]["p95_ms"],
        "torch_threads": torch.get_num_threads(),
        "file_lexical_weight": args.file_lexical_weight, "learned_ranker": args.learned_ranker,
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "loadavg_at_end": os.getloadavg()},
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    variant = "_ranker" if args.learned_ranker else ""
    variant += f"_fl{args.file_lexical_weight:g}" if args.file_lexical_weight else ""
    out = OUT_DIR / f"scale_bench_{len(chunks)}_t{torch.get_num_threads()}{variant}.json"
    out.write_text(json.dumps(result, indent=1))
    lines = ["| measured | P50 ms | P95 ms | mean ms | notes |", "|---|---:|---:|---:|---|"]
    for r in rows + [dict(s, name=f"  stage {s['name']}") for s in stages.values()]:
        lines.append(f"| {r['name']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['mean_ms']:.1f} | {r['notes']} |")
    table = "\n".join(lines)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\n{len(chunks)} points ({staged.index} index), {len(queries)} queries, "
          f"{torch.get_num_threads()} torch threads; retrieval P95 "
          f"{rows[0]['p95_ms']:.1f} ms excl. embedding, {rows[1]['p95_ms']:.1f} ms incl. "
          f"(target <= {TARGET_P95_MS:.0f} ms: {'MET' if result['met'] else 'MISSED'} excl., "
          f"{'MET' if result['met_including_embedding'] else 'MISSED'} incl.); "
          f"stage+publish {timings['stage_publish_s']:.1f} s, corpus build {timings['corpus_build_s']:.1f} s, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
