"""The road to a published learned file ranker: trained on a repository's older history, published
only when it beats what serves now on the newer history.

A repository's mined questions (commit message -> files the commit changed; plain questions have no
time and take no part) are ordered by commit time. The older ``TRAIN_FRACTION`` train a candidate
(:func:`codex_core.ranker.train_ranker`, on the hand-set order of the served config); the newer rest
judge it, champion vs challenger: the champion arm is the served config as it serves now (with the
published ranker, if any), the challenger arm the same config re-ordered by the candidate. The gate is
the A/B judge's (:func:`codex_core.judge.judge`: ΔnDCG@5 ≥ −0.01, ΔP95, Δcost; ΔECE is reported but
does not bind, see :func:`ranker_verdict`) **and** ΔnDCG@5 > 0: a model must earn its place, and on a
tie the order with no model in it stays.

A winner is written atomically to ``CodexHome.ranker_path(repo)``, the file readers follow; a loser
leaves that file as it is. With too little history (fewer than ``MIN_QUESTIONS`` to train or
``MIN_JUDGE_QUESTIONS`` to judge) nothing is trained: the published ranker stands, or else the
general ranker the product ships (``codex_core.ranker.shipped_ranker``, when the config's
``global_ranker`` is on), or else the hand-set order. That one is also the champion a first candidate
must beat. Every run leaves ``last_selection.json`` next to the ranker (read by ``feriactl eval
report`` through :func:`last_selection`) and one MLflow run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.eval_report import EXPERIMENT, arm_result
from codex_core.evalsets.data import MINED, EvalItem
from codex_core.evaluation import evaluate, metrics_table
from codex_core.fsio import write_json_atomic
from codex_core.git import commit_times
from codex_core.home import CodexHome
from codex_core.judge import ArmResult, Judgement, judge
from codex_core.ranker import FEATURES, MIN_QUESTIONS, LearnedRanker, load_published, train_ranker
from codex_core.reader import PublishedReader
from codex_core.retrieval import RetrievalConfig
from codex_core.tracking import Tracker

TRAIN_FRACTION = 0.7  # the older share of the dated questions trains; the newer rest judges
MIN_JUDGE_QUESTIONS = 20
LAST_SELECTION = "last_selection.json"
PROMOTE, REJECT, INSUFFICIENT_HISTORY, DISABLED = "promote", "reject", "insufficient_history", "disabled"
ARM_COLUMNS = ["queries", "file_ndcg_at_5", "file_recall_at_1", "file_recall_at_5", "latency_p95_ms", "ece",
               "cost_tokens"]


@dataclass(frozen=True)
class DatedItem:
    item: EvalItem
    committed_at: int  # committer time of the question's commit (unix seconds)


@dataclass(frozen=True)
class HistorySplit:
    train: list[DatedItem]  # the older questions
    judge: list[DatedItem]  # each strictly newer than every training question
    undated: int = 0  # mined questions whose commit the work tree does not hold (left out)

    @property
    def newest_training_commit(self) -> int | None:
        return max((d.committed_at for d in self.train), default=None)

    @property
    def newest_training_commit_iso(self) -> str | None:
        return _iso(self.newest_training_commit)


def mined_questions(items: Sequence[EvalItem]) -> list[EvalItem]:
    """The questions that carry a time: mined from a commit (``git:<sha>``), with gold files."""
    return [i for i in items if i.style == MINED and i.source.startswith("git:") and i.gold_files]


def split_by_commit_time(
    items: Sequence[EvalItem], worktree: Path, *, train_fraction: float = TRAIN_FRACTION
) -> HistorySplit:
    """The mined ``items`` ordered by commit time (``git show -s --format=%ct``), the older
    ``train_fraction`` to train and the rest to judge. Questions of one commit time never straddle
    the split (the boundary moves to the older side), so every judged question is strictly newer
    than every training question."""
    mined = mined_questions(items)
    times = commit_times(worktree, [i.source.removeprefix("git:") for i in mined])
    dated = sorted(
        (DatedItem(i, times[i.source.removeprefix("git:")]) for i in mined if i.source.removeprefix("git:") in times),
        key=lambda d: (d.committed_at, d.item.id),
    )
    cut = int(len(dated) * train_fraction)
    while 0 < cut < len(dated) and dated[cut - 1].committed_at == dated[cut].committed_at:
        cut -= 1
    return HistorySplit(train=dated[:cut], judge=dated[cut:], undated=len(mined) - len(dated))


def ranker_verdict(champion: ArmResult, challenger: ArmResult) -> Judgement:
    """The A/B judge's gate, plus ΔnDCG@5 > 0: a learned ranker that only matches what serves now adds
    a model, its file and its upkeep for nothing, so it does not replace it.

    The gate's calibration rule (ΔECE) does not bind here: a new order changes the features the
    calibrator reads, and the ``calibration`` asset refits it on that order in the same run, right
    after this one; ΔECE between two arms scored by calibrators fitted on a few dozen judged
    questions is noise besides. It stays in the report."""
    verdict = judge(champion, challenger)
    failed = [rule for rule in verdict.failed_rules if not rule.startswith("ΔECE")]
    if not verdict.delta_ndcg > 0:
        failed.append(f"ΔnDCG@5 {verdict.delta_ndcg:+.4f} ≤ 0: a learned ranker must improve on what serves now")
    return replace(verdict, outcome=REJECT if failed else PROMOTE, failed_rules=tuple(failed))


def ranker_id(ranker: LearnedRanker, when: datetime) -> str:
    """``<date>-<hash of the weights>``: the same fit on the same day has the same id."""
    weights = json.dumps([ranker.mean, ranker.scale, ranker.coef, ranker.intercept], sort_keys=True)
    return f"{when:%Y%m%d}-{hashlib.sha256(weights.encode()).hexdigest()[:8]}"


def coefficients_md(ranker: LearnedRanker | None) -> str:
    """The candidate's weights on standardized features, largest effect first."""
    if ranker is None:
        return ""
    rows = sorted(zip(ranker.features, ranker.coef, strict=True), key=lambda r: -abs(r[1]))
    lines = ["| feature | weight (standardized) |", "|---|---|"]
    lines += [f"| {name} | {weight:+.3f} |" for name, weight in rows]
    lines.append(f"| (intercept) | {ranker.intercept:+.3f} |")
    return "\n".join(lines)


