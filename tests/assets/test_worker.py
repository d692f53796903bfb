"""The warm freshness worker: a commit -> one tick -> the new lines are served; the sensor defers to it."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from codex_core.git import RepoRegistry, head_sha
from codex_core.home import CodexHome
from codex_core.published import HEARTBEAT, published_commit, worker_alive
from codex_resources import CodexHomeResource
from codex_sensors import git_head_sensor
from codex_worker import FreshnessWorker
from serving.engine import QueryEngine
from tests.conftest import commit_all
from tests.support.llm import offline_answerer


def test_worker_indexes_new_commits_and_the_sensor_defers_to_it(
    tmp_path: Path, fixture_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = CodexHome(tmp_path / "home")
    monkeypatch.setenv("CODEX_HOME", str(home.root))  # the job's resources come from build_resources()
    RepoRegistry(home.registry_path).add("demo", str(fixture_repo))
    RepoRegistry(home.registry_path).add("remote", "https://example.invalid/org/remote.git")
    instance = dg.DagsterInstance.ephemeral()
    worker = FreshnessWorker(home, instance, interval_s=1.0)

    first = worker.tick()  # nothing published yet: the first index is built here
    assert [(r.repo, r.success) for r in first] == [("demo", True)]  # URL sources stay with the sensor
    assert published_commit(home, "demo") == head_sha(fixture_repo)
    assert worker.tick() == []  # nothing moved
    # A run stopped after publishing but before the graph was repaired is done again.
    state = home.repo_dir("demo") / "graph_state.json"
    state.write_text(json.dumps({"commit": "0" * 40}))
    assert worker.pending() == [("demo", head_sha(fixture_repo))]
    assert [r.success for r in worker.tick()] == [True] and worker.pending() == []

    (fixture_repo / "app" / "retry.py").write_text("def retry_forever(fn):\n    while True:\n        fn()\n")
    head = commit_all(fixture_repo, "Retry forever")
    # One writer per repository: while another run of the partition is in progress, wait.
    from dagster._core.test_utils import create_run_for_test

    other = create_run_for_test(instance, job_name="ingest", status=dg.DagsterRunStatus.STARTED,
                                tags={"dagster/partition": "demo"})
    # An evaluation of it reads a published copy: it does not hold the new commit back.
    evaluation = create_run_for_test(instance, job_name="evaluate", status=dg.DagsterRunStatus.STARTED,
                                     tags={"dagster/partition": "demo"})
    assert worker.tick() == [] and worker.pending() == [("demo", head)]
    instance.report_run_failed(other)
    (run,) = worker.tick()
    instance.report_run_failed(evaluation)
    assert (run.repo, run.commit, run.success) == ("demo", head, True)
    record = instance.get_run_by_id(run.run_id)
    assert record.tags["codex/trigger"] == "freshness-worker" and record.tags["dagster/partition"] == "demo"

    engine = QueryEngine(home, answerer=offline_answerer(), abstain_below=0.0)
    try:
        answer = engine.query("a retry loop that never gives up", repo="demo", top_k=5).model_dump()
        assert answer["index_commit"] == head
        assert any("retry_forever" in c["snippet"] for c in answer["citations"])
    finally:
        engine.close()

    # While the worker beats, the sensor leaves local repositories to it (and keeps its cursor).
    beat = worker_alive(home)
    assert beat is not None and beat["pid"] > 0
    resources = {"codex_home": CodexHomeResource(root=str(home.root))}
    result = git_head_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert [r.partition_key for r in result.run_requests] == []  # the remote is unreachable: retried later
    reason = result.skip_reason.skip_message
    assert "left to the freshness worker" in reason and "demo" in reason
    assert "demo" not in json.loads(result.cursor)

    # Once it stops, the sensor is back in charge, and requests nothing already published.
    worker.stop_beating()
    assert not (home.root / HEARTBEAT).exists() and worker_alive(home) is None
    again = git_head_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert again.run_requests == [] and json.loads(again.cursor)["demo"] == head


def test_stale_or_foreign_heartbeats_do_not_count(tmp_path: Path) -> None:
    home = CodexHome(tmp_path)
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / HEARTBEAT).write_text(json.dumps({"pid": 1 << 30, "beat_at": 1e12, "interval_s": 1}))
    assert worker_alive(home, now=1e12) is None  # no such process
    import os

    (home.root / HEARTBEAT).write_text(json.dumps({"pid": os.getpid(), "beat_at": 1000.0, "interval_s": 1}))
    assert worker_alive(home, now=1005.0) is not None
    assert worker_alive(home, now=1011.0) is None  # more than 10 s (and 3 intervals) old
    # No pid at all must not read as alive (os.kill(-1, 0) would reach every process).
    (home.root / HEARTBEAT).write_text(json.dumps({"beat_at": 1000.0, "interval_s": 1}))
    assert worker_alive(home, now=1000.0) is None
    (home.root / HEARTBEAT).write_text("not json")
    assert worker_alive(home) is None


def test_feriactl_worker_beats_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    home = CodexHome(tmp_path / "home")
    env = {**os.environ, "CODEX_HOME": str(home.root), "DAGSTER_HOME": str(home.root / "dagster")}
    feriactl = Path(sys.executable).parent / "feriactl"
    proc = subprocess.Popen([str(feriactl), "worker", "--interval", "0.5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while worker_alive(home) is None:  # beats once the model is loaded
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no heartbeat within 120 s"
            time.sleep(0.2)
        assert worker_alive(home)["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert worker_alive(home) is None and not (home.root / HEARTBEAT).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
