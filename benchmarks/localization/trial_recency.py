"""Trial (not product code): does a file-recency feature help the learned file ranker?

Paired comparison on the localization benchmark, in one process, on the same questions and the same
already-ingested CODEX_HOME (``--home DIR`` -> ``DIR/home``, nothing re-ingested, nothing published):

* ``product``               the hand-set order (no ranker), for reference;
* ``learned``               the standard 16-feature learned ranker (as ``run.py`` trains it);
* ``learned+recency``       the same plus ``recency`` = 1 / (1 + days since the file's last change before
                            the question) and ``churn90`` = log1p(changes in the 90 days before it);
* ``learned+recency-only``  the same plus ``recency`` alone (ablation).

All rankers are fitted from the *same* training retrievals (one per training question; the extra
columns are sliced off for the 16-feature one): ``history`` -> scored on ``tune``, ``history`` +
``tune`` -> scored on ``heldout``, exactly the split logic of ``run.py``. The lever is judged on tune.

Leakage rule: the recency columns of a question use only commits that are (a) ancestors of the
question's commit, excluding the commit itself, and (b) strictly older (committer time) than it.
A file never changed under that rule gets 0. The index is built once per repository from
``git log --name-only`` of the clone at the pinned commit (rename detection: git's default, so a
rename counts as a change of the new path and the history before it is not followed).

For the duration of the process ``codex_core.ranker.FEATURES`` is extended and
``codex_core.ranker.file_features`` / ``codex_core.retrieval.file_features_of`` are wrapped; the
current question is a module-level context that this script sets before every retrieval.

    .venv/bin/python benchmarks/localization/trial_recency.py --repos-dir /work/locrepos --home /work/lochome2
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
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
from questions import Question, git  # noqa: E402
from report import aggregate, score  # noqa: E402
from systems import Product  # noqa: E402

import codex_core.ranker as ranker_mod  # noqa: E402
import codex_core.retrieval as retrieval_mod  # noqa: E402

BASE_FEATURES = ranker_mod.FEATURES
EXTRA = ("recency", "churn90")
DAY = 86400.0
CHURN_DAYS = 90

# ---------------------------------------------------------------- point-in-time change index


class ChangeIndex:
    """Per repository: every commit reachable from the pinned one, its parents, time and files."""

    def __init__(self, clone: Path, pinned: str):
        out = git(clone, "log", "--format=C %H %ct %P", "--name-only", pinned)
        self.time: dict[str, int] = {}
        self.parents: dict[str, list[str]] = {}
        self.files: dict[str, list[str]] = {}
        sha = None
        for line in out.splitlines():
            if line.startswith("C "):
                parts = line.split()
                sha = parts[1]
                self.time[sha], self.parents[sha], self.files[sha] = int(parts[2]), parts[3:], []
            elif line.strip() and sha is not None:
                self.files[sha].append(line.strip())
        self._cache: dict[str, tuple[dict[str, list[int]], dict[str, int]]] = {}

    def strict_ancestors(self, sha: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.parents[sha])
        while stack:
            c = stack.pop()
            if c not in seen:
                seen.add(c)
                stack.extend(self.parents.get(c, ()))
        return seen

    def before(self, sha: str, qtime: int) -> tuple[dict[str, list[int]], dict[str, int]]:
        """path -> sorted change times from strict ancestors of ``sha`` strictly older than ``qtime``;
        plus counts for the report (what a time-only rule would have added)."""
        if sha not in self._cache:
            if sha not in self.time:
                raise SystemExit(f"question commit {sha} is not in the history of the pinned commit")
            anc = self.strict_ancestors(sha)
            changes: dict[str, list[int]] = {}
            used = time_only_extra = dropped_not_older = 0
            for c, t in self.time.items():
                older = t < qtime
                if c in anc and older:
                    used += 1
                    for p in self.files[c]:
                        changes.setdefault(p, []).append(t)
                elif c in anc:
                    dropped_not_older += 1
                elif older and c != sha:
                    time_only_extra += 1  # older by the clock but not yet in the question's history
            for v in changes.values():
                v.sort()
            self._cache[sha] = (changes, {"commits_used": used, "time_only_extra_commits": time_only_extra,
                                          "ancestors_not_older": dropped_not_older})
        return self._cache[sha]


CONTEXT: dict[str, Any] = {"index": None, "question": None}


def recency_columns(paths: list[str]) -> np.ndarray:
    q: Question | None = CONTEXT["question"]
    index: ChangeIndex | None = CONTEXT["index"]
    if q is None or index is None:
        raise RuntimeError("recency feature computed without a current question (leakage guard)")
    changes, _ = index.before(q.commit, q.time)
    rows = []
    for p in paths:
        times = changes.get(p, [])
        cut = bisect.bisect_left(times, q.time)  # strictly older (already guaranteed; kept explicit)
        if cut == 0:
            rows.append([0.0, 0.0])
            continue
        days = (q.time - times[cut - 1]) / DAY
        recent = cut - bisect.bisect_left(times, q.time - CHURN_DAYS * DAY)
        rows.append([1.0 / (1.0 + days), math.log1p(recent)])
    return np.asarray(rows, dtype=np.float64).reshape(len(paths), len(EXTRA))


_original_file_features = ranker_mod.file_features


def file_features_with_recency(query, ranked, **kwargs):
    base = _original_file_features(query, ranked, **kwargs)
    matrix = base.matrix[:, : len(BASE_FEATURES)]
    extra = recency_columns([path for _, path in base.files])
    return ranker_mod.FileFeatures(base.files, np.hstack([matrix, extra]))


def install() -> None:
    ranker_mod.FEATURES = BASE_FEATURES + EXTRA
    ranker_mod.file_features = file_features_with_recency
    retrieval_mod.file_features_of = file_features_with_recency


# ---------------------------------------------------------------- rankers on a column subset

COLUMNS = {
    "learned": list(range(len(BASE_FEATURES))),
    "learned+recency": list(range(len(BASE_FEATURES) + 2)),
    "learned+recency-only": list(range(len(BASE_FEATURES) + 1)),
}


class ColumnRanker:
    """A fitted ``LearnedRanker`` applied to some columns of the (extended) feature rows."""

    def __init__(self, inner, columns: list[int]):
        self.inner, self.columns, self.meta = inner, columns, inner.meta

    def order(self, features):
        scores = self.inner.score(features.matrix[:, self.columns])
        order = sorted(range(len(features.files)), key=lambda i: (-scores[i], i))
        return [features.files[i] for i in order]



def fit_all(reader, name: str, training: list[Question], base_cfg) -> tuple[dict[str, Any], dict[str, Any]]:
    """train_ranker's loop with the question context set, then one fit per column set."""
    cfg = replace(base_cfg, learned_ranker=False, max_per_file=1)
    retriever = reader.retriever_with_ranker(None)
    examples = []
    t0 = time.perf_counter()
    for q in training:
        CONTEXT["question"] = q
        result = retriever.retrieve(q.query, repos=[name], top_k=10, config=cfg, collect_file_features=True)
        examples.append((result.file_features, frozenset(q.gold_files)))
    CONTEXT["question"] = None
    rankers, info = {}, {"offered": len(training), "newest_commit_time": max((q.time for q in training), default=0),
                         "retrieve_seconds": round(time.perf_counter() - t0, 1)}
    for label, cols in COLUMNS.items():
        ex = [ranker_mod.TrainingExample(ranker_mod.FileFeatures(f.files, f.matrix[:, cols]), gold)
              for f, gold in examples]
        fitted = ranker_mod.fit_ranker(ex, meta={"repo": name, "id": f"{name}-{label}"})
        names = [(BASE_FEATURES + EXTRA)[i] for i in cols]
        rankers[label] = ColumnRanker(fitted, cols) if fitted is not None else None
        info[label] = ({"trained": True, "questions": fitted.meta["questions"],
                        "coef": dict(zip(names, fitted.coef, strict=True)), "intercept": fitted.intercept}
                       if fitted is not None else {"trained": False})
    return rankers, info


