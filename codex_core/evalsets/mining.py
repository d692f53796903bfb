"""Evaluation sets, mining: an evaluation set built from a repository's git history.

Mining from git history (``mine_eval_set``): every kept non-merge commit reachable from HEAD
becomes one item whose query is the cleaned commit message and whose gold is what the commit
changed. Rules, in the order they are applied (the first that matches names the exclusion reason
recorded in ``meta["excluded_by_reason"]``):

* ``merge``: more than one parent.
* ``dependency``: authored by a dependency bot (dependabot, renovate), or a message like
  "Bump requests from 2.0 to 2.1", "Update dependency x to v2", ``chore(deps): ...``.
* ``bot``: any other bot author (``[bot]``, github-actions, pre-commit-ci) or a bot subject.
* ``revert``: the subject starts with "Revert"; ``reverted``: a later commit reverts this one
  ("This reverts commit <sha>."), so its change is not in HEAD.
* ``release``: releases and version bumps ("Release 1.2.0", "Bump version to 2.0", "v1.2.3").
* ``typo`` / ``formatting``: typo fixes; formatter, linter or style commits (black, ruff,
  prettier, "reformat code", "code style", "fix whitespace", ...). The keywords are targeted so
  that "Fix date format parsing" or "Strip trailing whitespace from keys" are kept; a diff that
  only changes whitespace is caught by ``whitespace_only`` below instead.
* ``too_short``: fewer than 4 words after cleaning.
* ``no_source_files`` / ``too_many_source_files``: the commit touches 0 or more than 3 source
  files. Source files are code (``SOURCE_LANGUAGES`` by ``detect_language``) that is not a test
  (``retrieval.is_test_path``), not under a docs/CI directory and not a build/version file.
* ``gold_files_deleted``: none of the source files it added/modified/renamed exists at HEAD
  (files renamed later are not followed).
* ``no_content_change``: the source files changed only by rename or mode.
* ``whitespace_only``: ``git diff -w --ignore-blank-lines`` of the source files is empty.
* ``duplicate_query``: an earlier (newer) item has the same query.

Query cleaning: trailers (``Signed-off-by:``, ``Co-authored-by:``, ``Reviewed-by:``,
``Change-Id:`` ...) and bot lines are dropped; the subject is kept, plus the first body paragraph
when it is short prose (<= 200 characters, no list, code or URL); then PR suffixes ``(#123)``,
issue references (``#123``, ``GH-12``, ``fixes #12``, ``owner/repo#3``), ``[skip ci]``-style
tags and conventional-commit prefixes (``fix(cli):``) are removed.

Gold symbols (``"path::Qualified.name"``), per gold file, from ``git diff -U0 <parent> <commit>``
hunk headers ``@@ -a,b +c,d @@``:

* a hunk that removes or changes parent lines (``b > 0``): for each parent line ``a..a+b-1``,
  the innermost definition of the PARENT version containing it;
* a pure addition (``b == 0``): for each added line ``c..c+d-1``, the innermost definition of
  the NEW version (at the commit) containing it — new code has no parent symbol.

"Innermost" means a change inside ``ConfigParser.parse_line`` yields ``ConfigParser.parse_line``
and not also ``ConfigParser``; the class itself is gold only when a changed line lies in the
class outside its methods. Lines outside every definition (imports, module constants) add no
symbol. A symbol is kept only when that file still defines the same qualified name at HEAD, so
every gold symbol can be found in the index built at HEAD. Items are newest first, at most
``max_items`` of them (``DEFAULT_MAX_ITEMS``); ids are the first 12 hex digits of the commit sha;
the same repository, HEAD and cap always give the same items.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from codex_core.evalsets.data import EvalItem, EvalSet, _now, lexical_overlap
from codex_core.evalsets.registry import _validate_name
from codex_core.git import GitError, git_env, head_sha, run_git, show_file
from codex_core.languages import detect_language
from codex_core.models import Definition
from codex_core.parsing import definitions
from codex_core.retrieval import is_test_path
from codex_core.secrets import redact

SOURCE_LANGUAGES = frozenset(
    {
        "python", "javascript", "typescript", "tsx", "go", "java", "rust",
        "c", "cpp", "csharp", "ruby", "php", "kotlin", "swift", "scala",
    }
)  # fmt: skip
# Code that is build, packaging or docs tooling, or changes with releases rather than behaviour.
NON_SOURCE_NAMES = frozenset(
    {
        "setup.py", "conftest.py", "noxfile.py", "tasks.py", "fabfile.py", "conf.py",
        "__version__.py", "_version.py", "version.py", "__about__.py",
    }
)  # fmt: skip
NON_SOURCE_DIRS = frozenset({"docs", "doc", "documentation", ".github", ".circleci", "ci", ".ci"})
MAX_SOURCE_FILES = 3
MIN_WORDS = 4
MAX_BODY_CHARS = 200
MINER_VERSION = "git-history/v1"
# The newest items kept. Calibration error is measured on these items out of fold, and its noise
# floor falls as 1/sqrt(n): about 0.05 at 400 items, 0.02 at 2,400 (docs/evaluation.md).
DEFAULT_MAX_ITEMS = 2500

_DEPENDENCY_BOT_RE = re.compile(r"dependabot|renovate|greenkeeper|snyk-bot|pyup", re.I)
_BOT_RE = re.compile(r"\[bot\]|\bbot@|github-actions|pre-commit-ci|\bweblate\b|\btransifex\b", re.I)
_BOT_LINE_RE = re.compile(r"\[bot\]|dependabot|renovate|pre-commit-ci|github-actions|^@\w+[- ]bot\b", re.I)
_TRAILER_RE = re.compile(
    r"^\s*(signed-off-by|co-authored-by|reviewed-by|acked-by|tested-by|reported-by|suggested-by|helped-by|"
    r"cc|change-id|reviewed-on|pr-url|closes|fixes|resolves|refs?|see-also|bug|issue|jira|ticket)\s*:",
    re.I,
)
_REVERT_RE = re.compile(r"^\s*revert\b", re.I)
_REVERTS_SHA_RE = re.compile(r"This reverts commit ([0-9a-f]{7,64})", re.I)
_VERSION = r"v?\d+\.\d+(?:\.\d+)*(?:[-.+]?[a-z0-9.]+)?"
_RELEASE_RE = re.compile(
    rf"^\s*{_VERSION}\b"  # "1.2.0", "v1.2.3 - ..."
    rf"|^\s*(?:release[sd]?|releasing|prepar(?:e|ing)|cut|tag(?:ged|ging)?)\b.*\b{_VERSION}"
    rf"|\brelease\s+{_VERSION}"
    r"|\b(?:bump|bumped|bumping|update|set|increment)\s+(?:the\s+)?(?:package\s+|project\s+)?version\b"
    r"|\bversion\s+bump\b|^\s*(?:update\s+)?changelog\b|^\s*(?:chore\()?release\b[):]",
    re.I,
)
_DEPENDENCY_RE = re.compile(
    r"\b(?:bump|bumps|bumped|upgrade|update|pin|downgrade)\s+\S+\s+from\s+\S+\s+to\s+\S+"
    r"|^\s*(?:chore|build|fix|ci)\((?:deps|deps-dev|dependencies)\)"
    r"|^\s*bump(?:s|ed)?\s+the\s+[\w./@-]+\s+group\b"  # dependabot grouped updates
    r"|\b(?:update|upgrade|bump|pin)\s+(?:the\s+)?(?:\w+\s+)?dependenc(?:y|ies)\b"
    r"|\bdependenc(?:y|ies)\s+(?:bump|update|upgrade)s?\b"
    r"|\b(?:update|upgrade|bump)\s+(?:requirements|deps|lock\s*file|poetry\.lock|package-lock|yarn\.lock|go\.sum)\b",
    re.I,
)
_TYPO_RE = re.compile(r"\btypos?\b|\bspelling\b|\bmisspell(?:ed|ing|ings)?\b|\bcodespell\b", re.I)
_FORMATTING_RE = re.compile(
    r"\b(?:black|isort|yapf|autopep8|prettier|gofmt|goimports|rustfmt|clang-format|pre-commit)\b(?!-)"
    r"|\b(?:lint|linting|linter|linters|flake8|pylint|eslint|ruff|clippy)\b"
    r"|^\s*(?:style|fmt|format|lint)(?:\([^)]*\))?!?:"  # conventional-commit types
    r"|\breformat(?:s|ted|ting)?\b"
    # "Fix formatting" / "apply code style with ..." but not "Fix formatting issue when ..."
    r"|\b(?:apply|run|fix|fixes|fixed)\s+(?:code\s+)?(?:formatting|formatter|style)\s*(?:[.!]?\s*$|(?:with|using|in|for|on)\b)"
    r"|\bformat(?:ted|ting)?\s+(?:the\s+)?(?:code|codebase|sources?|files?|imports|with|using)\b"
    r"|^\s*format(?:ting)?\s*$|\bcode\s+(?:formatting|style)\b|\bstyle\s+(?:fix|fixes|changes|cleanup|nits?)\b"
    r"|^\s*(?:\w+\s+){0,2}(?:trailing\s+)?whitespace\s*$|\bwhitespace\s+(?:only|fix|fixes|cleanup|changes)\b",
    re.I,
)
_PR_SUFFIX_RE = re.compile(r"\s*\((?:#\d+(?:,\s*)?)+\)")
_ISSUE_REF_RE = re.compile(
    r"(?:\b(?:fix(?:es|ed)?|clos(?:es|ed)?|resolv(?:es|ed)?|refs?|see|addresses|related\s+to)\s+)?"
    r"(?<![\w/])(?:[\w.-]+/[\w.-]+)?(?:#|GH-)\d+\b",
    re.I,
)
_CI_TAG_RE = re.compile(r"\[(?:skip ci|ci skip|no ci|skip actions|actions skip|skip travis)\]|\*\*\*NO_CI\*\*\*", re.I)
_LABEL_PREFIX_RE = re.compile(
    r"^(?:\[[^\]]{1,20}\]\s*)+"
    r"|^(?:feat|feature|fix|bugfix|hotfix|chore|docs|refactor|perf|test|tests|build|ci|style|deps)"
    r"(?:\([^)]{1,30}\))?!?:\s+",
    re.I,
)
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.M)


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: tuple[str, ...]
    author: str  # "Name <email>"
    message: str
    # (status letter, path before, path after); for A/M/D both paths are the same.
    changes: tuple[tuple[str, str, str], ...]


def is_source_path(path: str) -> bool:
    """Code a question could be about: a source language, not a test, docs, CI or build file."""
    p = PurePosixPath(path)
    if detect_language(path) not in SOURCE_LANGUAGES or p.name in NON_SOURCE_NAMES:
        return False
    if any(part.lower() in NON_SOURCE_DIRS for part in p.parts[:-1]):
        return False
    return not is_test_path(path)


def clean_message(message: str) -> str:
    """The commit message as a question-like query (rules in the module docstring)."""
    subject, *rest = message.strip().splitlines() or [""]
    lines = [subject, *(line for line in rest if not _TRAILER_RE.match(line) and not _BOT_LINE_RE.search(line))]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(lines).strip()) if p.strip()]
    if not paragraphs:
        return ""
    parts = [" ".join(paragraphs[0].split())]
    if len(paragraphs) > 1:
        body = paragraphs[1]
        prose = (
            len(body) <= MAX_BODY_CHARS
            and not re.match(r"^\s*(?:[-*+]|\d+[.)])\s", body, re.M)
            and "```" not in body
            and "http" not in body
            and not _REVERTS_SHA_RE.search(body)
        )
        if prose:
            parts.append(" ".join(body.split()))
    text = " ".join(parts)
    text = _CI_TAG_RE.sub("", text)
    text = _PR_SUFFIX_RE.sub("", text)
    text = _ISSUE_REF_RE.sub("", text)
    text = _LABEL_PREFIX_RE.sub("", text.strip())
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    # A token pasted into a commit message would otherwise be stored in the eval set, logged to
    # MLflow with the per-query results, and shown in reports: masked like file text.
    return redact(" ".join(text.split()).strip(" ,;:-"))


def _iter_commits(repo: Path, head: str) -> Iterator[_Commit]:
    """Commits reachable from ``head``, newest first, streamed from one ``git log`` process.

    Streaming lets ``max_items`` stop early on a long history without reading all of it.
    """
    proc = subprocess.Popen(
        [
            "git", "-C", str(repo), "-c", "core.quotepath=off", "log", head, "-M", "--name-status",
            "--format=%x1e%H%x1f%P%x1f%an <%ae>%x1f%B%x1d",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=git_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    buffer = b""
    finished = False
    try:
        while chunk := proc.stdout.read(1 << 16):
            buffer += chunk
            *records, buffer = buffer.split(b"\x1e")
            for record in records:
                if record.strip():
                    yield _parse_commit(record.decode("utf-8", "replace"))
        if buffer.strip():
            yield _parse_commit(buffer.decode("utf-8", "replace"))
        finished = True
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=30)
    if finished and code != 0:
        raise GitError(f"git log {head} failed in {repo} (exit code {code})")


def _parse_commit(record: str) -> _Commit:
    header, _, files = record.partition("\x1d")
    sha, parents, author, message = header.split("\x1f", 3)
    changes = []
    for line in files.strip("\n").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0]:
            continue
        status = parts[0][0]
        if any(p.startswith('"') for p in parts[1:]):
            continue  # a quoted path (tab or newline in the name): never a source file we can cite
        before, after = (parts[1], parts[2]) if status in "RC" and len(parts) >= 3 else (parts[1], parts[1])
        changes.append((status, before, after))
    return _Commit(sha, tuple(parents.split()), author, message.strip(), tuple(changes))


def _hunks(repo: Path, parent: str, commit: str, paths: list[str], *extra: str) -> list[tuple[int, int, int, int]]:
    """``(a, b, c, d)`` of every ``@@ -a,b +c,d @@`` in the zero-context diff of ``paths``."""
    args = ("-c", "core.quotepath=off", "diff", "-U0", "-M", "--no-color", *extra, parent, commit, "--", *paths)
    out = run_git(repo, *args)
    hunks = []
    for m in _HUNK_RE.finditer(out.decode("utf-8", "replace")):
        a, b, c, d = m.groups()
        hunks.append((int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d)))
    return hunks


def _innermost(defs: list[Definition], line: int) -> Definition | None:
    best = None
    for d in defs:
        if d.start_line <= line <= d.end_line and (
            best is None or (d.start_line, -d.end_line) >= (best.start_line, -best.end_line)
        ):
            best = d
    return best


class _SymbolReader:
    """Definitions of files at commits, cached (each file version is parsed once)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._cache: dict[tuple[str, str], list[Definition]] = {}

    def at(self, commit: str, path: str) -> list[Definition]:
        key = (commit, path)
        if key not in self._cache:
            try:
                text = show_file(self.repo, commit, path).decode("utf-8", "replace")
            except GitError:
                text = ""
            self._cache[key] = definitions(path, detect_language(path), text) if text else []
        return self._cache[key]


