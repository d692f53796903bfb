"""JSON log lines with secrets and personal data masked: one masking policy for every process.

The serving access log (``serving.logs``) and the agent runs' start/finish lines
(``codex_assets.agent``) both build their records here: ``ts`` and ``svc`` first, then the
caller's fields, every string field (except the ones the caller names as safe: ids, numbers it
computed) passed through :func:`mask`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from codex_core.secrets import redact

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


def mask(text: str) -> str:
    """Every credential shape the indexer masks (``codex_core.secrets``), then the log's own, broader
    rules: short bearer tokens, ``<secret name> is <value>``, e-mail addresses, API keys, random runs."""
    text = redact(text)
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def clean(value: Any) -> Any:
    """``value`` with every string in it masked (dicts and lists walked)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def json_record(svc: str, fields: dict[str, Any], *, unmasked: Iterable[str] = ()) -> dict[str, Any]:
    """``{"ts", "svc", **fields}`` with every field not in ``unmasked`` masked."""
    safe = set(unmasked)
    record: dict[str, Any] = {"ts": round(time.time(), 3), "svc": svc}
    for key, value in fields.items():
        record[key] = value if key in safe else clean(value)
    return record


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str, ensure_ascii=False)


def json_logger(name: str) -> logging.Logger:
    """The logger ``name``; when nobody configured it, one JSON line per message on stderr, not propagated
    (a root handler with its own format would wrap the JSON in a second, non-JSON line)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


AGENT_LOGGER, AGENT_SERVICE = "codex.agent", "codex-agent"
_UNMASKED_AGENT_FIELDS = ("run_id", "dagster_run_id", "commit", "duration_sec")  # ids and shas look like secrets


def log_run_event(event: str, **fields: object) -> None:
    """One masked JSON line of an agent run on the ``codex.agent`` logger (stderr unless configured):
    recipe runs (the ``agent_run`` job) and debug-agent runs (``feriactl agent fix``) alike."""
    record = json_record(AGENT_SERVICE, {"event": event, **fields}, unmasked=_UNMASKED_AGENT_FIELDS)
    json_logger(AGENT_LOGGER).info(json_line(record))
