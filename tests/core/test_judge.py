"""The champion/challenger gate on hand-made arms."""

from __future__ import annotations

import pytest

from codex_core.judge import ArmResult, judge, paired_bootstrap_ci

BASE = ArmResult(ndcg_at_5=0.60, p95_s=0.30, ece=0.05, cost=1000.0, per_query_ndcg=(0.5, 0.7, 0.6, 0.6))


def arm(**changes) -> ArmResult:
    return ArmResult(**{**BASE.__dict__, **changes})


def test_better_challenger_is_promoted() -> None:
    better = arm(ndcg_at_5=0.70, per_query_ndcg=(0.6, 0.8, 0.7, 0.7))
    verdict = judge(BASE, better)
    assert verdict.outcome == "promote" and verdict.failed_rules == ()
    assert verdict.delta_ndcg == pytest.approx(0.10)
    assert verdict.ndcg_ci_low == pytest.approx(0.10) and verdict.ndcg_ci_high == pytest.approx(0.10)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"ndcg_at_5": 0.58}, "ΔnDCG@5"),
        ({"p95_s": 0.51}, "ΔP95"),
        ({"ece": 0.08}, "ΔECE"),
        ({"cost": 1101.0}, "Δcost"),
    ],
)
def test_each_rule_rejects_on_its_own(changes, rule) -> None:
    verdict = judge(BASE, arm(**changes))
    assert verdict.outcome == "reject"
    assert len(verdict.failed_rules) == 1 and verdict.failed_rules[0].startswith(rule)


def test_edges_of_the_gate_pass() -> None:
    edge = arm(ndcg_at_5=0.59, p95_s=0.50, ece=0.07, cost=1100.0)
    assert judge(BASE, edge).outcome == "promote"


def test_bootstrap_ci_brackets_the_mean_difference() -> None:
    champion = [0.5] * 50 + [0.0] * 50
    challenger = [0.6] * 50 + [0.0] * 50
    low, high = paired_bootstrap_ci(champion, challenger, seed=1)
    assert low <= 0.05 <= high and 0.0 <= low and high <= 0.1
    with pytest.raises(ValueError):
        paired_bootstrap_ci([0.1], [0.1, 0.2])
