"""Mine retrieval queries from a git history with the product's own miner, plus a survival check.

Each item of ``codex_core.evalsets.mine_eval_set`` (commit message -> non-test source files it
changed; merges, reverts, releases, formatting, dependency and bot commits, > 3 files, short
messages and repeats excluded — see that module) becomes one JSON line
``{"query", "gold_files", "commit"}``.

With ``--min-surviving F`` (default 0.5; 0 turns the check off) a file stays gold only if at least
that fraction of the non-trivial lines the commit added to it are still in the file at HEAD: in an
old commit the described code has often moved to another file since (``url.host`` handling left
``_models.py`` for ``_urls.py``), and the old file would be a wrong label for every system.

Run: ``.venv/bin/python benchmarks/mine_queries.py REPO_DIR --max 200 > benchmarks/out/queries.jsonl``
(REPO_DIR must be a git work tree).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _setup  # noqa: E402, F401  (first: sets up the environment)

from codex_core.evalsets import mine_eval_set  # noqa: E402

DEFAULT_MIN_SURVIVING = 0.5
MIN_LINE_CHARS = 8  # shorter added lines ("else:", "return x") survive by coincidence


def git(repo: str, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"git {' '.join(args[:2])} failed in {repo}: {exc.stderr.decode().strip()}") from None
    return out.stdout.decode("utf-8", "replace")


class Survival:
    """Fraction of the lines a commit added to a file that are still in the file at HEAD."""

    def __init__(self, repo: str):
        self.repo = repo
        self._head_lines: dict[str, set[str]] = {}

    def _head(self, path: str) -> set[str]:
        if path not in self._head_lines:
            self._head_lines[path] = {line.strip() for line in git(self.repo, "show", f"HEAD:{path}").splitlines()}
        return self._head_lines[path]

    def fraction(self, sha: str, path: str) -> float:
        diff = git(self.repo, "show", "--format=", "--unified=0", "--no-color", "--no-ext-diff", sha, "--", path)
        added = [
            line[1:].strip() for line in diff.splitlines()
            if line.startswith("+") and not line.startswith("+++")
        ]
        added = [line for line in added if len(line) >= MIN_LINE_CHARS and any(c.isalnum() for c in line)]
        if not added:
            return 0.0
        head = self._head(path)
        return sum(1 for line in added if line in head) / len(added)


def mine(
    repo: str, max_queries: int | None = None, min_surviving: float = DEFAULT_MIN_SURVIVING
) -> tuple[list[dict], dict[str, int]]:
    mined = mine_eval_set(Path(repo), name="bench", repo_name="bench", max_items=1_000_000)
    skipped = dict(mined.meta.get("excluded_by_reason", {}))
    survival = Survival(repo)
    queries: list[dict] = []
    for item in mined.items:  # newest first
        if max_queries is not None and len(queries) >= max_queries:
            break
        sha = item.source.removeprefix("git:")
        gold = list(item.gold_files)
        if min_surviving > 0:
            gold = [path for path in gold if survival.fraction(sha, path) >= min_surviving]
        if not gold:
            skipped["changed code gone at HEAD"] = skipped.get("changed code gone at HEAD", 0) + 1
            continue
        queries.append({"query": item.query, "gold_files": gold, "commit": sha})
    return queries, dict(sorted(skipped.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", help="git work tree")
    parser.add_argument("--max", type=int, default=None, help="stop after this many queries (newest first)")
    parser.add_argument(
        "--min-surviving", type=float, default=DEFAULT_MIN_SURVIVING,
        help="fraction of a gold file's added lines that must still be in it at HEAD (0 = no check)",
    )
    args = parser.parse_args(argv)
    queries, skipped = mine(args.repo, args.max, args.min_surviving)
    for q in queries:
        sys.stdout.write(json.dumps(q, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"mined {len(queries)} queries; skipped {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
