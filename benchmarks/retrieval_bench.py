"""File-level retrieval quality of the real query endpoint vs two baselines, on mined queries.

One run, one machine, the same files for every system:

* ``product``   the real pipeline: ``run_ingest`` into a temporary ``CODEX_HOME``, then
                ``feriactl serve`` as a subprocess on a free loopback port, every query sent with
                httpx to ``POST /v1/query`` (``top_k=10``) with no LLM reachable (``OLLAMA_HOST``
                points at a closed port, so answers are extractive). The ranked file list is the
                files of the 10 citations in order, extended (to reach 10 distinct files when the
                per-file cap of 2 citations leaves fewer) by the remaining files in the order of the
                full candidate ranking from ``GET /v1/trace/{id}`` (candidates that failed
                verification are skipped). Latency: end-to-end HTTP round trip measured by the
                client, and the retrieval-only part (sum of the trace's stage ``timings_ms``:
                query embedding, dense, lexical, graph hop, select+verify).
* ``bm25-file`` ``codex_core.lexical.LexicalIndex`` (bm25s with the product's code tokenizer) over
                whole files, each document being ``path + "\\n" + file text``.
* ``dense-window`` all-MiniLM-L6-v2 over 60-line windows with 50% overlap (stride 30), each
                embedded as ``path + "\\n" + window``; exact cosine with numpy; a file scores its
                best window. Window vectors are cached in ``benchmarks/out/`` keyed by repo commit.

The three systems answer each query in turn (product, bm25-file, dense-window, then the next
query), so a burst of other load on the machine hits all of them alike.

"The same files" = the files the ingestion scan indexed (``codex_core.files.scan_repository`` at
the indexed commit: binaries, vendored, generated and oversized files are out for everyone).
Baseline latency is their own query time, query embedding included.

Metrics per system (``codex_core.metrics``): Recall@1/5/10, MRR@10, nDCG@5, P50/P95 latency, and
the ratio product nDCG@5 / best baseline nDCG@5 (target >= 1.25).

Run::

    .venv/bin/python benchmarks/mine_queries.py REPO --max 150 > benchmarks/out/queries.jsonl
    .venv/bin/python benchmarks/retrieval_bench.py REPO benchmarks/out/queries.jsonl --name NAME

REPO may be a git work tree or a bare git directory (e.g. from a mirror): a bare one is cloned
into a temporary work tree first. The ingestion's embedding cache is kept in
``benchmarks/out/retrieval_bench_ingest_embeddings.sqlite`` and seeded into the temporary home on reruns, so
a rerun re-runs the whole pipeline but computes no embeddings it already has.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from _setup import OUT_DIR  # noqa: E402  (first: sets up the environment)

from codex_core.metrics import dedupe_ranking, mrr_at_k, ndcg_at_k, percentile, recall_at_k  # noqa: E402

TOP_K = 10
WINDOW_LINES = 60
WINDOW_STRIDE = 30
WARMUP_QUERIES = 3
TARGET_RATIO = 1.25
# Keys of a trace's ``timings_ms`` that add up other keys (the engine's whole request, its retrieval
# call); the rest are retriever stages, whose sum is the retrieval-only time.
AGGREGATE_TIMINGS = frozenset({"total_ms", "retrieval_ms"})


# --------------------------------------------------------------------------- inputs


def load_queries(path: Path, limit: int | None) -> list[dict[str, Any]]:
    queries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        q = json.loads(line)
        if not q.get("query") or not q.get("gold_files"):
            raise SystemExit(f"{path}:{n}: every line needs a non-empty 'query' and 'gold_files'")
        queries.append(q)
    return queries[:limit] if limit else queries


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def work_tree(repo: Path) -> Iterator[Path]:
    """``repo`` itself when it is a work tree; a temporary clone of it when it is a bare git dir."""
    try:
        bare = git(repo, "rev-parse", "--is-bare-repository") == "true"
    except subprocess.CalledProcessError:
        raise SystemExit(f"{repo} is not a git repository (pass a work tree or a bare git directory)") from None
    if not bare:
        yield Path(git(repo, "rev-parse", "--show-toplevel"))
        return
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-clone-") as tmp:
        target = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(repo), str(target)], check=True)
        print(f"cloned bare repository {repo} into temporary work tree {target}", file=sys.stderr)
        yield target


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- scoring


@dataclass
class SystemRun:
    name: str
    rankings: list[list[str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    extra_latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    notes: str = ""

    def summary(self, queries: list[dict[str, Any]]) -> dict[str, Any]:
        golds = [q["gold_files"] for q in queries]

        def mean(metric: Callable[[list[str], list[str], int], float], k: int) -> float:
            return float(np.mean([metric(r, g, k) for r, g in zip(self.rankings, golds, strict=True)]))

        out = {
            "system": self.name,
            "recall@1": mean(recall_at_k, 1),
            "recall@5": mean(recall_at_k, 5),
            "recall@10": mean(recall_at_k, 10),
            "mrr@10": mean(mrr_at_k, 10),
            "ndcg@5": mean(ndcg_at_k, 5),
            "p50_ms": percentile(self.latencies_ms, 50),
            "p95_ms": percentile(self.latencies_ms, 95),
            "notes": self.notes,
        }
        for key, values in self.extra_latencies_ms.items():
            out[f"{key}_p50_ms"] = percentile(values, 50)
            out[f"{key}_p95_ms"] = percentile(values, 95)
        return out


# --------------------------------------------------------------------------- product


def seed_embedding_cache(source: Path, home: Path) -> None:
    if source.exists():
        target = home / "embeddings" / "cache.sqlite"
        target.parent.mkdir(parents=True, exist_ok=True)
        sqlite_copy(source, target)


def sqlite_copy(source: Path, target: Path) -> None:
    """Consistent copy of a (possibly open, WAL-mode) sqlite database."""
    src, dst = sqlite3.connect(str(source)), sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def ingest(repo: Path, name: str, home: Path) -> dict[str, Any]:
    os.environ["CODEX_HOME"] = str(home)
    from codex_cli.main import run_ingest

    t0 = time.perf_counter()
    summary = run_ingest(str(repo), name, show_progress=sys.stderr.isatty())
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if not summary["success"]:
        raise SystemExit(f"ingestion of {repo} failed: {summary['failures'] or summary['checks']}")
    return summary


@contextlib.contextmanager
def serve(home: Path, log_path: Path) -> Iterator[str]:
    """``feriactl serve`` in a subprocess on a free port, with no LLM reachable; yields its base URL."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",  # nothing listens there: extractive answers
    }
    feriactl = Path(sys.executable).with_name("feriactl")
    command = [str(feriactl)] if feriactl.exists() else [sys.executable, "-m", "codex_cli.main"]
    with log_path.open("w") as log:
        proc = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        kept_log = OUT_DIR / "retrieval_bench_serve.log"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    shutil.copy(log_path, kept_log)
                    raise SystemExit(f"feriactl serve exited with {proc.returncode}; see {kept_log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    shutil.copy(log_path, kept_log)
                    raise SystemExit(f"feriactl serve did not answer /v1/health within 180 s; see {kept_log}")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def product_ranking(response: dict[str, Any], trace: dict[str, Any]) -> list[str]:
    cited = [c["path"] for c in response["citations"]]
    tail = [c["path"] for c in trace["candidates"] if not (c.get("dropped") or "").startswith("verification failed")]
    return dedupe_ranking(cited + tail)[:TOP_K]


class Product:
    """The served endpoint as a system: one ``ask`` per query, timed end to end by the client."""

    def __init__(self, client, name: str):
        self.client = client
        self.name = name
        self.run = SystemRun(
            "product", notes="POST /v1/query top_k=10, extractive; files = citations, then trace order"
        )
        self.run.extra_latencies_ms["retrieval"] = []
        self.run.extra_latencies_ms["retrieval_excl_embedding"] = []
        self.details: list[dict[str, Any]] = []
        self.throttled = 0

    def _post(self, query: str) -> tuple[dict[str, Any], float]:
        """One admitted query and its latency; a 429 from the server's quotas is waited out, not timed."""
        for _ in range(10):
            t0 = time.perf_counter()
            response = self.client.post("/v1/query", json={"query": query, "repo": self.name, "top_k": TOP_K})
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code != 429:
                response.raise_for_status()
                return response.json(), elapsed
            self.throttled += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))
        raise SystemExit("the query endpoint kept answering 429 Too Many Requests; check its quota configuration")

    def warm(self, query: str) -> None:
        self._post(query)

    def ask(self, query: str) -> None:
        body, elapsed = self._post(query)
        trace = self.client.get(f"/v1/trace/{body['trace_id']}").json()
        stages = {k: v for k, v in trace["timings_ms"].items() if k not in AGGREGATE_TIMINGS}
        retrieval_ms = sum(stages.values())
        self.run.rankings.append(product_ranking(body, trace))
        self.run.latencies_ms.append(elapsed)
        self.run.extra_latencies_ms["retrieval"].append(retrieval_ms)
        self.run.extra_latencies_ms["retrieval_excl_embedding"].append(retrieval_ms - stages.get("embed_ms", 0.0))
        self.details.append({
            "model": body["model"], "abstained": body["abstained"], "confidence": body["confidence"],
            "cited_files": len(dedupe_ranking(c["path"] for c in body["citations"])),
            "top_citations": [f"{c['path']}:{c['line_start']}-{c['line_end']}" for c in body["citations"][:3]],
            "top_via": [c["via"] for c in trace["candidates"][:3]],
            "timings_ms": trace["timings_ms"],
        })


