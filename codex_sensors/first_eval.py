"""The first self-evaluation of a repository, started as soon as its index is published.

Without it a new user finds MLflow empty and serving answering with the heuristic confidence
until ``nightly_eval`` runs at 03:00. ``first_eval_sensor`` requests one run of the ``evaluate``
job per repository (run key ``first-eval:<repo>``), in the background like any sensor run, when:

- its index is published and no ``ingest`` run of it is queued or running (the code graph is
  repaired after the publish, and the eval measures the graph hop too);
- it has no calibrator and no ``evaluate`` run yet (``feriactl eval run`` or the nightly
  schedule may have come first);
- its history up to the published commit mines at least ``MIN_SAMPLES`` questions: the fewest
  the ``calibration`` asset fits a model on (below that it publishes a constant base rate).

The history check mines newest-first and stops at ``MIN_SAMPLES`` questions, so it reads a few
dozen commits: 0.2-0.4 s on Textualize/rich, jhy/jsoup and axios/axios. It runs once per
repository and published commit; the cursor remembers the outcome, so a tick with nothing to do
reads one small file per repository. A history that is too short is noted in the tick's log and
skip reason, and checked again when a new commit is published.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from codex_core import catalog
from codex_core.calibration import MIN_SAMPLES, CalibratorStore
from codex_core.evalsets import mine_eval_set
from codex_core.git import GitError, run_git
from codex_core.home import CodexHome
from codex_core.published import published_commit
from codex_resources import CodexHomeResource
from codex_sensors.jobs import eval_job, ingest_job

RUN_KEY_PREFIX = "first-eval:"
REASON_TAG = "codex/reason"
# Runs that are about to write, or are writing, the repository's index (NOT_STARTED is left out:
# a run whose launch failed stays in it forever).
_ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]

# Cursor states: REQUESTED and EVALUATED are final; TOO_SHORT is re-checked at a new published commit.
REQUESTED, EVALUATED, TOO_SHORT = "requested", "evaluated", "too_short"


def mineable_questions(worktree: Path, repo: str, commit: str, enough: int = MIN_SAMPLES) -> tuple[int, int]:
    """(questions, commits scanned): what the eval's miner finds in the history up to ``commit``,
    stopping at ``enough`` questions."""
    mined = mine_eval_set(worktree, name=f"{repo}-probe", repo_name=repo, head=commit, max_items=enough)
    return len(mined.items), int(mined.meta.get("commits_scanned", 0))


def _is_shallow(worktree: Path) -> bool:
    try:
        return run_git(worktree, "rev-parse", "--is-shallow-repository").strip() == b"true"
    except GitError:
        return False


def too_short_note(repo: str, state: dict[str, Any]) -> str:
    """What a user reads in the tick's log: what happened, why, and what to do."""
    commit = str(state.get("commit", ""))[:12]
    note = (
        f"{repo}: first evaluation skipped: its history up to {commit} gives {state.get('questions', 0)} "
        f"question(s) from {state.get('commits_scanned', 0)} commit(s), and calibration needs at least "
        f"{MIN_SAMPLES}"
    )
    if state.get("shallow"):
        note += " (the clone of a URL source is shallow: it holds only its newest commit); "
    else:
        note += "; checked again when a new commit is published, or "
    return note + (
        f"import questions (`feriactl eval import FILE --repo {repo}`) and run "
        f"`feriactl eval run --repo {repo} --set NAME`"
    )


def _has_run(instance: dg.DagsterInstance, job_name: str, repo: str, statuses=None) -> bool:
    runs_filter = dg.RunsFilter(job_name=job_name, tags={"dagster/partition": repo}, statuses=statuses or [])
    return instance.get_runs_count(runs_filter) > 0


def _has_calibrator(home: CodexHome, repo: str) -> bool:
    try:
        return CalibratorStore(home.calibration_dir(repo)).current() is not None
    except ValueError:  # a broken pointer: a calibration ran; serving says what to do about it
        return True


@dg.sensor(
    job=eval_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        f"Starts a repository's first self-evaluation (the evaluate job) once its index is published, "
        f"so MLflow and calibrated confidence do not wait for nightly_eval; skips a history that mines "
        f"fewer than {MIN_SAMPLES} questions (cursor: {{repo: outcome}})."
    ),
)
def first_eval_sensor(context: dg.SensorEvaluationContext, codex_home: CodexHomeResource) -> dg.SensorResult:
    home = codex_home.home
    cursor: dict[str, dict[str, Any]] = json.loads(context.cursor) if context.cursor else {}
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for repo in sorted(context.instance.get_dynamic_partitions("repos")):
        state = cursor.get(repo, {})
        if state.get("state") in (REQUESTED, EVALUATED):
            continue
        commit = published_commit(home, repo)
        if commit is None:
            notes.append(f"{repo}: waiting for its first publish")
            continue
        if state.get("state") == TOO_SHORT and state.get("commit") == commit:
            notes.append(too_short_note(repo, state))
            continue
        if _has_calibrator(home, repo) or _has_run(context.instance, eval_job.name, repo):
            cursor[repo] = {"state": EVALUATED, "commit": commit}
            continue
        if _has_run(context.instance, ingest_job.name, repo, statuses=_ACTIVE):
            notes.append(f"{repo}: waiting for its ingest run to finish")
            continue
        try:
            worktree = Path(catalog.read_json(home.repo_dir(repo) / catalog.SNAPSHOT)["worktree"])
            questions, scanned = mineable_questions(worktree, repo, commit)
        except (OSError, ValueError, KeyError, GitError) as exc:
            # Not recorded in the cursor: the next tick tries again.
            context.log.warning(f"{repo}: cannot read its history for the first evaluation ({exc}); will retry")
            notes.append(f"{repo}: history unreadable, will retry")
            continue
        if questions < MIN_SAMPLES:
            cursor[repo] = {"state": TOO_SHORT, "commit": commit, "questions": questions,
                            "commits_scanned": scanned, "shallow": _is_shallow(worktree)}
            note = too_short_note(repo, cursor[repo])
            context.log.info(note)
            notes.append(note)
            continue
        cursor[repo] = {"state": REQUESTED, "commit": commit}
        context.log.info(f"{repo}: requesting its first evaluation at {commit[:12]}")
        requests.append(dg.RunRequest(
            run_key=f"{RUN_KEY_PREFIX}{repo}", partition_key=repo,
            tags={"codex/repo": repo, "codex/commit": commit, REASON_TAG: "first-eval"},
        ))
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if requests else dg.SkipReason(
            "; ".join(notes) or "every published repository has had its first evaluation"
        ),
    )
