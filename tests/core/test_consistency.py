"""Self-consistency (#16): n samples of the first model asked, the answer most samples agree with,
agreement as a signal that escalates. Off by default. Model replies are the transcribed Ollama
responses of tests/fixtures/ollama (README there) over real HTTP (test_llm.py's recorded server)."""

from __future__ import annotations

from codex_core.llm import Answerer, config_from_dict
from codex_core.llm.citations import CitationCheck
from codex_core.llm.consistency import agree, consensus
from tests.core.test_llm import CONTEXTS, MEDIUM, PARSE_LINE, QUESTION, SMALL, RecordedServer, Scripted, make_config
from tests.core.test_llm import recorded as recorded  # noqa: F401  (the fixture)


def check(*refs: str, abstained: bool = False) -> CitationCheck:
    return CitationCheck(text="", cited=list(refs), abstained=abstained)


def test_samples_agree_when_they_point_at_the_same_files() -> None:
    assert agree(check("a.py:1-9", "b.py:3-4"), check("a.py:20-30"))  # same file, other lines
    assert not agree(check("a.py:1-9"), check("c.py:1-9", "d.py:1-2"))
    assert agree(check(abstained=True), check(abstained=True))
    assert not agree(check("a.py:1-9"), check(abstained=True))
    vote = consensus([check("c.py:1-2"), check("a.py:1-9"), check("a.py:5-6")], samples=4)
    assert vote.chosen == 1 and vote.votes == [1, 2, 2] and vote.agreement == 0.5


def sampling_answerer(url: str, samples: int) -> Answerer:
    return Answerer(config_from_dict(make_config(url, consistency={"samples": samples, "temperature": 0.9}), env={}))


def test_off_by_default_one_call(recorded: RecordedServer) -> None:  # noqa: F811
    recorded.scripts[SMALL] = [Scripted("ollama/chat_cited.json")]
    result = Answerer(config_from_dict(make_config(recorded.url), env={})).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert len(recorded.chats(SMALL)) == 1 and result.consistency is None


def test_the_majority_answer_is_kept_with_its_agreement(recorded: RecordedServer) -> None:  # noqa: F811
    recorded.scripts[SMALL] = [Scripted("ollama/chat_cited_retry.json"), Scripted("ollama/chat_cited.json"),
                               Scripted("ollama/chat_cited.json")]
    result = sampling_answerer(recorded.url, 3).answer(QUESTION, CONTEXTS, confidence=0.9)
    calls = recorded.chats(SMALL)
    assert len(calls) == 3 and recorded.chats(MEDIUM) == []
    # The first sample at the model's own temperature, the others at [consistency] temperature.
    assert [c["options"]["temperature"] for c in calls] == [0.1, 0.9, 0.9]
    assert result.model == SMALL and PARSE_LINE.ref in result.cited_refs
    assert result.consistency == {"samples": 3, "answered": 3, "agreement": 0.667, "votes": [1, 2, 2]}
    assert result.usage.calls == 3


def test_a_seeded_model_samples_with_seed_plus_index(recorded: RecordedServer) -> None:  # noqa: F811
    """Samples of a model with a ``seed`` differ from one another yet repeat run to run."""
    recorded.scripts[SMALL] = [Scripted("ollama/chat_cited.json")] * 3
    config = make_config(recorded.url, consistency={"samples": 3, "temperature": 0.9})
    config["models"][0]["seed"] = 40
    Answerer(config_from_dict(config, env={})).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert [c["options"]["seed"] for c in recorded.chats(SMALL)] == [40, 41, 42]


def test_disagreeing_samples_escalate_to_the_next_model(recorded: RecordedServer) -> None:  # noqa: F811
    recorded.scripts[SMALL] = [Scripted("ollama/chat_cited_retry.json"), Scripted("ollama/chat_cited.json"),
                               Scripted("ollama/chat_dont_know.json")]
    recorded.scripts[MEDIUM] = [Scripted("ollama/chat_cited.json")]
    result = sampling_answerer(recorded.url, 3).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.model == MEDIUM and result.escalated
    assert result.fallbacks[0]["reason"] == "samples disagree: agreement 0.33 < 0.50 over 3 samples"
    # Only the first model asked is sampled: the next one answers once.
    assert len(recorded.chats(MEDIUM)) == 1 and result.consistency is None


def test_a_sampled_stream_sends_the_kept_answer_whole(recorded: RecordedServer) -> None:  # noqa: F811
    from codex_core.llm import AnswerDelta, GenerationResult

    recorded.scripts[SMALL] = [Scripted("ollama/chat_cited.json")]
    *events, result = sampling_answerer(recorded.url, 2).answer_stream(QUESTION, CONTEXTS, confidence=0.9)
    assert isinstance(result, GenerationResult) and result.consistency["agreement"] == 1.0
    assert [type(e) for e in events] == [AnswerDelta] and events[0].text.startswith("`ConfigParser.parse_line`")
