"""The semantic answer cache through the real app and engine (codex_core/semantic_cache.py).

The repositories are the session corpus of tests/serving/conftest.py (ingested by the real assets), the
embedder is the real MiniLM and the threshold is the shipped default. Only a model's answer that passed
the citation check and verification is cached, so the model is the stdlib server of
tests/core/test_llm.py replaying what a real llama-server answered (tests/fixtures/openai_compat/captured/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from codex_core.configs import AnswerConfig, ConfigStore
from codex_core.home import CodexHome
from codex_core.llm import Answerer, config_from_dict
from codex_core.llm.sse import read_events
from codex_core.retrieval import RetrievalConfig
from codex_core.settings import Settings
from serving.canary import CHALLENGER, CHAMPION, arm_for
from serving.engine import QueryEngine
from tests.conftest import commit_all
from tests.core.test_llm import CAPTURED, RecordedServer, Scripted, openai_config
from tests.serving.conftest import copy_home, ingest_into, run_cli
from tests.serving.test_quotas import quotas
from tests.support.llm import offline_answerer

QUESTION = "How are failed connections retried with exponential backoff?"
# Re-typed versions of it (MiniLM cosine 0.98-1.0 with QUESTION): the cache serves these.
RETYPED = [
    "how are failed connections retried with an exponential backoff",
    "How are the failed connections retried with exponential backoff?",
    "How are failed connections retried using exponential backoff?",
    "How are failed connections retried, with exponential backoff?",
    "How are failed connections retried with exponential back-off?",
    "how are failed connections retried with exponential backoff",
]
WHY = "Why are failed connections retried with exponential backoff?"  # 0.961: the same code, another question
OTHER = "How is the cart total computed?"
THRESHOLD = Settings.from_env({}).semantic_cache_threshold
NO_CACHE = Settings.from_env({"CODEX_SEMANTIC_CACHE": "off"})


@pytest.fixture
def recorded() -> Iterator[RecordedServer]:
    with RecordedServer() as server:
        server.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_completion.json")]
        yield server


def llama(server: RecordedServer) -> Answerer:
    return Answerer(config_from_dict(openai_config(server.url), env={}))


def ask(client: TestClient, query: str, *, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/query", json={"query": query, "top_k": 3, **body}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def trace(client: TestClient, answer: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return client.get(f"/v1/trace/{answer['trace_id']}", headers=headers).json()


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("answer", "citations", "confidence", "confidence_kind", "model", "route", "index_commit")
    return all(a[k] == b[k] for k in keys)


def test_a_retyped_question_gets_the_verified_answer_with_its_own_trace(make_app, recorded) -> None:
    app, _ = make_app(engine_kwargs={"answerer": llama(recorded)})
    with TestClient(app) as client:
        first = ask(client, QUESTION, repo="demo")
        again = ask(client, RETYPED[0], repo="demo")
        streamed = client.post("/v1/query", json={"query": RETYPED[1], "repo": "demo", "top_k": 3, "stream": True})
        events = [(e.event, json.loads(e.data)) for e in read_events(streamed.text.splitlines())]
        first_trace, again_trace = trace(client, first), trace(client, again)
        streamed_trace = trace(client, events[-1][1])
        metrics = client.get("/metrics").text

    assert first["model"] == "local-llama-server" and not first["abstained"]
    assert any(c["cited_in_answer"] for c in first["citations"])
    assert first_trace["cache"] == {"hit": False, "result": "miss", "nearest": None, "stored": True,
                                    "not_stored": None}
    assert len(recorded.chats()) == 1, "the re-typed questions must not reach the model"
    assert same_answer(again, first) and again["trace_id"] != first["trace_id"]
    cache = again_trace["cache"]
    assert cache["hit"] is True and cache["of_trace"] == first["trace_id"]
    assert THRESHOLD <= cache["similarity"] < 1.0
    assert again_trace["query"] == RETYPED[0] and again_trace["generation"] is None
    assert again["usage"]["calls"] == 0 and again["usage"]["prompt_tokens"] == 0
    assert again["latency_ms"] == again_trace["timings_ms"]["total_ms"] != first["latency_ms"]
    # Streamed, a hit sends no tokens: only the final answer.
    assert [name for name, _ in events] == ["final"] and same_answer(events[0][1], first)
    assert streamed_trace["cache"]["of_trace"] == first["trace_id"]
    assert 'semantic_cache_requests_total{result="hit"} 2.0' in metrics
    assert 'semantic_cache_requests_total{result="miss"} 1.0' in metrics


def test_other_questions_are_answered_afresh(make_app, recorded) -> None:
    app, _ = make_app(engine_kwargs={"answerer": llama(recorded)})
    with TestClient(app) as client:
        first = ask(client, QUESTION, repo="demo")
        calls = [len(recorded.chats())]
        why = ask(client, WHY, repo="demo")  # the same code, a different question
        calls.append(len(recorded.chats()))
        other = ask(client, OTHER, repo="demo")
        calls.append(len(recorded.chats()))
        why_trace, other_trace = trace(client, why), trace(client, other)
    assert calls[0] < calls[1] < calls[2], "each new question asks the model"
    assert why_trace["cache"]["result"] == "miss" and why_trace["cache"]["nearest"] < THRESHOLD
    assert other_trace["cache"]["result"] == "miss" and other_trace["cache"]["nearest"] < 0.5
    assert other["answer"] != first["answer"] and other["trace_id"] != first["trace_id"]


def test_a_new_commit_makes_cached_answers_unreachable_and_evicts_them(corpus, make_app, recorded, tmp_path) -> None:
    home, repos = copy_home(corpus, tmp_path)
    app, _ = make_app(home=home, engine_kwargs={"answerer": llama(recorded), "refresh_every_s": 0.0})
    with TestClient(app) as client:
        engine = app.state.services.engine
        first = ask(client, QUESTION, repo="demo")
        assert ask(client, RETYPED[0], repo="demo")["index_commit"] == first["index_commit"]
        assert len(engine.semantic_cache) == 1 and len(recorded.chats()) == 1

        (repos["demo"] / "NOTES.md").write_text("# Notes\n\nNothing about retries here.\n")
        new_commit = commit_all(repos["demo"], "Notes")
        ingest_into(home, "demo", repos["demo"])
        after = ask(client, QUESTION, repo="demo")  # the very question that is cached
        after_trace = trace(client, after)
    assert after["index_commit"] == new_commit != first["index_commit"]
    assert after_trace["cache"]["result"] == "miss" and after_trace["cache"]["stored"] is True
    assert len(recorded.chats()) == 2
    assert len(engine.semantic_cache) == 1, "the answer of the old commit is evicted, the new one kept"


def add_tenant(name: str, repos: str) -> dict[str, str]:
    code, out = run_cli("tenants", "add", name, "--role", "user", "--repos", repos, "--json")
    assert code == 0, out
    return {"Authorization": f"Bearer {json.loads(out)['api_key']}"}


def test_tenants_and_visible_repositories_never_share_answers(cli_home, make_app, recorded) -> None:
    alice, carol, bob = add_tenant("alice", "demo"), add_tenant("carol", "demo"), add_tenant("bob", "demo,billing")
    app, _ = make_app(state_dir=cli_home / "serving", engine_kwargs={"answerer": llama(recorded)})
    with TestClient(app) as client:
        first = ask(client, QUESTION, headers=alice)  # no repo given: every repository the tenant sees
        carols = ask(client, RETYPED[0], headers=carol)  # sees the same repository: still not alice's answer
        bobs = ask(client, RETYPED[0], headers=bob)  # searches demo and billing
        alices = ask(client, RETYPED[0], headers=alice)
        hidden = client.post("/v1/query", json={"query": RETYPED[0], "repo": "billing"}, headers=alice)
        traces = [trace(client, a, h) for a, h in ((carols, carol), (bobs, bob), (alices, alice))]
    assert [t["cache"]["result"] for t in traces] == ["miss", "miss", "hit"]
    assert traces[2]["cache"]["of_trace"] == first["trace_id"] and same_answer(alices, first)
    assert traces[1]["repos"] == ["billing", "demo"]
    assert len(recorded.chats()) == 3
    assert hidden.status_code == 404 and "has no published index" in hidden.json()["detail"]


def test_the_cache_is_behind_the_kill_switch_and_the_quotas(make_app, recorded) -> None:
    app, log = make_app(quotas=quotas(fast={"rate": 0.5, "burst": 2}), engine_kwargs={"answerer": llama(recorded)})
    with TestClient(app) as client:
        ask(client, QUESTION, repo="demo")
        ask(client, RETYPED[0], repo="demo")  # a hit still spends a token of the tenant's rate
        refused = client.post("/v1/query", json={"query": RETYPED[1], "repo": "demo"})
        assert client.post("/v1/admin/kill-switch", json={"on": True, "reason": "bad index"}).status_code == 200
        stopped = client.post("/v1/query", json={"query": QUESTION, "repo": "demo", "tenant": "other"})
    assert refused.status_code == 429 and refused.json()["reason"] == "rate"
    assert stopped.status_code == 503 and "bad index" in stopped.json()["detail"]
    assert len(recorded.chats()) == 1


def save(home, **retrieval: Any) -> str:
    return ConfigStore(home / "configs").save(AnswerConfig(retrieval=RetrievalConfig(**retrieval)))


def pick(questions: Sequence[str], tenant: str, arm: str, traffic: float) -> str:
    return next(q for q in questions if arm_for(tenant, q, traffic) == arm)


def test_canary_arms_never_serve_each_other_answers(corpus, make_app, recorded, tmp_path, monkeypatch) -> None:
    home, _ = copy_home(corpus, tmp_path)
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    challenger = save(home, graph_hops=0)
    code, _ = run_cli("canary", "start", "--config", challenger, "--traffic", "50", "--json")
    assert code == 0
    questions = [QUESTION, *RETYPED]
    first_arm = arm_for("ann", QUESTION, 50)
    other_arm = CHALLENGER if first_arm == CHAMPION else CHAMPION
    crossing, staying = pick(questions, "ann", other_arm, 50), pick(questions[1:], "ann", first_arm, 50)
    app, _ = make_app(home=home, state_dir=home / "serving", engine_kwargs={"answerer": llama(recorded)})
    with TestClient(app) as client:
        first = ask(client, QUESTION, repo="demo", tenant="ann")
        crossed = ask(client, crossing, repo="demo", tenant="ann")
        stayed = ask(client, staying, repo="demo", tenant="ann")
        crossed_trace, stayed_trace = trace(client, crossed), trace(client, stayed)
    assert (first["arm"], crossed["arm"], stayed["arm"]) == (first_arm, other_arm, first_arm)
    assert crossed_trace["cache"]["result"] == "miss" and crossed_trace["canary"]["arm"] == other_arm
    assert stayed_trace["cache"]["of_trace"] == first["trace_id"]
    assert len(recorded.chats()) == 2


def test_off_asks_the_model_every_time(make_app, recorded) -> None:
    app, _ = make_app(engine_kwargs={"answerer": llama(recorded), "settings": NO_CACHE})
    with TestClient(app) as client:
        assert app.state.services.engine.semantic_cache is None
        answers = [ask(client, QUESTION, repo="demo") for _ in range(2)]
        traces = [trace(client, a) for a in answers]
        metrics = client.get("/metrics").text
    assert len(recorded.chats()) == 2 and [t["cache"] for t in traces] == [None, None]
    assert 'semantic_cache_requests_total{result="hit"} 0.0' in metrics
    assert 'semantic_cache_requests_total{result="miss"} 0.0' in metrics


def test_only_verified_model_answers_are_kept(make_engine, recorded) -> None:
    extractive = make_engine()  # every model down: the labelled evidence answers
    abstaining = make_engine(abstain_below=1.01)
    demoted = make_engine(answerer=llama(recorded))
    try:
        for engine, expected in ((extractive, "extractive"), (abstaining, "abstained")):
            for _ in range(2):
                answer = engine.query(QUESTION, repo="demo", top_k=3)
                assert engine.trace(answer.trace_id)["cache"]["not_stored"] == expected
            assert len(engine.semantic_cache) == 0
        governor = {"demote": True, "force_route": "small", "reason": "VRAM 96%"}
        answer = demoted.query(QUESTION, repo="demo", top_k=3, trace_extra={"governor": governor})
        assert answer.model == "local-llama-server"
        assert demoted.trace(answer.trace_id)["cache"]["not_stored"] == "generated under GPU demotion"
        assert len(demoted.semantic_cache) == 0
    finally:
        for engine in (extractive, abstaining, demoted):
            engine.close()


class CountingEmbedder:
    """The real MiniLM embedder, counting the texts it is asked to embed (instrumentation, not a fake)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.mark.parametrize("settings", [None, NO_CACHE], ids=["cache on", "cache off"])
def test_a_miss_embeds_the_question_once(corpus, embedder, settings) -> None:
    counting = CountingEmbedder(embedder)
    engine = QueryEngine(CodexHome(corpus.home), embedder=counting, answerer=offline_answerer(), abstain_below=0.0,
                         settings=settings)
    try:
        engine.query("where is the greeting of the web page defined", repo="demo")
    finally:
        engine.close()
    assert counting.texts == ["where is the greeting of the web page defined"]
