"""Day one: a repository's first publish starts its first self-evaluation, without waiting for 03:00.

Real parts throughout: git repositories built here, ingestion with the real MiniLM into qdrant-edge,
the sensor on an ephemeral Dagster instance, the requested run executed as the real ``evaluate``
job, MLflow on sqlite, the query API in process.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from codex_assets.definitions import defs as product_definitions
from codex_assets.evaluation import eval_assets
from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_core.calibration import MIN_SAMPLES
from codex_core.eval_report import EXPERIMENT
from codex_core.home import CodexHome
from codex_core.published import write_published
from codex_core.tracking import Tracker
from codex_resources import CodexHomeResource, MlflowResource
from codex_sensors import eval_job, first_eval_sensor
from serving.app import create_app
from serving.engine import QueryEngine
from tests.conftest import build_fixture_repo, commit_all, git
from tests.support.ingest import ingest, make_resources
from tests.support.llm import offline_answerer

# One commit each, newest last: what the eval's miner turns into questions (message -> file).
HISTORY = [
    ("app/config_parser.py",
     "\n\ndef parse_int(parser, key, default=0):\n    return int(parser.values.get(key, default))\n",
     "Add an integer accessor for configuration values"),
    ("web/cart.js",
     "\nexport function removeItem(cart, name) {\n  cart.items = cart.items.filter((i) => i.name !== name);\n}\n",
     "Allow removing an item from the shopping cart"),
    ("cache/lru.rs",
     "\nimpl LruCache {\n    pub fn len(&self) -> usize {\n        self.entries.len()\n    }\n}\n",
     "Expose the number of cached entries in the cache"),
    ("server/health.go",
     "\nfunc Ready(w http.ResponseWriter, r *http.Request) {\n\tw.WriteHeader(http.StatusNoContent)\n}\n",
     "Add a readiness handler next to the health endpoint"),
    ("app/retry.py",
     "\n\ndef retry_timeouts(fn, attempts: int = 3):\n    return retry_with_backoff(fn, attempts=attempts)\n",
     "Retry timeouts with the same backoff as connection errors"),
    ("web/cart.js",
     "\nexport function clearCart(cart) {\n  cart.items = [];\n}\n",
     "Empty the shopping cart after the checkout completes"),
    ("app/config_parser.py",
     "\n\ndef is_comment(line: str) -> bool:\n    return line.lstrip().startswith('#')\n",
     "Recognise comment lines that start with a hash sign"),
    ("cache/lru.rs",
     "\nimpl LruCache {\n    pub fn clear(&mut self) {\n"
     "        self.entries.clear();\n        self.order.clear();\n    }\n}\n",
     "Drop every cached entry and the recency order at once"),
    ("server/health.go",
     "\nfunc VersionHeader(w http.ResponseWriter, version string) {\n\tw.Header().Set(\"X-Version\", version)\n}\n",
     "Report the build version in a response header"),
    ("app/retry.py",
     "\n\ndef backoff_delays(attempts: int, base_delay: float = 0.1):\n"
     "    return [base_delay * (2 ** a) for a in range(attempts)]\n",
     "List the exponential backoff delays between attempts"),
    ("web/cart.js",
     "\nexport function applyDiscount(total, percent) {\n  return total * (1 - percent / 100);\n}\n",
     "Apply a percentage discount to the cart total"),
]


def commit_history(repo: Path, history) -> str:
    head = ""
    for path, appended, message in history:
        with (repo / path).open("a") as f:
            f.write(appended)
        head = commit_all(repo, message)
    return head


def tick(instance: dg.DagsterInstance, home: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"codex_home": CodexHomeResource(root=str(home))}
    )
    return first_eval_sensor(context)


def test_make_run_loads_the_sensor_running_and_aimed_at_the_eval_job() -> None:
    sensor = product_definitions().resolve_sensor_def("first_eval_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "evaluate"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A repository with enough history, registered as a partition, then ingested and published."""
    root = tmp_path_factory.mktemp("first_eval")
    repo = build_fixture_repo(root)
    commit_history(repo, HISTORY)
    home = root / "home"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("repos", ["demo"])
    before_publish = tick(instance, home, None)  # registered, ingest not finished yet
    assert ingest(home, repo, instance=instance).success
    return home, instance, before_publish


