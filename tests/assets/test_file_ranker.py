"""The ``file_ranker`` asset on a real history: it trains on the older mined questions, is judged on the
newer ones against what serves now, and is published only when it wins; serving and the rest of the
eval then follow it.

Real parts throughout: a git repository built here, ingestion through Dagster on an ephemeral instance,
the MiniLM embedder, embedded Qdrant, MLflow on sqlite. The history is the planted signal of
``tests/core/test_ranker.py`` (words favour an unused compat copy of every module; the history and the
import graph say the live copy is the answer), with two more rounds of changes so there are enough
questions to train (30) and to judge (20).
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from codex_assets.evaluation import eval_assets
from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_core.eval_report import EXPERIMENT
from codex_core.evalsets import EvalRegistry
from codex_core.home import CodexHome
from codex_core.ranker import LearnedRanker, shipped_ranker
from codex_core.ranker_selection import last_selection
from codex_core.reader import PublishedReader, open_index
from codex_core.retrieval import RetrievalConfig
from codex_core.tracking import Tracker
from codex_resources import CodexHomeResource, MlflowResource
from tests.support.ingest import ingest, make_resources, metadata
from tests.support.planted import CHANGES, build_shop

MORE_CHANGES = [
    ("    return CACHE.get(key)\n", "    return CACHE.get(key, default_{noun}())\n",
     "Return a default entry when no {what} are cached"),
    ("CACHE = {{}}\n", "CACHE = BoundedCache(limit=1000)\n",
     "Bound the in-memory cache of {what} to a thousand entries"),
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("file_ranker")
    b = build_shop(root, [*CHANGES, *MORE_CHANGES])
    home = root / "home"
    instance = dg.DagsterInstance.ephemeral()
    assert ingest(home, b.repo, name="shop", instance=instance).success
    first = _materialize(home, instance, "eval_set", "file_ranker", "retrieval_eval")
    return {"home": home, "builder": b, "instance": instance, "first": first}


def _materialize(home, instance, *assets: str):
    resources = make_resources(home) | {"mlflow": MlflowResource(codex_home=CodexHomeResource(root=str(home)))}
    # A few plain questions are enough to show they take no part in the ranker.
    run_config = {"ops": {"eval_set": {"config": {"max_plain_items": 8}}}} if "eval_set" in assets else None
    result = dg.materialize(
        [*ingestion_assets, *ingestion_checks, *eval_assets], instance=instance, resources=resources,
        partition_key="shop", selection=list(assets), run_config=run_config,
    )
    assert result.success
    return result


def test_a_ranker_that_beats_the_hand_set_order_is_published_and_served(shop: dict) -> None:
    home = CodexHome(shop["home"])
    produced = metadata(shop["first"], "file_ranker")
    assert produced["outcome"] == "promote", produced
    assert produced["trained_on"] == 50 and produced["judged_on"] == 22
    assert produced["delta_ndcg_at_5"] > 0 and produced["delta_ndcg_ci95"][0] > 0, produced["arms"]
    assert "graph_degree" in produced["coefficients"] and "hand_rr" in produced["coefficients"]

    ranker = LearnedRanker.load(home.ranker_path("shop"))
    assert produced["ranker"] == f"learned:{ranker.meta['id']}"
    assert ranker.meta["trained_on"] == 50 and ranker.meta["judged_on"] == 22
    assert ranker.meta["delta_ndcg_at_5"] == pytest.approx(produced["delta_ndcg_at_5"], abs=1e-4)
    assert ranker.meta["newest_training_commit"] == produced["newest_training_commit"]
    # The champion it beat: with no ranker of its own the repository was served the shipped general one.
    assert ranker.meta["replaced"] == f"learned:{shipped_ranker().meta['id']} (general)"

    # Serving follows the file: the trace says which order the user got.
    reader = PublishedReader(home, open_index(home), _embedder())
    try:
        reader.refresh(force=True)
        result = reader.retriever.retrieve("Bound the in-memory cache of refund requests to a thousand entries",
                                           repos=["shop"], top_k=5, config=RetrievalConfig())
        assert result.ranked_by.startswith("learned:") and result.ranked_by == produced["ranker"]
        assert result.candidates[0].payload["path"] == "src/live/refunds.py"
        hand = reader.retriever.retrieve("Bound the in-memory cache of refund requests to a thousand entries",
                                         repos=["shop"], top_k=5, config=RetrievalConfig(learned_ranker=False))
        assert hand.ranked_by == "hand-set"
    finally:
        reader.close()

    # The rest of the eval measures what serving serves: the ranker is the last ablation stage.
    evaluation = metadata(shop["first"], "retrieval_eval")
    assert "+learned ranker" in evaluation["ablations"]

    tracker = Tracker.embedded(home.mlflow_db)
    (run,) = [r for r in tracker.runs(EXPERIMENT) if r.data.tags["kind"] == "file_ranker"
              and r.info.run_id == produced["mlflow_run_id"]]
    assert run.data.params["outcome"] == "promote" and run.data.tags["dagster.partition"] == "shop"
    assert run.data.metrics["challenger.file_ndcg_at_5"] > run.data.metrics["champion.file_ndcg_at_5"]
    artifacts = {a.path for a in tracker.client.list_artifacts(run.info.run_id, "ranker")}
    assert artifacts == {"ranker/coefficients.json"}


def test_judged_questions_are_strictly_newer_than_every_training_question(shop: dict) -> None:
    home, b = CodexHome(shop["home"]), shop["builder"]
    last = last_selection(home, "shop")
    registry = EvalRegistry(home.evals_dir)
    mined = registry.get("shop-mined", registry.latest_version("shop-mined"))
    source = {i.id: i.source.removeprefix("git:") for i in mined.items}

    def committed(item_id: str) -> int:
        return int(b.git("show", "-s", "--format=%ct", source[item_id]))

    train, judged = last["train_items"], last["judge_items"]
    assert len(train) == 50 and len(judged) == 22
    assert sorted(train + judged) == sorted(source)  # every mined question, once; plain ones take no part
    assert not set(train) & set(judged)
    assert max(committed(i) for i in train) < min(committed(i) for i in judged)
    plain = registry.get("shop-plain", registry.latest_version("shop-plain"))
    assert plain.items and not {i.id for i in plain.items} & set(train + judged)


def test_retraining_on_the_same_history_keeps_the_published_ranker(shop: dict) -> None:
    """The champion now serves with the published ranker; a candidate fitted on the same questions
    ties it, and a tie is not an improvement."""
    home = CodexHome(shop["home"])
    path = home.ranker_path("shop")
    before = path.read_bytes()
    again = metadata(_materialize(shop["home"], shop["instance"], "file_ranker"), "file_ranker")
    assert again["outcome"] == "reject", again
    assert again["delta_ndcg_at_5"] == 0 and any("must improve" in r for r in again["reasons"])
    assert path.read_bytes() == before
    assert again["ranker"] == metadata(shop["first"], "file_ranker")["ranker"]
    assert json.loads(path.with_name("last_selection.json").read_text())["outcome"] == "reject"


def _embedder():
    from codex_core.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()
