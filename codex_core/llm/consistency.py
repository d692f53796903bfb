"""Self-consistency: ask the same model n times and keep the answer most samples agree with.

Off by default (``[consistency] samples = 1``): it multiplies the model calls of an answer by n.
With ``samples = n > 1`` the first model of the chain that answers is sampled n times — the first
sample at the model's own temperature, the rest at ``[consistency] temperature`` so that they can
differ — and every sample goes through the citation check. Two samples agree when they give the
same kind of answer (both cite, or both say "I don't know") and, when they cite, the files they
cite overlap by at least half (Jaccard on the cited paths): the question is *where* the answer is,
and two samples pointing at the same code agree even if worded differently. The kept sample is
the one with the most agreeing samples (the first among equals); ``agreement`` = that count / n.

Agreement is a confidence signal of its own: below ``[consistency] min_agreement`` the draft is
treated like one that failed verification and the chain escalates. It is reported in the trace
(``generation.consistency``); it does not change the calibrated retrieval confidence, which is
fitted without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from codex_core.llm.citations import CitationCheck


@dataclass(frozen=True)
class Consensus:
    chosen: int  # index of the kept sample
    agreement: float  # agreeing samples (the kept one included) / samples
    votes: list[int]  # per sample, how many samples (itself included) agree with it

    def to_dict(self, samples: int) -> dict[str, float | int | list[int]]:
        return {"samples": samples, "agreement": round(self.agreement, 3), "votes": list(self.votes)}


def _paths(check: CitationCheck) -> frozenset[str]:
    return frozenset(str(PurePosixPath(ref.rsplit(":", 1)[0])) for ref in check.cited)


def agree(a: CitationCheck, b: CitationCheck) -> bool:
    if bool(a.cited) != bool(b.cited):
        return False
    if not a.cited:
        return a.abstained == b.abstained
    left, right = _paths(a), _paths(b)
    return len(left & right) * 2 >= len(left | right)


def consensus(checks: list[CitationCheck], *, samples: int | None = None) -> Consensus:
    """The sample most others agree with. ``checks``: one per sample that answered (at least one);
    ``samples``: how many were asked for (a sample that failed agrees with none), default all answered."""
    if not checks:
        raise ValueError("consensus needs at least one sample")
    votes = [sum(agree(a, b) for b in checks) for a in checks]
    chosen = max(range(len(checks)), key=lambda i: (votes[i], -i))
    return Consensus(chosen, votes[chosen] / max(samples or len(checks), len(checks)), votes)
