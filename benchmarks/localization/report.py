"""Metrics and tables of the localization benchmark: per repository, per language, macro."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from codex_core.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@5")


def score(ranking: list[str], gold: list[str]) -> dict[str, float]:
    return {
        "recall@1": recall_at_k(ranking, gold, 1),
        "recall@5": recall_at_k(ranking, gold, 5),
        "recall@10": recall_at_k(ranking, gold, 10),
        "mrr@10": mrr_at_k(ranking, gold, 10),
        "ndcg@5": ndcg_at_k(ranking, gold, 5),
    }


def summarize(records: Iterable[dict[str, Any]], systems: list[str]) -> dict[str, dict[str, float]]:
    """Mean metrics and latency percentiles per system over per-query ``records``."""
    records = list(records)
    out: dict[str, dict[str, float]] = {}
    for system in systems:
        rows = [r["systems"][system] for r in records]
        if not rows:
            continue
        out[system] = {m: float(np.mean([row[m] for row in rows])) for m in METRICS}
        latencies = [row["ms"] for row in rows]
        out[system] |= {"p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "n": len(rows)}
    return out


def ratio(summary: dict[str, dict[str, float]], product: str, baselines: list[str], metric: str = "ndcg@5") -> float:
    best = max(summary[b][metric] for b in baselines)
    return summary[product][metric] / best if best else float("inf")


def macro(per_repo: dict[str, dict[str, dict[str, float]]], repos: list[str], systems: list[str]) -> dict:
    """Unweighted mean over repositories of each per-repository mean (latency: mean of percentiles)."""
    out: dict[str, dict[str, float]] = {}
    for system in systems:
        rows = [per_repo[r][system] for r in repos if system in per_repo.get(r, {})]
        if rows:
            out[system] = {k: float(np.mean([row[k] for row in rows])) for k in (*METRICS, "p50_ms", "p95_ms")}
            out[system]["n"] = sum(row["n"] for row in rows)
    return out


def tables(result: dict[str, Any], split: str = "heldout") -> str:
    """Markdown: per repository, per language and macro, for one split."""
    product, baselines = result["product"], result["baselines"]
    systems = [product, *[v for v in result.get("variants", {}) if v != product], *baselines]
    lines = [
        f"Split: **{split}** (questions newer than every tuned-on one). nDCG@5 ratio = {product} / the stronger "
        "baseline.",
        "",
        "| repo | lang | n | system | R@1 | R@5 | R@10 | MRR@10 | nDCG@5 | P50 ms | P95 ms | ratio |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def rows(label: str, lang: str, summary: dict) -> None:
        if not summary or product not in summary:
            return
        for system in systems:
            s = summary[system]
            r = ratio(summary, system, baselines)
            lines.append(
                f"| {label} | {lang} | {s['n']} | {system} | {s['recall@1']:.3f} | {s['recall@5']:.3f} | "
                f"{s['recall@10']:.3f} | {s['mrr@10']:.3f} | {s['ndcg@5']:.3f} | {s['p50_ms']:.1f} | "
                f"{s['p95_ms']:.1f} | {f'{r:.2f}x' if system not in baselines else ''} |"
            )

    for repo in result["repos"]:
        rows(repo["name"], repo["language"], result["splits"][split]["per_repo"].get(repo["name"], {}))
    for lang, summary in result["splits"][split]["per_language"].items():
        rows("**" + lang + "**", lang, summary)
    rows("**macro**", "all", result["splits"][split]["macro"])
    return "\n".join(lines)


def aggregate(result: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Fill ``result["splits"]`` from per-query ``records`` (each has repo, language, split, systems)."""
    systems = [result["product"], *[v for v in result.get("variants", {}) if v != result["product"]],
               *result["baselines"]]
    by_lang: dict[str, list[str]] = defaultdict(list)
    for repo in result["repos"]:
        by_lang[repo["language"]].append(repo["name"])
    result["splits"] = {}
    for split in ("tune", "heldout"):
        per_repo = {
            repo["name"]: summarize((r for r in records if r["repo"] == repo["name"] and r["split"] == split), systems)
            for repo in result["repos"]
        }
        names = [name for name, s in per_repo.items() if s]
        result["splits"][split] = {
            "per_repo": per_repo,
            "per_language": {lang: macro(per_repo, [n for n in repos if n in names], systems)
                             for lang, repos in sorted(by_lang.items())},
            "macro": macro(per_repo, names, systems),
        }
        m = result["splits"][split]["macro"]
        if product_ok := (result["product"] in m):
            result["splits"][split]["ndcg5_ratio"] = ratio(m, result["product"], result["baselines"])
        result["splits"][split]["complete"] = product_ok
