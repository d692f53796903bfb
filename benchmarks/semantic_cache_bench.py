"""How close must two questions be for one's answer to serve the other? The semantic cache's threshold,
measured on hand-written question pairs about real code (issue #16, "Semantic cache").

``benchmarks/semantic_cache/pairs.jsonl`` holds pairs of questions about marshmallow, gin, ky and
starlette at the commits pinned in ``localization/repos.json``, each question with the file and line
span that answers it:

- ``paraphrase`` pairs need the same answer (identical gold spans). ``variant`` says how far apart
  they are: ``light`` (re-typed: casing, punctuation, a dropped or swapped word, a spelling) or
  ``reworded`` (the same intent in other words, as another person would ask it);
- ``different`` pairs are hard negatives: similar wording, another answer. ``variant``: ``minimal``
  (one or two words name another thing: "serialized" vs "deserialized", "HTTP" vs "HTTPS"),
  ``similar`` (another function or file, more words apart) or ``intent`` (the same subject and
  evidence, another question: "where is X" vs "why is X"; the only negatives whose gold spans may be
  the same).

Every question of a repository is also compared with every other one of that repository: questions
linked by paraphrase pairs share an answer, questions whose gold spans do not overlap at all do not,
and the rest (overlapping evidence, different questions) are left out as ambiguous.

The split is by repository: the threshold is chosen on ``tune`` (marshmallow, gin) only — the lowest
threshold on a 0.005 grid at which no tune pair with different answers is as similar (labelled pairs
and all within-repository pairs) — and the hit and false-hit rates are reported on ``held_out``
(ky, starlette). The cache simulation puts every other question of the repository in the cache and
looks each question up: the nearest entry at or above the threshold is a correct hit (same answer),
a false hit (different answer) or ambiguous.

The embedder is the one serving uses (``codex_core.embedding.SentenceTransformerEmbedder``, MiniLM
from its PyPI package unless ``CODEX_EMBEDDING_MODEL_PATH`` says otherwise). Outputs: raw per-pair
similarities in ``benchmarks/out/semantic_cache/`` and the summary in
``benchmarks/semantic_cache/results.json`` (``--results``).

    .venv/bin/python benchmarks/semantic_cache_bench.py --repos-dir /work/locrepos
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _setup import OUT_DIR  # noqa: E402  (first: sets up the environment)

PAIRS = HERE / "semantic_cache" / "pairs.jsonl"
RESULTS = HERE / "semantic_cache" / "results.json"
REPOS_JSON = HERE / "localization" / "repos.json"
SPLIT = {"tune": ("marshmallow", "gin"), "held_out": ("ky", "starlette")}
LABELS = {"paraphrase": ("light", "reworded"), "different": ("minimal", "similar", "intent")}
GRID = 0.005


# ---------------------------------------------------------------- data


def load_pairs(path: Path = PAIRS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _spans(gold: Iterable[dict[str, Any]]) -> set[tuple[str, int, int]]:
    return {(g["path"], int(g["start_line"]), int(g["end_line"])) for g in gold}


def overlaps(a: Iterable[dict[str, Any]], b: Iterable[dict[str, Any]]) -> bool:
    return any(pa == pb and sa <= eb and sb <= ea for pa, sa, ea in _spans(a) for pb, sb, eb in _spans(b))


def check_pairs(pairs: Sequence[dict[str, Any]]) -> None:
    """The data's own rules; a violation is a ``ValueError`` naming the pair."""
    seen: set[str] = set()
    repos = {r for names in SPLIT.values() for r in names}
    gold_of: dict[tuple[str, str], set[tuple[str, int, int]]] = {}
    for p in pairs:
        where = f"pair {p.get('id')!r} in {PAIRS.name}"
        if p["id"] in seen:
            raise ValueError(f"{where}: duplicate id")
        seen.add(p["id"])
        if p["repo"] not in repos:
            raise ValueError(f"{where}: repository {p['repo']!r} is in no split ({SPLIT})")
        if p["label"] not in LABELS or p.get("variant") not in LABELS[p["label"]]:
            raise ValueError(f"{where}: label/variant must be one of {LABELS}, got {p['label']}/{p.get('variant')}")
        if p["a"].strip() == p["b"].strip():
            raise ValueError(f"{where}: both questions are the same text")
        same = _spans(p["gold_a"]) == _spans(p["gold_b"])
        if p["label"] == "paraphrase" and not same:
            raise ValueError(f"{where}: a paraphrase must have the same gold spans on both sides")
        if p["label"] == "different" and same and p["variant"] != "intent":
            raise ValueError(f"{where}: a hard negative must not have the same gold spans on both sides "
                             "(unless it asks another question of the same code: variant intent)")
        for side in ("a", "b"):
            key = (p["repo"], p[side])
            spans = _spans(p[f"gold_{side}"])
            if gold_of.setdefault(key, spans) != spans:
                raise ValueError(f"{where}: question {p[side]!r} has other gold spans in another pair")


