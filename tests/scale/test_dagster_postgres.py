"""Dagster on PostgreSQL, chosen by ``CODEX_DAGSTER_PG_URL`` alone, with the real processes of a deployment.

A code server, the webserver and ``dagster-daemon`` (``tests/scale/deployment.py``) share run, event-log
and schedule storage in a PostgreSQL database that this session starts itself. Runs are submitted as the
UI submits them and launched only by the daemon's ``QueuedRunCoordinator``, with the limits of the
project's ``dagster.yaml``: two runs at once, one per repository.

The repositories are local, and the test process holds a fresh freshness-worker heartbeat, as under
``feriactl up``: ``git_head_sensor`` (which the daemon runs) then leaves them alone, so the runs this
module submits are the only ones. Their chunks are embedded once here, by the real model, into the
deployment's embedding cache: loading the model costs each run process 10-25 s on two cores, which is
not what these tests are about; the runs go through every stage and find their vectors cached, as an
unchanged re-ingest does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from codex_cli.instance import render_instance_yaml
from codex_core import catalog, published
from codex_core.dedup import dedup_chunks
from codex_core.embedding import DEFAULT_MODEL_ID, EmbeddingCache, embed_documents, embedding_document
from codex_core.files import scan_repository
from codex_core.git import RepoRegistry, head_sha
from codex_core.home import CodexHome
from codex_core.ingest import chunk_source_files
from codex_core.models import Chunk
from codex_core.settings import Settings
from codex_core.vector_store import EmbeddedVectorIndex
from codex_resources import shared_embedder
from tests.conftest import commit_all, git
from tests.scale.deployment import BIN, IN_PROGRESS, ROOT, Deployment, wait_for
from tests.support.postgres import PASSWORD, PostgresServer

QUEUED, SUCCESS = dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.SUCCESS
RUN_TIMEOUT = 150

DATABASE = "dagster_scale"  # the deployment's Dagster storage on the session's server


def small_repo(root: Path, name: str) -> Path:
    """Two Python modules whose text names the repository: chunks (and point ids) differ between repos."""
    repo = root / "sources" / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / f"{name}_math.py").write_text(
        f'def {name}_scale(values, factor):\n    """Multiply every {name} value by factor."""\n'
        "    return [v * factor for v in values]\n\n\n"
        f'def {name}_total(values):\n    """Sum of the {name} values, zero when empty."""\n    return sum(values)\n'
    )
    (repo / f"{name}_io.py").write_text(
        "import json\n\n\n"
        f'def load_{name}(path):\n    """Read the {name} settings from a JSON file."""\n'
        "    with open(path) as fh:\n        return json.load(fh)\n"
    )
    commit_all(repo, f"{name}: first version")
    return repo


def expected_chunks(source: Path, name: str) -> list[Chunk]:
    """The chunks a complete ingest of ``source`` at HEAD publishes, computed here by the core functions
    (files at the commit, chunks, dedup) without Dagster, a model or an index."""
    commit = head_sha(source)
    unique, _ = dedup_chunks(chunk_source_files(scan_repository(source, commit).files, name, commit))
    return unique


def expected_point_ids(source: Path, name: str) -> set[str]:
    return {chunk.point_id for chunk in expected_chunks(source, name)}


def embed_into_cache(deployment: Deployment, source: Path, name: str) -> None:
    """See the module docstring: the real model, the deployment's cache, the documents the runs embed."""
    embedder = shared_embedder(None, DEFAULT_MODEL_ID, "cpu")
    cache = EmbeddingCache(deployment.home.embedding_cache_path)
    try:
        embed_documents(embedder, cache, [embedding_document(c) for c in expected_chunks(source, name)])
    finally:
        cache.close()


def published_point_ids(deployment: Deployment, name: str) -> list[str]:
    return published_point_ids_in(deployment.home, name)


def published_point_ids_in(home: CodexHome, name: str) -> list[str]:
    index = EmbeddedVectorIndex(home.index_dir)
    try:
        current = index.current(name)
        assert current is not None, f"{name} is not published"
        return [point_id for point_id, _ in index.iter_payloads(name, current.version, with_payload=False)]
    finally:
        index.close()


def assert_converged(deployment: Deployment, name: str, source: Path) -> None:
    """Published at HEAD, every expected point present exactly once, nothing else, the catalog agreeing."""
    assert published.published_commit(deployment.home, name) == head_sha(source)
    ids = published_point_ids(deployment, name)
    assert len(ids) == len(set(ids)), f"{name}: duplicated points"
    assert set(ids) == expected_point_ids(source, name)
    unique = catalog.read_chunks(deployment.home.repo_dir(name) / catalog.UNIQUE_CHUNKS)
    assert {c.point_id for c in unique} == set(ids)


def register(deployment: Deployment, name: str) -> Path:
    source = small_repo(deployment.root, name)
    RepoRegistry(deployment.home.registry_path).add(name, str(source))
    deployment.instance.add_dynamic_partitions("repos", [name])
    embed_into_cache(deployment, source, name)
    return source


