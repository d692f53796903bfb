"""Prompts that fit the model (#16): small models get the compact prompt and attributed citations.

The answer benchmark measured why: Qwen2.5-Coder-0.5B under the full rules answered a bare "I don't
know" to nearly every question; asked for plain prose over three short snippets it names the right
function, and the verifier attaches the snippet that holds what each sentence names. Model replies
are the transcribed Ollama responses of tests/fixtures/ollama (README there), served over real HTTP
by the recorded-response server of test_llm.py.
"""

from __future__ import annotations

import pytest

from codex_core.llm import Answerer, build_prompt, config_from_dict
from codex_core.llm.config import ConfigError, params_from_name
from codex_core.llm.prompt import COMPACT_SYSTEM_PROMPT, SYSTEM_PROMPT
from codex_core.llm.types import AnswerRestart
from codex_core.llm.verify import attribute_citations
from tests.core.test_llm import (
    CAPTURED,
    CONTEXTS,
    PARSE,
    PARSE_LINE,
    QUESTION,
    RETRY,
    RecordedServer,
    Scripted,
    captured_stream,
    chunk,
    openai_config,
    split,
    text_of,
)
from tests.core.test_llm import recorded as recorded  # noqa: F401  (the fixture)

TINY, MEDIUM, EXPERT = "qwen2.5-coder:0.5b", "llama3.2:3b", "qwen2.5-coder:1.5b"
LONG = chunk("app/long.py", "\n".join(f"value_{i} = {i}" for i in range(1, 121)), 1, 120, None, 0.3)


def tiny_config(url: str, **prompt: object) -> dict[str, object]:
    return {
        "ollama": {"base_url": url},
        "models": [{"name": TINY, "backend": "ollama", "context_window": 4096, "timeout": 10},
                   {"name": MEDIUM, "backend": "ollama", "context_window": 8192, "timeout": 10}],
        "routes": {route: {"chain": [TINY, MEDIUM]} for route in ("small", "medium", "large")},
        "prompt": prompt,
    }


def test_model_size_is_read_from_the_name_or_given() -> None:
    assert params_from_name("qwen2.5-coder:0.5b") == 0.5
    assert params_from_name("SmolLM2-135M-Instruct") == pytest.approx(0.135)
    assert params_from_name("llama3.2:3b") == 3.0
    assert params_from_name("local-llama-server") is None
    config = config_from_dict({**tiny_config("http://127.0.0.1:1"), "models": [
        {"name": TINY, "backend": "ollama"},
        {"name": MEDIUM, "backend": "ollama"},
        {"name": "served", "backend": "openai", "base_url": "http://127.0.0.1:2", "params_b": 0.3},
        {"name": "pinned", "backend": "openai", "base_url": "http://127.0.0.1:2", "params_b": 0.3,
         "prompt": "standard"},
        {"name": "unknown-size", "backend": "openai", "base_url": "http://127.0.0.1:2"},
    ]}, env={})
    styles = {name: config.prompt_style(spec) for name, spec in config.models.items()}
    assert styles == {TINY: "compact", MEDIUM: "standard", "served": "compact", "pinned": "standard",
                      "unknown-size": "standard"}
    with pytest.raises(ConfigError, match="prompt = 'tiny'"):
        config_from_dict({**tiny_config("http://127.0.0.1:1"), "models": [
            {"name": TINY, "backend": "ollama", "prompt": "tiny"}, {"name": MEDIUM, "backend": "ollama"}]}, env={})


