"""Trial (not product code): does a ranker that also learns from *other* repositories' histories help?

The shipped learned ranker (``codex_core.ranker``) is fitted on one repository's own older questions,
and a repository with fewer than 30 of them gets the hand-set order. Its features are relative
(ranks, scores over the top one, overlaps, flags), so what one history teaches may carry to another.
Paired comparison on the localization benchmark, in one process, on the same questions and the same
already-ingested CODEX_HOME (``--home DIR`` -> ``DIR/home``, nothing re-ingested, nothing published):

* ``product``   the hand-set order (no ranker), for reference;
* ``learned``   the shipped per-repository ranker (own older questions only; < 30: hand-set order);
* ``global``    one ranker fitted on the *other* eleven repositories' older questions only (leave the
                scored repository out): what a repository with no history of its own would get;
* ``fallback``  ``learned`` where it trains, else ``global``;
* ``pooled``    one fit on the scored repository's older questions plus the others' (equal weight);
* ``pooled-own4`` the same with the scored repository's own rows weighted 4x;
* ``prior``     the own questions fitted with the L2 penalty centred on ``global``'s weights instead
                of on zero (standardized as ``global``): with little history the fit stays near the
                global ranker, with much it moves to the repository's own; no own question: ``global``.

Splits, as ``run.py``: training uses ``history`` to score ``tune`` and ``history`` + ``tune`` to score
``heldout``; for the other repositories too (never anyone's ``heldout``). The lever is judged on tune.
All fits use one retrieval per training question (hand-set config, no ranker, collected once).

    .venv/bin/python benchmarks/localization/trial_pooled.py --repos-dir /work/locrepos --home /work/lochome2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import run as bench  # noqa: E402  (sets up sys.path and the environment)
from global_ranker import collect_examples, load_questions  # noqa: E402
from report import aggregate, score  # noqa: E402
from systems import Product  # noqa: E402

import codex_core.ranker as ranker_mod  # noqa: E402

VARIANTS = ("learned", "global", "fallback", "pooled", "pooled-own4", "prior")
C = 1.0  # as fit_ranker


def usable(examples: list[ranker_mod.TrainingExample]) -> list[ranker_mod.TrainingExample]:
    return [e for e in examples if any(path in e.gold for _, path in e.features.files)]


def rows(examples: list[ranker_mod.TrainingExample]) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([e.features.matrix for e in examples])
    y = np.concatenate([[float(path in e.gold) for _, path in e.features.files] for e in examples])
    return x, y


def fit_weighted(own, others, own_weight: float, meta: dict[str, Any]) -> ranker_mod.LearnedRanker | None:
    """fit_ranker's model on own + others' rows, own rows weighted ``own_weight``."""
    from sklearn.linear_model import LogisticRegression

    own, others = usable(own), usable(others)
    if len(own) + len(others) < ranker_mod.MIN_QUESTIONS:
        return None
    parts = [rows(p) for p in (own, others) if p]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    w = np.concatenate([np.full(len(p[1]), own_weight if own and i == 0 else 1.0) for i, p in enumerate(parts)])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
    model.fit((x - mean) / scale, y, sample_weight=w)
    return ranker_mod.LearnedRanker(mean=mean.tolist(), scale=scale.tolist(), coef=model.coef_[0].tolist(),
                                    intercept=float(model.intercept_[0]),
                                    meta={"questions": len(own) + len(others), "own": len(own), **meta})


def fit_prior(own, glob: ranker_mod.LearnedRanker, meta: dict[str, Any]) -> ranker_mod.LearnedRanker:
    """Class-balanced logistic loss on the own rows + 0.5 ||w - w_global||^2 (intercept free)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    own = usable(own)
    if not own:
        return glob
    x, y = rows(own)
    z = (x - np.asarray(glob.mean)) / np.asarray(glob.scale)
    pos = y.sum()
    s = np.where(y > 0, len(y) / (2 * max(pos, 1)), len(y) / (2 * max(len(y) - pos, 1)))
    sign = np.where(y > 0, 1.0, -1.0)
    w0 = np.asarray(glob.coef)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        m = sign * (z @ w + b)
        loss = np.logaddexp(0.0, -m)
        g = -s * sign * expit(-m)  # d loss / d (z w + b), weighted
        grad = np.concatenate([C * (z.T @ g) + (w - w0), [C * g.sum()]])
        return float(C * (s * loss).sum() + 0.5 * ((w - w0) ** 2).sum()), grad

    theta0 = np.concatenate([w0, [glob.intercept]])
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    return ranker_mod.LearnedRanker(mean=list(glob.mean), scale=list(glob.scale), coef=res.x[:-1].tolist(),
                                    intercept=float(res.x[-1]), meta={"questions": len(own), "prior": True, **meta})


