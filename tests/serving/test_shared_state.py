"""Quotas and the kill-switch hold across serving replicas; ``/v1/health/live`` and ``/v1/health/ready``.

"Replicas" here are independent apps (each its own engine, admission and connection pool) on one
shared state: the sqlite file under the state directory, or a real PostgreSQL server this module
starts (tests/support/postgres.py; skipped, saying why, only where its binaries are absent). The
killed replica is a real process, killed with SIGKILL while it holds a slot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from codex_core.settings import Settings
from serving.quotas import Admission, QueueLimits, Throttled, quota_config_from_dict
from serving.shared_state import SQLITE_FILE, SharedLimiter, SharedState, StateStoreUnavailable, resolve_url
from tests.serving.conftest import run_cli
from tests.serving.test_quotas import quotas
from tests.support.llm import closed_port
from tests.support.postgres import PASSWORD, PostgresServer

ROOT = Path(__file__).resolve().parents[2]
ASK = {"query": "how is the cart total computed", "tenant": "acme"}
NO_REFILL = {"rate": 0.0001, "burst": 3}  # a bucket that does not refill during a test


_databases = iter(range(1000))


def new_database(server: PostgresServer) -> str:
    return server.create_database(f"serving_state_{next(_databases)}")


def ask_alternately(clients: list[TestClient], times: int, body: dict | None = None) -> list[int]:
    return [clients[i % len(clients)].post("/v1/query", json=body or ASK).status_code for i in range(times)]


# --------------------------------------------------------------------------- where the state lives


def test_the_state_url_falls_back_to_dagsters_database_then_to_sqlite_in_the_state_dir(tmp_path) -> None:
    own = f"postgresql+psycopg2://codex:{PASSWORD}@db.internal:5432/serving"
    dagster = own.replace("/serving", "/dagster")
    assert resolve_url(Settings.from_env({"CODEX_SERVING_STATE_URL": own, "CODEX_DAGSTER_PG_URL": dagster}),
                       tmp_path) == own
    assert resolve_url(Settings.from_env({"CODEX_DAGSTER_PG_URL": dagster}), tmp_path) == dagster
    assert resolve_url(Settings.from_env({}), tmp_path) == f"sqlite:///{tmp_path.resolve() / SQLITE_FILE}"
    # Shown (logs, errors) with the password hidden.
    assert PASSWORD not in SharedState(own).where and "db.internal:5432/serving" in SharedState(own).where


def test_a_state_url_of_another_kind_is_refused_naming_the_variable_not_the_value() -> None:
    for url in (f"mysql://codex:{PASSWORD}@db/serving", f"postgresql://codex:{PASSWORD}@db/serving"):
        with pytest.raises(ValidationError, match="CODEX_SERVING_STATE_URL") as refused:
            Settings.from_env({"CODEX_SERVING_STATE_URL": url})
        assert PASSWORD not in str(refused.value) and "postgresql+psycopg2://" in str(refused.value)


# --------------------------------------------------------------------------- the store under contention


def hammer(stores: list[SharedState], burst: int, threads_per_store: int, attempts: int) -> int:
    """Every thread of every store (a replica) tries ``attempts`` admissions of one tenant; how many passed."""
    limits = QueueLimits(rate=0.0001, burst=burst, max_inflight=10_000)
    admitted: list[int] = []

    def replica_thread(store: SharedState) -> None:
        ok = 0
        for _ in range(attempts):
            taken = store.take("acme", "fast", ("batch", "fast"), 1, limits, 10_000, "r", 30)
            ok += taken.lease is not None
        admitted.append(ok)

    threads = [threading.Thread(target=replica_thread, args=(s,)) for s in stores for _ in range(threads_per_store)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(admitted)


def test_concurrent_replicas_on_sqlite_hand_out_a_burst_exactly_once(tmp_path) -> None:
    stores = [SharedState(f"sqlite:///{tmp_path / SQLITE_FILE}") for _ in range(2)]
    assert hammer(stores, burst=25, threads_per_store=3, attempts=15) == 25  # 90 tried


def test_concurrent_replicas_on_postgres_hand_out_a_burst_exactly_once(postgres) -> None:
    url = new_database(postgres)
    stores = [SharedState(url) for _ in range(2)]
    try:
        assert hammer(stores, burst=25, threads_per_store=3, attempts=15) == 25
    finally:
        for store in stores:
            store.close()


# --------------------------------------------------------------------------- two apps, one state


def test_two_apps_on_one_sqlite_state_share_the_burst_and_the_kill_switch(make_app) -> None:
    limits = quotas(fast=NO_REFILL)
    (first, _), (second, _) = make_app(quotas=limits), make_app(quotas=limits)  # same tmp_path/state
    with TestClient(first) as a, TestClient(second) as b:
        codes = ask_alternately([a, b], 6)
        assert codes.count(200) == 3 and codes.count(429) == 3, codes  # not 3 per replica
        refused = b.post("/v1/query", json=ASK)
        assert refused.json()["reason"] == "rate" and int(refused.headers["Retry-After"]) > 1000

        assert a.post("/v1/admin/kill-switch", json={"on": True, "reason": "bad index"}).status_code == 200
        stopped = b.post("/v1/query", json={**ASK, "tenant": "fresh"})
        assert stopped.status_code == 503 and "bad index" in stopped.json()["detail"]
        assert b.get("/v1/health").json()["kill_switch"]["on"] is True
        assert b.post("/v1/admin/kill-switch", json={"on": False}).status_code == 200
        assert a.post("/v1/query", json={**ASK, "tenant": "fresh"}).status_code == 200


def test_an_old_kill_switch_file_is_adopted_then_the_cli_turns_it_off(cli_home, make_app) -> None:
    state_dir = cli_home / "serving"
    state_dir.mkdir(parents=True)
    (state_dir / "kill_switch.json").write_text(json.dumps({
        "on": True, "reason": "left on before the upgrade", "set_by": "cli:ops", "set_at": "2025-01-01T00:00:00+00:00",
    }))
    app, _ = make_app(state_dir=state_dir)
    with TestClient(app) as client:
        stopped = client.post("/v1/query", json=ASK)
        assert stopped.status_code == 503 and "left on before the upgrade" in stopped.json()["detail"]
        assert not (state_dir / "kill_switch.json").exists() and (state_dir / "kill_switch.json.migrated").exists()
        code, out = run_cli("kill-switch", "off")
        assert code == 0 and "off" in out
        assert client.post("/v1/query", json=ASK).status_code == 200


def test_two_apps_on_postgres_share_the_burst_and_the_kill_switch(make_app, postgres, tmp_path) -> None:
    # No CODEX_SERVING_STATE_URL: the state goes to Dagster's database, in tables of its own.
    url = new_database(postgres)
    limits = quotas(fast=NO_REFILL)
    apps = [make_app(quotas=limits, env={"CODEX_DAGSTER_PG_URL": url}, state_dir=tmp_path / f"replica-{i}")[0]
            for i in range(2)]  # nothing shared on disk: only the database
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        codes = ask_alternately([a, b], 6)
        assert codes.count(200) == 3 and codes.count(429) == 3, codes
        assert a.post("/v1/admin/kill-switch", json={"on": True, "reason": "index migration"}).status_code == 200
        stopped = b.post("/v1/query", json={**ASK, "tenant": "fresh"})
        assert stopped.status_code == 503 and "index migration" in stopped.json()["detail"]
        assert b.post("/v1/admin/kill-switch", json={"on": False}).status_code == 200
        assert a.post("/v1/query", json={**ASK, "tenant": "fresh"}).status_code == 200
        assert b.get("/v1/health/ready").json() == {
            "status": "ready", "reasons": [], "published_repos": 2, "shared_state": "postgresql"}
    tables = {r[0] for r in postgres.query(url.rsplit("/", 1)[1], "SELECT tablename FROM pg_tables "
                                           "WHERE tablename LIKE 'codex_serving_%'")}
    assert tables == {"codex_serving_buckets", "codex_serving_leases", "codex_serving_kill_switch"}


REPLICA = """
import json, sys, time
from serving.quotas import Admission, quota_config_from_dict
from serving.shared_state import SharedLimiter, SharedState
url, lease_s, config = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
admission = Admission(quota_config_from_dict(config), limiter=SharedLimiter(SharedState(url), lease_s=lease_s))
admission.admit("acme", "fast")
print("admitted", flush=True)
time.sleep(600)
"""


@pytest.fixture
def replica_process() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_a_killed_replicas_in_flight_slot_expires_with_its_lease(make_app, postgres, replica_process) -> None:
    url = new_database(postgres)
    limits = quotas(fast={"max_inflight": 1})
    lease_s = 2.0
    other = subprocess.Popen([sys.executable, "-c", REPLICA, url, str(lease_s), json.dumps(limits)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    replica_process.append(other)
    assert other.stdout.readline().strip() == "admitted", other.stderr.read()

    app, _ = make_app(quotas=limits, env={"CODEX_SERVING_STATE_URL": url})
    with TestClient(app) as client:
        busy = client.post("/v1/query", json=ASK)
        assert busy.status_code == 429 and busy.json()["reason"] == "tenant_inflight"
        time.sleep(lease_s * 1.5)  # a live replica renews its lease: the slot is still taken
        assert client.post("/v1/query", json=ASK).status_code == 429

        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)
        killed_at = time.monotonic()
        assert client.post("/v1/query", json=ASK).status_code == 429  # the lease, not the kill, frees it
        while (status := client.post("/v1/query", json=ASK).status_code) == 429:
            assert time.monotonic() - killed_at < lease_s + 5, "the dead replica's slot never expired"
            time.sleep(0.2)
        assert status == 200


def test_a_stopping_app_frees_its_slots_at_once(make_app, tmp_path) -> None:
    """Graceful shutdown deletes the replica's leases instead of leaving them to expire."""
    limits = quotas(fast={"max_inflight": 1})
    app, _ = make_app(quotas=limits)
    with TestClient(app) as client:
        admission: Admission = client.app.state.services.admission
        held = admission.admit("acme", "fast")  # a request in flight when the replica stops
        assert held.lease is not None
    store = SharedState(f"sqlite:///{tmp_path / 'state' / SQLITE_FILE}")
    assert store.in_flight("acme") == {}


