"""MLflow on PostgreSQL, chosen by ``MLFLOW_TRACKING_URI`` alone.

Two forms, each on its own database of the session's PostgreSQL server: the tracking server that
``feriactl up`` starts when ``MLFLOW_TRACKING_URI`` names a PostgreSQL database (clients then given
``MLFLOW_TRACKING_URI=http://…`` of it), and clients writing that database directly. The evaluation,
calibration and champion/challenger flows — the real recording functions of
``codex_core.eval_report`` and the config registry — run on each form and on the embedded sqlite
default, and what each reads back (runs, params, metrics, tags, artifacts, model versions, aliases)
is the same.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from codex_cli.processes import service_commands, service_env
from codex_core.calibration import CalibratorStore
from codex_core.champion import ChampionService
from codex_core.config_registry import CHALLENGER, CHAMPION, REGISTERED_MODEL, ConfigRegistry
from codex_core.config_registry import EXPERIMENT as CONFIG_EXPERIMENT
from codex_core.configs import AnswerConfig, ConfigStore
from codex_core.embedding import DEFAULT_MODEL_ID
from codex_core.eval_report import (
    CALIBRATION_FEATURES,
    EXPERIMENT,
    arm_result,
    record_calibration,
    record_judgement,
    record_retrieval_eval,
)
from codex_core.evaluation import EvalRun, QueryOutcome
from codex_core.home import CodexHome
from codex_core.retrieval import RetrievalConfig
from codex_core.settings import Settings
from codex_core.tracking import Tracker
from codex_resources import CodexHomeResource, MlflowResource
from tests.core.test_calibration_styles import planted_features
from tests.scale.deployment import wait_for
from tests.support.postgres import PASSWORD, PostgresServer, free_port

FILES = ["app/parser.py", "app/retry.py", "web/cart.js", "server/health.go", "cache/lru.rs", "README.md"]


def outcomes(quality: float, miss_rank: int = 3) -> list[QueryOutcome]:
    """Twelve retrievals; the gold file is ranked first for a ``quality`` share of them, else at ``miss_rank``."""
    made = []
    for i in range(12):
        gold = FILES[i % len(FILES)]
        others = [f for f in FILES if f != gold]
        right = i < round(quality * 12)
        ranked = [gold, *others] if right else [*others[: miss_rank - 1], gold, *others[miss_rank - 1:]]
        made.append(QueryOutcome(
            item_id=f"q{i:02d}", query=f"where is behaviour {i} of {gold} implemented?", gold_files=[gold],
            gold_symbols=[], lexical_overlap=i % 2 == 0, ranked_files=ranked, ranked_symbols=[],
            latency_ms=20.0 + i, features={"top_score": 0.03, "margin": 0.01 * (i % 3), "agreement": 2.0,
                                           "top_dense_cosine": 0.4 + 0.04 * i, "verified_fraction": 1.0,
                                           "citations": 5.0},
            heuristic_confidence=0.4 + 0.04 * i, top1_correct=right, context_tokens=800,
        ))
    return made


@functools.cache
def arm(quality: float, miss_rank: int = 3):
    """An A/B arm's result (fitting its calibrator takes seconds: once per module, whatever the backend)."""
    return arm_result(outcomes(quality, miss_rank))


def run_flows(tracker: Tracker, root: Path) -> dict[str, Any]:
    """Evaluation (two ablation arms), calibration, then a challenger promoted and another rejected."""
    tags = {"repo": "demo", "dagster.partition": "demo"}
    evaluation = record_retrieval_eval(
        {"dense only": EvalRun("dense only", outcomes(0.5)), "full": EvalRun("full", outcomes(0.75))},
        repo="demo", eval_set="demo-mined@1", index_commit="c0ffee", index_version="v1", model_id=DEFAULT_MODEL_ID,
        out_dir=root / "eval", tracker=tracker, tags=tags,
    )
    results = root / "calibration-features"
    results.mkdir(parents=True)
    planted_features(n_mined=120, n_plain=70).to_parquet(results / CALIBRATION_FEATURES, index=False)
    calibration = record_calibration(repo="demo", results_dir=results, store=CalibratorStore(root / "calibrator"),
                                     tracker=tracker, tags=tags)

    champions = ChampionService(ConfigRegistry(tracker, ConfigStore(root / "configs")))
    registry = champions.registry
    default = champions.champion()  # none yet: the default configuration is registered as champion
    better = registry.register(AnswerConfig(description="wider lexical", retrieval=RetrievalConfig(lexical_k=80)),
                               alias=CHALLENGER)
    # Same answers first (so the same calibration error), the gold file nearer the top otherwise.
    promoted = record_judgement({"champion": arm(0.5), "challenger": arm(0.5, 2)},
                                champion=default, challenger=better, champions=champions, repo="demo",
                                eval_set="demo-mined@1", tracker=tracker, tags=tags)
    worse = registry.register(AnswerConfig(description="dense only", retrieval=RetrievalConfig(lexical=False)),
                              alias=CHALLENGER)
    rejected = record_judgement({"champion": arm(0.5, 2), "challenger": arm(0.5, 5)},
                                champion=registry.by_alias(CHAMPION), challenger=worse, champions=champions,
                                repo="demo", eval_set="demo-mined@1", tracker=tracker, tags=tags)
    assert (promoted.outcome, rejected.outcome) == ("promote", "reject")
    return {"evaluation": evaluation, "calibration": calibration}