def _iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RankerSelection:
    outcome: str  # PROMOTE | REJECT | INSUFFICIENT_HISTORY | DISABLED
    reasons: list[str]
    split: HistorySplit
    candidate: LearnedRanker | None  # trained this run (None: not enough history, or turned off)
    published: LearnedRanker | None  # the repository's own ranker readers follow after this run (or None)
    verdict: Judgement | None = None
    fallback: LearnedRanker | None = None  # the shipped general ranker, when it orders a repo without its own
    arms: dict[str, dict[str, float]] = field(default_factory=dict)  # summary per arm
    run_id: str = ""
    run_url: str | None = None

    @property
    def serving(self) -> str:
        """Which file order serves the repository after this run."""
        return serving_order(self.published, self.fallback)

    @property
    def arms_md(self) -> str:
        return metrics_table(self.arms, ARM_COLUMNS) if self.arms else ""

    @property
    def coefficients_md(self) -> str:
        return coefficients_md(self.candidate)

    @property
    def delta_ndcg_ci95(self) -> tuple[float, float] | None:
        return (self.verdict.ndcg_ci_low, self.verdict.ndcg_ci_high) if self.verdict else None


def serving_order(published: LearnedRanker | None, fallback: LearnedRanker | None) -> str:
    """The repository's own published ranker, else the shipped general one, else the hand-set order."""
    if published is not None:
        return f"learned:{published.meta.get('id', '?')}"
    if fallback is not None:
        return f"learned:{fallback.meta.get('id', '?')} (general)"
    return "hand-set"


def _stays(published: LearnedRanker | None, fallback: LearnedRanker | None) -> str:
    if published is not None:
        return "the published ranker stays"
    if fallback is not None:
        return f"the shipped general ranker ({fallback.meta.get('id', '?')}) keeps ordering its files"
    return "the hand-set order stays"