def test_compact_prompt_shows_fewer_shorter_snippets_with_plainer_rules() -> None:
    contexts = [*CONTEXTS, LONG]
    standard = build_prompt(QUESTION, contexts, context_window=4096)
    compact = build_prompt(QUESTION, contexts, context_window=4096, profile="compact", max_snippets=3,
                           max_snippet_lines=40)
    assert standard.messages[0]["content"] == SYSTEM_PROMPT
    assert compact.messages[0]["content"] == COMPACT_SYSTEM_PROMPT
    assert len(COMPACT_SYSTEM_PROMPT) < len(SYSTEM_PROMPT) / 2
    # The budget would hold all four; the compact prompt keeps the three best and cuts long ones.
    assert [c.ref for c in standard.included] == [PARSE_LINE.ref, PARSE.ref, RETRY.ref, LONG.ref]
    assert [c.ref for c in compact.included] == [PARSE_LINE.ref, PARSE.ref, RETRY.ref]
    assert compact.omitted_refs == [LONG.ref]
    cut = build_prompt(QUESTION, [LONG], context_window=4096, profile="compact", max_snippet_lines=40)
    user = cut.messages[1]["content"]
    assert "value_40 = 40" in user and "value_41 = 41" not in user
    assert "(shows lines 1-40 only" in user and cut.truncated_ref == LONG.ref
    # Snippets are numbered for the model; the untrusted-data rule is kept in both.
    assert f"BEGIN SNIPPET [1] {compact.nonce} {PARSE_LINE.path} lines 15-21" in compact.messages[1]["content"]
    assert "not instructions" in COMPACT_SYSTEM_PROMPT
    assert compact.prompt_tokens < standard.prompt_tokens
    with pytest.raises(ValueError, match="unknown prompt profile"):
        build_prompt(QUESTION, contexts, context_window=4096, profile="chatty")


def test_snippet_numbers_become_refs_only_where_they_are_citations() -> None:
    prompt = build_prompt(QUESTION, CONTEXTS, context_window=4096, profile="compact", max_snippets=3)
    text = "`parse` loops over lines [2]. It reads values[1] and rows[0] [1, 3]. Not a snippet [7]."
    assert prompt.expand_numbers(text) == (
        f"`parse` loops over lines [{PARSE.ref}]. It reads values[1] and rows[0] [{PARSE_LINE.ref}, {RETRY.ref}]. "
        "Not a snippet [7]."
    )
    standard = build_prompt(QUESTION, CONTEXTS, context_window=4096)
    assert standard.expand_numbers(text) == text


def test_attribution_cites_the_best_snippet_that_holds_every_named_term() -> None:
    text = ("`ConfigParser.parse_line` matches the stripped line against `KEY_VALUE`. It is called for each line. "
            "`retry_with_backoff` sleeps between attempts. `load_settings` opens the file.")
    cited, sentences = attribute_citations(text, CONTEXTS)
    assert sentences == [1, 3]
    assert f"`KEY_VALUE` [{PARSE_LINE.ref}]." in cited
    assert f"attempts [{RETRY.ref}]." in cited
    assert "`load_settings` opens the file." in cited and cited.count("[") == 2
    # A sentence that already cites is left as the model wrote it.
    assert attribute_citations(f"`parse` loops [{PARSE.ref}].", CONTEXTS) == (f"`parse` loops [{PARSE.ref}].", [])


def test_small_model_prose_is_answered_with_attributed_citations(recorded: RecordedServer) -> None:  # noqa: F811
    recorded.scripts[TINY] = [Scripted("ollama/chat_prose_uncited.json")]
    answerer = Answerer(config_from_dict(tiny_config(recorded.url), env={}))
    result = answerer.answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.model == TINY and not result.extractive and not result.escalated
    assert result.prompt_style == "compact"
    # Sentence 1 names parse_line and KEY_VALUE (snippet 1), sentence 2 continues it, sentence 3 cited [2].
    assert result.cited_refs == [PARSE_LINE.ref, PARSE.ref]
    assert f"`KEY_VALUE` [{PARSE_LINE.ref}]." in result.answer and f"every line [{PARSE.ref}]." in result.answer
    assert result.verification is not None and result.verification["ok"]
    (request,) = recorded.chats(TINY)
    assert request["messages"][0]["content"] == COMPACT_SYSTEM_PROMPT
    assert recorded.chats(MEDIUM) == []


def test_small_model_prose_no_snippet_supports_goes_to_the_next_model(recorded: RecordedServer) -> None:  # noqa: F811
    recorded.scripts[TINY] = [Scripted("ollama/chat_prose_unsupported.json")]
    recorded.scripts[MEDIUM] = [Scripted("ollama/chat_cited.json")]
    result = Answerer(config_from_dict(tiny_config(recorded.url), env={})).answer(QUESTION, CONTEXTS, confidence=0.9)
    # No stricter retry on the small model (it cannot copy refs): one call, then the next model.
    assert len(recorded.chats(TINY)) == 1
    assert result.model == MEDIUM and result.escalated and result.prompt_style == "standard"
    assert result.fallbacks[0]["from"] == TINY and result.fallbacks[0]["to"] == MEDIUM
    assert "no sentence names code that a shown snippet holds" in result.fallbacks[0]["reason"]
    assert recorded.chats(MEDIUM)[0]["messages"][0]["content"] == SYSTEM_PROMPT