def run_worker_pids(deployment: Deployment, run_id: str) -> list[int]:
    """The run worker processes started for ``run_id`` (the code server logs one engine event each)."""
    found = (re.match(r"Started process for run \(pid: (\d+)\)", e.message)
             for e in deployment.events(run_id, dg.DagsterEventType.ENGINE_EVENT))
    return [int(m.group(1)) for m in found if m]


def retries_of(deployment: Deployment, run_id: str) -> list[str]:
    return [r.run_id for r in deployment.instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))]


def runs_of(deployment: Deployment, repo: str) -> set[str]:
    return {r.run_id for r in deployment.instance.get_runs(dg.RunsFilter(tags={"dagster/partition": repo}))}


def step_started(deployment: Deployment, run_id: str, step: str) -> bool:
    return any(e.step_key == step for e in deployment.events(run_id, dg.DagsterEventType.STEP_START))


@pytest.fixture(scope="module")
def deployment(postgres: PostgresServer, tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("pg-dagster")
    url = postgres.create_database(DATABASE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODEX_DAGSTER_PG_URL", url)  # the test process reads the instance too
        running = Deployment(root, url)
        published.beat(running.home, 3600)  # see the module docstring
        # The model loads here while the deployment's processes start (seconds saved on two cores).
        loading = threading.Thread(target=shared_embedder, args=(None, DEFAULT_MODEL_ID, "cpu"))
        loading.start()
        try:
            running.start()
            loading.join()
            yield running
        finally:
            running.stop()
            published.stop_beating(running.home)


def test_the_instance_config_follows_the_settings_and_never_holds_the_url() -> None:
    url = f"postgresql+psycopg2://codex:{PASSWORD}@db.internal:6543/dagster"
    on_pg = render_instance_yaml(Settings.from_env({"CODEX_DAGSTER_PG_URL": url}))
    assert "storage:\n  postgres:\n    postgres_url:\n      env: CODEX_DAGSTER_PG_URL" in on_pg
    assert PASSWORD not in on_pg and "6543" not in on_pg and "db.internal" not in on_pg
    on_sqlite = render_instance_yaml(Settings.from_env({}))
    assert "storage:" not in on_sqlite and "postgres" not in on_sqlite
    for text in (on_pg, on_sqlite):  # the same queue either way
        assert "max_concurrent_runs: 2" in text and "key: codex/repo" in text and "limit: 1" in text


def test_two_repositories_ingest_at_once_and_a_second_run_of_one_waits(deployment: Deployment,
                                                                        postgres: PostgresServer) -> None:
    sources = {name: register(deployment, name) for name in ("alpha", "beta")}
    alpha_1 = deployment.submit_ingest("alpha")
    beta_1 = deployment.submit_ingest("beta")
    alpha_2 = deployment.submit_ingest("alpha")
    runs = (alpha_1, beta_1, alpha_2)
    assert deployment.instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"

    waited = False  # a moment when one alpha run held the repository and the other sat in the queue
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        status = {r: deployment.status(r) for r in runs}
        waited |= {status[alpha_1], status[alpha_2]} & IN_PROGRESS != set() and QUEUED in {
            status[alpha_1], status[alpha_2]}
        if all(s in (SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) for s in status.values()):
            break
        time.sleep(0.2)
    assert status == dict.fromkeys(runs, SUCCESS), status
    assert waited, "the second alpha run was never seen waiting while the first held the repository"

    first, second = sorted((alpha_1, alpha_2), key=lambda r: deployment.interval(r)[0])
    assert deployment.interval(second)[0] >= deployment.interval(first)[1], "two alpha runs overlapped"
    beta_start, beta_end = deployment.interval(beta_1)
    first_start, first_end = deployment.interval(first)
    assert beta_start < first_end and first_start < beta_end, "the two repositories were not ingested at once"

    for name, source in sources.items():
        assert_converged(deployment, name, source)
    # The storage is PostgreSQL: the runs are rows of its database, and no sqlite run storage exists.
    assert type(deployment.instance.run_storage).__name__ == "PostgresRunStorage"
    rows = {row[0] for row in postgres.query(DATABASE, "SELECT run_id FROM runs")}
    assert set(runs) <= rows
    assert not list(deployment.home.dagster_home.rglob("*.db"))


def test_a_daemon_and_a_run_worker_killed_mid_ingest_converge_after_the_restart(deployment: Deployment) -> None:
    """Mid-ingest of two repositories, with a third run queued, the daemon and one run worker are SIGKILLed
    (what an OOM killer does). Checked once the daemon is back: every run ends in SUCCESS except the killed
    one, whose single automatic retry succeeds; each run worker started once (nothing relaunched); the runs
    of each repository are exactly those; each index holds exactly the expected points, once each."""
    sources = {name: register(deployment, name) for name in ("gamma", "delta")}
    gamma_1 = deployment.submit_ingest("gamma")
    delta_1 = deployment.submit_ingest("delta")
    gamma_2 = deployment.submit_ingest("gamma")
    # The daemon dies while gamma_1 still holds gamma (else it could launch gamma_2 first), delta_1 launched.
    wait_for("gamma_1 mid-ingest and delta_1 launched", timeout=RUN_TIMEOUT, condition=lambda: step_started(
        deployment, gamma_1, "code_chunks") and deployment.status(delta_1) != QUEUED)
    deployment.kill_daemon()
    wait_for("delta_1 mid-ingest", lambda: step_started(deployment, delta_1, "code_chunks"), timeout=RUN_TIMEOUT)
    (worker,) = run_worker_pids(deployment, delta_1)
    os.kill(worker, signal.SIGKILL)

    # Without a daemon the run in flight goes on (its process belongs to the code server), the code server
    # marks the run whose process died as failed, and nothing leaves the queue or is retried: the queue
    # lives in PostgreSQL, not in the dead daemon.
    statuses = deployment.wait_finished([gamma_1, delta_1], timeout=RUN_TIMEOUT)
    assert statuses == {gamma_1: SUCCESS, delta_1: dg.DagsterRunStatus.FAILURE}
    assert deployment.status(gamma_2) == QUEUED and not retries_of(deployment, delta_1)

    deployment.start_daemon()
    (delta_retry,) = wait_for("the retry of the killed run", lambda: retries_of(deployment, delta_1),
                              timeout=RUN_TIMEOUT)
    statuses = deployment.wait_finished([gamma_2, delta_retry], timeout=RUN_TIMEOUT)
    assert statuses == {gamma_2: SUCCESS, delta_retry: SUCCESS}
    for run_id in (gamma_1, gamma_2, delta_1, delta_retry):
        assert len(run_worker_pids(deployment, run_id)) == 1, run_id
    assert runs_of(deployment, "gamma") == {gamma_1, gamma_2}
    assert runs_of(deployment, "delta") == {delta_1, delta_retry}
    for name, source in sources.items():
        assert_converged(deployment, name, source)


def test_a_freshness_worker_killed_mid_ingest_restarts_and_converges(deployment: Deployment, tmp_path: Path) -> None:
    """``feriactl worker`` runs ``ingest`` in its own process, recorded in the PostgreSQL instance. SIGKILLed
    mid-run, it leaves that run STARTED, which would hold the repository for good; restarted, it marks the
    run failed (its worker is dead) and re-indexes: published at HEAD, exactly the expected points, and
    exactly two runs of the repository, the killed one failed and the second successful."""
    home = CodexHome(tmp_path / "worker-home")
    source = small_repo(tmp_path, "epsilon")
    RepoRegistry(home.registry_path).add("epsilon", str(source))
    env = {**deployment.env, "CODEX_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home)}

    def start_worker(log_name: str) -> subprocess.Popen:
        with open(tmp_path / log_name, "ab") as log:
            return subprocess.Popen([str(BIN / "feriactl"), "worker", "--interval", "0.5"], cwd=ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def epsilon_runs() -> list[dg.DagsterRun]:
        return deployment.instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "epsilon"}))

    worker = start_worker("worker-1.log")
    try:
        killed = wait_for("the worker's run to be mid-ingest", timeout=RUN_TIMEOUT, condition=lambda: next(
            (r.run_id for r in epsilon_runs() if step_started(deployment, r.run_id, "code_chunks")), None))
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and the compute-log tails it started
        worker.wait(timeout=30)
    assert deployment.status(killed) == dg.DagsterRunStatus.STARTED  # nobody is left to finish it
    assert published.published_commit(home, "epsilon") is None

    worker = start_worker("worker-2.log")
    try:
        wait_for("the restarted worker to publish epsilon", timeout=RUN_TIMEOUT, interval=0.5,
                 condition=lambda: published.graph_commit(home, "epsilon") == head_sha(source))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    statuses = {r.run_id: r.status for r in epsilon_runs()}
    assert statuses.pop(killed) == dg.DagsterRunStatus.FAILURE
    assert list(statuses.values()) == [SUCCESS]
    assert published.published_commit(home, "epsilon") == head_sha(source)
    ids = published_point_ids_in(home, "epsilon")
    assert len(ids) == len(set(ids)) and set(ids) == expected_point_ids(source, "epsilon")


def test_the_database_password_is_in_no_file_and_no_log(deployment: Deployment) -> None:
    """``CODEX_DAGSTER_PG_URL`` holds a password: dagster.yaml names the variable, and nothing the
    processes wrote (logs, compute logs, CODEX_HOME) contains it."""
    yaml_text = (deployment.home.dagster_home / "dagster.yaml").read_text()
    assert re.search(r"postgres_url:\n\s+env: CODEX_DAGSTER_PG_URL", yaml_text)
    leaked = [p for p in deployment.root.rglob("*")
              if p.is_file() and not p.is_symlink() and PASSWORD.encode() in p.read_bytes()]
    assert not leaked
