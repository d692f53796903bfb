"""Run the real retriever over an eval set: per-query results, metrics, ablations.

File-level metrics rank the distinct files of the returned citations; symbol-level metrics rank
the definitions (from the code graph) that start inside the returned chunks, so a class chunk
that contains the gold method counts as finding it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from codex_core.chunking import count_tokens
from codex_core.metrics import dedupe_ranking, mrr_at_k, ndcg_at_k, percentile, recall_at_k
from codex_core.retrieval import HybridRetriever, RetrievalConfig, heuristic_confidence

RANK_DEPTH = 20  # citations asked per query: enough distinct files for Recall@10


@dataclass
class QueryOutcome:
    item_id: str
    query: str
    gold_files: list[str]
    gold_symbols: list[str]
    lexical_overlap: bool
    ranked_files: list[str]
    ranked_symbols: list[str]
    latency_ms: float
    features: dict[str, float]
    heuristic_confidence: float
    top1_correct: bool
    context_tokens: int = 0  # tokens of the top-5 citations: what generation would be sent

    def row(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "query": self.query,
            "gold_files": ";".join(self.gold_files),
            "gold_symbols": ";".join(self.gold_symbols),
            "lexical_overlap": self.lexical_overlap,
            "top_files": ";".join(self.ranked_files[:10]),
            "top1_correct": self.top1_correct,
            "latency_ms": round(self.latency_ms, 2),
            "heuristic_confidence": round(self.heuristic_confidence, 4),
            **{f"feature_{k}": v for k, v in self.features.items()},
        }


@dataclass
class EvalRun:
    config_name: str
    outcomes: list[QueryOutcome] = field(default_factory=list)

    def metrics(self, subset: str = "all") -> dict[str, float]:
        chosen = [o for o in self.outcomes if subset == "all" or o.lexical_overlap == (subset == "overlap")]
        return summarize(chosen)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(outcomes: Sequence[QueryOutcome]) -> dict[str, float]:
    """File- and symbol-level Recall@1/5/10, MRR@10, nDCG@5, latency P50/P95."""
    if not outcomes:
        return {"queries": 0}
    result: dict[str, float] = {"queries": float(len(outcomes))}
    for level, ranked_of, gold_of in (
        ("file", lambda o: o.ranked_files, lambda o: o.gold_files),
        ("symbol", lambda o: o.ranked_symbols, lambda o: o.gold_symbols),
    ):
        scored = [o for o in outcomes if gold_of(o)]
        if not scored:
            continue
        for k in (1, 5, 10):
            result[f"{level}_recall_at_{k}"] = _mean([recall_at_k(ranked_of(o), gold_of(o), k) for o in scored])
        result[f"{level}_mrr_at_10"] = _mean([mrr_at_k(ranked_of(o), gold_of(o), 10) for o in scored])
        result[f"{level}_ndcg_at_5"] = _mean([ndcg_at_k(ranked_of(o), gold_of(o), 5) for o in scored])
        result[f"{level}_queries"] = float(len(scored))
    latencies = [o.latency_ms for o in outcomes]
    result["latency_p50_ms"] = percentile(latencies, 50)
    result["latency_p95_ms"] = percentile(latencies, 95)
    return result


def evaluate(
    retriever: HybridRetriever,
    items: Sequence[Any],
    *,
    repos: Sequence[str],
    graph=None,
    config: RetrievalConfig | None = None,
    config_name: str = "full",
) -> EvalRun:
    """Every item through ``retriever.retrieve`` exactly as serving calls it.

    Latency is retrieval with the query vector already computed (dense + lexical search, fusion,
    graph hop, verification); query embedding is the same for every arm and is excluded.
    """
    run = EvalRun(config_name)
    cfg = config or RetrievalConfig()
    by_path: dict[str, list[Any]] = {}
    if graph is not None:
        for d in graph.definitions:
            by_path.setdefault(d.path, []).append(d)
    # Embed every query before the clock runs: the latency of each arm is then retrieval alone,
    # measured the same way whether or not an earlier arm already embedded the query.
    for item in items:
        retriever.embed_query(item.query)
    for item in items:
        started = time.perf_counter()
        result = retriever.retrieve(item.query, repos=repos, top_k=RANK_DEPTH, config=replace(cfg, max_per_file=1))
        latency = (time.perf_counter() - started) * 1000
        files = dedupe_ranking(c.payload["path"] for c in result.candidates)
        symbols: list[str] = []
        for c in result.candidates:
            p = c.payload
            inside = (d for d in by_path.get(p["path"], []) if p["start_line"] <= d.start_line <= p["end_line"])
            symbols += [f"{d.path}::{d.symbol}" for d in inside]
        gold_files = list(item.gold_files)
        run.outcomes.append(
            QueryOutcome(
                item_id=item.id,
                query=item.query,
                gold_files=gold_files,
                gold_symbols=list(getattr(item, "gold_symbols", []) or []),
                lexical_overlap=bool(getattr(item, "lexical_overlap", False)),
                ranked_files=files,
                ranked_symbols=dedupe_ranking(symbols),
                latency_ms=latency,
                features=result.features,
                heuristic_confidence=heuristic_confidence(result.features),
                top1_correct=bool(files) and files[0] in set(gold_files),
                context_tokens=sum(count_tokens(c.payload["text"]) for c in result.candidates[:5]),
            )
        )
    return run


def ablation_configs(
    has_reranker: bool, has_ranker: bool = False, has_general: bool = False
) -> dict[str, RetrievalConfig]:
    """Each row adds one stage to the previous one; the last is what serving runs. The repository's
    learned file ranker (when one is published), else the shipped general ranker (``has_general``:
    the reader has one), is the last stage, so the rows before it show the hand-set order it re-orders."""
    hand = {"learned_ranker": False}
    by_best_chunk = {"file_evidence_decay": 0.0}
    configs = {
        "dense only": RetrievalConfig(lexical=False, graph_hops=0, rerank=False, **by_best_chunk, **hand),
        "+lexical (RRF)": RetrievalConfig(graph_hops=0, rerank=False, **by_best_chunk, **hand),
        "+graph hop": RetrievalConfig(rerank=False, **by_best_chunk, **hand),
        "+file evidence": RetrievalConfig(rerank=False, **hand),
    }
    if has_reranker:
        configs["+rerank"] = RetrievalConfig(rerank=True, **hand)
    if has_ranker:
        configs["+learned ranker"] = replace(list(configs.values())[-1], learned_ranker=True)
    elif has_general:
        configs["+general ranker"] = replace(list(configs.values())[-1], learned_ranker=True)
    return configs


def metrics_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """Markdown table: one row per configuration/subset."""
    header = "| | " + " | ".join(columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = []
        for col in columns:
            v = values.get(col)
            cells.append("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
