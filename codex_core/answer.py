"""The answer to a query: one typed model that the engine returns, the API serves (its OpenAPI
schema), the CLI prints and the trace refers to (by ``trace_id``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CodeSpan(BaseModel):
    """A verified span of indexed code: what search returns and what an answer cites."""

    repo: str
    path: str
    line_start: int = Field(description="1-based, inclusive")
    line_end: int = Field(description="1-based, inclusive")
    symbol: str | None
    score: float
    snippet: str = Field(description="exactly these lines at the indexed commit, secrets masked")


class Citation(CodeSpan):
    cited_in_answer: bool


class Freshness(BaseModel):
    commit: str
    commits_behind: int | None


class AnswerUsage(BaseModel):
    """What answering took: the model calls of the whole walk (failed drafts, retries, escalations,
    verdicts) and an energy figure labelled with how it was obtained (docs/operations.md)."""

    prompt_tokens: int
    completion_tokens: int
    calls: int = Field(description="model calls made for this answer (0: extractive or abstained)")
    tokens_estimated: bool = Field(description="some token count is an estimate: the server reported none")
    energy_j: float
    energy_method: str = Field(description="nvml (GPU energy, measured) or estimate:cpu-time (CPU seconds × watts)")


class Answer(BaseModel):
    answer: str
    citations: list[Citation]
    confidence: float
    confidence_kind: str = Field(description="calibrated (the repository's calibrator) or heuristic")
    abstained: bool
    model: str
    route: str
    index_commit: str | None
    index_commits: dict[str, str]
    commits_behind: int | None = Field(None, description="Commits the cited repository's HEAD is ahead of its index")
    index_freshness: dict[str, Freshness] = {}
    arm: str = Field("champion", description="Canary arm that served the answer")
    latency_ms: float
    trace_id: str
    usage: AnswerUsage | None = Field(None, description="tokens, model calls and energy of this answer")

    def to_text(self, *, with_answer: bool = True) -> str:
        """The answer as ``feriactl query`` prints it (``with_answer=False``: the citations and the
        summary line only, for after a streamed answer)."""
        lines = [self.answer, ""] if with_answer else [""]
        for c in self.citations:
            symbol = f"  {c.symbol}" if c.symbol else ""
            lines.append(f"  [{c.repo}] {c.path}:{c.line_start}-{c.line_end}{symbol}  (score {c.score:.4f})")
        lines.append("")
        lines.append(
            f"confidence {self.confidence:.2f} ({self.confidence_kind}){'  ABSTAINED' if self.abstained else ''}"
            f"  model {self.model}  route {self.route}  {self.latency_ms:.0f} ms  trace {self.trace_id}"
        )
        if self.usage is not None and self.usage.calls:
            u = self.usage
            lines.append(
                f"{u.calls} model call{'s' if u.calls != 1 else ''}  {u.prompt_tokens} prompt + "
                f"{u.completion_tokens} completion tokens{' (estimated)' if u.tokens_estimated else ''}"
                f"  {u.energy_j:.1f} J ({u.energy_method})"
            )
        return "\n".join(lines)