def read_back(tracker: Tracker, root: Path) -> dict[str, Any]:
    """Everything the flows left in MLflow, in a form two backends can be compared in (run ids, times,
    users and the backend's own paths left out)."""
    client = tracker.client

    def artifacts(run_id: str, path: str | None = None) -> list[str]:
        found = []
        for entry in client.list_artifacts(run_id, path):
            found += artifacts(run_id, entry.path) if entry.is_dir else [entry.path]
        return sorted(found)

    def plain(value: str) -> str:
        return value.replace(str(root), "<root>")

    runs = {}
    for experiment in (EXPERIMENT, CONFIG_EXPERIMENT):
        for run in tracker.runs(experiment):
            key = f"{experiment}/{run.info.run_name}/{run.data.tags.get('kind', '')}"
            entry = {
                "status": run.info.status,
                "params": {k: plain(v) for k, v in run.data.params.items()},
                "metrics": run.data.metrics,
                "tags": {k: plain(v) for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
                "artifacts": artifacts(run.info.run_id),
            }
            runs.setdefault(key, []).append(entry)
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    return {
        "runs": {key: sorted(entries, key=repr) for key, entries in runs.items()},
        "versions": sorted((int(v.version), v.tags["config_id"], v.description) for v in versions),
        # The REST API returns alias versions as strings, the SQL store as ints: the version is the same.
        "aliases": {alias: int(v) for alias, v in client.get_registered_model(REGISTERED_MODEL).aliases.items()},
    }


@dataclass
class TrackingServer:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def wait_ready(self) -> str:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the MLflow server", healthy, timeout=120, interval=0.5)
        return self.url


@pytest.fixture(scope="module")
def tracking_server(postgres: PostgresServer, tmp_path_factory) -> Iterator[TrackingServer]:
    """The MLflow server exactly as ``feriactl up`` starts it for ``MLFLOW_TRACKING_URI=postgresql+psycopg2://…``;
    tests wait for it when they need it (the sqlite flows run meanwhile)."""
    home = CodexHome(tmp_path_factory.mktemp("mlflow-server-home"))
    settings = Settings.from_env({"MLFLOW_TRACKING_URI": postgres.create_database("mlflow_server")})
    port = free_port()
    cmd = service_commands(home, "127.0.0.1", 0, 0, port, worker=False, settings=settings)["mlflow"]
    log_path = home.root / "mlflow.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=service_env(home, settings), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield TrackingServer(f"http://127.0.0.1:{port}", proc, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    tracker = Tracker.from_settings(Settings.from_env({}), CodexHome(root / "home"))
    run_flows(tracker, root / "work")
    return read_back(tracker, root / "work")


def test_the_flows_read_back_the_same_from_the_tracking_server_on_postgresql(
    tracking_server: TrackingServer, on_sqlite, postgres: PostgresServer, tmp_path: Path
) -> None:
    url = tracking_server.wait_ready()
    tracker = Tracker.from_settings(Settings.from_env({"MLFLOW_TRACKING_URI": url}), CodexHome(tmp_path / "home"))
    reports = run_flows(tracker, tmp_path / "work")
    assert read_back(tracker, tmp_path / "work") == on_sqlite
    # The server keeps them in PostgreSQL (not in a file store or a sqlite file of its working directory).
    assert {row[0] for row in postgres.query("mlflow_server", "SELECT name FROM experiments")} >= {
        EXPERIMENT, CONFIG_EXPERIMENT}
    # Run links point at the server, which is its own UI; so do the Dagster assets' (``mlflow_url``).
    assert reports["evaluation"].run_url.startswith(f"{url}/#/experiments/")
    resource = MlflowResource(codex_home=CodexHomeResource(root=str(tmp_path / "home")), tracking_uri=url)
    assert resource.tracker().ui_url == url


def test_the_flows_read_back_the_same_from_a_postgresql_database_written_directly(
    postgres: PostgresServer, on_sqlite, tmp_path: Path
) -> None:
    home = CodexHome(tmp_path / "home")
    settings = Settings.from_env({"MLFLOW_TRACKING_URI": postgres.create_database("mlflow_direct")})
    tracker = Tracker.from_settings(settings, home)
    run_flows(tracker, tmp_path / "work")
    assert read_back(tracker, tmp_path / "work") == on_sqlite
    # Artifacts stay under CODEX_HOME like sqlite's, not in ./mlruns of whichever directory the process ran in.
    assert list((home.mlflow_db.parent / "artifacts").rglob("per_query.csv"))


def test_the_database_password_stays_off_the_server_command_line_and_log(tracking_server: TrackingServer) -> None:
    tracking_server.wait_ready()
    assert PASSWORD.encode() not in Path(f"/proc/{tracking_server.proc.pid}/cmdline").read_bytes()
    assert PASSWORD not in tracking_server.log_path.read_text()
