"""Secret spans found in one text, and what a finding reports."""

from __future__ import annotations

REDACTED_PREFIX = "«redacted:"


def redaction(kind: str) -> str:
    """The text that replaces a secret of ``kind``."""
    return f"{REDACTED_PREFIX}{kind}»"


class Spans:
    """Secret spans as absolute (start, end, kind) offsets; none of them contains a newline."""

    def __init__(self, text: str):
        self.text = text
        self.items: list[tuple[int, int, str]] = []

    def add(self, start: int, end: int, kind: str) -> None:
        if end > start and "\n" not in self.text[start:end]:
            self.items.append((start, end, kind))


def line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end == -1 else end
