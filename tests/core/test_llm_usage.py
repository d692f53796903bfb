"""Usage of one request's generation walk: every model call, its tokens, per model.

The model servers are the recorded-response server of test_llm.py over real HTTP: llama-server's
bodies CAPTURED byte for byte (tests/fixtures/openai_compat/captured/) and Ollama's recorded
`/api/chat` shapes (tests/fixtures/ollama/). The judge's verdict for the llama-server model is the
captured `chat_completion.json` with a verdict as its content and its `usage` removed — the shape
of an OpenAI-compatible server that does not count tokens, written by the test (nothing captured
says that).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_core.llm import Answerer, config_from_dict
from codex_core.llm.prompt import approx_tokens, messages_tokens
from tests.core.test_llm import (
    CAPTURED,
    CONTEXTS,
    PARSE,
    QUESTION,
    RETRY,
    SMALL,
    RecordedServer,
    Scripted,
    fixture,
    openai_config,
    split,
    stream_events,
)

LLAMA = "local-llama-server"
RETRY_QUESTION = "where is the retry loop?"


@pytest.fixture
def recorded() -> Iterator[RecordedServer]:
    with RecordedServer() as server:
        yield server


def ollama_model(url: str) -> dict:
    return {"name": SMALL, "backend": "ollama", "base_url": url, "context_window": 8192, "timeout": 10}


def test_tokens_add_up_over_a_draft_that_failed_verification_and_the_expert(recorded: RecordedServer) -> None:
    # The draft (Ollama) says it does not know although the evidence is good: verification fails and
    # the expert (llama-server) answers. Both calls cost tokens; only the expert's answer is shown.
    recorded.scripts[SMALL] = [Scripted("ollama/chat_dont_know.json")]
    recorded.scripts[LLAMA] = [Scripted(CAPTURED + "chat_completion.json")]
    config = openai_config(recorded.url, ollama_model(recorded.url), chain=(SMALL, LLAMA))
    result = Answerer(config_from_dict(config, env={})).answer(RETRY_QUESTION, [RETRY, PARSE], confidence=0.9)

    assert result.model == LLAMA and result.escalated and result.cited_refs == [RETRY.ref]
    draft, expert = fixture("ollama/chat_dont_know.json"), fixture(CAPTURED + "chat_completion.json")["usage"]
    usage = result.usage.to_dict()
    assert usage["by_model"] == {
        SMALL: {"calls": 1, "failed_calls": 0, "prompt_tokens": draft["prompt_eval_count"],
                "completion_tokens": draft["eval_count"], "estimated_calls": 0},
        LLAMA: {"calls": 1, "failed_calls": 0, "prompt_tokens": expert["prompt_tokens"],
                "completion_tokens": expert["completion_tokens"], "estimated_calls": 0},
    }
    assert usage["calls"] == 2 and usage["estimated"] is False
    assert usage["prompt_tokens"] == 410 + 75 and usage["completion_tokens"] == 28 + 40
    assert result.prompt_tokens == 75  # the answering call's alone, as before
    assert result.to_dict()["usage"] == usage


def test_the_model_judge_calls_are_counted_and_unreported_counts_are_estimated(
        recorded: RecordedServer, tmp_path: Path) -> None:
    body = fixture(CAPTURED + "chat_completion.json")
    verdict_text = '{"unsupported": [], "reason": "the quoted lines hold the claim"}'
    body["choices"][0]["message"]["content"] = verdict_text
    del body["usage"]
    verdict = tmp_path / "verdict_without_usage.json"
    verdict.write_text(json.dumps(body))
    recorded.scripts[LLAMA] = [Scripted(CAPTURED + "chat_completion.json"), Scripted(str(verdict))]
    config = {**openai_config(recorded.url), "verify": {"method": "model"}}
    result = Answerer(config_from_dict(config, env={})).answer(RETRY_QUESTION, [RETRY, PARSE], confidence=0.9)

    assert result.model == LLAMA and result.verification["method"] == "lexical+model"
    draft_request, judge_request = recorded.chats(LLAMA)
    assert judge_request["max_tokens"] == 200  # the second call is the judge's
    used = result.usage.by_model[LLAMA]
    assert (used.calls, used.failed_calls, used.estimated_calls) == (2, 0, 1)
    # The draft's counts are the server's; the judge's are the prompt builder's estimate of what was
    # sent and the characters-per-token estimate of what came back.
    assert used.prompt_tokens == 75 + messages_tokens(judge_request["messages"])
    assert used.completion_tokens == 40 + approx_tokens(verdict_text)
    assert result.usage.estimated and result.usage.calls == 2


def test_the_judge_is_not_called_and_not_counted_when_verification_is_lexical(recorded: RecordedServer) -> None:
    recorded.scripts[LLAMA] = [Scripted(CAPTURED + "chat_completion.json")]
    result = Answerer(config_from_dict(openai_config(recorded.url), env={})).answer(
        RETRY_QUESTION, [RETRY, PARSE], confidence=0.9)
    assert len(recorded.chats(LLAMA)) == 1 and result.usage.calls == 1
    assert result.usage.prompt_tokens == 75 and result.usage.completion_tokens == 40


def test_a_stream_cut_off_counts_what_arrived_and_the_next_model_its_own(recorded: RecordedServer) -> None:
    recorded.scripts[LLAMA] = [Scripted(CAPTURED + "chat_stream_cited.sse", cut_after=6)]
    recorded.scripts[SMALL] = [Scripted("ollama/chat_stream_cited.ndjson")]
    config = openai_config(recorded.url, ollama_model(recorded.url), chain=(LLAMA, SMALL))
    _, result = split(Answerer(config_from_dict(config, env={})).answer_stream(QUESTION, CONTEXTS))

    assert result.model == SMALL
    arrived = ""
    for event in stream_events(CAPTURED + "chat_stream_cited.sse")[:6]:
        chunk = json.loads(event.decode().removeprefix("data: "))
        arrived += "".join((c.get("delta") or {}).get("content") or "" for c in chunk["choices"])
    (sent,) = recorded.chats(LLAMA)
    cut = result.usage.by_model[LLAMA]
    assert arrived and (cut.calls, cut.failed_calls, cut.estimated_calls) == (1, 1, 1)
    assert cut.prompt_tokens == messages_tokens(sent["messages"]) and cut.completion_tokens == approx_tokens(arrived)
    # The streamed Ollama answer's counts come from its last line.
    last = json.loads(stream_events("ollama/chat_stream_cited.ndjson")[-1])
    answered = result.usage.by_model[SMALL]
    assert (answered.calls, answered.prompt_tokens, answered.completion_tokens, answered.estimated_calls) == (
        1, last["prompt_eval_count"], last["eval_count"], 0)


def test_a_refused_call_counts_as_a_failed_call_without_tokens(recorded: RecordedServer) -> None:
    recorded.scripts[LLAMA] = [Scripted(CAPTURED + "error_exceed_context.json", 400)]
    result = Answerer(config_from_dict(openai_config(recorded.url), env={})).answer(
        RETRY_QUESTION, [RETRY, PARSE], confidence=0.9)
    assert result.extractive
    refused = result.usage.by_model[LLAMA]
    assert (refused.calls, refused.failed_calls, refused.prompt_tokens, refused.completion_tokens) == (1, 1, 0, 0)


def test_no_contexts_means_no_call_and_empty_usage(recorded: RecordedServer) -> None:
    result = Answerer(config_from_dict(openai_config(recorded.url), env={})).answer(RETRY_QUESTION, [])
    assert recorded.requests == [] and result.usage.to_dict() == {
        "calls": 0, "failed_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "estimated": False,
        "by_model": {}}
