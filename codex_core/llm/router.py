"""Route a question to a small, medium or large model by how hard it looks.

difficulty = 0.40 * query type      (lookup 0.0, unknown 0.5, explanatory 1.0)
           + 0.25 * query length    (words, 0 at <= 4 words, 1 at >= 30)
           + 0.20 * distinct files  (0 for one file, 1 for >= 5)
           + 0.15 * distinct symbols (0 for one symbol, 1 for >= 7)

Only the query and the *locations* of the snippets count, never snippet text: text inside a
snippet (including prompt-injection attempts) cannot move a question to another model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codex_core.llm.types import ContextChunk

WEIGHT_TYPE = 0.40
WEIGHT_LENGTH = 0.25
WEIGHT_FILES = 0.20
WEIGHT_SYMBOLS = 0.15

_WORD = re.compile(r"[A-Za-z0-9_]+")
_HARD = re.compile(
    r"\b(how|why|explain|explains|compare|compared|comparison|differen(?:ce|t)|versus|vs|trade-?offs?|"
    r"walk\s+(?:me\s+)?through|trace|interact|relationship|design|architecture|flow)\b",
    re.IGNORECASE,
)
_LOOKUP = re.compile(
    r"^\s*(where|which|what\s+(?:is|are)|find|locate|show|list|who\s+calls|is\s+there)\b",
    re.IGNORECASE,
)
_LOOKUP_ANYWHERE = re.compile(r"\b(defined|declared|located|implemented\s+in|lives?)\b", re.IGNORECASE)


@dataclass(frozen=True)
class RouteDecision:
    route: str
    difficulty: float
    query_type: str  # "lookup" | "explain" | "other"
    features: dict[str, float]


def query_type(query: str) -> str:
    if _HARD.search(query):
        return "explain"
    if _LOOKUP.search(query) or _LOOKUP_ANYWHERE.search(query):
        return "lookup"
    return "other"


def difficulty(query: str, contexts: list[ContextChunk]) -> tuple[float, str, dict[str, float]]:
    kind = query_type(query)
    type_score = {"lookup": 0.0, "other": 0.5, "explain": 1.0}[kind]
    words = len(_WORD.findall(query))
    length_score = min(1.0, max(0.0, (words - 4) / 26))
    files = len({(c.repo, c.path) for c in contexts})
    symbols = len({(c.repo, c.path, c.symbol) for c in contexts if c.symbol})
    file_score = min(1.0, max(0.0, (files - 1) / 4))
    symbol_score = min(1.0, max(0.0, (symbols - 1) / 6))
    score = (
        WEIGHT_TYPE * type_score
        + WEIGHT_LENGTH * length_score
        + WEIGHT_FILES * file_score
        + WEIGHT_SYMBOLS * symbol_score
    )
    features = {
        "type": type_score,
        "length": round(length_score, 4),
        "files": round(file_score, 4),
        "symbols": round(symbol_score, 4),
        "words": float(words),
        "distinct_files": float(files),
        "distinct_symbols": float(symbols),
    }
    return round(min(1.0, max(0.0, score)), 4), kind, features


def route_for(score: float, *, small_below: float, large_from: float) -> str:
    if score < small_below:
        return "small"
    if score >= large_from:
        return "large"
    return "medium"


def decide(query: str, contexts: list[ContextChunk], *, small_below: float, large_from: float) -> RouteDecision:
    score, kind, features = difficulty(query, contexts)
    return RouteDecision(
        route=route_for(score, small_below=small_below, large_from=large_from),
        difficulty=score,
        query_type=kind,
        features=features,
    )
