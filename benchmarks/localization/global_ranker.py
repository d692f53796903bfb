"""Fit the general file ranker the product ships, and the leave-one-repository-out ones the benchmark uses.

A repository with too little history of its own (fewer than ``codex_core.ranker.MIN_QUESTIONS`` usable
mined questions) is re-ordered by a ranker fitted on *other* repositories' histories
(``RetrievalConfig.global_ranker``; the lever trial is ``trial_pooled.py``, docs/benchmarks.md §1).
This script, on a CODEX_HOME where ``run.py --home DIR`` ingested the 12 repositories:

* ``codex_core/global_ranker.json``: ``fit_ranker`` on the ``history`` and ``tune`` questions of all 12
  (never a ``heldout`` one): what the product ships;
* ``results/global/<repo>.tune.json``: fitted on the other 11 repositories' ``history`` questions, and
  ``results/global/<repo>.heldout.json``: on their ``history`` + ``tune`` questions. ``run.py`` serves
  these to a repository its own history cannot train, so no repository is ever scored by a ranker
  that saw any of its questions, and no split by one fitted on anything as new as it.

One training retrieval per question, with the hand-set config and no ranker (as ``train_ranker``).

    .venv/bin/python benchmarks/localization/global_ranker.py --home /work/lochome2
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (sets up sys.path and the environment)
from questions import Question  # noqa: E402

import codex_core.ranker as ranker_mod  # noqa: E402

SPLITS_FOR = {"tune": ("history",), "heldout": ("history", "tune")}  # what may train a ranker scored on it
LORO_DIR = HERE / "results" / "global"


def load_questions(repos: list[dict[str, Any]]) -> dict[str, list[Question]]:
    return {r["name"]: bench.load_mined(r["name"]) for r in repos}


def collect_examples(reader, repos: list[dict[str, Any]], mined: dict[str, list[Question]]
                     ) -> dict[str, dict[str, list[ranker_mod.TrainingExample]]]:
    """{repo: {"history" | "tune": examples}}: train_ranker's retrieval for every older question."""
    from codex_core.retrieval import RetrievalConfig

    cfg = replace(RetrievalConfig(learned_ranker=False), max_per_file=1)
    plain = reader.retriever_with_ranker(None)
    out: dict[str, dict[str, list[ranker_mod.TrainingExample]]] = {}
    for r in repos:
        out[r["name"]] = {"history": [], "tune": []}
        for q in mined[r["name"]]:
            if q.split in out[r["name"]]:
                res = plain.retrieve(q.query, repos=[r["name"]], top_k=10, config=cfg, collect_file_features=True)
                out[r["name"]][q.split].append(ranker_mod.TrainingExample(res.file_features, frozenset(q.gold_files)))
    return out


def loro_ranker(name: str, split: str) -> ranker_mod.LearnedRanker | None:
    """The ranker fitted without ``name`` for scoring its ``split`` (None when not generated)."""
    path = LORO_DIR / f"{name}.{split}.json"
    return ranker_mod.LearnedRanker.load(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="as run.py --home: DIR/home holds the ingestion")
    parser.add_argument("--repos-file", type=Path, default=HERE / "repos.json")
    parser.add_argument("--shipped", type=Path, default=ranker_mod.GLOBAL_RANKER)
    args = parser.parse_args(argv)
    repos = bench.load_repos(args.repos_file, None)

    import torch

    from codex_core.embedding import SentenceTransformerEmbedder, packaged_minilm_path
    from codex_core.home import CodexHome
    from codex_core.reader import PublishedReader, open_index

    torch.set_num_threads(1)
    home = (args.home / "home").resolve()
    mined = load_questions(repos)
    started = time.perf_counter()
    with bench.home_environment(home):
        for r in repos:
            bench.require_published(home, r)
        reader = PublishedReader(CodexHome(home), open_index(CodexHome(home)),
                                 SentenceTransformerEmbedder(packaged_minilm_path()), fallback_ranker=None)
        try:
            reader.refresh(force=True)
            examples = collect_examples(reader, repos, mined)
        finally:
            reader.close()
    print(f"training retrievals in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    def fit(names: list[str], splits: tuple[str, ...], rid: str) -> ranker_mod.LearnedRanker:
        pooled = [e for n in names for s in splits for e in examples[n][s]]
        ranker = ranker_mod.fit_ranker(pooled, meta={
            "id": rid, "repo": "*", "trained_on_repos": names, "splits": list(splits),
            "commits": {r["name"]: r["commit"] for r in repos if r["name"] in names},
            "newest_commit_time": {n: max((q.time for q in mined[n] if q.split in splits), default=0) for n in names},
        })
        if ranker is None:
            raise SystemExit(f"{rid}: too few usable questions")
        return ranker

    names = [r["name"] for r in repos]
    shipped = fit(names, ("history", "tune"), "global-12")
    shipped.save(args.shipped)
    print(f"shipped ranker: {shipped.meta['questions']} questions from {len(names)} repositories -> {args.shipped}")
    LORO_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        others = [n for n in names if n != name]
        for split, older in SPLITS_FOR.items():
            fit(others, older, f"global-without-{name}-{split}").save(LORO_DIR / f"{name}.{split}.json")
    print(f"leave-one-out rankers -> {LORO_DIR} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
