"""One JSON line per request, with secrets and personal data masked.

Fields: ``ts, svc, trace_id, tenant, route, model, lat_ms, confidence, admit, throttle, status``
plus ``method, path, queue, arm, commits_behind`` and a masked, clipped ``query`` preview.
API keys, answers and snippets are never logged. Every string field except the ids (``trace_id``,
``run_id`` of an agent run request) and ``ts`` goes through :func:`mask` (``codex_core.jsonlog``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from codex_core.jsonlog import json_logger, json_record, mask

__all__ = ["ACCESS_LOGGER", "SERVICE", "AccessLog", "access_record", "mask"]

SERVICE = "codex-serving"
ACCESS_LOGGER = "codex.serving.access"
QUERY_PREVIEW_CHARS = 80

_UNMASKED = frozenset({"ts", "trace_id", "run_id", "lat_ms", "confidence", "status", "admit", "commits_behind"})


def access_record(**fields: Any) -> dict[str, Any]:
    query = fields.pop("query", None)
    record = json_record(SERVICE, fields, unmasked=_UNMASKED)
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
    return json_logger(ACCESS_LOGGER)
