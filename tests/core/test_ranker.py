"""The learned file ranker on a real history: it trains on older questions, beats the hand-set order
on a planted signal, falls back cleanly, and is never trained on the questions it is scored on.

The planted signal: every module under ``src/live/`` has a shim copy under ``src/compat/`` (synced
in one commit touching every file, which the miner skips) whose docstring repeats the words commits
use, and only the live modules are imported by the application. Words favour the unused copy, so
the hand-set order puts it first; the repository's history says the live copy is the one commits
change, and the code graph (who imports it) tells the two apart.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from codex_core.embedding import SentenceTransformerEmbedder
from codex_core.evalsets import mine_eval_set
from codex_core.home import CodexHome
from codex_core.metrics import dedupe_ranking
from codex_core.ranker import FEATURES, LearnedRanker, shipped_ranker, train_ranker
from codex_core.reader import PublishedReader, open_index
from codex_core.retrieval import RetrievalConfig
from tests.support.ingest import ingest
from tests.support.planted import CHANGES, TOPICS, build_shop

REPOS_JSON = Path(__file__).resolve().parents[2] / "benchmarks" / "localization" / "repos.json"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ranker")
    b = build_shop(root)
    home = root / "home"
    assert ingest(home, b.repo, name="shop").success
    mined = mine_eval_set(b.repo, name="t", repo_name="shop")
    questions = sorted(((i.query, i.gold_files, i.source) for i in mined.items),
                       key=lambda q: int(b.git("show", "-s", "--format=%ct", q[2].removeprefix("git:"))))
    reader = PublishedReader(CodexHome(home), open_index(CodexHome(home)), SentenceTransformerEmbedder())
    reader.refresh(force=True)
    yield {"home": home, "reader": reader, "questions": questions}
    reader.close()


def ranked_files(reader, query: str, config: RetrievalConfig) -> list[str]:
    """The file ranking a user sees: cited files, then the other candidates' files (as the benchmark)."""
    result = reader.retriever.retrieve(query, repos=["shop"], top_k=10, config=replace(config, max_per_file=1))
    cited = [c.payload["path"] for c in result.candidates]
    return dedupe_ranking(cited + [c.payload["path"] for c in result.considered])


def top1(reader, questions, config: RetrievalConfig) -> float:
    return sum(ranked_files(reader, q, config)[0] in gold for q, gold, _ in questions) / len(questions)


def test_a_ranker_learned_on_older_history_beats_the_hand_set_order_on_newer_questions(history: dict) -> None:
    reader, questions = history["reader"], history["questions"]
    assert len(questions) == len(TOPICS) * len(CHANGES)
    older, newer = questions[:36], questions[36:]
    hand = RetrievalConfig(learned_ranker=False)
    assert top1(reader, newer, hand) <= 0.25  # the compat copy wins the tie: the planted trap works

    ranker = train_ranker(reader.retriever, [(q, gold) for q, gold, _ in older], repo="shop", config=hand,
                          meta={"id": "t1"})
    assert ranker is not None and ranker.meta["questions"] == 36
    ranker.save(CodexHome(history["home"]).ranker_path("shop"))
    try:
        learned = top1(reader, newer, RetrievalConfig())
        assert learned >= 0.75, f"learned top-1 {learned:.2f} on held-out questions"
        assert ranker.coef[FEATURES.index("graph_degree")] > 0  # it learned the planted signal
        trained_on = {q for q, _, _ in older}
        assert not trained_on & {q for q, _, _ in newer}  # scored only on questions it never saw
        result = reader.retriever.retrieve(newer[0][0], repos=["shop"], top_k=5, config=RetrievalConfig())
        assert result.ranked_by == "learned:t1"  # the trace says which order the user got
    finally:
        CodexHome(history["home"]).ranker_path("shop").unlink()


def test_too_little_history_means_no_ranker_of_its_own_and_the_shipped_general_one(history: dict) -> None:
    reader, questions = history["reader"], history["questions"]
    few = [(q, gold) for q, gold, _ in questions[:10]]
    assert train_ranker(reader.retriever, few, repo="shop", config=RetrievalConfig()) is None
    query = questions[-1][0]
    general = shipped_ranker()
    assert general is not None and reader.fallback_ranker == general
    result = reader.retriever.retrieve(query, repos=["shop"], top_k=5, config=RetrievalConfig())
    assert result.ranked_by == f"learned:{general.meta['id']}"  # the trace says the general order answered
    # Turned off in the config (or learned_ranker off altogether): the hand-set order.
    hand = ranked_files(reader, query, RetrievalConfig(learned_ranker=False))
    assert ranked_files(reader, query, RetrievalConfig(global_ranker=False)) == hand
    # A candidate judged "with no ranker" is judged against the hand-set order, not the general one.
    plain = reader.retriever_with_ranker(None).retrieve(query, repos=["shop"], top_k=5, config=RetrievalConfig())
    assert plain.ranked_by == "hand-set"


def test_the_shipped_general_ranker_was_fitted_on_older_questions_of_the_benchmark_repositories_only() -> None:
    general = shipped_ranker()
    assert general is not None and general.features == FEATURES
    pinned = {r["name"]: r["commit"] for r in json.loads(REPOS_JSON.read_text())["repos"]}
    assert set(general.meta["trained_on_repos"]) == set(pinned) and general.meta["commits"] == pinned
    assert general.meta["splits"] == ["history", "tune"]  # never a held-out question
    assert general.meta["questions"] >= 1000
    # The benchmark scores each repository with one fitted without it, on nothing as new as the split.
    for name in pinned:
        for split, older in (("tune", ["history"]), ("heldout", ["history", "tune"])):
            loro = LearnedRanker.load(REPOS_JSON.parent / "results" / "global" / f"{name}.{split}.json")
            assert name not in loro.meta["trained_on_repos"] and len(loro.meta["trained_on_repos"]) == 11
            assert loro.meta["splits"] == older


def test_a_damaged_or_foreign_ranker_file_falls_back_instead_of_failing_queries(history: dict) -> None:
    reader, questions = history["reader"], history["questions"]
    path = CodexHome(history["home"]).ranker_path("shop")
    path.parent.mkdir(parents=True, exist_ok=True)
    query = questions[-1][0]
    hand = ranked_files(reader, query, RetrievalConfig(learned_ranker=False))
    try:
        for text in ("{not json", LearnedRanker([0.0], [1.0], [1.0], 0.0).to_json()):  # garbage; wrong features
            path.write_text(text)
            config = RetrievalConfig(global_ranker=False)
            result = reader.retriever.retrieve(query, repos=["shop"], top_k=5, config=config)
            assert result.ranked_by == "hand-set"
            assert ranked_files(reader, query, config) == hand
            # With the default config the shipped general ranker takes the unreadable file's place.
            general = reader.retriever.retrieve(query, repos=["shop"], top_k=5, config=RetrievalConfig())
            assert general.ranked_by == f"learned:{shipped_ranker().meta['id']}"
    finally:
        path.unlink()


def test_ranker_round_trips_through_json(tmp_path: Path) -> None:
    ranker = LearnedRanker(mean=[0.0] * len(FEATURES), scale=[1.0] * len(FEATURES),
                           coef=[float(i) for i in range(len(FEATURES))], intercept=0.5, meta={"id": "x"})
    ranker.save(tmp_path / "r.json")
    assert LearnedRanker.load(tmp_path / "r.json") == ranker