def _gold_symbols(
    repo: Path, reader: _SymbolReader, parent: str, commit: str, before: str, after: str, head: str
) -> list[str]:
    parent_defs = reader.at(parent, before) if before else []
    new_defs: list[Definition] | None = None
    found: dict[str, tuple[int, int]] = {}
    paths = [p for p in dict.fromkeys((before, after)) if p]
    for a, b, c, d in _hunks(repo, parent, commit, paths):
        if b > 0:
            defs, lines = parent_defs, range(a, a + b)
        else:
            if new_defs is None:
                new_defs = reader.at(commit, after)
            defs, lines = new_defs, range(c, c + d)
        for line in lines:
            definition = _innermost(defs, line)
            if definition is not None:
                found.setdefault(definition.symbol, (definition.start_line, len(found)))
    at_head = {d.symbol for d in reader.at(head, after)}
    ordered = sorted((s for s in found if s in at_head), key=lambda s: found[s])
    return [f"{after}::{s}" for s in ordered]


def _message_reason(commit: _Commit, query: str, reverted: set[str]) -> str | None:
    subject = commit.message.splitlines()[0] if commit.message else ""
    if len(commit.parents) > 1:
        return "merge"
    if _DEPENDENCY_BOT_RE.search(commit.author):
        return "dependency"
    if _BOT_RE.search(commit.author):
        return "bot"
    if _REVERT_RE.search(subject):
        return "revert"
    if commit.sha in reverted:
        return "reverted"
    if _DEPENDENCY_RE.search(subject):
        return "dependency"
    if _RELEASE_RE.search(subject):
        return "release"
    if _TYPO_RE.search(subject):
        return "typo"
    if _FORMATTING_RE.search(subject):
        return "formatting"
    if len(query.split()) < MIN_WORDS:
        return "too_short"
    return None


