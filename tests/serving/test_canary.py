"""Canary: sticky traffic split, per-arm signals, automatic rollback, promotion; driven by the CLI."""

from __future__ import annotations

import json
import os
import re

import pytest
from fastapi.testclient import TestClient

from codex_core.configs import AnswerConfig, ConfigStore
from codex_core.retrieval import RetrievalConfig
from codex_core.settings import Settings
from serving.canary import CHALLENGER, ArmSignals, Thresholds, arm_for, rollback_reason
from tests.serving.conftest import copy_home, run_cli

QUESTIONS = [
    "how is the cart total computed", "where is a config line parsed", "how does the LRU cache evict entries",
    "what does the health endpoint write", "how are connection errors retried", "what is a ledger entry",
    "when is the next dunning reminder", "how is invoice tax computed", "where is the greeting defined",
    "how are prices formatted",
]


def test_sticky_assignment_converges_to_the_traffic_share() -> None:
    pairs = [(f"tenant{t}", f"question {q}") for t in range(40) for q in range(100)]
    for traffic in (5, 10, 30):
        share = sum(arm_for(t, q, traffic) == CHALLENGER for t, q in pairs) / len(pairs)
        assert abs(share - traffic / 100) < 0.015, (traffic, share)
    # Sticky, and growing the traffic only moves champion users to the challenger, never back.
    for t, q in pairs[:500]:
        assert arm_for(t, q, 10) == arm_for(t, q, 10)
        if arm_for(t, q, 10) == CHALLENGER:
            assert arm_for(t, q, 30) == CHALLENGER


def signals(requests: int, errors: int = 0, abstentions: int = 0, latency: float = 0.1) -> ArmSignals:
    return ArmSignals(requests, errors, abstentions, [latency] * requests)


def test_rollback_rule() -> None:
    t = Thresholds(min_samples=20)
    healthy = signals(200, errors=2, abstentions=20, latency=0.3)
    assert rollback_reason(healthy, signals(19, errors=19), t) is None  # below the minimum sample
    assert rollback_reason(healthy, signals(40, errors=1, abstentions=4, latency=0.4), t) is None
    assert "error rate" in rollback_reason(healthy, signals(40, errors=2), t)  # 5% > 2 x 1% + 1%
    assert "P95" in rollback_reason(healthy, signals(40, latency=0.9), t)  # 0.9 s > 0.3 s + 0.5 s
    assert "abstention" in rollback_reason(healthy, signals(40, abstentions=11), t)  # 27.5% > 10% + 15


@pytest.fixture
def canary_home(corpus, tmp_path, monkeypatch):
    """A private copy of the ingested home, used by both the CLI (CODEX_HOME) and the app."""
    home, repos = copy_home(corpus, tmp_path)
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def save(home, **retrieval) -> str:
    return ConfigStore(home / "configs").save(AnswerConfig(retrieval=RetrievalConfig(**retrieval)))


