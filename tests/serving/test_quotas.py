"""Admission control (token buckets, in-flight caps, bounded queues) and the kill-switch."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from serving.quotas import REPO_QUOTAS, Admission, Throttled, load_quota_config, quota_config_from_dict
from tests.serving.conftest import PERMISSIVE_QUOTAS, run_cli


def quotas(fast: dict | None = None, batch: dict | None = None, queues: dict | None = None,
           tenant_inflight: int | None = None) -> dict:
    data = json.loads(json.dumps(PERMISSIVE_QUOTAS))
    if tenant_inflight is not None:
        data["defaults"]["max_inflight"] = tenant_inflight
    data["defaults"]["fast"].update(fast or {})
    data["defaults"]["batch"].update(batch or {})
    for name, q in (queues or {}).items():
        data["queues"][name].update(q)
    return data


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repository_quota_file_is_valid_and_has_overrides() -> None:
    config = load_quota_config(REPO_QUOTAS)
    assert set(config.queues) == {"fast", "batch"}
    assert config.limits("ci-bot", "batch").burst == 64
    assert config.limits("ci-bot", "fast") == config.defaults["fast"]  # untouched queue keeps the default
    assert config.limits("demo-readonly", "fast").max_inflight == config.defaults["fast"].max_inflight
    assert config.inflight_cap("demo-readonly") == 2
    # A batch of the largest allowed size must fit the default batch bucket.
    from serving.schemas import MAX_BATCH

    assert config.defaults["batch"].burst >= MAX_BATCH


async def _admission(data: dict, clock: Clock) -> Admission:
    return Admission(quota_config_from_dict(data), clock=clock)


@pytest.mark.parametrize(("cost", "expected_retry"), [(1, 1), (4, 2)])
def test_token_bucket_refuses_with_retry_after_from_the_bucket(cost, expected_retry) -> None:
    import asyncio

    clock = Clock()
    admission = asyncio.run(_admission(quotas(fast={"rate": 2, "burst": 4}), clock))
    for _ in range(4 // cost):
        admission.release(admission.admit("t", "fast", cost))
    with pytest.raises(Throttled) as refused:
        admission.admit("t", "fast", cost)
    assert refused.value.reason == "rate"
    # rate 2/s, bucket empty: `cost` tokens take cost/2 s, rounded up to whole seconds.
    assert refused.value.retry_after == expected_retry
    admission.release(admission.admit("other", "fast", cost))  # buckets are per tenant
    clock.now += cost / 2
    admission.release(admission.admit("t", "fast", cost))
    with pytest.raises(Throttled, match="can never fit"):
        admission.admit("t", "fast", 5)


def test_in_flight_caps_per_tenant_queue_and_per_tenant() -> None:
    import asyncio

    clock = Clock()
    admission = asyncio.run(_admission(quotas(fast={"max_inflight": 2}, batch={"max_inflight": 2}, tenant_inflight=3),
                                       clock))
    held = [admission.admit("t", "fast"), admission.admit("t", "fast")]
    with pytest.raises(Throttled, match="2 fast requests in flight") as refused:
        admission.admit("t", "fast")
    assert refused.value.reason == "tenant_inflight"
    held.append(admission.admit("t", "batch"))
    with pytest.raises(Throttled, match="3 requests in flight across queues"):
        admission.admit("t", "batch")
    admission.release(held.pop())
    admission.admit("t", "batch")


def test_over_quota_is_429_with_retry_after_and_counted(make_app) -> None:
    app, log = make_app(quotas=quotas(fast={"rate": 0.5, "burst": 2}))
    with TestClient(app) as client:
        statuses = [client.post("/v1/query", json={"query": "cart total", "tenant": "a"}) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        refused = statuses[2]
        assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
        assert refused.json()["reason"] == "rate" and "quota" in refused.json()["detail"]
        # Another tenant has its own bucket.
        assert client.post("/v1/query", json={"query": "cart total", "tenant": "b"}).status_code == 200
        metrics = client.get("/metrics").text
        assert 'throttle_total{queue="fast",reason="rate"} 1.0' in metrics
        assert 'admit_total{queue="fast"} 3.0' in metrics
    lines = [r for r in log.records() if r["path"] == "/v1/query"]
    assert [(r["admit"], r["throttle"], r["status"]) for r in lines[:3]] == [
        (True, None, 200), (True, None, 200), (False, "rate", 429)]


def test_saturated_server_queue_refuses_instead_of_queueing_without_end(make_app) -> None:
    app, _ = make_app(quotas=quotas(queues={"fast": {"concurrency": 1, "max_waiting": 1, "max_wait_s": 0.05}}))
    with TestClient(app) as client:
        def ask(i: int):
            return client.post("/v1/query", json={"query": f"how is the cart total computed {i}", "tenant": f"t{i}"})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(ask, range(16)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 429} and codes.count(200) >= 1 and codes.count(429) >= 1
        reasons = {r.json()["reason"] for r in responses if r.status_code == 429}
        assert reasons <= {"queue_full", "queue_timeout"}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
        health = client.get("/v1/health").json()
        assert health["queues"]["fast"]["running"] == 0 and health["queues"]["fast"]["waiting"] == 0


def test_batch_queue_costs_one_token_per_query(make_app) -> None:
    app, log = make_app(quotas=quotas(batch={"rate": 0.1, "burst": 4}))
    with TestClient(app) as client:
        batch = client.post("/v1/batch/query", json={"queries": [
            {"query": "how is the cart total computed"}, {"query": "LRU eviction"}, {"query": "x", "repo": "ghost"}]})
        assert batch.status_code == 200
        results = batch.json()["results"]
        assert results[0]["citations"] and results[1]["citations"]
        assert results[2]["error"]["status"] == 404
        # 3 of 4 tokens used: a second batch of 2 is over quota, a single batch-mode query fits.
        assert client.post("/v1/batch/query", json={"queries": [{"query": "a"}, {"query": "b"}]}).status_code == 429
        assert client.post("/v1/query", json={"query": "cart total", "mode": "batch"}).status_code == 200
        assert client.post("/v1/query", json={"query": "cart total"}).status_code == 200  # fast queue untouched
    queues = [(r["path"], r["queue"], r["status"]) for r in log.records() if r["path"].endswith("/query")]
    assert queues == [("/v1/batch/query", "batch", 200), ("/v1/batch/query", "batch", 429),
                      ("/v1/query", "batch", 200), ("/v1/query", "fast", 200)]


def test_kill_switch_stops_queries_fast_and_leaves_health_metrics_traces(cli_home, make_app) -> None:
    app, log = make_app(state_dir=cli_home / "serving")
    with TestClient(app) as client:
        before = client.post("/v1/query", json={"query": "cart total"}).json()

        code, out = run_cli("kill-switch", "on", "--reason", "bad index published at 10:02")
        assert code == 0 and "ON" in out
        started = time.perf_counter()
        stopped = client.post("/v1/query", json={"query": "cart total"})
        elapsed = time.perf_counter() - started
        assert stopped.status_code == 503 and elapsed < 0.5
        assert "bad index published at 10:02" in stopped.json()["detail"]
        assert "kill-switch off" in stopped.json()["detail"]
        assert client.post("/v1/batch/query", json={"queries": [{"query": "x"}]}).status_code == 503

        health = client.get("/v1/health")
        assert health.status_code == 200
        assert health.json()["kill_switch"]["on"] is True and health.json()["status"] == "degraded"
        assert any("kill-switch on" in r for r in health.json()["reasons"])
        assert client.get(f"/v1/trace/{before['trace_id']}").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and 'http_errors_total{status="503"} 2.0' in metrics.text

        assert client.post("/v1/admin/kill-switch", json={"on": False}).json()["on"] is False
        assert client.post("/v1/query", json={"query": "cart total"}).status_code == 200
    _, out = run_cli("kill-switch", "status", "--json")
    assert json.loads(out)["on"] is False and json.loads(out)["set_by"].startswith("api:")
    assert [r["throttle"] for r in log.records() if r["status"] == 503] == ["kill_switch", "kill_switch"]
