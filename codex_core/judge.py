"""Champion vs challenger: a non-inferiority gate plus a paired bootstrap CI on ΔnDCG@5.

Seed formula (all deltas are challenger − champion):

    promote  iff  ΔnDCG@5 ≥ −0.01  and  ΔP95 ≤ +0.2 s  and  ΔECE ≤ +0.02  and  Δcost ≤ +10 %

Cost is the mean number of context tokens a config hands the answerer per query (top-5 citations):
what generation is billed by, and deterministic, unlike wall time on a shared CPU. The bootstrap
CI is reported beside the gate so a reader sees how much of ΔnDCG is noise on this eval set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MAX_NDCG_DROP = 0.01
MAX_P95_INCREASE_S = 0.2
MAX_ECE_INCREASE = 0.02
MAX_COST_INCREASE = 0.10
EPS = 1e-9  # a delta exactly on a limit passes, whatever floating point makes of it


@dataclass(frozen=True)
class ArmResult:
    ndcg_at_5: float
    p95_s: float
    ece: float
    cost: float  # mean context tokens per query (top-5 citations)
    per_query_ndcg: tuple[float, ...]


@dataclass(frozen=True)
class Judgement:
    outcome: str  # "promote" | "reject"
    delta_ndcg: float
    delta_p95_s: float
    delta_ece: float
    delta_cost_ratio: float
    ndcg_ci_low: float
    ndcg_ci_high: float
    failed_rules: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap_ci(
    champion: Sequence[float], challenger: Sequence[float], *, resamples: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of mean(challenger − champion) over queries resampled with replacement."""
    a, b = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired bootstrap needs the same queries in both arms")
    if a.size == 0:
        return (float("nan"), float("nan"))
    diffs = b - a
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def judge(champion: ArmResult, challenger: ArmResult) -> Judgement:
    delta_ndcg = challenger.ndcg_at_5 - champion.ndcg_at_5
    delta_p95 = challenger.p95_s - champion.p95_s
    delta_ece = challenger.ece - champion.ece
    delta_cost = (challenger.cost - champion.cost) / champion.cost if champion.cost > 0 else 0.0
    failed = []
    if delta_ndcg < -MAX_NDCG_DROP - EPS:
        failed.append(f"ΔnDCG@5 {delta_ndcg:+.4f} < -{MAX_NDCG_DROP}")
    if delta_p95 > MAX_P95_INCREASE_S + EPS:
        failed.append(f"ΔP95 {delta_p95:+.3f}s > +{MAX_P95_INCREASE_S}s")
    if not np.isnan(delta_ece) and delta_ece > MAX_ECE_INCREASE + EPS:
        failed.append(f"ΔECE {delta_ece:+.4f} > +{MAX_ECE_INCREASE}")
    if delta_cost > MAX_COST_INCREASE + EPS:
        failed.append(f"Δcost {delta_cost:+.1%} > +{MAX_COST_INCREASE:.0%}")
    low, high = paired_bootstrap_ci(champion.per_query_ndcg, challenger.per_query_ndcg)
    return Judgement(
        outcome="reject" if failed else "promote",
        delta_ndcg=delta_ndcg,
        delta_p95_s=delta_p95,
        delta_ece=delta_ece,
        delta_cost_ratio=delta_cost,
        ndcg_ci_low=low,
        ndcg_ci_high=high,
        failed_rules=tuple(failed),
    )