def run_repo(repo: dict[str, Any], clone: Path, home: Path, embedder, out: Path) -> tuple[list[dict], dict]:
    from codex_core.home import CodexHome
    from codex_core.reader import PublishedReader, open_index
    from codex_core.retrieval import RetrievalConfig

    name, commit = repo["name"], repo["commit"]
    started = time.perf_counter()
    bench.require_published(home, repo)
    mined = bench.load_mined(name)
    questions = [q for q in mined if q.split != "history"]
    CONTEXT["index"] = index = ChangeIndex(clone, commit)
    base_cfg = RetrievalConfig(learned_ranker=False)
    info: dict[str, Any] = {"questions": len(questions), "history_questions": len(mined) - len(questions),
                            "commits_indexed": len(index.time), "ranker": {}}
    reader = PublishedReader(CodexHome(home), open_index(CodexHome(home)), embedder)
    records = []
    try:
        reader.refresh(force=True)
        hand = Product(reader, name, base_cfg, "product", retriever=reader.retriever_with_ranker(None))
        for split, older in (("tune", {"history"}), ("heldout", {"history", "tune"})):
            fit_on = [q for q in mined if q.split in older]
            scored = [q for q in questions if q.split == split]
            assert not fit_on or not scored or max(q.time for q in fit_on) <= min(q.time for q in scored)
            rankers, info["ranker"][split] = fit_all(reader, name, fit_on, base_cfg)
            systems = [hand] + [
                Product(reader, name, replace(base_cfg, learned_ranker=True), label,
                        retriever=reader.retriever_with_ranker(r))
                for label, r in rankers.items()
            ]
            for q in scored[: bench.WARMUP]:
                CONTEXT["question"] = q
                for s in systems:
                    s.search(q.query)
            for q in scored:
                CONTEXT["question"] = q
                _, stats = index.before(q.commit, q.time)
                gold_cols = recency_columns(list(q.gold_files))
                entry: dict[str, Any] = {**q.to_dict(), "repo": name, "language": repo["language"],
                                         "recency_context": stats,
                                         "gold_recency": dict(zip(q.gold_files, gold_cols.tolist(), strict=True)),
                                         "systems": {}}
                for s in systems:
                    timed = s.ask(q.query)
                    entry["systems"][s.name] = {"ranking": timed.ranking, "ms": round(timed.ms, 2),
                                                **score(timed.ranking, q.gold_files)}
                records.append(entry)
            CONTEXT["question"] = None
    finally:
        reader.close()
    bench.write_jsonl(out / "rankings" / f"{name}.jsonl", records)
    info["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{name}: {len(records)} questions in {info['seconds']} s", file=sys.stderr)
    return records, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos-dir", type=Path, required=True)
    parser.add_argument("--home", type=Path, required=True, help="as run.py --home: DIR/home holds the ingestion")
    parser.add_argument("--repos-file", type=Path, default=HERE / "repos.json")
    parser.add_argument("--only", help="comma-separated repository names")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recency")
    args = parser.parse_args(argv)
    repos = bench.load_repos(args.repos_file, args.only.split(",") if args.only else None)
    sources = {r["name"]: bench.locate(args.repos_dir, r) for r in repos}
    install()

    import torch

    from codex_core.embedding import SentenceTransformerEmbedder, packaged_minilm_path

    torch.set_num_threads(1)
    embedder = SentenceTransformerEmbedder(packaged_minilm_path())
    home = (args.home / "home").resolve()
    started = time.perf_counter()
    records, infos = [], {}
    with bench.home_environment(home):
        for repo in repos:
            repo_records, infos[repo["name"]] = run_repo(repo, sources[repo["name"]], home, embedder, args.out)
            records += repo_records
    result: dict[str, Any] = {
        "label": "recency", "product": "learned", "baselines": ["product"],
        "variants": {label: {"features": [(BASE_FEATURES + EXTRA)[i] for i in cols]}
                     for label, cols in COLUMNS.items()},
        "repos": repos, "per_repo_info": infos, "command": " ".join(sys.argv),
        "seconds": round(time.perf_counter() - started, 1),
    }
    aggregate(result, records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    for split in ("tune", "heldout"):
        m = result["splits"][split]["macro"]
        print(f"[{split}] " + "  ".join(f"{s}: nDCG@5 {m[s]['ndcg@5']:.3f} R@1 {m[s]['recall@1']:.3f}" for s in m))
    print(f"wrote {args.out} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