def test_canary_splits_traffic_stickily_records_arms_and_promotes(canary_home, make_app) -> None:
    challenger = save(canary_home, graph_hops=0)
    code, out = run_cli("canary", "start", "--config", challenger, "--traffic", "30", "--json")
    assert code == 0 and json.loads(out)["status"] == "running"
    app, log = make_app(home=canary_home, state_dir=canary_home / "serving")
    served = []
    with TestClient(app) as client:
        for tenant in ("ann", "ben", "cat", "dan"):
            for question in QUESTIONS:
                body = client.post("/v1/query", json={"query": question, "tenant": tenant}).json()
                trace = client.get(f"/v1/trace/{body['trace_id']}").json()
                assert body["arm"] == trace["canary"]["arm"] == arm_for(tenant, question, 30)
                expected_config = challenger if body["arm"] == CHALLENGER else None
                assert trace["canary"]["config_id"] == expected_config
                served.append(body["arm"])
        # Sticky: asking again lands on the same arm.
        again = client.post("/v1/query", json={"query": QUESTIONS[0], "tenant": "ann"}).json()
        assert again["arm"] == arm_for("ann", QUESTIONS[0], 30)
        served.append(again["arm"])
        health = client.get("/v1/health").json()["canary"]
        assert health["status"] == "running" and health["challenger"] == challenger
        metrics = client.get("/metrics").text
    assert 0 < served.count(CHALLENGER) < len(served)
    assert f'canary_requests_total{{arm="challenger",outcome="ok"}} {float(served.count(CHALLENGER))}' in metrics
    assert {r["arm"] for r in log.records() if r["path"] == "/v1/query"} == {"champion", "challenger"}

    _, out = run_cli("canary", "status", "--json")
    arms = json.loads(out)["canary"]["arms"]
    assert arms["challenger"]["requests"] == served.count(CHALLENGER)
    assert arms["champion"]["requests"] == served.count("champion")
    assert arms["champion"]["error_rate"] == 0.0 and arms["champion"]["p95_s"] > 0
    _, text = run_cli("canary", "status")
    assert "challenger" in text and "p95=" in text

    code, out = run_cli("canary", "promote", "--json")
    assert json.loads(out)["champion"] == challenger and json.loads(out)["status"] == "promoted"
    app, _ = make_app(home=canary_home, state_dir=canary_home / "serving")
    with TestClient(app) as client:
        body = client.post("/v1/query", json={"query": QUESTIONS[0], "tenant": "ann"}).json()
        trace = client.get(f"/v1/trace/{body['trace_id']}").json()
        assert body["arm"] == "champion" and trace["canary"]["config_id"] == challenger
    with pytest.raises(Exception, match="already the champion"):
        run_cli("canary", "start", "--config", challenger)


def ask_until_rolled_back(client, limit: int = 200) -> list[dict]:
    bodies = []
    for i in range(limit):
        response = client.post("/v1/query", json={"query": f"{QUESTIONS[i % 10]} ({i})", "tenant": f"t{i % 7}"})
        assert response.status_code == 200, response.text
        bodies.append(response.json())
        if client.get("/v1/health").json()["canary"]["status"] == "rolled_back":
            return bodies
    raise AssertionError("the bad challenger was never rolled back")


def test_abstaining_challenger_is_rolled_back_automatically(canary_home, make_app) -> None:
    mute = save(canary_home, dense=False, lexical=False)  # retrieves nothing: every answer abstains
    run_cli("canary", "start", "--config", mute, "--traffic", "50", "--min-samples", "5")
    app, _ = make_app(home=canary_home, state_dir=canary_home / "serving")
    with TestClient(app) as client:
        bodies = ask_until_rolled_back(client)
        assert any(b["arm"] == CHALLENGER and b["abstained"] for b in bodies)
        after = [client.post("/v1/query", json={"query": q, "tenant": "z"}).json() for q in QUESTIONS]
        assert {b["arm"] for b in after} == {"champion"} and not any(b["abstained"] for b in after)
        assert 'canary_abstention_rate{arm="challenger"} 1.0' in client.get("/metrics").text
    _, out = run_cli("canary", "status", "--json")
    status = json.loads(out)
    assert status["status"] == "rolled_back" and status["champion"] is None
    assert status["canary"]["reason"].startswith("automatic: challenger abstention rate 100.0%")
    assert status["canary"]["arms"]["challenger"]["requests"] >= 5