def select_ranker(
    reader: PublishedReader, *, repo: str, items: Sequence[EvalItem], config: RetrievalConfig,
    tracker: Tracker, tags: dict[str, str], eval_set: str, served_config: str | None = None,
    now: datetime | None = None,
) -> RankerSelection:
    """Train a candidate for ``repo`` on the older mined ``items``, judge it against what serves now
    (``config``, the served config's retrieval, with the published ranker) on the newer ones, publish
    it if it wins, and log one MLflow run (kind ``file_ranker``). ``reader`` must be refreshed."""
    now = now or datetime.now(UTC)
    path = reader.home.ranker_path(repo)
    worktree = reader.worktree_of(repo)
    if worktree is None:
        raise ValueError(f"repository {repo!r} is not registered in {reader.home.registry_path}: "
                         f"feriactl ingest SOURCE --name {repo}")
    published = reader.ranker_of(repo)
    # A repository without its own ranker is served by the shipped general one (when the config lets
    # it): that is the champion a candidate must beat.
    fallback = reader.fallback_ranker if config.general_ranker_serves else None
    split = split_by_commit_time(items, worktree)
    train, judged = [d.item for d in split.train], [d.item for d in split.judge]
    # Never judged on what it was trained on: older commits train, strictly newer ones judge.
    assert not {i.id for i in train} & {i.id for i in judged}
    assert not train or not judged or split.newest_training_commit < min(d.committed_at for d in split.judge)

    def settle(outcome: str, reasons: list[str], **more: Any) -> RankerSelection:
        selection = RankerSelection(outcome, reasons, split, published=published, fallback=fallback, **more)
        return _record(selection, repo=repo, path=path, tracker=tracker, tags=tags, eval_set=eval_set,
                       served_config=served_config, now=now)

    if not config.learned_ranker:
        return settle(DISABLED, ["the served config turns the learned ranker off (learned_ranker: false); "
                                 "nothing is trained"], candidate=None)
    if len(train) < MIN_QUESTIONS or len(judged) < MIN_JUDGE_QUESTIONS:
        return settle(INSUFFICIENT_HISTORY, [
            f"{len(train) + len(judged)} mined questions with a commit time: {len(train)} older to train "
            f"(needs {MIN_QUESTIONS}), {len(judged)} newer to judge (needs {MIN_JUDGE_QUESTIONS}); "
            + _stays(published, fallback)
        ], candidate=None)
    candidate = train_ranker(reader.retriever, [(i.query, i.gold_files) for i in train], repo=repo, config=config)
    if candidate is None:
        return settle(INSUFFICIENT_HISTORY, [
            f"fewer than {MIN_QUESTIONS} of the {len(train)} training questions have a gold file among the "
            f"files the hand-set order ranks; " + _stays(published, fallback)
        ], candidate=None)
    candidate = replace(candidate, meta={**candidate.meta, "id": ranker_id(candidate, now)})

    graph = reader.view.graphs.get(repo)
    champion = evaluate(reader.retriever, judged, repos=[repo], graph=graph, config=config, config_name="champion")
    challenger = evaluate(reader.retriever_with_ranker(candidate), judged, repos=[repo], graph=graph,
                          config=replace(config, learned_ranker=True), config_name="challenger")
    arms = {"champion": arm_result(champion.outcomes), "challenger": arm_result(challenger.outcomes)}
    verdict = ranker_verdict(arms["champion"][0], arms["challenger"][0])
    summaries = {label: summary for label, (_, summary) in arms.items()}
    if verdict.outcome != PROMOTE:
        return settle(REJECT, list(verdict.failed_rules), candidate=candidate, verdict=verdict, arms=summaries)
    candidate = replace(candidate, meta={
        **candidate.meta,
        "trained_on": len(train),
        "judged_on": len(judged),
        "newest_training_commit": split.newest_training_commit_iso,
        "newest_training_commit_ts": split.newest_training_commit,
        "delta_ndcg_at_5": round(verdict.delta_ndcg, 4),
        "delta_ndcg_ci95": [round(verdict.ndcg_ci_low, 4), round(verdict.ndcg_ci_high, 4)],
        "replaced": published.meta.get("id") if published else serving_order(None, fallback),
        "served_config": served_config,
        "eval_set": eval_set,
        "published_at": now.isoformat(timespec="seconds"),
    })
    candidate.save(path)  # atomic: a reader sees the old ranker or the new one, never half of one
    selection = RankerSelection(PROMOTE, [], split, candidate=candidate, published=candidate, verdict=verdict,
                                arms=summaries, fallback=fallback)
    return _record(selection, repo=repo, path=path, tracker=tracker, tags=tags, eval_set=eval_set,
                   served_config=served_config, now=now)


