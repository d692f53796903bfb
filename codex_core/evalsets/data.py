"""Evaluation sets, the data: items and sets, their errors, canonical bytes and lexical overlap.

:class:`EvalItem` (one query and the gold files/symbols a correct answer cites) and
:class:`EvalSet` are what the registry (:mod:`.registry`) stores and the generators produce
(:mod:`.mining` from commit messages, :mod:`.plain` from the code's own documentation);
:func:`lexical_overlap` flags queries that name their own gold.

Every item has a ``style``: ``"mined"`` (a cleaned commit message) or ``"plain"`` (a question a
person would type: generated from docstrings and README sections, or written by hand). Quality and
calibration are reported per style, because users ask plain questions and a confidence model
fitted on commit messages alone is miscalibrated on them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

MINED = "mined"
PLAIN = "plain"
STYLES = (MINED, PLAIN)


def default_style(source: str) -> str:
    """The style of an item stored before items carried one: mined from git history, else plain."""
    return MINED if source.startswith("git:") else PLAIN


@dataclass(frozen=True)
class EvalItem:
    id: str
    query: str
    gold_files: list[str]
    gold_symbols: list[str]  # "path::Qualified.name"; may be empty
    source: str  # "git:<sha>", "plain:<kind>:<path>:<first>-<last line>" or "hand"
    lexical_overlap: bool
    style: str = MINED  # "mined" | "plain" (STYLES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalItem:
        source = str(data.get("source") or "hand")
        return cls(
            id=str(data["id"]),
            query=str(data["query"]),
            gold_files=[str(p) for p in data["gold_files"]],
            gold_symbols=[str(s) for s in data.get("gold_symbols") or []],
            source=source,
            lexical_overlap=bool(data.get("lexical_overlap", False)),
            style=str(data.get("style") or default_style(source)),
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
