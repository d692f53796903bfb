"""What goes into the generation layer and what comes out of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Values of GenerationResult.route.
ROUTES = ("small", "medium", "large")
EXTRACTIVE = "extractive"


@dataclass(frozen=True)
class ContextChunk:
    """One retrieved, verified snippet: lines ``start_line..end_line`` (1-based, inclusive) of ``path``."""

    repo: str
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    text: str
    score: float

    @property
    def ref(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass(frozen=True)
class AnswerDelta:
    """A piece of a model's answer as it is generated (``Answerer.answer_stream``), before the citation check."""

    text: str


@dataclass(frozen=True)
class AnswerRestart:
    """The text streamed so far is void: the answer starts over (a stricter retry, or the next model)."""

    reason: str


@dataclass
class GenerationResult:
    answer: str
    model: str  # model name that produced the answer, or "extractive"
    route: str  # "small" | "medium" | "large" | "extractive"
    cited_refs: list[str]  # refs ("path:start-end") the answer cites, all among the given contexts
    fallbacks: list[dict[str, Any]]  # [{"from": model, "to": model | "extractive", "reason": ...}] in order
    prompt_tokens: int  # server-reported when the server reports it, else the prompt builder's estimate
    extractive: bool
    # Additions beyond the serving contract (all defaulted):
    planned_route: str | None = None  # what the router chose, even when the answer ended up extractive
    difficulty: float = 0.0  # the router's score in [0, 1]
    rejected_refs: list[str] = field(default_factory=list)  # refs the model wrote that were not retrieved
    abstained: bool = False  # the model said the snippets do not contain the answer
    escalated: bool = False  # a later model of the chain answered after the draft failed verification
    verification: dict[str, Any] | None = None  # the verdict on the returned answer (verify.Verdict.to_dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "model": self.model,
            "route": self.route,
            "cited_refs": list(self.cited_refs),
            "fallbacks": [dict(f) for f in self.fallbacks],
            "prompt_tokens": self.prompt_tokens,
            "extractive": self.extractive,
            "planned_route": self.planned_route,
            "difficulty": self.difficulty,
            "rejected_refs": list(self.rejected_refs),
            "abstained": self.abstained,
            "escalated": self.escalated,
            "verification": self.verification,
        }
