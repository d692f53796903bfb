"""Mine retrieval queries from a git history: commit message -> the source files it changed.

Each kept non-merge commit becomes one JSON line ``{"query", "gold_files", "commit"}``:

* ``query``: the subject, plus the body's first paragraph when it is short prose, with
  trailers (Signed-off-by, Co-authored-by, ...), issue refs (#123, GH-12, "fixes #12"), PR suffixes
  "(#123)", conventional-commit labels ("fix(cli):", "[docs]") and bot lines removed.
* ``gold_files``: the non-test source files (code extensions only; no docs, tests, config) that
  the commit added, modified or renamed into, and that still exist at HEAD.
  With ``--min-surviving F`` (default 0.5; 0 turns the check off) a file is gold only if at least
  that fraction of the non-trivial lines the commit added to it are still in the file at HEAD: in
  an old commit the described code has often moved to another file since (``url.host`` handling
  left ``_models.py`` for ``_urls.py``), and the old file would be a wrong label for every system.
  Files the commit only deleted lines from count as not surviving.

Skipped: merges, reverts, releases and version bumps, formatting-only changes ("black", "lint",
"format", "typo", "whitespace"), dependency bumps, bot commits, commits touching 0 or more than 3
source files, messages shorter than 4 words after cleaning, and repeats of an earlier query.
Newest first; the output is a pure function of the repository's history and HEAD.

Run: ``.venv/bin/python benchmarks/mine_queries.py REPO_DIR --max 200 > benchmarks/out/queries.jsonl``
(REPO_DIR may be a work tree or a bare git directory).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

CODE_EXTENSIONS = frozenset(
    {".py", ".pyi", ".pyx", ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".go", ".java", ".kt", ".rs",
     ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".scala", ".swift"}
)
# Code that is configuration, build or docs tooling rather than the product's source.
NON_SOURCE_NAMES = frozenset(
    {"setup.py", "conftest.py", "noxfile.py", "tasks.py", "fabfile.py", "conf.py",
     # version files change with releases, not with the behaviour a commit describes
     "__version__.py", "_version.py", "version.py", "__about__.py"}
)
NON_SOURCE_DIRS = frozenset({"docs", "doc", "documentation", ".github", "benchmarks", "bench", "ci", ".ci"})
TEST_PATH_RE = re.compile(
    r"(^|/)(tests?|__tests__|spec|specs|testing|fixtures)(/|$)|(^|/)test_[^/]*$|_tests?\.\w+$|\.(spec|test)\.\w+$"
)

TRAILER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*(-by|-to|-authored-by)?:\s|^(Fixes|Closes|Resolves|Refs?|See)\b", re.I)
BOT_RE = re.compile(r"\[bot\]|dependabot|pre-commit-ci|renovate|github-actions|\bskip ci\b|\[ci skip\]", re.I)
PR_SUFFIX_RE = re.compile(r"\s*\((?:#\d+(?:,\s*)?)+\)")
ISSUE_REF_RE = re.compile(
    r"(?:\b(?:fix(?:es|ed|ing)?|clos(?:es|ed|ing)|resolv(?:es|ed|ing)|refs?|see|addresses)\s+)?"
    r"(?<![\w/])(?:[\w.-]+/[\w.-]+)?(?:#|GH-)\d+\b",
    re.I,
)
LABEL_PREFIX_RE = re.compile(r"^(?:\[[^\]]{1,20}\]\s*)+|^[a-z]+(?:\([^)]{1,30}\))?!?:\s+")
REVERT_RE = re.compile(r"^\s*revert\b", re.I)
RELEASE_RE = re.compile(
    r"^\s*(?:v?\d+(?:\.\d+)+\b|(?:release|prepare|bump|cut)\b.*\b(?:v?\d+(?:\.\d+)+|release|version)\b"
    r"|version\b.*\d|.*\brelease (?:notes|version)\b|changelog\b)",
    re.I,
)
FORMATTING_RE = re.compile(
    r"\b(black|blacken|isort|lint|linting|linter|flake8|ruff|pylint|format|formatting|reformat|typo|typos"
    r"|whitespace|pre-commit|codespell|mypy)\b",
    re.I,
)
DEPENDENCY_RE = re.compile(
    r"^\s*(?:bump|pin|unpin|upgrade|update|downgrade)\b.*\b(?:from\s+\S+\s+to|dependenc|requirements|deps\b"
    r"|version|to\s+v?\d)|\bdependenc(?:y|ies)\b.*\b(?:bump|update|upgrade)",
    re.I,
)
MIN_WORDS = 4
DEFAULT_MIN_SURVIVING = 0.5
MIN_LINE_CHARS = 8  # shorter added lines ("else:", "return x") survive by coincidence
MAX_SOURCE_FILES = 3
MAX_BODY_CHARS = 200


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author: str
    message: str
    changes: tuple[tuple[str, str], ...]  # (status letter, path at this commit)


def git(repo: str, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"git {' '.join(args[:2])} failed in {repo}: {exc.stderr.decode().strip()}") from None
    return out.stdout.decode("utf-8", "replace")


def iter_commits(repo: str) -> Iterator[Commit]:
    """Every commit reachable from HEAD, newest first, with its name-status (renames detected)."""
    raw = git(repo, "log", "HEAD", "-M", "--name-status", "--format=%x1e%H%x1f%P%x1f%an <%ae>%x1f%B%x1d")
    for record in raw.split("\x1e")[1:]:
        header, _, files = record.partition("\x1d")
        sha, parents, author, message = header.split("\x1f", 3)
        changes = []
        for line in files.strip().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                changes.append((parts[0][0], parts[-1]))  # R100\told\tnew -> ("R", new)
        yield Commit(sha, tuple(parents.split()), author, message.strip(), tuple(changes))


def is_source_path(path: str) -> bool:
    p = PurePosixPath(path)
    if p.suffix.lower() not in CODE_EXTENSIONS or p.name in NON_SOURCE_NAMES:
        return False
    if any(part.lower() in NON_SOURCE_DIRS for part in p.parts[:-1]):
        return False
    return not TEST_PATH_RE.search(path)


def clean_message(message: str) -> str:
    """Subject (+ short first body paragraph) without trailers, refs, PR suffixes and labels."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if not paragraphs:
        return ""
    subject = " ".join(paragraphs[0].split())
    parts = [subject]
    if len(paragraphs) > 1:
        body = paragraphs[1]
        lines = body.splitlines()
        prose = (
            len(body) <= MAX_BODY_CHARS
            and not any(TRAILER_RE.match(line) or BOT_RE.search(line) for line in lines)
            and not re.match(r"^\s*([-*+]|\d+\.)\s", body)  # a bullet list of squashed commits
            and "```" not in body
            and "http" not in body
        )
        if prose:
            parts.append(" ".join(body.split()))
    text = " ".join(parts)
    text = PR_SUFFIX_RE.sub("", text)
    text = ISSUE_REF_RE.sub("", text)
    text = LABEL_PREFIX_RE.sub("", text)
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    return " ".join(text.split()).strip(" .,;:-")


