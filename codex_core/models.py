"""Data contracts shared by every stage: files, chunks, graph rows and point ids.

Line numbers are 1-based and inclusive everywhere. A span's text is exactly
``"\\n".join(file_lines[start_line - 1 : end_line])`` where ``file_lines = text.split("\\n")``
of the file as decoded (UTF-8 with replacement).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Stable namespace so point ids survive process restarts and machines.
POINT_NAMESPACE = uuid.UUID("6f1d3c52-5b0e-4c1e-9a57-3c0de5c0de00")


def content_hash(text: str) -> str:
    """sha256 hex of the UTF-8 text; the identity of a chunk's content and of a cited span."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def point_id(repo: str, path: str, chunk_hash: str) -> str:
    """Deterministic vector-store id: re-running any stage upserts the same ids."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{repo}\x1f{path}\x1f{chunk_hash}"))


def span_text(lines: list[str], start_line: int, end_line: int) -> str:
    """Text of the 1-based inclusive span ``start_line..end_line`` of ``lines``."""
    return "\n".join(lines[start_line - 1 : end_line])


@dataclass(frozen=True)
class ChunkSpan:
    """A piece of one file produced by the chunker, before repo/commit are attached."""

    path: str
    language: str
    symbol: str | None  # qualified name, e.g. "Parser.parse_line"; None for windows
    kind: str  # function | method | class | module | section | window | ...
    start_line: int
    end_line: int
    text: str


@dataclass(frozen=True)
class Location:
    path: str
    start_line: int
    end_line: int
    symbol: str | None = None


@dataclass
class Chunk:
    """A chunk as stored in the catalog and (once deduplicated) in the vector index."""

    repo: str
    commit: str
    path: str
    language: str
    symbol: str | None
    kind: str
    start_line: int
    end_line: int
    text: str
    content_hash: str
    # Other places holding the same or near-identical text (filled by dedup).
    duplicates: list[Location] = field(default_factory=list)

    @classmethod
    def from_span(cls, span: ChunkSpan, repo: str, commit: str) -> Chunk:
        return cls(
            repo=repo,
            commit=commit,
            path=span.path,
            language=span.language,
            symbol=span.symbol,
            kind=span.kind,
            start_line=span.start_line,
            end_line=span.end_line,
            text=span.text,
            content_hash=content_hash(span.text),
        )

    @property
    def point_id(self) -> str:
        return point_id(self.repo, self.path, self.content_hash)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["duplicates"] = [asdict(d) for d in self.duplicates]
        row["point_id"] = self.point_id
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Chunk:
        dups = [Location(**d) for d in (row.get("duplicates") or [])]
        return cls(
            repo=row["repo"],
            commit=row["commit"],
            path=row["path"],
            language=row["language"],
            symbol=row.get("symbol") or None,
            kind=row["kind"],
            start_line=int(row["start_line"]),
            end_line=int(row["end_line"]),
            text=row["text"],
            content_hash=row["content_hash"],
            duplicates=dups,
        )


@dataclass(frozen=True)
class Definition:
    """A symbol defined in a file (function, method, class, struct, interface, trait, ...)."""

    symbol: str  # qualified name, same rule as ChunkSpan.symbol
    name: str  # last component
    kind: str
    path: str
    language: str
    start_line: int
    end_line: int


@dataclass(frozen=True)
class Edge:
    """A relation found in code: ``from_symbol`` --type--> ``to_symbol``.

    ``type`` is one of ``calls``, ``imports``, ``inherits``. ``from_symbol`` is the qualified
    name of the innermost enclosing definition, or ``<module>`` at file level. ``to_path`` is
    set when the target was resolved to a definition inside the repository.
    """

    from_symbol: str
    to_symbol: str
    type: str
    path: str
    line: int
    to_path: str | None = None
    resolved: bool = False