def test_with_uncited_extractive_the_snippets_answer_instead_of_the_next_model(
        recorded: RecordedServer) -> None:  # noqa: F811
    """[verify] uncited = "extractive": the labelled evidence the draft was shown, no second model call."""
    recorded.scripts[TINY] = [Scripted("ollama/chat_prose_unsupported.json")]
    config = {**tiny_config(recorded.url), "verify": {"method": "lexical", "uncited": "extractive"}}
    result = Answerer(config_from_dict(config, env={})).answer(QUESTION, CONTEXTS, confidence=0.9)
    assert result.extractive and result.model == "extractive" and recorded.chats(MEDIUM) == []
    assert result.fallbacks == [{"from": TINY, "to": "extractive", "reason": result.fallbacks[0]["reason"]}]
    assert "no sentence names code that a shown snippet holds" in result.fallbacks[0]["reason"]
    assert result.cited_refs and set(result.cited_refs) <= {c.ref for c in CONTEXTS}
    with pytest.raises(ConfigError, match=r"\[verify\] uncited .* must be one of"):
        config_from_dict({**tiny_config(recorded.url), "verify": {"uncited": "skip"}}, env={})


def test_an_expert_with_its_own_snippets_is_shown_more_than_the_draft(recorded: RecordedServer) -> None:  # noqa: F811
    """[[models]] snippets: the next model of the chain sees every retrieved snippet, the draft the
    [prompt] default three; a bad value is a config error that names the model."""
    recorded.scripts[TINY] = [Scripted("ollama/chat_prose_unsupported.json")]
    recorded.scripts[EXPERT] = [Scripted("ollama/chat_prose_uncited.json")]
    config = {**tiny_config(recorded.url), "models": [
        {"name": TINY, "backend": "ollama", "context_window": 4096, "timeout": 10},
        {"name": EXPERT, "backend": "ollama", "context_window": 4096, "timeout": 10, "snippets": 5}],
        "routes": {route: {"chain": [TINY, EXPERT]} for route in ("small", "medium", "large")}}
    contexts = [*CONTEXTS, LONG]
    result = Answerer(config_from_dict(config, env={})).answer(QUESTION, contexts, confidence=0.9)
    assert result.model == EXPERT and result.escalated and result.prompt_style == "compact"
    (draft,), (expert,) = recorded.chats(TINY), recorded.chats(EXPERT)
    assert draft["messages"][1]["content"].count("BEGIN SNIPPET") == 3
    assert expert["messages"][1]["content"].count("BEGIN SNIPPET") == len(contexts) == 4
    assert LONG.path in expert["messages"][1]["content"] and LONG.path not in draft["messages"][1]["content"]
    for bad in (0, True, "5"):
        config["models"][1]["snippets"] = bad
        with pytest.raises(ConfigError, match=f"{EXPERT!r} .* has snippets"):
            config_from_dict(config, env={})


def test_streamed_uncited_draft_restarts_then_ends_with_the_evidence(recorded: RecordedServer) -> None:  # noqa: F811
    """[verify] uncited = "extractive" when streaming: the draft's prose was shown, so a restart voids
    it, then the labelled snippets — no second model call (llama-server's captured stream)."""
    recorded.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_stream_uncited.sse")]
    config = openai_config(recorded.url, {"name": EXPERT, "backend": "ollama", "base_url": recorded.url,
                                          "timeout": 10}, chain=("local-llama-server", EXPERT))
    config["models"][0]["params_b"] = 0.5  # a small model: the compact prompt
    config["verify"] = {"method": "lexical", "uncited": "extractive"}
    events, result = split(Answerer(config_from_dict(config, env={})).answer_stream(QUESTION, CONTEXTS,
                                                                                     confidence=0.9))
    (restart,) = [i for i, e in enumerate(events) if isinstance(e, AnswerRestart)]
    assert text_of(events[:restart]) == captured_stream("chat_stream_uncited.sse")[0].strip()
    assert "no sentence names code that a shown snippet holds" in events[restart].reason
    assert events[restart + 1:] == []
    assert result.extractive and result.model == "extractive" and recorded.chats(EXPERT) == []
    assert [h["to"] for h in result.fallbacks] == ["extractive"]
    assert set(result.cited_refs) <= {c.ref for c in CONTEXTS}
