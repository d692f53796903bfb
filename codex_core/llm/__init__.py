"""Generation layer: prompt with strict citations, routing, model fallback chain, extractive answer.

Framework-free (no dagster, no fastapi). Nothing here touches the network at import time.
"""

from codex_core.llm.answerer import Answerer
from codex_core.llm.backends import (
    Backend,
    BackendError,
    ChatReply,
    CircuitBreaker,
    OllamaBackend,
    OpenAICompatibleBackend,
)
from codex_core.llm.citations import CitationCheck, check_citations, parse_refs
from codex_core.llm.config import ConfigError, LLMConfig, ModelSpec, config_from_dict, load_config
from codex_core.llm.extractive import extractive_answer
from codex_core.llm.prompt import Prompt, approx_tokens, build_prompt
from codex_core.llm.router import RouteDecision, decide
from codex_core.llm.types import AnswerDelta, AnswerRestart, ContextChunk, GenerationResult

__all__ = [
    "AnswerDelta",
    "AnswerRestart",
    "Answerer",
    "Backend",
    "BackendError",
    "ChatReply",
    "CircuitBreaker",
    "CitationCheck",
    "ConfigError",
    "ContextChunk",
    "GenerationResult",
    "LLMConfig",
    "ModelSpec",
    "OllamaBackend",
    "OpenAICompatibleBackend",
    "Prompt",
    "RouteDecision",
    "approx_tokens",
    "build_prompt",
    "check_citations",
    "config_from_dict",
    "decide",
    "extractive_answer",
    "load_config",
    "parse_refs",
]
