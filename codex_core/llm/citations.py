"""Find ``[path:start-end]`` citations in a model's answer and keep only retrieved ones.

Rules, applied to each ref inside square brackets (``[a.py:1-4]``, ``[a.py:1-4, b.py:7-9]``,
``[a.py:12]`` = ``a.py:12-12``):
- a ref equal to a retrieved snippet's ref is kept;
- a ref whose lines lie inside exactly one retrieved snippet of the same path is rewritten to that
  snippet's ref (the citation stays exact: it names a span that was retrieved and verified);
- anything else is removed from the text and reported in ``rejected``.
Brackets that are not citations (``items[0]``, ``[link](url)``) are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from codex_core.llm.types import ContextChunk

# One level of nested brackets is allowed inside, so a file named "we ird [v2].py" can be cited.
_BRACKET = re.compile(r"\[((?:[^\[\]\n]|\[[^\[\]\n]*\]){1,600})\]")
_REF = re.compile(r"^\s*`?(?P<path>[^\s`,;][^,;`]*?):(?P<start>\d+)(?:\s*[-–—]\s*(?P<end>\d+))?`?\s*$")
_SPLIT = re.compile(r"\s*[,;]\s*")
_REMOVED = "\x00"
_DONT_KNOW = re.compile(r"^\W*(i\s+(?:don['’]?t|do\s+not)\s+know)\b", re.IGNORECASE)


@dataclass
class CitationCheck:
    text: str  # the answer with invalid refs removed and sub-ranges snapped to retrieved refs
    cited: list[str] = field(default_factory=list)  # retrieved refs cited, first-appearance order
    rejected: list[str] = field(default_factory=list)  # refs that were not retrieved
    abstained: bool = False  # the answer says "I don't know"

    @property
    def acceptable(self) -> bool:
        return bool(self.cited) or self.abstained


def _parse_ref(part: str) -> tuple[str, int, int] | None:
    match = _REF.match(part)
    if not match:
        return None
    path = match.group("path").strip()
    if path.startswith("./"):
        path = path[2:]
    start = int(match.group("start"))
    end = int(match.group("end") or start)
    return path, start, end


def parse_refs(text: str) -> list[str]:
    """Every ref written in brackets, normalised to ``path:start-end``, in order (may repeat)."""
    refs: list[str] = []
    for bracket in _BRACKET.finditer(text):
        parts = [_parse_ref(p) for p in _SPLIT.split(bracket.group(1))]
        if parts and all(parts):
            refs.extend(f"{path}:{start}-{end}" for path, start, end in parts)  # type: ignore[misc]
    return refs


def check_citations(text: str, contexts: list[ContextChunk]) -> CitationCheck:
    by_ref = {c.ref: c for c in contexts}
    by_path: dict[str, list[ContextChunk]] = {}
    for chunk in contexts:
        by_path.setdefault(chunk.path, []).append(chunk)
    cited: list[str] = []
    rejected: list[str] = []

    def resolve(path: str, start: int, end: int) -> str | None:
        ref = f"{path}:{start}-{end}"
        if ref in by_ref:
            return ref
        enclosing = [c for c in by_path.get(path, []) if c.start_line <= start <= end <= c.end_line]
        if len(enclosing) == 1:
            return enclosing[0].ref
        return None

    def replace(bracket: re.Match[str]) -> str:
        parts = [_parse_ref(p) for p in _SPLIT.split(bracket.group(1))]
        if not parts or not all(parts):
            return bracket.group(0)  # not a citation
        kept: list[str] = []
        for path, start, end in parts:  # type: ignore[misc]
            resolved = resolve(path, start, end)
            if resolved is None:
                rejected.append(f"{path}:{start}-{end}")
                continue
            if resolved not in cited:
                cited.append(resolved)
            if resolved not in kept:
                kept.append(resolved)
        return "".join(f"[{ref}]" for ref in kept) or _REMOVED

    # A removed citation takes the blanks before it along: "foo [bad:1-2]." -> "foo."
    cleaned = re.sub(r"[ \t]*" + _REMOVED, "", _BRACKET.sub(replace, text.replace(_REMOVED, ""))).strip()
    return CitationCheck(
        text=cleaned,
        cited=cited,
        rejected=rejected,
        abstained=bool(_DONT_KNOW.match(text.strip())),
    )
