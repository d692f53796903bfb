"""Cost and energy per request through the real app: the answer's usage, the trace's cost block, /metrics.

The repositories are ingested by the real assets (tests/serving/conftest.py); the model server is the
stdlib HTTP server of tests/core/test_llm.py replaying what a real llama-server sent
(tests/fixtures/openai_compat/captured/). There is no GPU on this machine and NVML really is
missing, so the energy is the CPU-time estimate, and says so.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from codex_core.cost import CPU_ESTIMATE
from codex_core.llm import Answerer, config_from_dict
from tests.core.test_llm import CAPTURED, RecordedServer, Scripted, fixture, openai_config
from tests.serving.test_observability import value

QUESTION = {"query": "How are failed connections retried with exponential backoff?", "repo": "demo", "top_k": 3}
LLAMA = "local-llama-server"


@pytest.fixture
def recorded() -> Iterator[RecordedServer]:
    with RecordedServer() as server:
        yield server


def test_tokens_cpu_and_energy_show_in_the_answer_the_trace_and_metrics(make_app, recorded) -> None:
    recorded.scripts[LLAMA] = [Scripted(CAPTURED + "chat_completion.json")]
    reported = fixture(CAPTURED + "chat_completion.json")["usage"]
    app, _ = make_app(engine_kwargs={"answerer": Answerer(config_from_dict(openai_config(recorded.url), env={}))})
    with TestClient(app) as client:
        before = client.get("/metrics").text
        first = client.post("/v1/query", json=QUESTION).json()
        after_one = client.get("/metrics").text
        # A different question (the same one could be re-served by the semantic cache, with no model call).
        second = client.post("/v1/query", json={**QUESTION, "query": "Where is the HTTP health check handled?"}).json()
        after_two = client.get("/metrics").text
        trace = client.get(f"/v1/trace/{first['trace_id']}").json()
        second_cost = client.get(f"/v1/trace/{second['trace_id']}").json()["cost"]

    assert first["model"] == LLAMA and not first["abstained"]
    usage = first["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["calls"], usage["tokens_estimated"]) == (
        reported["prompt_tokens"], reported["completion_tokens"], 1, False)
    assert usage["energy_method"] == CPU_ESTIMATE and usage["energy_j"] > 0

    cost = trace["cost"]
    assert cost["energy_method"] == CPU_ESTIMATE and cost["watts_per_core"] == 3.5
    assert cost["cpu_s"] > 0 and cost["wall_s"] > 0 and cost["cpu_scope"] in ("process", "thread")
    assert cost["energy_j"] == pytest.approx(cost["cpu_s"] * 3.5, abs=1e-3)
    assert cost["by_model"][LLAMA]["prompt_tokens"] == reported["prompt_tokens"]
    assert cost["cpu"]["model_server_s"] is None  # the recording is no local server with a pid record

    prompt = {"model": LLAMA, "kind": "prompt"}
    completion = {"model": LLAMA, "kind": "completion"}
    assert value(before, "llm_tokens_total", **prompt) is None
    assert value(after_one, "llm_tokens_total", **prompt) == reported["prompt_tokens"]
    assert value(after_one, "llm_tokens_total", **completion) == reported["completion_tokens"]
    assert second_cost["prompt_tokens"] > 0  # the model was asked again (whether or not its answer was kept)
    assert value(after_two, "llm_tokens_total", **prompt) == reported["prompt_tokens"] + second_cost["prompt_tokens"]
    assert value(after_two, "request_llm_tokens_count", kind="prompt") == 2
    assert value(after_two, "request_llm_tokens_sum", kind="completion") == (
        reported["completion_tokens"] + second_cost["completion_tokens"])
    cpu_one, cpu_two = (value(t, "request_cpu_seconds_total") for t in (after_one, after_two))
    assert value(before, "request_cpu_seconds_total") == 0 and 0 < cpu_one < cpu_two
    assert cpu_one == pytest.approx(cost["cpu_s"], abs=1e-3)
    energy_one = value(after_one, "request_energy_joules_total", method=CPU_ESTIMATE)
    assert energy_one == pytest.approx(cost["energy_j"], abs=1e-3)
    assert value(after_two, "request_energy_joules_total", method=CPU_ESTIMATE) > energy_one
    assert value(after_two, "request_energy_joules_total", method="nvml") is None


def test_an_extractive_answer_costs_no_tokens_but_its_cpu_counts(make_app) -> None:
    app, _ = make_app()  # the offline answerer: every model is down, so the answer is extractive
    with TestClient(app) as client:
        body = client.post("/v1/query", json=QUESTION).json()
        text = client.get("/metrics").text
        cost = client.get(f"/v1/trace/{body['trace_id']}").json()["cost"]
    assert body["model"] == "extractive"
    assert body["usage"]["prompt_tokens"] == body["usage"]["completion_tokens"] == 0
    # The model calls that failed to connect are counted as calls, with no tokens.
    assert cost["calls"] == sum(m["failed_calls"] for m in cost["by_model"].values()) >= 1
    assert 'llm_tokens_total{' not in text and value(text, "request_cpu_seconds_total") > 0
    assert value(text, "request_llm_tokens_count", kind="prompt") == 1