def skip_reason(commit: Commit, query: str, source_files: list[str]) -> str | None:
    subject = commit.message.splitlines()[0] if commit.message else ""
    if len(commit.parents) > 1:
        return "merge"
    if BOT_RE.search(commit.author) or BOT_RE.search(subject):
        return "bot"
    if REVERT_RE.search(subject):
        return "revert"
    if RELEASE_RE.search(subject):
        return "release"
    if DEPENDENCY_RE.search(subject):
        return "dependency"
    if FORMATTING_RE.search(subject):
        return "formatting"
    if not source_files:
        return "no source files"
    if len(source_files) > MAX_SOURCE_FILES:
        return "too many source files"
    if len(query.split()) < MIN_WORDS:
        return "too short"
    return None


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
    head_files = set(git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines())
    survival = Survival(repo)
    queries: list[dict] = []
    seen: set[str] = set()
    skipped: dict[str, int] = {}
    for commit in iter_commits(repo):
        if max_queries is not None and len(queries) >= max_queries:
            break
        touched = sorted({path for status, path in commit.changes if status in "AMR" and is_source_path(path)})
        query = clean_message(commit.message)
        reason = skip_reason(commit, query, touched)
        gold = [path for path in touched if path in head_files]
        if reason is None and not gold:
            reason = "gold files gone at HEAD"
        if reason is None and query.lower() in seen:
            reason = "duplicate query"
        if reason is None and min_surviving > 0:
            gold = [path for path in gold if survival.fraction(commit.sha, path) >= min_surviving]
            if not gold:
                reason = "changed code gone at HEAD"
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        seen.add(query.lower())
        queries.append({"query": query, "gold_files": gold, "commit": commit.sha})
    return queries, dict(sorted(skipped.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", help="git work tree or bare git directory")
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
