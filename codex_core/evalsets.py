"""Evaluation sets: versioned, immutable (query -> gold files/symbols) sets, hand-written or mined.

An evaluation set answers "which code should a correct answer cite?" for a list of queries. Sets
live under ``CODEX_HOME/evals/<name>/`` as ``v<version>.jsonl`` (one item per line) plus
``v<version>.manifest.json`` (repo, creation time, meta, sha256 of the items file). A version is
never rewritten: re-writing it with different items is an error, with the same items a no-op.

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

import fcntl
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from codex_core.git import GitError, git_env, head_sha, run_git, show_file
from codex_core.languages import detect_language
from codex_core.models import Definition
from codex_core.parsing import definitions
from codex_core.retrieval import is_test_path

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    id: str
    query: str
    gold_files: list[str]
    gold_symbols: list[str]  # "path::Qualified.name"; may be empty
    source: str  # "git:<sha>" or "hand"
    lexical_overlap: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalItem:
        return cls(
            id=str(data["id"]),
            query=str(data["query"]),
            gold_files=[str(p) for p in data["gold_files"]],
            gold_symbols=[str(s) for s in data.get("gold_symbols") or []],
            source=str(data.get("source") or "hand"),
            lexical_overlap=bool(data.get("lexical_overlap", False)),
        )


@dataclass
class EvalSet:
    name: str
    version: int | None  # None until stored in a registry (``add`` assigns one)
    repo: str
    items: list[EvalItem]
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSetSummary:
    name: str
    version: int
    repo: str
    n_items: int
    created_at: str
    items_sha256: str


class EvalSetError(ValueError):
    pass


class EvalSetExistsError(EvalSetError):
    pass


class EvalSetImportError(EvalSetError):
    def __init__(self, path: Path, errors: list[tuple[int, str]]):
        self.path = path
        self.errors = errors
        shown = "\n".join(f"  {path}:{line}: {problem}" for line, problem in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(
            f"{len(errors)} invalid line(s) in {path}; nothing was imported. Each line must be a JSON object "
            f'like {{"query": "...", "gold_files": ["path"], "gold_symbols": ["path::Name"]}}:\n{shown}{more}'
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _items_bytes(items: list[EvalItem]) -> bytes:
    """Canonical JSONL of the items: the bytes that are hashed and stored."""
    return b"".join(
        (json.dumps(item.to_dict(), sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8") for item in items
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Lexical overlap
# ---------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _words(text: str) -> list[str]:
    """Identifier-aware words: ``parseLine``, ``parse_line``, ``parse-line``, ``parse line`` -> parse, line."""
    return [w.lower() for w in _WORD_RE.findall(text)]


def _contains(seq: list[str], sub: list[str]) -> bool:
    n = len(sub)
    return n > 0 and any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))


def lexical_overlap(query: str, gold_files: list[str], gold_symbols: list[str]) -> bool:
    """Whether the query names a gold file or symbol, so plain keyword search could find it.

    Names are a gold file's basename and stem (``config_parser.py``, ``config_parser``; dunder
    stems like ``__init__`` are ignored) and the last component of each gold symbol
    (``ConfigParser.parse_line`` -> ``parse_line``). A name matches, case-insensitively, when
    its words appear consecutively among the query's words, whatever the spelling (snake_case,
    camelCase, kebab-case or separate words), or when the query contains it squashed together
    (``configparser``).
    """
    query_words = _words(query)
    squashed_tokens = {t.lower() for t in re.findall(r"[A-Za-z0-9]+", query)}
    names: list[str] = []
    for path in gold_files:
        p = PurePosixPath(path)
        if p.stem.startswith("__") and p.stem.endswith("__"):
            continue
        names.extend([p.name, p.stem])
    for symbol in gold_symbols:
        qualified = symbol.rsplit("::", 1)[-1]
        names.append(qualified.rsplit(".", 1)[-1])
    for name in names:
        words = _words(name)
        if not words:
            continue
        if _contains(query_words, words) or "".join(words) in squashed_tokens:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_FILE_RE = re.compile(r"^v(\d+)\.manifest\.json$")


def _validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise EvalSetError(
            f"invalid eval set name {name!r}: use 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit"
        )
    return name


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class EvalRegistry:
    """Versioned evaluation sets under ``root`` (normally ``CODEX_HOME/evals``).

    Layout: ``<root>/<name>/v<N>.jsonl`` + ``<root>/<name>/v<N>.manifest.json``. The manifest is
    written last, so a version exists exactly when its manifest does; ``get`` re-checks the items
    file against the manifest's sha256. Writers of one set are serialised with a lock file.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- paths ------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / _validate_name(name)

    def items_path(self, name: str, version: int) -> Path:
        return self._dir(name) / f"v{int(version)}.jsonl"

    def manifest_path(self, name: str, version: int) -> Path:
        return self._dir(name) / f"v{int(version)}.manifest.json"

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        directory = self._dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------------------

    def versions(self, name: str) -> list[int]:
        directory = self._dir(name)
        if not directory.is_dir():
            return []
        found = (_VERSION_FILE_RE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_version(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def next_version(self, name: str) -> int:
        versions = self.versions(name)
        return (versions[-1] + 1) if versions else 1

    def _manifest(self, name: str, version: int) -> dict[str, Any]:
        path = self.manifest_path(name, version)
        if not path.exists():
            known = self.versions(name)
            hint = f"known versions: {known}" if known else "no versions exist (mine or import one first)"
            raise KeyError(f"eval set {name!r} v{version} does not exist under {self.root}; {hint}")
        return json.loads(path.read_text())

    def get(self, name: str, version: int | None = None) -> EvalSet:
        """The stored set; the latest version when ``version`` is None."""
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise KeyError(f"eval set {name!r} does not exist under {self.root} (mine or import one first)")
            version = versions[-1]
        manifest = self._manifest(name, version)
        data = self.items_path(name, version).read_bytes()
        if _sha256(data) != manifest["items_sha256"]:
            raise EvalSetError(
                f"{self.items_path(name, version)} does not match the sha256 in its manifest: the file was "
                "modified after it was written. Eval sets are immutable; restore it or write a new version."
            )
        items = [EvalItem.from_dict(json.loads(line)) for line in data.decode("utf-8").splitlines() if line.strip()]
        return EvalSet(
            name=name,
            version=version,
            repo=manifest["repo"],
            items=items,
            created_at=manifest["created_at"],
            meta=manifest.get("meta") or {},
        )

    def list(self) -> list[EvalSetSummary]:
        """Every stored version of every set, by name then version."""
        if not self.root.is_dir():
            return []
        out = []
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name)):
            for version in self.versions(directory.name):
                m = self._manifest(directory.name, version)
                out.append(
                    EvalSetSummary(
                        name=directory.name,
                        version=version,
                        repo=m["repo"],
                        n_items=int(m["n_items"]),
                        created_at=m["created_at"],
                        items_sha256=m["items_sha256"],
                    )
                )
        return out

    # -- writing ----------------------------------------------------------------------------

    def add(self, evalset: EvalSet) -> EvalSet:
        """Store ``evalset`` and return it with its version.

        With ``version=None`` the set gets ``next_version`` — unless the latest stored version
        already holds the same items for the same repo, which is returned instead (re-running a
        miner on an unchanged repository does not pile up identical versions). With an explicit
        version, an existing version with identical items is a no-op and different items raise
        ``EvalSetExistsError``.
        """
        _validate_name(evalset.name)
        _check_items(evalset.items)
        data = _items_bytes(evalset.items)
        digest = _sha256(data)
        with self._lock(evalset.name):
            version = evalset.version
            if version is None:
                versions = self.versions(evalset.name)
                if versions:
                    latest = self._manifest(evalset.name, versions[-1])
                    if latest["items_sha256"] == digest and latest["repo"] == evalset.repo:
                        return self.get(evalset.name, versions[-1])
                version = (versions[-1] + 1) if versions else 1
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise EvalSetError(f"eval set versions are integers >= 1, got {version!r}")
            manifest_path = self.manifest_path(evalset.name, version)
            if manifest_path.exists():
                existing = json.loads(manifest_path.read_text())
                if existing["items_sha256"] == digest:
                    return self.get(evalset.name, version)
                raise EvalSetExistsError(
                    f"eval set {evalset.name!r} v{version} already exists with different items "
                    f"(stored sha256 {existing['items_sha256'][:12]}, new {digest[:12]}). Eval sets are immutable: "
                    f"write it as a new version (next is v{self.next_version(evalset.name)})."
                )
            _write_atomically(self.items_path(evalset.name, version), data)
            manifest = {
                "name": evalset.name,
                "version": version,
                "repo": evalset.repo,
                "created_at": evalset.created_at,
                "n_items": len(evalset.items),
                "items_file": self.items_path(evalset.name, version).name,
                "items_sha256": digest,
                "meta": evalset.meta,
            }
            _write_atomically(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
            return replace(evalset, version=version)

    def write(self, evalset: EvalSet) -> Path:
        """Store ``evalset`` (see ``add``) and return the path of its items file."""
        stored = self.add(evalset)
        assert stored.version is not None
        return self.items_path(stored.name, stored.version)

    # -- JSONL ------------------------------------------------------------------------------

    def import_jsonl(self, path: Path, name: str, repo: str) -> EvalSet:
        """Read a hand-written JSONL file into a new version of ``name`` (see ``parse_jsonl``)."""
        path = Path(path)
        items = parse_jsonl(path)
        evalset = EvalSet(
            name=_validate_name(name),
            version=None,
            repo=repo,
            items=items,
            created_at=_now(),
            meta={"imported_from": str(path.resolve()), "source_sha256": _sha256(path.read_bytes())},
        )
        return self.add(evalset)

    def export_jsonl(self, name: str, version: int | None, path: Path) -> Path:
        """Write the items of a stored version to ``path`` as JSONL (re-importable as is)."""
        evalset = self.get(name, version)
        _write_atomically(Path(path), _items_bytes(evalset.items))
        return Path(path)


def _check_items(items: list[EvalItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise EvalSetError(f"duplicate item id {item.id!r}: ids must be unique within an eval set")
        seen.add(item.id)


_ALLOWED_KEYS = frozenset({"id", "query", "gold_files", "gold_symbols", "source", "lexical_overlap"})


def parse_jsonl(path: Path) -> list[EvalItem]:
    """Validated items from a JSONL file; raises ``EvalSetImportError`` listing every bad line.

    Each non-blank line is an object with ``query`` (non-empty string) and ``gold_files``
    (non-empty list of repository-relative paths); optional ``gold_symbols`` (``"path::Name"``,
    the path being one of the gold files), ``id`` (default: 12 hex digits of the sha256 of the
    query and gold files) and ``source`` (default ``"hand"``). ``lexical_overlap`` is always
    recomputed.
    """
    errors: list[tuple[int, str]] = []
    items: list[EvalItem] = []
    ids: dict[str, int] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalSetImportError(Path(path), [(1, f"not UTF-8 text ({exc.reason})")]) from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append((lineno, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        problem = _row_problem(row)
        if problem:
            errors.append((lineno, problem))
            continue
        gold_files = list(row["gold_files"])
        item_id = row.get("id") or _sha256(json.dumps([row["query"], gold_files]).encode())[:12]
        if item_id in ids:
            errors.append((lineno, f"duplicate id {item_id!r} (first on line {ids[item_id]})"))
            continue
        ids[item_id] = lineno
        gold_symbols = list(row.get("gold_symbols") or [])
        items.append(
            EvalItem(
                id=item_id,
                query=row["query"].strip(),
                gold_files=gold_files,
                gold_symbols=gold_symbols,
                source=row.get("source") or "hand",
                lexical_overlap=lexical_overlap(row["query"], gold_files, gold_symbols),
            )
        )
    if not items and not errors:
        errors.append((1, "the file holds no items"))
    if errors:
        raise EvalSetImportError(Path(path), errors)
    return items


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    unknown = sorted(set(row) - _ALLOWED_KEYS)
    if unknown:
        return f"unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}"
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        return '"query" must be a non-empty string'
    files = row.get("gold_files")
    if not isinstance(files, list) or not files:
        return '"gold_files" must be a non-empty list of paths'
    for f in files:
        if not isinstance(f, str) or not f.strip() or f.startswith("/") or ".." in PurePosixPath(f).parts:
            return f'"gold_files" entries must be repository-relative paths, got {f!r}'
    symbols = row.get("gold_symbols", [])
    if symbols is None:
        symbols = []
    if not isinstance(symbols, list):
        return '"gold_symbols" must be a list of "path::Qualified.name" strings'
    for s in symbols:
        if not isinstance(s, str) or "::" not in s:
            return f'"gold_symbols" entries look like "path::Qualified.name", got {s!r}'
        sym_path, _, qualified = s.rpartition("::")
        if not qualified or sym_path not in files:
            return f'gold symbol {s!r} must name one of the gold files before "::" and a symbol after it'
    if "id" in row and (not isinstance(row["id"], str) or not row["id"].strip()):
        return '"id" must be a non-empty string'
    if "source" in row and not isinstance(row["source"], str):
        return '"source" must be a string'
    return None


# ---------------------------------------------------------------------------------------------
# Mining from git history
# ---------------------------------------------------------------------------------------------

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
    return " ".join(text.split()).strip(" ,;:-")


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