def test_an_admission_limiter_shared_with_another_replica_counts_its_in_flight_requests(tmp_path) -> None:
    """The tenant-wide cap counts every replica's requests, across queues."""
    config = quota_config_from_dict(quotas(tenant_inflight=2))
    url = f"sqlite:///{tmp_path / SQLITE_FILE}"
    one, two = (Admission(config, limiter=SharedLimiter(SharedState(url))) for _ in range(2))
    held = [one.admit("acme", "fast"), two.admit("acme", "batch")]
    with pytest.raises(Throttled, match="2 requests in flight across queues"):
        one.admit("acme", "fast")
    one.release(held[0])
    two.release(held[1])
    one.release(one.admit("acme", "fast"))


# --------------------------------------------------------------------------- live and ready


def test_live_answers_while_ready_waits_for_a_published_index(make_app, tmp_path) -> None:
    app, _ = make_app(home=tmp_path / "empty-home")
    with TestClient(app) as client:
        live = client.get("/v1/health/live")
        assert live.status_code == 200 and live.json()["status"] == "alive"
        ready = client.get("/v1/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert ready.json()["reasons"] == ["no published index: run feriactl ingest PATH (or wait for the first "
                                           "ingest run)"]
        assert client.get("/v1/health").status_code == 200  # the old endpoint is unchanged


def test_ready_with_an_index_and_the_kill_switch_on_still_ready(make_app) -> None:
    app, _ = make_app()
    with TestClient(app) as client:
        assert client.get("/v1/health/ready").json() == {
            "status": "ready", "reasons": [], "published_repos": 2, "shared_state": "sqlite"}
        client.post("/v1/admin/kill-switch", json={"on": True, "reason": "maintenance"})
        # Refusing fast (503) is the kill-switch's job; pulling replicas out of the balancer is not.
        assert client.get("/v1/health/ready").status_code == 200
        assert client.post("/v1/query", json=ASK).status_code == 503


def test_an_unreachable_state_database_fails_closed_without_showing_its_password(make_app) -> None:
    url = f"postgresql+psycopg2://codex:{PASSWORD}@127.0.0.1:{closed_port()}/serving"
    app, log = make_app(env={"CODEX_SERVING_STATE_URL": url})
    with TestClient(app) as client:  # start-up does not wait for the database
        assert client.get("/v1/health/live").status_code == 200
        ready = client.get("/v1/health/ready")
        assert ready.status_code == 503 and ready.json()["published_repos"] == 2
        [reason] = ready.json()["reasons"]
        assert "shared serving state (postgresql+psycopg2://codex:***@127.0.0.1" in reason and "refused" in reason
        refused = client.post("/v1/query", json=ASK)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert "failed while reading the kill-switch" in refused.json()["detail"]
        health = client.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["kill_switch"] is None
        seen = ready.text + refused.text + health.text + client.get("/metrics").text
    assert PASSWORD not in seen + log.text
    with pytest.raises(StateStoreUnavailable, match=r"codex:\*\*\*@"):
        SharedState(url).ping()