def mine_eval_set(
    repo: Path, *, name: str, repo_name: str, head: str | None = None, max_items: int = DEFAULT_MAX_ITEMS
) -> EvalSet:
    """An evaluation set mined from the history of ``repo`` up to ``head`` (default HEAD).

    See the module docstring for the selection, cleaning and gold-symbol rules. The result is
    not stored: pass it to ``EvalRegistry.add``/``write``.
    """
    repo = Path(repo)
    head_commit = head_sha(repo, head or "HEAD")
    head_files = set(
        run_git(repo, "ls-tree", "-r", "-z", "--name-only", "--full-tree", head_commit)
        .decode("utf-8", "surrogateescape")
        .split("\0")
    )
    empty_tree = run_git(repo, "hash-object", "-t", "tree", "--stdin", input=b"").decode().strip()
    reader = _SymbolReader(repo)
    reverted: set[str] = set()
    seen_queries: set[str] = set()
    excluded: dict[str, int] = {}
    items: list[EvalItem] = []
    scanned = 0
    for commit in _iter_commits(repo, head_commit):
        if len(items) >= max_items:
            break
        scanned += 1
        # Newest first: a revert is always seen before the commit it reverts.
        if _REVERT_RE.search(commit.message.splitlines()[0] if commit.message else ""):
            reverted.update(
                full for short in _REVERTS_SHA_RE.findall(commit.message) for full in [_expand(repo, short)] if full
            )
        query = clean_message(commit.message)
        reason = _message_reason(commit, query, reverted)
        touched = [ch for ch in commit.changes if is_source_path(ch[2]) or is_source_path(ch[1])]
        gold_changes = [ch for ch in touched if ch[0] in "AMRCT" and is_source_path(ch[2]) and ch[2] in head_files]
        parent = commit.parents[0] if commit.parents else empty_tree
        if reason is None:
            if not touched:
                reason = "no_source_files"
            elif len({ch[2] for ch in touched}) > MAX_SOURCE_FILES:
                reason = "too_many_source_files"
            elif not gold_changes:
                reason = "gold_files_deleted"
        if reason is None:
            paths = sorted({p for ch in touched for p in (ch[1], ch[2])})
            if not _hunks(repo, parent, commit.sha, paths):
                reason = "no_content_change"
            elif not _hunks(repo, parent, commit.sha, paths, "-w", "--ignore-blank-lines"):
                reason = "whitespace_only"
        if reason is None and query.lower() in seen_queries:
            reason = "duplicate_query"
        if reason is not None:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        seen_queries.add(query.lower())
        gold_files = sorted({ch[2] for ch in gold_changes})
        gold_symbols: list[str] = []
        for status, before, after in sorted(gold_changes, key=lambda ch: ch[2]):
            parent_path = "" if status == "A" or not commit.parents else before
            gold_symbols.extend(_gold_symbols(repo, reader, parent, commit.sha, parent_path, after, head_commit))
        items.append(
            EvalItem(
                id=commit.sha[:12],
                query=query,
                gold_files=gold_files,
                gold_symbols=list(dict.fromkeys(gold_symbols)),
                source=f"git:{commit.sha}",
                lexical_overlap=lexical_overlap(query, gold_files, gold_symbols),
            )
        )
    return EvalSet(
        name=_validate_name(name),
        version=None,
        repo=repo_name,
        items=items,
        created_at=_now(),
        meta={
            "miner": MINER_VERSION,
            "head": head_commit,
            "commits_scanned": scanned,
            "excluded_by_reason": dict(sorted(excluded.items())),
            "max_items": max_items,
        },
    )


def _expand(repo: Path, short: str) -> str | None:
    try:
        return head_sha(repo, short)
    except GitError:
        return None