def check_gold_at_commits(pairs: Sequence[dict[str, Any]], repos_dir: Path) -> dict[str, str]:
    """Every gold span exists at the pinned commit of a local clone (``repos_dir/<name>``, bare or not).
    Returns {repo: "checked" | why not}."""
    pinned = {r["name"]: r["commit"] for r in json.loads(REPOS_JSON.read_text())["repos"]}
    status: dict[str, str] = {}
    lengths: dict[tuple[str, str], int] = {}
    for p in pairs:
        repo = p["repo"]
        clone = repos_dir / repo
        if not clone.exists():
            status[repo] = f"no clone at {clone}"
            continue
        for gold in (*p["gold_a"], *p["gold_b"]):
            key = (repo, gold["path"])
            if key not in lengths:
                shown = subprocess.run(["git", "-C", str(clone), "show", f"{pinned[repo]}:{gold['path']}"],
                                       capture_output=True, text=True)
                if shown.returncode != 0:
                    raise ValueError(f"pair {p['id']!r}: {gold['path']} is not in {repo} at {pinned[repo][:12]}")
                lengths[key] = len(shown.stdout.splitlines())
            if not 1 <= gold["start_line"] <= gold["end_line"] <= lengths[key]:
                raise ValueError(f"pair {p['id']!r}: {gold['path']}:{gold['start_line']}-{gold['end_line']} "
                                 f"is outside the file ({lengths[key]} lines)")
        status.setdefault(repo, "checked")
    return status


# ---------------------------------------------------------------- measurement


