"""The pieces of the ranker selection that need no index: the split by commit time on a real git
history (commits sharing a time never straddle it) and the gate (a ranker must improve nDCG@5)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from codex_core.evalsets import EvalItem
from codex_core.judge import ArmResult
from codex_core.ranker_selection import PROMOTE, REJECT, ranker_verdict, split_by_commit_time

# Committer times of ten commits: the 7th and 8th share one (a rebase, a scripted import).
TIMES = [100, 200, 300, 400, 500, 600, 700, 700, 900, 1000]


def history(root: Path) -> list[str]:
    root.mkdir()
    subprocess.run(["git", "-C", str(root), "init", "-q", "-b", "main"], check=True)
    shas = []
    for n, ts in enumerate(TIMES):
        (root / f"m{n}.py").write_text(f"x = {n}\n")
        env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com",
               "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.com",
               "GIT_AUTHOR_DATE": f"@{ts} +0000", "GIT_COMMITTER_DATE": f"@{ts} +0000"}
        for args in (["add", "-A"], ["commit", "-q", "-m", f"change {n}"]):
            subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
        shas.append(subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                                   text=True).stdout.strip())
    return shas


def test_judged_questions_are_strictly_newer_than_every_training_question(tmp_path: Path) -> None:
    shas = history(tmp_path / "repo")
    mined = [EvalItem(sha[:12], f"change {n}", [f"m{n}.py"], [], f"git:{sha}", False) for n, sha in enumerate(shas)]
    plain = EvalItem("p1", "where is x set", ["m1.py"], [], "plain:docstring:m1.py:1-1", False, style="plain")
    lost = EvalItem("gone", "a rewritten commit", ["m2.py"], [], "git:" + "0" * 40, False)
    # Listed newest first, as the miner writes them, with the items that take no part mixed in.
    split = split_by_commit_time([plain, lost, *reversed(mined)], tmp_path / "repo")

    # 70 % of 10 would cut between the two commits at t=700: the boundary moves to the older side.
    assert [d.item.query for d in split.train] == [f"change {n}" for n in range(6)]
    assert [d.committed_at for d in split.judge] == [700, 700, 900, 1000]
    assert split.newest_training_commit < min(d.committed_at for d in split.judge)
    assert split.undated == 1  # the commit the work tree does not hold; the plain question has no time at all
    assert plain.id not in {d.item.id for d in split.train + split.judge}


def _arm(ndcg: float) -> ArmResult:
    return ArmResult(ndcg_at_5=ndcg, p95_s=0.05, ece=0.05, cost=100.0, per_query_ndcg=(ndcg,) * 20)


def test_a_ranker_must_improve_on_what_serves_now() -> None:
    tie = ranker_verdict(_arm(0.6), _arm(0.6))
    assert tie.outcome == REJECT  # the A/B judge alone would promote a tie
    assert any("must improve" in r for r in tie.failed_rules)
    assert ranker_verdict(_arm(0.6), _arm(0.65)).outcome == PROMOTE
    worse = ranker_verdict(_arm(0.6), _arm(0.55))
    assert worse.outcome == REJECT and any(r.startswith("ΔnDCG@5 -0.0500 < -0.01") for r in worse.failed_rules)


def test_calibration_error_does_not_bind_a_ranker_the_next_asset_recalibrates_for() -> None:
    from dataclasses import replace

    better_but_worse_ece = replace(_arm(0.65), ece=0.20)
    verdict = ranker_verdict(_arm(0.6), better_but_worse_ece)
    assert verdict.outcome == PROMOTE and verdict.delta_ece > 0.1  # still reported
    slower = replace(_arm(0.65), p95_s=0.5)  # the other rules still bind
    assert ranker_verdict(_arm(0.6), slower).outcome == REJECT