def describe(r: ranker_mod.LearnedRanker | None) -> dict[str, Any]:
    if r is None:
        return {"trained": False}
    return {"trained": True, **{k: v for k, v in r.meta.items() if k in ("questions", "own", "prior")},
            "coef": dict(zip(r.features, (round(c, 4) for c in r.coef), strict=True))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos-dir", type=Path, required=True)
    parser.add_argument("--home", type=Path, required=True, help="as run.py --home: DIR/home holds the ingestion")
    parser.add_argument("--repos-file", type=Path, default=HERE / "repos.json")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pooled")
    args = parser.parse_args(argv)
    repos = bench.load_repos(args.repos_file, None)

    import torch

    from codex_core.embedding import SentenceTransformerEmbedder, packaged_minilm_path
    from codex_core.home import CodexHome
    from codex_core.reader import PublishedReader, open_index
    from codex_core.retrieval import RetrievalConfig

    torch.set_num_threads(1)
    embedder = SentenceTransformerEmbedder(packaged_minilm_path())
    home = (args.home / "home").resolve()
    started = time.perf_counter()
    mined = load_questions(repos)
    base_cfg = RetrievalConfig(learned_ranker=False)
    records: list[dict[str, Any]] = []
    infos: dict[str, Any] = {}
    with bench.home_environment(home):
        for r in repos:
            bench.require_published(home, r)
        reader = PublishedReader(CodexHome(home), open_index(CodexHome(home)), embedder, fallback_ranker=None)
        try:
            reader.refresh(force=True)
            plain = reader.retriever_with_ranker(None)
            # Pass 1: one training retrieval per history / tune question of every repository.
            t0 = time.perf_counter()
            examples = collect_examples(reader, repos, mined)
            print(f"training retrievals in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            # Pass 2: per repository and split, fit every variant and score.
            for r in repos:
                name, t_repo = r["name"], time.perf_counter()
                infos[name] = {"ranker": {}}
                for split, older in (("tune", ("history",)), ("heldout", ("history", "tune"))):
                    fit_on = [q for q in mined[name] if q.split in older]
                    scored = [q for q in mined[name] if q.split == split]
                    assert not fit_on or not scored or max(q.time for q in fit_on) <= min(q.time for q in scored)
                    own = [e for s in older for e in examples[name][s]]
                    others = [e for o in repos if o["name"] != name for s in older for e in examples[o["name"]][s]]
                    learned = ranker_mod.fit_ranker(own, meta={"repo": name})
                    glob = fit_weighted([], others, 1.0, {"repo": f"all-but-{name}"})
                    rankers = {
                        "learned": learned, "global": glob, "fallback": learned or glob,
                        "pooled": fit_weighted(own, others, 1.0, {"repo": name}),
                        "pooled-own4": fit_weighted(own, others, 4.0, {"repo": name}),
                        "prior": fit_prior(own, glob, {"repo": name}),
                    }
                    infos[name]["ranker"][split] = {v: describe(rk) for v, rk in rankers.items()}
                    systems = [Product(reader, name, base_cfg, "product", retriever=plain)] + [
                        Product(reader, name, replace(base_cfg, learned_ranker=rk is not None), v,
                                retriever=reader.retriever_with_ranker(rk))
                        for v, rk in rankers.items()
                    ]
                    for q in scored[: bench.WARMUP]:
                        for s in systems:
                            s.search(q.query)
                    for q in scored:
                        entry: dict[str, Any] = {**q.to_dict(), "repo": name, "language": r["language"], "systems": {}}
                        for s in systems:
                            timed = s.ask(q.query)
                            entry["systems"][s.name] = {"ranking": timed.ranking, "ms": round(timed.ms, 2),
                                                        **score(timed.ranking, q.gold_files)}
                        records.append(entry)
                infos[name]["seconds"] = round(time.perf_counter() - t_repo, 1)
                print(f"{name}: {infos[name]['seconds']} s", file=sys.stderr)
        finally:
            reader.close()
    for r in repos:
        bench.write_jsonl(args.out / "rankings" / f"{r['name']}.jsonl", [e for e in records if e["repo"] == r["name"]])
    result: dict[str, Any] = {
        "label": "pooled", "product": "learned", "baselines": ["product"],
        "variants": {v: {} for v in VARIANTS if v != "learned"},
        "repos": repos, "per_repo_info": infos, "command": " ".join(sys.argv),
        "seconds": round(time.perf_counter() - started, 1),
    }
    aggregate(result, records)
    deltas: dict[str, Any] = {}
    for split in ("tune", "heldout"):
        per = result["splits"][split]["per_repo"]
        deltas[split] = {v: {r["name"]: round(per[r["name"]][v]["ndcg@5"] - per[r["name"]]["learned"]["ndcg@5"], 4)
                             for r in repos if per.get(r["name"])} for v in VARIANTS if v != "learned"}
    result["per_repo_ndcg5_delta_vs_learned"] = deltas
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    for split in ("tune", "heldout"):
        m = result["splits"][split]["macro"]
        print(f"[{split}]")
        for v in ("product", *VARIANTS):
            print(f"  {v:12s} nDCG@5 {m[v]['ndcg@5']:.4f} ({m[v]['ndcg@5'] - m['learned']['ndcg@5']:+.4f})"
                  f"  R@1 {m[v]['recall@1']:.4f} ({m[v]['recall@1'] - m['learned']['recall@1']:+.4f})")
    print(f"wrote {args.out} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