# --------------------------------------------------------------------------- baselines


class Baseline:
    """A baseline as a system: ``search(query) -> ranked paths``, timed around the call."""

    def __init__(self, name: str, notes: str, search: Callable[[str], list[str]]):
        self.run = SystemRun(name, notes=notes)
        self.search = search

    def warm(self, query: str) -> None:
        self.search(query)

    def ask(self, query: str) -> None:
        t0 = time.perf_counter()
        ranking = self.search(query)
        self.run.latencies_ms.append((time.perf_counter() - t0) * 1000)
        self.run.rankings.append(ranking)


def bm25_baseline(files) -> Baseline:
    from codex_core.lexical import LexicalIndex

    paths = [f.path for f in files]
    index = LexicalIndex([f"{f.path}\n{f.text}" for f in files])
    return Baseline(
        "bm25-file", "codex_core.lexical.LexicalIndex over whole files (path + text)",
        lambda query: [paths[i] for i, _ in index.search(query, TOP_K)],
    )


def file_windows(files) -> tuple[list[str], list[str]]:
    """(path of each window, text embedded for it): 60-line windows, stride 30, blank ones skipped."""
    owners, texts = [], []
    for f in files:
        lines = f.text.split("\n")
        for start in range(0, max(1, len(lines) - WINDOW_STRIDE), WINDOW_STRIDE):
            window = lines[start : start + WINDOW_LINES]
            if not any(line.strip() for line in window):
                continue
            owners.append(f.path)
            texts.append(f"{f.path}\n" + "\n".join(window))
    return owners, texts