def test_failing_challenger_is_answered_by_the_champion_then_rolled_back(canary_home, make_app) -> None:
    broken = save(canary_home, lexical_k="many")  # retrieval raises a TypeError on this config
    run_cli("canary", "start", "--config", broken, "--traffic", "50", "--min-samples", "5")
    app, _ = make_app(home=canary_home, state_dir=canary_home / "serving")
    with TestClient(app) as client:
        bodies = ask_until_rolled_back(client)  # asserts every response was a 200: users never saw the failure
        traces = [client.get(f"/v1/trace/{b['trace_id']}").json()["canary"] for b in bodies]
        fell_back = [t for t in traces if t.get("fell_back_from") == CHALLENGER]
        assert fell_back and all("TypeError" in t["challenger_error"] for t in fell_back)
        assert all(t["arm"] == "champion" for t in fell_back)
        assert not re.search(r"^http_errors_total\{", client.get("/metrics").text, re.M)
    status = json.loads(run_cli("canary", "status", "--json")[1])
    assert status["status"] == "rolled_back" and "error rate" in status["canary"]["reason"]
    assert os.path.exists(canary_home / "serving" / "canary.json")


def test_a_broken_champion_fails_visibly_as_500_counted_and_logged(canary_home, make_app) -> None:
    broken = save(canary_home, lexical_k="many")
    run_cli("canary", "start", "--config", broken, "--traffic", "10")
    run_cli("canary", "promote", "--reason", "oops")
    app, log = make_app(home=canary_home, state_dir=canary_home / "serving")
    with TestClient(app) as client:
        failed = client.post("/v1/query", json={"query": "how is the cart total computed"})
        assert failed.status_code == 500 and "TypeError" in failed.json()["detail"]
        batch = client.post("/v1/batch/query", json={"queries": [{"query": "cart total"}]})
        assert batch.status_code == 200 and batch.json()["results"][0]["error"]["status"] == 500
        assert 'http_errors_total{status="500"} 2.0' in client.get("/metrics").text
    line = next(r for r in log.records() if r["path"] == "/v1/query")
    assert line["status"] == 500 and line["error"] == "TypeError" and line["admit"] is True


def test_promoting_through_the_api_moves_the_mlflow_champion_alias(canary_home, make_app) -> None:
    """``create_app`` without a callback (as ``feriactl serve`` builds it) still moves the alias:
    the MLflow registry is the source of truth for the champion, whichever road promotes."""
    from codex_core.config_registry import CHAMPION, ConfigRegistry
    from codex_core.tracking import Tracker

    challenger = save(canary_home, graph_hops=0)
    app, _ = make_app(home=canary_home, state_dir=canary_home / "serving")
    with TestClient(app) as client:
        started = client.post("/v1/admin/canary/start", json={"config_id": challenger, "traffic": 20})
        assert started.status_code == 200, started.text
        promoted = client.post("/v1/admin/canary/promote", json={"reason": "looks good"})
        assert promoted.status_code == 200 and promoted.json()["champion"] == challenger
    from codex_core.home import CodexHome

    home = CodexHome(canary_home)
    registry = ConfigRegistry(Tracker.embedded(home.mlflow_db), ConfigStore(home.configs_dir))
    champion = registry.by_alias(CHAMPION)
    assert champion is not None and champion.config_id == challenger


def test_a_promotion_by_ab_judgement_is_what_serving_answers_with(tmp_path) -> None:
    """Both roads to the champion go through ChampionService; serving follows the alias it moves."""
    from codex_core.champion import ChampionService
    from codex_core.config_registry import CHALLENGER
    from codex_core.home import CodexHome
    from serving.canary import CanaryRouter, CanaryStore

    home = CodexHome(tmp_path / "home")
    champions = ChampionService.for_home(home, Settings())
    store = CanaryStore(home.serving_state_dir, ConfigStore(home.configs_dir))
    router = CanaryRouter(store)
    assert router.choose("ann", "q").config_id is None  # the built-in default before any promotion
    challenger = champions.registry.register(AnswerConfig(retrieval=RetrievalConfig(graph_hops=0)), alias=CHALLENGER)
    champions.settle(challenger, promote=True)  # what ab_judgement does when the challenger wins
    choice = router.choose("ann", "q")
    assert choice.config_id == challenger.config_id and choice.retrieval.graph_hops == 0
    assert store.status()["champion"] == challenger.config_id
    with pytest.raises(Exception, match="already the champion"):
        store.start(challenger.config_id, 10)