def test_first_publish_requests_one_eval_run_and_its_run_makes_answers_calibrated(published) -> None:
    home, instance, before_publish = published
    assert before_publish.run_requests == []
    assert "demo: waiting for its first publish" in before_publish.skip_reason.skip_message

    first = tick(instance, home, before_publish.cursor)
    (request,) = first.run_requests
    assert request.run_key == "first-eval:demo" and request.partition_key == "demo"
    assert request.tags["codex/reason"] == "first-eval"
    again = tick(instance, home, first.cursor)
    assert again.run_requests == []  # never a second time

    mlflow = MlflowResource(codex_home=CodexHomeResource(root=str(home)))
    app = create_app(lambda: QueryEngine(CodexHome(home), answerer=offline_answerer()),
                     state_dir=home / "serving")
    question = {"query": "how is a discount applied to the cart total", "repo": "demo"}
    with TestClient(app) as client:
        assert client.post("/v1/query", json=question).json()["confidence_kind"] == "heuristic"

        # What the daemon does with the request: one run of the product's `evaluate` job.
        definitions = dg.Definitions(
            assets=[*ingestion_assets, *ingestion_checks, *eval_assets], jobs=[eval_job],
            resources={**make_resources(home), "mlflow": mlflow},
        )
        run = definitions.resolve_job_def(request.job_name or eval_job.name).execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert run.success
        assert instance.get_run_by_id(run.run_id).job_name == "evaluate"

        # The endpoint that was already up answers with the published calibrator, no restart.
        answer = client.post("/v1/query", json=question).json()
        assert answer["confidence_kind"] == "calibrated"
        assert answer["citations"][0]["path"] == "web/cart.js"

    # MLflow shows the runs: metrics and ablations, the calibrator and both diagrams.
    tracker = Tracker.embedded(CodexHome(home).mlflow_db)
    kinds = {r.data.tags["kind"]: r for r in tracker.runs(EXPERIMENT)}
    assert {"retrieval_eval", "calibration"} <= set(kinds)
    evaluation = kinds["retrieval_eval"]
    assert int(evaluation.data.params["queries"]) >= MIN_SAMPLES
    assert 0.0 <= evaluation.data.metrics["file_ndcg_at_5"] <= 1.0
    assert any(k.startswith("ablation.dense_only.") for k in evaluation.data.metrics)
    assert evaluation.data.tags["dagster.run_id"] == run.run_id
    tables = {Path(a.path).name for a in tracker.client.list_artifacts(evaluation.info.run_id, "tables")}
    assert "metrics.json" in tables
    calibration = {Path(a.path).name
                   for a in tracker.client.list_artifacts(kinds["calibration"].info.run_id, "calibration")}
    assert {"calibrator-1.json", "reliability-1.png", "precision_coverage-1.png"} <= calibration

    # Evaluated: a fresh cursor (a reset sensor) requests nothing either.
    after = tick(instance, home, None)
    assert after.run_requests == []
    assert json.loads(after.cursor)["demo"]["state"] == "evaluated"


def test_short_history_is_skipped_with_its_reason_until_a_longer_one_is_published(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    repo = build_fixture_repo(tmp_path)
    commit_history(repo, HISTORY[:2])
    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    assert ingest(home, repo, instance=instance).success
    capfd.readouterr()

    short = tick(instance, home, None)
    assert short.run_requests == []
    reason = short.skip_reason.skip_message
    assert "demo: first evaluation skipped" in reason
    assert f"gives 2 question(s) from 3 commit(s), and calibration needs at least {MIN_SAMPLES}" in reason
    assert "feriactl eval import FILE --repo demo" in reason
    assert "demo: first evaluation skipped" in capfd.readouterr().err  # the tick's log says it too
    still = tick(instance, home, short.cursor)
    assert still.run_requests == [] and still.skip_reason.skip_message == reason

    # The history grows past the minimum and is published: now it is evaluated.
    head = commit_history(repo, HISTORY[2:])
    assert ingest(home, repo, instance=instance).success
    grown = tick(instance, home, still.cursor)
    (request,) = grown.run_requests
    assert request.run_key == "first-eval:demo" and request.tags["codex/commit"] == head
    assert tick(instance, home, grown.cursor).run_requests == []


def test_waits_while_the_repository_is_being_ingested(tmp_path: Path, fixture_repo: Path) -> None:
    """The code graph is repaired after the publish: an eval started in between would measure
    the graph hop without a graph. The run record stands for a worker's ingest in progress."""
    home = tmp_path / "home"
    write_published(CodexHome(home), "demo", {"commit": git(fixture_repo, "rev-parse", "HEAD")})
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("repos", ["demo"])
    instance.add_run(dg.DagsterRun(job_name="ingest", run_id="ingest-in-progress",
                                   status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": "demo"}))
    waiting = tick(instance, home, None)
    assert waiting.run_requests == []
    assert waiting.skip_reason.skip_message == "demo: waiting for its ingest run to finish"
    assert json.loads(waiting.cursor) == {}  # nothing decided: the next tick looks again


def test_a_clone_url_source_is_skipped_because_its_clone_is_shallow(tmp_path: Path) -> None:
    """A clone URL is cloned with depth 1: however long the remote's history, the miner sees one commit."""
    repo = build_fixture_repo(tmp_path)
    commit_history(repo, HISTORY)
    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    assert ingest(home, f"file://{repo}", instance=instance).success

    result = tick(instance, home, None)
    assert result.run_requests == []
    reason = result.skip_reason.skip_message
    assert "gives 0 question(s) from 1 commit(s)" in reason
    assert "the clone of a URL source is shallow" in reason
    assert "feriactl eval import FILE --repo demo" in reason
