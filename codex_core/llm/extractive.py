"""The answer given when no language model answers: the top snippets, each with a one-line summary.

Each line reads "`symbol` in path lines a–b: <first docstring or comment line, else the first code
line (usually the signature)> [path:a-b]", so the answer cites exactly the snippets it lists.
"""

from __future__ import annotations

import re

from codex_core.llm.types import ContextChunk

NOTHING_RETRIEVED = "I don't know — nothing relevant was retrieved for this question."
HEADER = (
    "No language model gave an answer citing the retrieved code, so here are the most relevant "
    "retrieved snippets (extractive answer):"
)
SUMMARY_CHARS = 140

_DOC_OPEN = re.compile(r'^(?:[rRbBuU]{0,2})("""|\'\'\')\s*(.*?)\s*(?:\1)?\s*$')
_COMMENT = re.compile(r"^(?:#+(?!!)|//+|/\*+|\*+(?!/)|--|;+|%+)\s*(.*?)\s*(?:\*/)?\s*$")
_DECORATOR = re.compile(r"^@\w")


def summarize(chunk: ContextChunk) -> str:
    """First docstring/comment line among the first lines of the snippet, else its first code line."""
    lines = [line.strip() for line in chunk.text.split("\n")]
    first_code: str | None = None
    for position, line in enumerate(lines[:20]):
        if not line:
            continue
        doc = _DOC_OPEN.match(line)
        if doc:
            text = doc.group(2) or next((rest for rest in lines[position + 1 : position + 4] if rest), "")
            text = text.strip("\"' ")
            if text:
                return _clip(text)
            continue
        comment = _COMMENT.match(line)
        if comment and not line.startswith("#!"):
            if comment.group(1) and not comment.group(1).startswith("-*-"):
                return _clip(comment.group(1))
            continue
        if _DECORATOR.match(line):
            continue
        if first_code is None:
            first_code = line
        elif position > 3:
            break  # past the signature: a docstring further down describes something else
    return _clip(first_code or "(empty snippet)")


# Code may contain text shaped like our citations ("[evil.py:1-999]"); a summary quoting it would
# look like a citation in the answer, so brackets are neutralised in summaries.
_BRACKETS = str.maketrans({"[": "(", "]": ")"})


def _clip(text: str) -> str:
    text = " ".join(text.split()).translate(_BRACKETS)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1].rstrip() + "…"


def describe(chunk: ContextChunk) -> str:
    where = f"{chunk.path} lines {chunk.start_line}–{chunk.end_line}"
    subject = f"`{chunk.symbol}` in {where}" if chunk.symbol else where
    return f"- {subject}: {summarize(chunk)} [{chunk.ref}]"


def extractive_answer(contexts: list[ContextChunk], limit: int = 3) -> tuple[str, list[str]]:
    """(answer text, cited refs). With no contexts: an honest "I don't know" citing nothing."""
    if not contexts:
        return NOTHING_RETRIEVED, []
    top: list[ContextChunk] = []
    for chunk in sorted(contexts, key=lambda c: c.score, reverse=True):
        if chunk.ref not in {c.ref for c in top}:
            top.append(chunk)
        if len(top) >= max(1, limit):
            break
    return "\n".join([HEADER, *(describe(c) for c in top)]), [c.ref for c in top]
