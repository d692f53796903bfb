"""Questions for one repository: commit messages -> the non-test source files they changed,
mined with the product's own miner (``codex_core.evalsets.mine_eval_set``), split by time.

On top of the miner's rules (merges, reverts, releases, formatting, dependency and bot commits,
more than 3 source files, short messages and repeats excluded; trailers and issue refs stripped)
a gold file must still hold the change at the snapshot: at least half of the non-trivial lines the
commit added to it are still in the file at the pinned commit. In an old commit the described code
has often moved since, and the old file would be a wrong label for every system.

The newest ``per_repo`` surviving questions are kept and sorted by commit time: the older half is
``tune`` (anything may be fitted on it), the newer half is ``heldout`` (reported, never fitted on).
Up to ``history`` questions older still (split ``history``) are training data for the learned ranker,
which trains on ``history`` + ``tune``: everything strictly older than the held-out half.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codex_core.evalsets import mine_eval_set

MIN_SURVIVING = 0.5
MIN_LINE_CHARS = 8  # shorter added lines ("else:", "return x") survive by coincidence


def git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"git {' '.join(args[:2])} failed in {repo}: {exc.stderr.decode().strip()}") from None
    return out.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class Question:
    id: str
    query: str
    gold_files: list[str]
    commit: str
    time: int  # committer time, seconds since the epoch
    split: str  # "tune" | "heldout"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Survival:
    """Fraction of the lines a commit added to a file that are still in the file at ``snapshot``."""

    def __init__(self, repo: Path, snapshot: str):
        self.repo = repo
        self.snapshot = snapshot
        self._lines: dict[str, set[str]] = {}

    def _at_snapshot(self, path: str) -> set[str]:
        if path not in self._lines:
            text = git(self.repo, "show", f"{self.snapshot}:{path}")
            self._lines[path] = {line.strip() for line in text.splitlines()}
        return self._lines[path]

    def fraction(self, sha: str, path: str) -> float:
        diff = git(self.repo, "show", "--format=", "--unified=0", "--no-color", "--no-ext-diff", sha, "--", path)
        added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
        added = [line for line in added if len(line) >= MIN_LINE_CHARS and any(c.isalnum() for c in line)]
        if not added:
            return 0.0
        kept = self._at_snapshot(path)
        return sum(1 for line in added if line in kept) / len(added)


def commit_times(repo: Path, shas: list[str]) -> dict[str, int]:
    if not shas:
        return {}
    out = git(repo, "show", "-s", "--format=%H %ct", *shas)
    return {sha: int(t) for sha, t in (line.split() for line in out.splitlines() if line.strip())}


def mine_questions(
    repo: Path, name: str, snapshot: str, *, per_repo: int, history: int = 0, scan: int = 1_000_000
) -> tuple[list[Question], dict[str, int]]:
    """The newest ``per_repo`` usable questions at ``snapshot``, oldest first, split by time; before
    them up to ``history`` older ones (split ``history``: training data for a learned ranker)."""
    mined = mine_eval_set(repo, name="localization", repo_name=name, head=snapshot, max_items=scan)
    skipped = dict(mined.meta.get("excluded_by_reason", {}))
    survival = Survival(repo, snapshot)
    kept: list[tuple[str, str, list[str]]] = []
    for item in mined.items:  # newest first
        if len(kept) >= per_repo + history:
            break
        sha = item.source.removeprefix("git:")
        gold = [path for path in item.gold_files if survival.fraction(sha, path) >= MIN_SURVIVING]
        if not gold:
            skipped["changed code gone at the snapshot"] = skipped.get("changed code gone at the snapshot", 0) + 1
            continue
        kept.append((sha, item.query, gold))
    times = commit_times(repo, [sha for sha, _, _ in kept])
    kept.sort(key=lambda q: (times[q[0]], q[0]))
    older = max(0, len(kept) - per_repo)
    half = older + (len(kept) - older) // 2
    questions = [
        Question(f"{name}-{n:03d}", query, gold, sha, times[sha],
                 "history" if n < older else "tune" if n < half else "heldout")
        for n, (sha, query, gold) in enumerate(kept)
    ]
    return questions, dict(sorted(skipped.items()))
