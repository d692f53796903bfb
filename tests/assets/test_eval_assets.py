"""Evaluation group end to end: mined and plain eval sets -> file_ranker -> retrieval_eval -> calibration,
tracked in MLflow (sqlite)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from codex_assets.evaluation import eval_assets
from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_core.calibration import Calibrator, holdout_mask
from codex_core.eval_report import CALIBRATION_FEATURES, EXPERIMENT
from codex_core.evalsets import EvalRegistry
from codex_core.home import CodexHome
from codex_core.querylog import QUERY_LOG_FILE, QueryLog, ServedQuery
from codex_core.ranker import shipped_ranker
from codex_core.tracking import Tracker
from codex_resources import CodexHomeResource, MlflowResource
from codex_sensors import nightly_eval
from serving.engine import QueryEngine
from tests.conftest import build_fixture_repo, commit_all
from tests.support.ingest import ingest, make_resources, metadata
from tests.support.llm import offline_answerer

EDITS = [
    ("app/config_parser.py", "raise ValueError(f\"not a key = value line: {line!r}\")",
     "raise ValueError(f\"malformed configuration line: {line!r}\")",
     "Report malformed configuration lines with a clearer error in strict mode"),
    ("web/cart.js", "sum + item.price * item.quantity", "sum + item.quantity * item.price",
     "Multiply the item price by its quantity when computing the cart total"),
    ("cache/lru.rs", "let oldest = self.order.remove(0);", "let oldest = self.order.remove(0); // least recent",
     "Evict the least recently used entry when the cache reaches capacity"),
    ("server/health.go", "w.WriteHeader(http.StatusOK)", "w.WriteHeader(200)",
     "Write the status code explicitly in the health endpoint response"),
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    repo = build_fixture_repo(root)
    for path, old, new, message in EDITS:
        target = repo / path
        text = target.read_text()
        assert old in text, path
        target.write_text(text.replace(old, new))
        commit_all(repo, message)
    home = root / "home"
    instance = dg.DagsterInstance.ephemeral()
    mlflow = {"mlflow": MlflowResource(codex_home=CodexHomeResource(root=str(home)))}
    result = ingest(home, repo, instance=instance, assets=eval_assets, resources=mlflow)
    assert result.success
    return home, repo, result, instance


def test_eval_set_is_mined_from_history(evaluated) -> None:
    _, _, result, _ = evaluated
    mined = metadata(result, "eval_set")
    assert mined["items"] == len(EDITS)
    assert mined["eval_set"] == "demo-mined@1"
    assert mined["items_with_gold_symbols"] >= 3


def test_eval_set_also_holds_plain_questions_about_the_code(evaluated) -> None:
    home, _, result, _ = evaluated
    produced = metadata(result, "eval_set")
    assert produced["plain_set"] == "demo-plain@1" and produced["plain_items"] >= 4
    plain = EvalRegistry(CodexHome(home).evals_dir).get("demo-plain", 1)
    assert {i.style for i in plain.items} == {"plain"}
    by_gold = {tuple(i.gold_files): i.query for i in plain.items}
    # The ConfigParser docstring ("Reads key = value lines into a dictionary.") asked plainly.
    assert any("key = value lines" in q for files, q in by_gold.items() if files == ("app/config_parser.py",))
    # The docstring copied into two modules is one question with both as gold.
    assert ("app/retry.py", "app/retry_copy.py") in by_gold


def test_too_little_history_trains_no_ranker_and_keeps_the_shipped_general_order(evaluated) -> None:
    home, _, result, _ = evaluated
    produced = metadata(result, "file_ranker")
    general = f"learned:{shipped_ranker().meta['id']} (general)"
    assert produced["outcome"] == "insufficient_history"
    assert produced["trained_on"] + produced["judged_on"] == len(EDITS)  # the plain questions take no part
    assert produced["ranker"] == general and "shipped general ranker" in produced["reasons"][0]
    assert not CodexHome(home).ranker_path("demo").exists()
    # The eval measures what serves: the general ranker is the last ablation stage, not a learned one.
    ablations = metadata(result, "retrieval_eval")["ablations"]
    assert "+general ranker" in ablations and "+learned ranker" not in ablations
    run = next(r for r in Tracker.embedded(CodexHome(home).mlflow_db).runs(EXPERIMENT)
               if r.data.tags["kind"] == "file_ranker")
    assert run.data.params["outcome"] == "insufficient_history" and run.data.params["published"] == general


def test_retrieval_eval_reports_metrics_ablations_and_mlflow_run(evaluated) -> None:
    home, _, result, _ = evaluated
    evaluation = metadata(result, "retrieval_eval")
    plain_items = metadata(result, "eval_set")["plain_items"]
    assert evaluation["queries"] == len(EDITS) + plain_items
    assert evaluation["queries_by_style"] == {"mined": len(EDITS), "plain": plain_items}
    assert "full" not in evaluation["style_split"] and "/ plain" in evaluation["style_split"]
    assert 0.0 <= evaluation["file_ndcg_at_5"] <= 1.0
    assert all(arm in evaluation["ablations"] for arm in ("dense only", "+graph hop", "+file evidence"))
    assert "no_overlap" in evaluation["lexical_overlap_split"]
    assert evaluation["mlflow_url"].startswith("http://")

    tracker = Tracker.embedded(CodexHome(home).mlflow_db)
    runs = tracker.runs(EXPERIMENT)
    kinds = {r.data.tags["kind"]: r for r in runs}
    assert set(kinds) == {"file_ranker", "retrieval_eval", "calibration"}
    eval_run = kinds["retrieval_eval"]
    assert eval_run.info.run_id == evaluation["mlflow_run_id"]
    assert eval_run.data.params["eval_set"] == "demo-mined@1+demo-plain@1"
    assert eval_run.data.metrics["style.plain.queries"] == plain_items
    assert eval_run.data.tags["dagster.partition"] == "demo"
    assert abs(eval_run.data.metrics["file_ndcg_at_5"] - evaluation["file_ndcg_at_5"]) < 1e-9
    artifacts = {a.path for a in tracker.client.list_artifacts(eval_run.info.run_id, "tables")}
    assert artifacts == {"tables/per_query.csv", "tables/metrics.json"}
    calibration_artifacts = {
        Path(a.path).name for a in tracker.client.list_artifacts(kinds["calibration"].info.run_id, "calibration")
    }
    assert {"calibrator-1.json", "reliability-1.png", "precision_coverage-1.png"} <= calibration_artifacts


def test_serving_uses_the_published_calibrator(evaluated) -> None:
    home, _, result, _ = evaluated
    cal = metadata(result, "calibration")
    assert "+calibrated abstention" in cal["abstention_ablation"]
    engine = QueryEngine(CodexHome(home), answerer=offline_answerer())
    try:
        answer = engine.query("how is the cart total computed", repo="demo").model_dump()
        assert answer["confidence_kind"] == "calibrated"
        trace = engine.trace(answer["trace_id"])
        assert trace["abstain_below"] == pytest.approx(cal["tau"], abs=1e-4)
        assert answer["abstained"] == (answer["confidence"] < cal["tau"])
    finally:
        engine.close()


def test_an_outdated_calibrator_falls_back_to_the_heuristic(evaluated, caplog) -> None:
    import json
    import os

    home, _, _, _ = evaluated
    pointer = CodexHome(home).calibration_dir("demo") / "current.json"
    path = pointer.parent / json.loads(pointer.read_text())["path"]
    original = path.read_bytes()
    from codex_core.calibration import SCHEMA

    # What a user has after upgrading: the previous schema, fitted on other features (schema 2 read the
    # citation count).
    path.write_text(json.dumps({**json.loads(original), "schema": SCHEMA - 1}))
    os.utime(pointer)  # serving reloads when the pointer changes
    engine = QueryEngine(CodexHome(home), answerer=offline_answerer())
    try:
        answer = engine.query("how is the cart total computed", repo="demo").model_dump()
        assert answer["confidence_kind"] == "heuristic" and answer["citations"]
        assert "feriactl eval run --repo demo" in caplog.text
    finally:
        engine.close()
        path.write_bytes(original)
        os.utime(pointer)


def test_nightly_schedule_requests_every_repo() -> None:
    when = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        empty = nightly_eval(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
        assert isinstance(empty, dg.SkipReason)
        instance.add_dynamic_partitions("repos", ["demo", "other"])
        requests = nightly_eval(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("demo", "demo:2026-11-23"), ("other", "other:2026-11-23"),
    ]
    from codex_assets.definitions import defs

    schedule = defs().resolve_schedule_def("nightly_eval")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def _judge(home: Path, instance) -> dict:
    from codex_assets.evaluation import ab_judgement

    resources = make_resources(home) | {"mlflow": MlflowResource(codex_home=CodexHomeResource(root=str(home)))}
    result = dg.materialize(
        [*ingestion_assets, *ingestion_checks, *eval_assets], instance=instance, resources=resources,
        partition_key="demo", selection=[ab_judgement],
    )
    assert result.success
    return metadata(result, "ab_judgement")


def test_ab_judgement_promotes_better_and_rejects_worse(evaluated) -> None:
    from codex_core.config_registry import CHALLENGER, CHAMPION, ConfigRegistry
    from codex_core.configs import AnswerConfig, ConfigStore
    from codex_core.retrieval import RetrievalConfig

    home, _, _, instance = evaluated
    registry = ConfigRegistry(Tracker.embedded(CodexHome(home).mlflow_db), ConfigStore(CodexHome(home).configs_dir))
    assert _judge(home, instance)["outcome"] == "no_challenger"  # registers the default as champion

    # A dense-only champion (same number of citations, worse ranking) against the hybrid default.
    weak = registry.register(AnswerConfig(retrieval=RetrievalConfig(lexical=False, graph_hops=0),
                                          description="dense only"), alias=CHAMPION)
    default = registry.register(AnswerConfig(description="default"), alias=CHALLENGER)
    promoted = _judge(home, instance)
    assert promoted["outcome"] == "promote", promoted
    assert promoted["delta_ndcg_at_5"] >= 0
    assert registry.by_alias(CHAMPION).version == default.version != weak.version
    assert registry.by_alias(CHALLENGER) is None

    # A challenger that retrieves nothing is strictly worse.
    registry.register(AnswerConfig(retrieval=RetrievalConfig(dense=False, lexical=False), description="broken"),
                      alias=CHALLENGER)
    rejected = _judge(home, instance)
    assert rejected["outcome"] == "reject"
    assert any(r.startswith("ΔnDCG@5") for r in rejected["reasons"])
    assert registry.by_alias(CHAMPION).version == default.version


def test_calibration_reports_each_style_on_held_out_items(evaluated) -> None:
    import pandas as pd

    home, _, result, _ = evaluated
    cal = metadata(result, "calibration")
    assert "plain (held-out)" in cal["holdout_by_style"] and "mined (held-out)" in cal["holdout_by_style"]
    frame = pd.read_parquet(CodexHome(home).eval_results_dir("demo") / CALIBRATION_FEATURES)
    assert set(frame["style"]) == {"mined", "plain"}
    held = holdout_mask(frame["id"].tolist(), frame["style"].tolist())
    calibrator = Calibrator.load(Path(cal["calibrator"]))
    assert calibrator.n_samples == cal["samples"] == int((~held).sum())  # never fitted on a held-out item
    assert cal["holdout_samples"] == {
        s: int((held & (frame["style"] == s)).sum()) for s in ("mined", "plain") if (held & (frame["style"] == s)).any()
    }
    assert cal["style_weighting"].startswith("pooled")  # nothing served yet


def test_recalibration_weights_for_the_question_style_serving_sees(evaluated) -> None:
    """What drift_recalibration_sensor's run does after users switched to plain questions."""
    from codex_assets.evaluation import calibration

    home, _, _, instance = evaluated
    log = QueryLog(CodexHome(home).serving_state_dir / QUERY_LOG_FILE)
    now = datetime.now(UTC)
    for i in range(40):
        log.append(ServedQuery(ts=now.isoformat(timespec="seconds"), repo="demo", query_length=6, language="python",
                               top_score=0.03, confidence=0.6, abstained=False, latency_ms=20.0,
                               query_style="question" if i % 8 else "commit"))
    resources = make_resources(home) | {"mlflow": MlflowResource(codex_home=CodexHomeResource(root=str(home)))}
    rerun = dg.materialize([*ingestion_assets, *ingestion_checks, *eval_assets], instance=instance,
                           resources=resources, partition_key="demo", selection=[calibration])
    cal = metadata(rerun, "calibration")
    # The queries the serving tests above asked ("how is the cart total computed") were logged with
    # their style too.
    served = [r for r in log.read() if r.repo == "demo"]
    assert all(r.query_style in ("question", "commit") for r in served) and len(served) >= 40
    share = sum(r.query_style == "question" for r in served) / len(served)
    assert cal["served_queries"] == len(served) and cal["served_question_share"] == pytest.approx(share, abs=1e-4)
    assert cal["style_weighting"].startswith(f"weighted to the served mix: {share:.0%}")
    stored = Calibrator.load(Path(cal["calibrator"])).cv_metrics["styles"]
    assert stored["weights"]["question"] > stored["weights"]["commit"]