def question_groups(pairs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(repo, question) -> answer group: questions linked by paraphrase pairs share one."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find((p["repo"], p["a"])), find((p["repo"], p["b"]))
        if p["label"] == "paraphrase":
            parent[a] = b
    roots: dict[tuple[str, str], int] = {}
    return {q: roots.setdefault(find(q), len(roots)) for q in list(parent)}


def all_pairs(pairs: Sequence[dict[str, Any]], vectors: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Every unordered pair of distinct questions of one repository, labelled same / different / ambiguous."""
    groups = question_groups(pairs)
    gold: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in pairs:
        gold[(p["repo"], p["a"])] = p["gold_a"]
        gold[(p["repo"], p["b"])] = p["gold_b"]
    by_repo: dict[str, list[str]] = {}
    for repo, question in gold:
        by_repo.setdefault(repo, []).append(question)
    rows = []
    for repo, questions in sorted(by_repo.items()):
        for i, a in enumerate(questions):
            for b in questions[i + 1:]:
                if groups[(repo, a)] == groups[(repo, b)]:
                    label = "same"
                elif overlaps(gold[(repo, a)], gold[(repo, b)]):
                    label = "ambiguous"
                else:
                    label = "different"
                rows.append({"repo": repo, "a": a, "b": b, "label": label,
                             "similarity": float(vectors[a] @ vectors[b])})
    return rows


def rate(hits: int, total: int) -> dict[str, Any]:
    return {"hits": hits, "total": total, "rate": round(hits / total, 4) if total else None}


def at_threshold(pair_rows: Sequence[dict[str, Any]], everything: Sequence[dict[str, Any]], repos: Sequence[str],
                 threshold: float) -> dict[str, Any]:
    """Hit and false-hit rates of ``repos`` at ``threshold``."""
    mine = [r for r in pair_rows if r["repo"] in repos]
    within = [r for r in everything if r["repo"] in repos]
    out: dict[str, Any] = {"repos": list(repos)}
    for label, variants in LABELS.items():
        chosen = [r for r in mine if r["label"] == label]
        name = "hit_rate" if label == "paraphrase" else "false_hit_rate"
        out[name] = rate(sum(r["similarity"] >= threshold for r in chosen), len(chosen))
        out[f"{name}_by_variant"] = {
            v: rate(sum(r["similarity"] >= threshold for r in chosen if r["variant"] == v),
                    sum(r["variant"] == v for r in chosen))
            for v in variants
        }
    different = [r for r in within if r["label"] == "different"]
    out["within_repo_false_hit_rate"] = rate(sum(r["similarity"] >= threshold for r in different), len(different))
    out["simulation"] = simulate(within, threshold)
    return out


def simulate(within: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Each question looked up in a cache holding every other question of its repository."""
    neighbours: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for r in within:
        neighbours.setdefault((r["repo"], r["a"]), []).append((r["similarity"], r["label"]))
        neighbours.setdefault((r["repo"], r["b"]), []).append((r["similarity"], r["label"]))
    outcome = {"correct_hit": 0, "false_hit": 0, "ambiguous_hit": 0, "miss": 0}
    for found in neighbours.values():
        similarity, label = max(found)
        if similarity < threshold:
            outcome["miss"] += 1
        else:
            outcome[{"same": "correct_hit", "different": "false_hit", "ambiguous": "ambiguous_hit"}[label]] += 1
    lookups = sum(outcome.values())
    return {"lookups": lookups, **outcome,
            "false_hit_rate": round(outcome["false_hit"] / lookups, 4) if lookups else None}


def choose_threshold(pair_rows: Sequence[dict[str, Any]], everything: Sequence[dict[str, Any]],
                     repos: Sequence[str]) -> tuple[float, float]:
    """(the lowest grid threshold above every different-answer similarity of ``repos``, that maximum)."""
    negatives = [r["similarity"] for r in pair_rows if r["repo"] in repos and r["label"] == "different"]
    negatives += [r["similarity"] for r in everything if r["repo"] in repos and r["label"] == "different"]
    worst = max(negatives)
    steps = int(np.floor(worst / GRID + 1e-9)) + 1
    return round(min(1.0, steps * GRID), 4), worst


def curve(pair_rows: Sequence[dict[str, Any]], everything: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for t in np.round(np.arange(0.80, 1.0001, 0.01), 2):
        row: dict[str, Any] = {"threshold": float(t)}
        for split, repos in SPLIT.items():
            m = at_threshold(pair_rows, everything, repos, float(t))
            row[split] = {"hit_rate": m["hit_rate"]["rate"], "false_hit_rate": m["false_hit_rate"]["rate"],
                          "within_repo_false_hit_rate": m["within_repo_false_hit_rate"]["rate"]}
        rows.append(row)
    return rows


def lookup_cost(dim: int, entries: int = 1024, lookups: int = 2000) -> dict[str, float]:
    """Time of one lookup in a full cache whose entries all share the request's scope (the worst case)."""
    from codex_core.semantic_cache import CacheScope, SemanticCache

    rng = np.random.default_rng(0)
    cache: SemanticCache[int] = SemanticCache(0.99, max_entries=entries)
    scope = CacheScope.of(tenant="t", indexes={"r": ("c", "v")}, top_k=5, config="default")
    for i in range(entries):
        cache.store(scope, rng.standard_normal(dim).astype(np.float32), i, ref=str(i))
    queries = rng.standard_normal((lookups, dim)).astype(np.float32)
    cache.lookup(scope, queries[0])  # builds the scope's matrix once
    times = []
    for q in queries:
        t0 = time.perf_counter()
        cache.lookup(scope, q)
        times.append((time.perf_counter() - t0) * 1e6)
    return {"entries": entries, "p50_us": round(float(np.percentile(times, 50)), 1),
            "p95_us": round(float(np.percentile(times, 95)), 1)}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--repos-dir", type=Path,
                        help="local clones named like the repositories: gold spans are checked at the pinned commits")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "semantic_cache", help="raw per-pair similarities")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the summary (committed)")
    args = parser.parse_args(argv)

    from codex_core.embedding import SentenceTransformerEmbedder
    from codex_core.settings import Settings

    pairs = load_pairs(args.pairs)
    check_pairs(pairs)
    gold_check = check_gold_at_commits(pairs, args.repos_dir) if args.repos_dir else {"all": "not checked"}
    settings = Settings.from_env()
    embedder = SentenceTransformerEmbedder(settings.embedding_model_path, model_id=settings.embedding_model_id,
                                           device=settings.embedding_device)
    questions = sorted({p[side] for p in pairs for side in ("a", "b")})
    t0 = time.perf_counter()
    matrix = embedder.embed(questions)
    embed_s = time.perf_counter() - t0
    vectors = dict(zip(questions, matrix, strict=True))

    pair_rows = [{
        "id": p["id"], "repo": p["repo"], "label": p["label"], "variant": p["variant"],
        "split": next(s for s, repos in SPLIT.items() if p["repo"] in repos),
        "similarity": float(vectors[p["a"]] @ vectors[p["b"]]), "a": p["a"], "b": p["b"],
    } for p in pairs]
    everything = all_pairs(pairs, vectors)
    threshold, worst_tune = choose_threshold(pair_rows, everything, SPLIT["tune"])
    tune = at_threshold(pair_rows, everything, SPLIT["tune"], threshold)
    held_out = at_threshold(pair_rows, everything, SPLIT["held_out"], threshold)
    held_negatives = held_out["false_hit_rate"]["hits"] + held_out["within_repo_false_hit_rate"]["hits"]
    best_positive = max((r for r in pair_rows if r["label"] == "paraphrase" and r["split"] == "held_out"),
                        key=lambda r: r["similarity"])
    worst_held = max((r for r in pair_rows if r["label"] == "different" and r["split"] == "held_out"),
                     key=lambda r: r["similarity"])

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "pairs.jsonl").open("w") as f:
        for row in sorted(pair_rows, key=lambda r: -r["similarity"]):
            f.write(json.dumps(row) + "\n")
    with (args.out / "within_repo.jsonl").open("w") as f:
        for row in sorted(everything, key=lambda r: -r["similarity"]):
            f.write(json.dumps(row) + "\n")

    results = {
        "benchmark": "semantic_cache_bench.py",
        "embedder": embedder.model_id,
        "pairs": {label: sum(p["label"] == label for p in pairs) for label in LABELS},
        "pairs_by_variant": {v: sum(p["variant"] == v for p in pairs) for vs in LABELS.values() for v in vs},
        "questions": len(questions),
        "within_repo_pairs": {label: sum(r["label"] == label for r in everything)
                              for label in ("same", "different", "ambiguous")},
        "gold_spans": gold_check,
        "split": {k: list(v) for k, v in SPLIT.items()},
        "rule": "lowest threshold on a 0.005 grid above every different-answer similarity of the tune split "
                "(labelled hard negatives and all within-repository pairs with non-overlapping gold)",
        "threshold": threshold,
        "tune_max_different_similarity": round(worst_tune, 4),
        "tune": tune,
        "held_out": held_out,
        "held_out_max_different": {"id": worst_held["id"], "similarity": round(worst_held["similarity"], 4)},
        "held_out_max_paraphrase": {"id": best_positive["id"], "similarity": round(best_positive["similarity"], 4)},
        "recommendation": (f"on at {threshold}: no held-out false hit" if held_negatives == 0
                           else f"off: {held_negatives} held-out false hit(s) at {threshold}"),
        "curve": curve(pair_rows, everything),
        "lookup_cost": lookup_cost(int(matrix.shape[1])),
        "embed_seconds": round(embed_s, 2),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("threshold", "tune_max_different_similarity", "recommendation")}))
    print(json.dumps({"held_out": {k: held_out[k] for k in ("hit_rate", "hit_rate_by_variant", "false_hit_rate",
                                                            "within_repo_false_hit_rate", "simulation")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
