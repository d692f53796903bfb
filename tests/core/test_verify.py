"""Draft -> verify -> expert: the verdict on a drafted answer, and the escalation it drives.

The verdict is plain functions on real snippets. The escalation walks a real model chain over real
HTTP against the recorded-response server of test_llm.py (Ollama's `/api/chat` shape); the verdict
files (`chat_verdict_*.json`) are that shape with a judge's reply as content.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codex_core.llm import check_citations
from codex_core.llm.types import EXTRACTIVE
from codex_core.llm.verify import code_terms, verify_answer
from tests.core.test_llm import (
    CONTEXTS,
    MEDIUM,
    PARSE,
    PARSE_LINE,
    QUESTION,
    SMALL,
    RecordedServer,
    Scripted,
    answerer_for,
)


@pytest.fixture
def server() -> Iterator[RecordedServer]:
    with RecordedServer() as running:
        yield running


CITED = ("`ConfigParser.parse_line` strips the line, matches it against `KEY_VALUE` and stores the key and value "
         "in `self.values` [app/config_parser.py:15-21]. `parse` calls it for every line of the text "
         "[app/config_parser.py:23-26].")


def verdict(text: str, confidence: float | None = 0.9):
    return verify_answer(check_citations(text, CONTEXTS), CONTEXTS, confidence=confidence, escalate_below=0.5)


def test_a_grounded_answer_passes() -> None:
    result = verdict(CITED)
    assert result.ok, result.reasons
    assert [s.refs for s in result.sentences] == [[PARSE_LINE.ref], [PARSE.ref]]
    assert "ConfigParser.parse_line" in result.sentences[0].terms and "KEY_VALUE" in result.sentences[0].terms


def test_a_bare_i_dont_know_fails_only_on_good_evidence() -> None:
    text = "I don't know. The snippets do not say."
    good = verdict(text, confidence=0.9)
    assert not good.ok and "does not know although the evidence is good (confidence 0.90 >= 0.50)" in good.reasons[0]
    assert verdict(text, confidence=0.2).ok  # weak evidence: abstaining is honest
    assert verdict(text, confidence=None).ok  # unknown strength: not judged


def test_claims_must_cite_and_the_cited_lines_must_hold_what_they_name() -> None:
    uncited = verdict("Lines are parsed by `ConfigParser.parse_line`.")
    assert not uncited.ok and "cites no retrieved span" in uncited.reasons[0]
    wrong = verdict("The file is read by `load_yaml_file` [app/config_parser.py:15-21].")
    assert not wrong.ok and "names load_yaml_file, absent from the cited lines" in wrong.reasons[0]
    # A sentence without a citation continues the one before it: its terms are checked against those lines.
    continued = verdict("`parse_line` matches `KEY_VALUE` [app/config_parser.py:15-21]. It stores into `self.values`.")
    assert continued.ok, continued.reasons
    plain = verdict("This is how it works [app/config_parser.py:15-21]. Nothing else to add.")
    assert plain.ok  # sentences naming no code term make no claim to check
    assert code_terms("see [a.py:1-2] and `foo.bar()` in util/io.py, also parse_line") == [
        "foo.bar", "parse_line", "util/io.py"]


def test_a_draft_that_fails_escalates_to_the_next_model(server: RecordedServer) -> None:
    server.scripts[SMALL] = [Scripted("ollama/chat_dont_know.json")]
    server.scripts[MEDIUM] = [Scripted("ollama/chat_cited.json")]
    result = answerer_for(server.url).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.model == MEDIUM and result.escalated and not result.extractive
    assert result.fallbacks[0]["from"] == SMALL and result.fallbacks[0]["to"] == MEDIUM
    assert result.fallbacks[0]["reason"].startswith("verification failed: said it does not know")
    assert result.verification["ok"] is True and result.cited_refs


def test_low_confidence_skips_the_draft_model(server: RecordedServer) -> None:
    server.scripts[MEDIUM] = [Scripted("ollama/chat_cited.json")]
    result = answerer_for(server.url).answer(QUESTION, CONTEXTS, confidence=0.3)
    assert server.chats(SMALL) == [] and result.model == MEDIUM and result.escalated
    assert result.fallbacks[0]["reason"] == "draft skipped: retrieval confidence 0.30 < τ 0.50"


def test_when_every_model_fails_verification_the_user_gets_the_labelled_evidence(server: RecordedServer) -> None:
    server.scripts[SMALL] = [Scripted("ollama/chat_dont_know.json")]
    server.scripts[MEDIUM] = [Scripted("ollama/chat_dont_know.json")]
    result = answerer_for(server.url).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.model == EXTRACTIVE and result.extractive and not result.answer.lower().startswith("i don't know")
    assert [f["to"] for f in result.fallbacks] == [MEDIUM, EXTRACTIVE]
    assert all(f["reason"].startswith("verification failed") for f in result.fallbacks)


def test_with_verification_off_the_draft_is_returned_as_before(server: RecordedServer) -> None:
    server.scripts[SMALL] = [Scripted("ollama/chat_dont_know.json")]
    result = answerer_for(server.url, verify={"method": "off"}).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.model == SMALL and result.abstained and result.verification is None


def test_the_model_judge_answers_by_schema_with_one_retry(server: RecordedServer) -> None:
    # Draft, then a judge reply that is not JSON (rejected, retried once), then the verdict.
    server.scripts[SMALL] = [Scripted("ollama/chat_cited.json"), Scripted("ollama/chat_verdict_malformed.json"),
                               Scripted("ollama/chat_verdict_unsupported.json")]
    server.scripts[MEDIUM] = [Scripted("ollama/chat_cited.json"), Scripted("ollama/chat_verdict_supported.json")]
    result = answerer_for(server.url, verify={"method": "model"}).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.model == MEDIUM and result.verification["method"] == "lexical+model"
    assert "sentence 2: the model judged the cited lines do not support it" in result.fallbacks[0]["reason"]
    retry = server.chats(SMALL)[2]["messages"][-1]["content"]
    assert retry.startswith("That reply was rejected: the reply holds no JSON object")


def test_the_check_reads_names_the_way_the_prompt_shows_them() -> None:
    # A file name is a path, not an identifier; a citation after the full stop closes that sentence;
    # the cited chunk's symbol counts as its lines (its header shows it).
    assert code_terms("It lives in app/config_parser.py and uses KEY_VALUE.") == ["KEY_VALUE", "app/config_parser.py"]
    closed = verdict("`ConfigParser.parse_line` stores the pair. [app/config_parser.py:15-21]")
    assert closed.ok, closed.reasons
    by_symbol = verdict("This is `ConfigParser.parse` [app/config_parser.py:23-26].")
    assert by_symbol.ok, by_symbol.reasons


def test_pasting_the_snippets_back_is_not_an_answer() -> None:
    pasted = "\n".join(line for line in PARSE_LINE.text.splitlines() if line.strip()) + " [app/config_parser.py:15-21]"
    result = verdict(pasted)
    assert not result.ok and "pastes the snippets back instead of answering" in result.reasons[0]
