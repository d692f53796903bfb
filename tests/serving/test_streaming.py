"""`POST /v1/query` with `"stream": true`: server-sent events through the real app.

The repositories are ingested by the real assets (tests/serving/conftest.py). The model server is the
stdlib HTTP server of tests/core/test_llm.py replaying what a real llama-server sent, byte for byte
(tests/fixtures/openai_compat/captured/), so the app's engine streams real HTTP from a recording.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from codex_core.llm import AnswerDelta, Answerer, config_from_dict
from codex_core.llm.sse import read_events
from codex_core.settings import Settings
from serving.routes_query import StreamClosed
from tests.core.test_llm import CAPTURED, RecordedServer, Scripted, captured_stream, openai_config
from tests.serving.test_quotas import quotas
from tests.support.llm import closed_port

QUESTION = {"query": "How are failed connections retried with exponential backoff?", "repo": "demo", "top_k": 3}


@pytest.fixture
def recorded() -> Iterator[RecordedServer]:
    with RecordedServer() as server:
        yield server


def llama_answerer(server: RecordedServer) -> Answerer:
    return Answerer(config_from_dict(openai_config(server.url), env={}))


def events_of(response: Any) -> list[tuple[str, Any]]:
    """(event name, decoded data) of an SSE body; keep-alive comments are skipped by the reader."""
    assert response.headers["content-type"].startswith("text/event-stream")
    return [(e.event, json.loads(e.data)) for e in read_events(response.text.splitlines())]


def test_stream_sends_tokens_then_the_same_answer_as_without_streaming(make_app, recorded) -> None:
    recorded.scripts["local-llama-server"] = [
        Scripted(CAPTURED + "chat_stream_cited.sse"), Scripted(CAPTURED + "chat_completion.json"),
    ]
    # The semantic cache off: the plain request must walk the chain itself (tests/serving/test_semantic_cache.py
    # is where a repeated question is answered from the cache).
    no_cache = Settings.from_env({"CODEX_SEMANTIC_CACHE": "off"})
    app, _ = make_app(engine_kwargs={"answerer": llama_answerer(recorded), "settings": no_cache})
    with TestClient(app) as client:
        streamed = client.post("/v1/query", json={**QUESTION, "stream": True})
        plain = client.post("/v1/query", json=QUESTION).json()
        assert streamed.status_code == 200
        events = events_of(streamed)
        names = [name for name, _ in events]
        assert names[-1] == "final" and set(names[:-1]) == {"token"} and len(names) > 10
        tokens = "".join(data["text"] for name, data in events if name == "token")
        assert tokens == captured_stream("chat_stream_cited.sse")[0]
        final = events[-1][1]
        assert final["model"] == plain["model"] == "local-llama-server" and not final["abstained"]
        assert final["answer"] == plain["answer"]
        (cited,) = [c for c in final["citations"] if c["cited_in_answer"]]
        # The model wrote [app/retry.py:4-12]; the check snapped it to the retrieved chunk holding those
        # lines, so the final answer (the one to show) differs from the streamed text exactly there.
        ref = f"[{cited['path']}:{cited['line_start']}-{cited['line_end']}]"
        assert cited["path"] == "app/retry.py" and cited["line_start"] <= 4 and cited["line_end"] >= 12
        assert final["answer"] == tokens.replace("[app/retry.py:4-12]", ref)
        assert set(final) == set(plain) and final["trace_id"] != plain["trace_id"]
        for key in ("citations", "confidence", "confidence_kind", "route", "index_commit", "arm"):
            assert final[key] == plain[key], key
        trace = client.get(f"/v1/trace/{final['trace_id']}").json()
        assert trace["generation"]["model"] == "local-llama-server"
        (body, _) = recorded.chats()
        assert body["stream"] is True


def test_extractive_answer_and_abstention_stream_only_the_final_event(make_app) -> None:
    app, _ = make_app()  # the offline answerer: every model is down, so the answer is extractive
    with TestClient(app) as client:
        events = events_of(client.post("/v1/query", json={**QUESTION, "stream": True}))
        assert [name for name, _ in events] == ["final"]
        assert events[0][1]["model"] == "extractive" and events[0][1]["citations"]
    app, _ = make_app(engine_kwargs={"abstain_below": 1.01})  # no confidence is ever high enough
    with TestClient(app) as client:
        events = events_of(client.post("/v1/query", json={**QUESTION, "stream": True}))
        assert [name for name, _ in events] == ["final"]
        assert events[0][1]["abstained"] is True and events[0][1]["model"] == "none"


def test_streams_are_admitted_exactly_like_plain_queries(make_app) -> None:
    app, log = make_app(quotas=quotas(fast={"rate": 0.5, "burst": 2}))
    with TestClient(app) as client:
        ghost = client.post("/v1/query", json={"query": "x", "repo": "ghost", "stream": True})
        assert ghost.status_code == 404 and "feriactl ingest" in ghost.json()["detail"]
        assert client.post("/v1/query", json={"query": " ", "stream": True}).status_code == 422
        assert client.post("/v1/query", json={**QUESTION, "stream": True}).status_code == 200
        refused = client.post("/v1/query", json={**QUESTION, "stream": True})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
        assert refused.json()["reason"] == "rate"
        assert client.post("/v1/admin/kill-switch", json={"on": True, "reason": "bad index"}).status_code == 200
        stopped = client.post("/v1/query", json={**QUESTION, "stream": True, "tenant": "other"})
        assert stopped.status_code == 503 and "bad index" in stopped.json()["detail"]
    lines = [(r["status"], r["throttle"]) for r in log.records() if r["path"] == "/v1/query"]
    assert lines == [(404, None), (422, None), (200, None), (429, "rate"), (503, "kill_switch")]


def test_a_stream_holds_its_queue_slot_until_it_ends(make_app, recorded) -> None:
    # The last event comes 1.5 s late; meanwhile the only fast slot is taken and nobody may wait.
    recorded.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_stream_cited.sse", pause=1.5)]
    one_slot = quotas(queues={"fast": {"concurrency": 1, "max_waiting": 0, "max_wait_s": 0.05}})
    app, _ = make_app(quotas=one_slot, engine_kwargs={"answerer": llama_answerer(recorded)})
    with TestClient(app) as client:
        result: dict[str, Any] = {}
        streaming = threading.Thread(target=lambda: result.update(
            response=client.post("/v1/query", json={**QUESTION, "stream": True, "tenant": "a"})))
        streaming.start()
        deadline = time.monotonic() + 10
        while not recorded.chats() and time.monotonic() < deadline:
            time.sleep(0.02)
        meanwhile = client.post("/v1/query", json={**QUESTION, "tenant": "b"})
        streaming.join()
        assert meanwhile.status_code == 429 and meanwhile.json()["reason"] in {"queue_full", "queue_timeout"}
        assert [name for name, _ in events_of(result["response"])][-1] == "final"
        assert client.post("/v1/query", json={**QUESTION, "tenant": "b"}).status_code == 200  # released


def test_a_failure_after_the_first_token_is_an_error_event(make_app, recorded) -> None:
    recorded.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_stream_cited.sse")]
    app, _ = make_app(engine_kwargs={"answerer": llama_answerer(recorded)})
    with TestClient(app) as client:
        engine = app.state.services.engine

        def disk_full(entry: Any) -> None:
            raise OSError(28, "No space left on device")

        engine.query_log.append = disk_full  # the query log's disk fills up while the answer streams
        events = events_of(client.post("/v1/query", json={**QUESTION, "stream": True}))
        names = [name for name, _ in events]
        assert names[-1] == "error" and "final" not in names and names.count("token") > 10
        assert events[-1][1] == {"detail": "internal error (OSError); see the serving log"}
        assert 'http_errors_total{status="500"} 1.0' in client.get("/metrics").text


def test_a_consumer_that_stops_listening_stops_the_generation(make_engine, recorded) -> None:
    """The model server pauses 3 s before its last event; a consumer that stops after the first
    token must not wait for it (the HTTP stream to the model is closed)."""
    recorded.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_stream_cited.sse", pause=3.0)]
    engine = make_engine(answerer=llama_answerer(recorded))
    received: list[str] = []

    def first_token_only(event: Any) -> None:
        assert isinstance(event, AnswerDelta)
        received.append(event.text)
        raise StreamClosed

    started = time.perf_counter()
    try:
        with pytest.raises(StreamClosed):
            engine.query(QUESTION["query"], repo="demo", top_k=3, on_event=first_token_only)
    finally:
        engine.close()
    assert len(received) == 1 and time.perf_counter() - started < 2.5


@pytest.fixture
def served(make_app, recorded) -> Iterator[tuple[str, RecordedServer]]:
    """The app under a real uvicorn on a free loopback port (one fast slot, nobody may wait for it)."""
    import uvicorn

    one_slot = quotas(queues={"fast": {"concurrency": 1, "max_waiting": 0, "max_wait_s": 0.05}})
    app, _ = make_app(quotas=one_slot, engine_kwargs={"answerer": llama_answerer(recorded)})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=closed_port(), log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # the lifespan loads the embedding model
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}", recorded
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_over_real_http_tokens_arrive_before_the_answer_is_finished(served) -> None:
    url, recorded = served
    recorded.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_stream_cited.sse", pause=2.0)]
    started = time.perf_counter()
    arrivals: list[tuple[str, float]] = []
    with httpx.stream("POST", url + "/v1/query", json={**QUESTION, "stream": True}, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response.iter_lines()):
            arrivals.append((event.event, time.perf_counter() - started))
    first_token = next(t for name, t in arrivals if name == "token")
    assert arrivals[-1][0] == "final" and arrivals[-1][1] >= 2.0
    assert first_token < arrivals[-1][1] - 1.5, arrivals[:3]  # streamed through the middleware, not buffered


def test_over_real_http_a_client_that_leaves_stops_the_model_and_frees_the_slot(served) -> None:
    url, recorded = served
    # ~40 events 0.1 s apart: about 4 s of generation if nobody stopped it.
    recorded.scripts["local-llama-server"] = [
        Scripted(CAPTURED + "chat_stream_cited.sse", interval=0.1), Scripted(CAPTURED + "chat_completion.json"),
    ]
    with httpx.stream("POST", url + "/v1/query", json={**QUESTION, "stream": True, "tenant": "a"},
                      timeout=60) as response:
        first = next(read_events(response.iter_lines()))
        assert first.event == "token"
    left = time.perf_counter()
    while True:  # the only slot frees as soon as the generation stops
        answer = httpx.post(url + "/v1/query", json={**QUESTION, "tenant": "b"}, timeout=60)
        if answer.status_code != 429 or time.perf_counter() - left > 10:
            break
        time.sleep(0.1)
    assert answer.status_code == 200 and time.perf_counter() - left < 2.5
    while not recorded.streams_closed_by_client and time.perf_counter() - left < 3.0:
        time.sleep(0.05)  # its next writes (0.1 s apart) find the connection gone
    assert recorded.streams_closed_by_client == 1  # the model server saw its stream closed, before its end
