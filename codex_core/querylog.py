"""Served-query log (JSONL under CODEX_HOME/serving): the reference and current windows of drift.

Holds no query text, only its shape: length, question style (``codex_core.query_style``), repo,
top language, scores, confidence, abstention. Lines written before the style was logged read
back with ``query_style=None``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

_LOCK = threading.Lock()
QUERY_LOG_FILE = "query_log.jsonl"  # under CODEX_HOME/serving


@dataclass(frozen=True)
class ServedQuery:
    ts: str  # ISO-8601 UTC
    repo: str | None
    query_length: int  # words
    language: str | None  # language of the top citation
    top_score: float
    confidence: float
    abstained: bool
    latency_ms: float
    query_style: str | None = None  # "question" | "commit" (None: logged before styles were)


class QueryLog:
    def __init__(self, path: Path):
        self.path = path

    def append(self, record: ServedQuery) -> None:
        line = json.dumps(asdict(record), sort_keys=True)
        with _LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def read(self, since: datetime | None = None) -> Iterator[ServedQuery]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = ServedQuery(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a torn last line from a crash is not worth failing a report over
                if since is None or datetime.fromisoformat(record.ts) >= since:
                    yield record


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