def window_vectors(embedder, texts: list[str], commit: str) -> tuple[np.ndarray, float | None]:
    """Cached by (commit, window settings, text fingerprint); seconds is None on a cache hit."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stem = OUT_DIR / f"dense_windows_{commit[:12]}_{WINDOW_LINES}s{WINDOW_STRIDE}"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    fingerprint = str(uuid.uuid5(uuid.NAMESPACE_OID, "\x1e".join(texts)))
    if npy.exists() and meta.exists() and json.loads(meta.read_text()).get("fingerprint") == fingerprint:
        return np.load(npy), None
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    seconds = time.perf_counter() - t0
    np.save(npy, vectors)
    meta.write_text(json.dumps({"fingerprint": fingerprint, "windows": len(texts), "embed_seconds": seconds,
                                "commit": commit}))
    return vectors, seconds


def dense_baseline(embedder, files, commit: str) -> tuple[Baseline, dict]:
    owners, texts = file_windows(files)
    vectors, seconds = window_vectors(embedder, texts, commit)
    paths = sorted(set(owners))
    position = {p: i for i, p in enumerate(paths)}
    owner_idx = np.array([position[p] for p in owners])

    def search(query: str) -> list[str]:
        scores = vectors @ embedder.embed([query])[0]
        best = np.full(len(paths), -np.inf, dtype=np.float32)
        np.maximum.at(best, owner_idx, scores)
        return [paths[i] for i in np.argsort(-best, kind="stable")[:TOP_K]]

    notes = f"MiniLM, {len(texts)} windows of 60 lines, 50% overlap; best window/file"
    return Baseline("dense-window", notes, search), {"windows": len(texts), "embed_seconds": seconds,
                                                      "cached": seconds is None}


def run_interleaved(systems: list, queries: list[dict[str, Any]]) -> None:
    """Every system answers query i before any answers query i+1: load spikes from other work on
    the machine then hit all systems alike instead of whichever was running at the time."""
    for q in queries[:WARMUP_QUERIES]:
        for system in systems:
            system.warm(q["query"])
    for q in queries:
        for system in systems:
            system.ask(q["query"])


# --------------------------------------------------------------------------- report


def diagnostics(systems: list[SystemRun], queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the differences come from (not part of the target).

    * ``by_gold_stem_in_query``: nDCG@5 on queries whose words include a gold file's name stem
      (``_multipart.py`` -> "multipart") vs the rest: the lexical overlap commit messages have.
    * ``source_only_ndcg@5``: nDCG@5 after removing test files and non-code files from every
      ranking. Gold files are never tests or docs, so this shows how much of a margin comes from
      down-weighting tests and docs rather than from ranking source files better.
    """
    from codex_core.evalsets import is_source_path
    from codex_core.lexical import code_tokens

    def names_gold(q: dict[str, Any]) -> bool:
        words = set(code_tokens(q["query"]))
        return any(set(code_tokens(PurePosixPath(g).stem)) & words for g in q["gold_files"])

    def source_only(ranking: list[str]) -> list[str]:
        return [p for p in ranking if is_source_path(p)]

    named = [names_gold(q) for q in queries]
    out: dict[str, Any] = {"queries_naming_a_gold_stem": sum(named), "by_gold_stem_in_query": {},
                           "source_only_ndcg@5": {}}
    for s in systems:
        scores = [ndcg_at_k(r, q["gold_files"], 5) for r, q in zip(s.rankings, queries, strict=True)]
        out["by_gold_stem_in_query"][s.name] = {
            "named": float(np.mean([x for x, n in zip(scores, named, strict=True) if n] or [float("nan")])),
            "not_named": float(np.mean([x for x, n in zip(scores, named, strict=True) if not n] or [float("nan")])),
        }
        out["source_only_ndcg@5"][s.name] = float(np.mean(
            [ndcg_at_k(source_only(r), q["gold_files"], 5) for r, q in zip(s.rankings, queries, strict=True)]
        ))
    return out


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": os.getloadavg(),  # other work on the machine inflates latencies
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | R@1 | R@5 | R@10 | MRR@10 | nDCG@5 | P50 ms | P95 ms | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['recall@10']:.3f} | {r['mrr@10']:.3f}"
            f" | {r['ndcg@5']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['notes']} |"
        )
        if "retrieval_p50_ms" in r:
            lines.append(
                f"| {r['system']} (retrieval only) | | | | | | {r['retrieval_p50_ms']:.1f}"
                f" | {r['retrieval_p95_ms']:.1f}"
                " | sum of the trace's retriever stages (embed, dense, lexical, graph, select+verify) |"
            )
            lines.append(
                f"| {r['system']} (retrieval, excl. query embedding) | | | | | |"
                f" {r['retrieval_excl_embedding_p50_ms']:.1f} | {r['retrieval_excl_embedding_p95_ms']:.1f}"
                " | the same minus embed_ms |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="git work tree or bare git directory")
    parser.add_argument("queries", type=Path, help="JSONL from benchmarks/mine_queries.py")
    parser.add_argument("--name", help="repository name (default: the directory name)")
    parser.add_argument("--limit", type=int, help="use only the first N queries")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary CODEX_HOME (path printed)")
    args = parser.parse_args(argv)

    queries = load_queries(args.queries, args.limit)
    if len(queries) <= WARMUP_QUERIES:
        raise SystemExit(f"need more than {WARMUP_QUERIES} queries, got {len(queries)}")
    started = time.perf_counter()
    with work_tree(args.repo.resolve()) as repo:
        name = args.name or repo.name
        commit = git(repo, "rev-parse", "HEAD")
        home = Path(tempfile.mkdtemp(prefix="retrieval-bench-home-"))
        # Keyed by (model id, content hash) inside: one file serves every repository and name.
        cache_copy = OUT_DIR / "retrieval_bench_ingest_embeddings.sqlite"
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        try:
            seed_embedding_cache(cache_copy, home)
            print(f"ingesting {repo} @ {commit[:12]} as {name!r} into CODEX_HOME={home}", file=sys.stderr)
            summary = ingest(repo, name, home)
            sqlite_copy(home / "embeddings" / "cache.sqlite", cache_copy)
            print(f"ingested: {summary['points_published']} points, {summary['embeddings_computed']} embeddings "
                  f"computed, {summary['embeddings_cached']} cached, {summary['wall_seconds']} s", file=sys.stderr)

            from codex_core.embedding import SentenceTransformerEmbedder
            from codex_core.files import scan_repository

            files = scan_repository(repo, commit).files
            bm25 = bm25_baseline(files)
            dense, dense_info = dense_baseline(SentenceTransformerEmbedder(), files, commit)

            import httpx

            print(f"serving; sending {len(queries)} queries to it and to the baselines", file=sys.stderr)
            with serve(home, home / "serve.log") as base, httpx.Client(base_url=base, timeout=120) as client:
                health = client.get("/v1/health").json()
                product = Product(client, name)
                run_interleaved([product, bm25, dense], queries)
        finally:
            if args.keep_home:
                print(f"kept CODEX_HOME={home}", file=sys.stderr)
            else:
                shutil.rmtree(home, ignore_errors=True)

    systems = [product.run, bm25.run, dense.run]
    details = product.details
    rows = [s.summary(queries) for s in systems]
    best_baseline = max(rows[1:], key=lambda r: r["ndcg@5"])
    ratio = rows[0]["ndcg@5"] / best_baseline["ndcg@5"] if best_baseline["ndcg@5"] else float("inf")
    per_query = []
    for i, q in enumerate(queries):
        entry = {**q, "product_response": details[i]}
        for s in systems:
            entry[s.name] = {
                "ranking": s.rankings[i],
                "ndcg@5": ndcg_at_k(s.rankings[i], q["gold_files"], 5),
                "mrr@10": mrr_at_k(s.rankings[i], q["gold_files"], 10),
                "latency_ms": round(s.latencies_ms[i], 2),
            }
        per_query.append(entry)
    diag = diagnostics(systems, queries)
    table = markdown_table(rows)
    result = {
        "repo": name, "commit": commit, "queries": len(queries), "queries_file": str(args.queries),
        "files": len(files), "points": summary["points_published"], "ingest": summary,
        "dense_windows": dense_info, "machine": machine(), "llm": health.get("llm", {}).get("reachable"),
        "throttled_requests": product.throttled,
        "rows": rows, "best_baseline": best_baseline["system"], "ndcg5_ratio": ratio,
        "target_ratio": TARGET_RATIO, "met": ratio >= TARGET_RATIO,
        "models_used": sorted({d["model"] for d in details}), "diagnostics": diag,
        "seconds": round(time.perf_counter() - started, 1), "per_query": per_query,
    }
    out = OUT_DIR / f"retrieval_bench_{name}_{commit[:12]}.json"
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(
        f"\nproduct nDCG@5 / best baseline ({best_baseline['system']}) nDCG@5 = {ratio:.3f}  "
        f"(target >= {TARGET_RATIO}: {'MET' if ratio >= TARGET_RATIO else 'MISSED'})"
    )
    by_stem = diag["by_gold_stem_in_query"]
    print(f"diagnostics: {diag['queries_naming_a_gold_stem']}/{len(queries)} queries name a gold file's stem; "
          "nDCG@5 named / not named: "
          + ", ".join(f"{k} {v['named']:.3f} / {v['not_named']:.3f}" for k, v in by_stem.items()))
    print("diagnostics: nDCG@5 with tests and non-code files removed from every ranking: "
          + ", ".join(f"{k} {v:.3f}" for k, v in diag["source_only_ndcg@5"].items()))
    print(f"{name} @ {commit[:12]}: {len(queries)} queries, {len(files)} files, {summary['points_published']} points; "
          f"answers by {result['models_used']}; {result['seconds']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
