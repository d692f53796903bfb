"""One JSON line per request, with secrets and personal data masked.

Fields: ``ts, svc, trace_id, tenant, route, model, lat_ms, confidence, admit, throttle, status``
plus ``method, path, queue, arm, commits_behind`` and a masked, clipped ``query`` preview.
API keys, answers and snippets are never logged. Every string field except ``trace_id`` and
``ts`` goes through :func:`mask`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from codex_core.secrets import redact

SERVICE = "codex-serving"
ACCESS_LOGGER = "codex.serving.access"
QUERY_PREVIEW_CHARS = 80

_MASKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer ***"),
    (re.compile(r"\bpcx_[A-Za-z0-9_-]+"), "pcx_***"),
    (re.compile(
        r"(?i)\b(api[_-]?key|access[_-]?key|secret|token|passw(?:or)?d|pwd|authorization|cookie)"
        r"(\s*[:=]\s*|\s+is\s+)(\"[^\"]*\"|'[^']*'|\S+)"
    ), r"\1\2***"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "***@***"),
    # Anything else long and random-looking (hex / base64 runs of 32+ characters).
    (re.compile(r"\b[A-Za-z0-9+/_-]{32,}={0,2}"), "***"),
]
_UNMASKED = frozenset({"ts", "trace_id", "lat_ms", "confidence", "status", "admit", "commits_behind"})


def mask(text: str) -> str:
    """Every credential shape the indexer masks (``codex_core.secrets``), then the log's own, broader
    rules: short bearer tokens, ``<secret name> is <value>``, e-mail addresses, API keys, random runs."""
    text = redact(text)
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def access_record(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"ts": round(time.time(), 3), "svc": SERVICE}
    query = fields.pop("query", None)
    for key, value in fields.items():
        record[key] = value if key in _UNMASKED else _clean(value)
    if query:
        clipped = query if len(query) <= QUERY_PREVIEW_CHARS else query[:QUERY_PREVIEW_CHARS] + "…"
        record["query"] = mask(clipped)
    return record


class AccessLog:
    """Writes access records as JSON lines to the ``codex.serving.access`` logger (stderr by default)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or _default_logger()

    def emit(self, **fields: Any) -> dict[str, Any]:
        record = access_record(**fields)
        self.logger.info(json.dumps(record, default=str, ensure_ascii=False))
        return record


def _default_logger() -> logging.Logger:
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