def _record(
    selection: RankerSelection, *, repo: str, path: Path, tracker: Tracker, tags: dict[str, str], eval_set: str,
    served_config: str | None, now: datetime,
) -> RankerSelection:
    """One MLflow run and ``last_selection.json`` for ``selection``; returns it with the run's id."""
    split, candidate, verdict = selection.split, selection.candidate, selection.verdict
    published_id = selection.published.meta.get("id", "?") if selection.published else None
    with tracker.run(EXPERIMENT, f"{repo} file_ranker", tags | {"kind": "file_ranker"}) as run:
        run.log_params({
            "eval_set": eval_set, "outcome": selection.outcome, "trained_on": len(split.train),
            "judged_on": len(split.judge), "undated": split.undated, "train_fraction": TRAIN_FRACTION,
            "newest_training_commit": split.newest_training_commit_iso, "served_config": served_config or "default",
            "candidate": candidate.meta.get("id") if candidate else None,
            "published": published_id or serving_order(None, selection.fallback),
        })
        for label, summary in selection.arms.items():
            run.log_metrics({f"{label}.{k}": v for k, v in summary.items() if isinstance(v, float)})
        if verdict is not None:
            run.log_metrics({k: v for k, v in verdict.to_dict().items() if isinstance(v, float)})
        if candidate is not None:
            run.log_json({"features": list(FEATURES), "coef": dict(zip(FEATURES, candidate.coef, strict=True)),
                          "intercept": candidate.intercept, "mean": candidate.mean, "scale": candidate.scale,
                          "meta": candidate.meta}, "coefficients.json", "ranker")
        run.log_json({"outcome": selection.outcome, "reasons": selection.reasons, "arms": selection.arms,
                      "judgement": verdict.to_dict() if verdict else None,
                      "train_items": [d.item.id for d in split.train], "judge_items": [d.item.id for d in split.judge]},
                     "selection.json", "tables")
    selection = replace(selection, run_id=run.run_id, run_url=run.url)
    write_json_atomic(path.with_name(LAST_SELECTION), {
        "outcome": selection.outcome, "reasons": selection.reasons, "eval_set": eval_set,
        "trained_on": len(split.train), "judged_on": len(split.judge), "undated": split.undated,
        "newest_training_commit": split.newest_training_commit_iso,
        "train_items": [d.item.id for d in split.train], "judge_items": [d.item.id for d in split.judge],
        "candidate": candidate.meta.get("id") if candidate else None, "published": published_id,
        "delta_ndcg_at_5": verdict.delta_ndcg if verdict else None,
        "delta_ndcg_ci95": list(selection.delta_ndcg_ci95) if verdict else None,
        "mlflow_run_id": run.run_id, "mlflow_url": run.url, "finished_at": now.isoformat(timespec="seconds"),
    })
    return selection


def last_selection(home: CodexHome, repo: str) -> dict[str, Any] | None:
    """What the last ``file_ranker`` run decided for ``repo`` (None: it never ran)."""
    path = home.ranker_path(repo).with_name(LAST_SELECTION)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def published_ranker(home: CodexHome, repo: str) -> LearnedRanker | None:
    """The ranker readers follow for ``repo`` (None: none published, or one they would ignore)."""
    path = home.ranker_path(repo)
    return load_published(path) if path.exists() else None
