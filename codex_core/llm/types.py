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
class ModelUsage:
    """One model's calls within one request and the tokens they used."""

    calls: int = 0
    failed_calls: int = 0  # ended without a whole reply: an error, a cut-off stream, closed by the caller
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_calls: int = 0  # calls with an estimated count: the server reported none

    def to_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "failed_calls": self.failed_calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "estimated_calls": self.estimated_calls}


@dataclass
class Usage:
    """Every model call of one request's walk (drafts, stricter retries, escalations, verdicts), per model."""

    by_model: dict[str, ModelUsage] = field(default_factory=dict)

    def add(self, model: str, *, prompt_tokens: int, completion_tokens: int, estimated: bool, failed: bool) -> None:
        entry = self.by_model.setdefault(model, ModelUsage())
        entry.calls += 1
        entry.failed_calls += int(failed)
        entry.prompt_tokens += prompt_tokens
        entry.completion_tokens += completion_tokens
        entry.estimated_calls += int(estimated)

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.by_model.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(m.prompt_tokens for m in self.by_model.values())

    @property
    def completion_tokens(self) -> int:
        return sum(m.completion_tokens for m in self.by_model.values())

    @property
    def estimated(self) -> bool:
        """Some count is the estimate, not the server's."""
        return any(m.estimated_calls for m in self.by_model.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "failed_calls": sum(m.failed_calls for m in self.by_model.values()),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
            "by_model": {name: m.to_dict() for name, m in self.by_model.items()},
        }


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
    # "standard", or "compact" (a small model's prompt: prose asked for, citations attributed by the
    # verifier to the shown snippet that holds what each sentence names); None for extractive answers.
    prompt_style: str | None = None
    # Self-consistency ([consistency] samples > 1): {samples, answered, agreement, votes}; None when off.
    consistency: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)  # every model call of the walk, not only the answering one

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
            "prompt_style": self.prompt_style,
            "consistency": self.consistency,
            "usage": self.usage.to_dict(),
        }
