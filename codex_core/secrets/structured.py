"""Secrets found by the structure around them rather than by their shape.

- connection strings: ``Password=…;`` in ADO.NET/ODBC strings, credentials in URL query strings
  (``?password=…``, ``&access_token=…``, ``&sig=…``);
- ``.netrc``: ``machine H login U password P`` (also such a line echoed from a script);
- YAML block scalars under a credential name (``password: |`` and the indented lines below);
- Kubernetes ``kind: Secret`` manifests (YAML or JSON): every value under ``data:``/``stringData:``;
- Terraform state: values at the paths each resource lists in ``sensitive_attributes`` and the
  values of sensitive outputs (wherever that exact value appears in the file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from urllib.parse import unquote

from codex_core.secrets._spans import REDACTED_PREFIX, Spans, line_bounds
from codex_core.secrets.names import classify_name, is_placeholder, looks_random

_BLOCK_INDICATOR = re.compile(r"[|>][-+0-9]*")


def _lines_from(text: str, pos: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each line from ``pos`` on, end excluding the newline."""
    while pos <= len(text):
        stop = text.find("\n", pos)
        stop = len(text) if stop == -1 else stop
        yield pos, stop
        pos = stop + 1


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _mask_block(text: str, after: int, indent: int, spans: Spans, kind: str) -> int:
    """Mask every line deeper than ``indent`` from ``after`` on (blank lines may sit inside the
    block); returns where the block ends."""
    end = after
    for start, stop in _lines_from(text, after):
        line = text[start:stop].rstrip("\r")
        if not line.strip():
            continue
        if _indent(line) <= indent:
            break
        if REDACTED_PREFIX not in line:
            spans.add(start + _indent(line), start + len(line), kind)
        end = stop + 1
    return end


# --------------------------------------------------------------------------- connection strings

_CONN_PASSWORD = re.compile(
    r"(?i)(?<![A-Za-z0-9_?&])(?:password|pwd)[ \t]*=[ \t]*(?![\"' ])([^;\"'\n]{3,200}?)[ \t]*(?=;|[\"']|\r?$)"
)
_CONN_CONTEXT = re.compile(
    r"(?i)(?:server|data source|host|hostname|user id|userid|uid|user|username|database|initial catalog|address|"
    r"addr|dsn|driver|provider|port)[ \t]*="
)
_URL_QUERY = re.compile(r"[?&](?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,40})=(?P<value>[^&\s'\"#<>`\\)]{4,400})")


def _at_needles(pattern: re.Pattern[str], text: str, lowered: str, needles: tuple[str, ...]) -> Iterator[re.Match[str]]:
    """``pattern`` tried only where a needle starts (much faster than a scan of a large file)."""
    for needle in needles:
        at = lowered.find(needle)
        while at != -1:
            match = pattern.match(text, at)
            if match is not None:
                yield match
            at = lowered.find(needle, at + 1)


def find_connection_strings(text: str, lowered: str, spans: Spans) -> None:
    if "password" in lowered or "pwd" in lowered:
        for match in _at_needles(_CONN_PASSWORD, text, lowered, ("password", "pwd")):
            start, stop = line_bounds(text, match.start())
            value = match.group(1)
            if ";" in text[start:stop] and _CONN_CONTEXT.search(text, start, stop) and not is_placeholder(value):
                spans.add(match.start(1), match.end(1), "connection_string_password")
    if "?" not in text and "&" not in text:
        return
    for match in _URL_QUERY.finditer(text):
        kind = classify_name(match.group("name"))
        value = match.group("value")
        if kind is None or is_placeholder(value, match.group("name")) or REDACTED_PREFIX in value:
            continue
        if kind == "high_entropy_secret" and not looks_random(unquote(value).rstrip("=")):
            continue
        spans.add(match.start("value"), match.end("value"), "url_query_secret")


# --------------------------------------------------------------------------- .netrc

_NETRC_NAMES = frozenset({".netrc", "_netrc", "netrc"})
_NETRC_SECRET = re.compile(r"(?<![^ \t\"'\n])(?:password|passwd|account)[ \t]+([^\s\"'#]{3,256})")
_NETRC_LINE = re.compile(r"machine[ \t]+[\w.:-]+[ \t]+(?:login[ \t]+\S+[ \t]+)?password[ \t]+\S")


def find_netrc(text: str, lowered: str, spans: Spans, path: str | None) -> None:
    """In a netrc file every ``password``/``account`` token; elsewhere only on ``machine … login …``
    lines (a netrc written by a script or a CI step)."""
    whole_file = path is not None and PurePosixPath(path).name.lower() in _NETRC_NAMES
    if whole_file:
        regions = [(0, len(text))]
    elif "machine" in lowered:
        regions = [line_bounds(text, m.start()) for m in _at_needles(_NETRC_LINE, text, lowered, ("machine",))]
    else:
        return
    for start, stop in regions:
        for match in _NETRC_SECRET.finditer(text, start, stop):
            if not is_placeholder(match.group(1), "password"):
                spans.add(match.start(1), match.end(1), "netrc_password")


# --------------------------------------------------------------------------- YAML block scalars

_YAML_BLOCK_KEY = re.compile(
    r"(?P<indent>[ \t]*)(?:-[ \t]+)?[\"']?(?P<name>[A-Za-z_][\w.-]{0,100})[\"']?[ \t]*:[ \t]*[|>][-+0-9]*[ \t]*"
    r"(?:#[^\n]*)?\r?",
)
_YAML_BLOCK_INDICATOR = re.compile(r":[ \t]*[|>][-+0-9]*[ \t]*(?:#[^\n]*)?\r?$", re.MULTILINE)


def find_yaml_blocks(text: str, spans: Spans) -> None:
    """``password: |`` (or ``>-``…) under a credential name: the indented lines below are the value."""
    for indicator in _YAML_BLOCK_INDICATOR.finditer(text):
        start, stop = line_bounds(text, indicator.start())
        match = _YAML_BLOCK_KEY.fullmatch(text, start, stop)
        if match is None:
            continue
        kind = classify_name(match.group("name"), True)
        if kind in ("password", "assigned_secret"):
            _mask_block(text, match.end() + 1, len(match.group("indent")), spans, kind)


# --------------------------------------------------------------------------- Kubernetes secrets

_K8S_KIND = re.compile(r"[ \t]*[\"']?kind[\"']?[ \t]*:[ \t]*[\"']?Secret[\"']?[ \t]*,?[ \t]*\r?")
_K8S_DOC_BREAK = re.compile(r"^---", re.MULTILINE)
_K8S_DATA = re.compile(r"^(?P<indent>[ \t]*)[\"']?(?:data|stringData)[\"']?[ \t]*:[ \t]*\{?[ \t]*\r?$", re.MULTILINE)
_K8S_ENTRY = re.compile(
    r"(?P<indent>[ \t]*)(?P<key>\"[^\"\n]+\"|'[^'\n]+'|[^\s:\"'{}#][^\s:]*)[ \t]*:[ \t]*"
    r"(?P<value>[^\n]*?)[ \t]*,?[ \t]*\r?"
)


def find_kubernetes_secrets(text: str, spans: Spans) -> None:
    lines = (line_bounds(text, at.start()) for at in re.finditer("Secret", text))
    kinds = [m for m in (_K8S_KIND.fullmatch(text, *bounds) for bounds in lines) if m is not None]
    if not kinds:
        return
    breaks = [0, *(m.start() for m in _K8S_DOC_BREAK.finditer(text)), len(text) + 1]
    documents = [(a, b) for a, b in zip(breaks, breaks[1:], strict=False)
                 if any(a <= k.start() < b for k in kinds)]
    for doc_start, doc_end in documents:
        for data in _K8S_DATA.finditer(text, doc_start, min(doc_end, len(text))):
            indent = len(data.group("indent"))
            pos = data.end() + 1
            for start, stop in _lines_from(text, pos):
                if start >= doc_end:
                    break
                line = text[start:stop].rstrip("\r")
                if not line.strip() or line.strip() in ("}", "},"):
                    if line.strip().startswith("}") and _indent(line) <= indent + 2:
                        break
                    continue
                if _indent(line) <= indent:
                    break
                entry = _K8S_ENTRY.fullmatch(text, start, stop)
                if entry is None:
                    continue
                value = entry.group("value")
                if _BLOCK_INDICATOR.fullmatch(value):
                    _mask_block(text, stop + 1, len(entry.group("indent")), spans, "kubernetes_secret")
                    continue
                bare = value.strip("\"'")
                if bare and not (bare.startswith(("{{", "${", "$(")) or REDACTED_PREFIX in bare):
                    offset = entry.start("value") + (len(value) - len(value.lstrip("\"'")))
                    spans.add(offset, offset + len(bare), "kubernetes_secret")


# --------------------------------------------------------------------------- Terraform state


def _string_leaves(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _string_leaves(item)


def _at_path(attributes: object, steps: list) -> object:
    node = attributes
    for step in steps:
        key = step.get("value") if isinstance(step, dict) else step
        if isinstance(node, dict) and isinstance(key, str):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            return None
    return node


def _sensitive_values(state: dict) -> set[str]:
    values: set[str] = set()
    for output in (state.get("outputs") or {}).values():
        if isinstance(output, dict) and output.get("sensitive"):
            values.update(_string_leaves(output.get("value")))
    for resource in state.get("resources") or []:
        for instance in (resource.get("instances") or []) if isinstance(resource, dict) else []:
            if not isinstance(instance, dict):
                continue
            attributes = instance.get("attributes") or {}
            for path in instance.get("sensitive_attributes") or []:
                steps = path if isinstance(path, list) else [path]
                values.update(_string_leaves(_at_path(attributes, steps)))
    return {v for v in values if len(v) >= 4 and not is_placeholder(v)}


def find_terraform_state(text: str, spans: Spans, path: str | None) -> None:
    name = PurePosixPath(path).name.lower() if path else ""
    if not (name.endswith((".tfstate", ".tfstate.backup")) or '"terraform_version"' in text[:2000]):
        return
    try:
        state = json.loads(text)
    except ValueError:
        return
    if not isinstance(state, dict):
        return
    for value in sorted(_sensitive_values(state), key=len, reverse=True):
        plain = json.dumps(value)
        # As it may be written in the file, quotes included: ASCII-escaped, raw UTF-8, or Go's
        # encoding/json (Terraform's own), which also escapes <, > and &.
        go = plain.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        for encoded in {plain, json.dumps(value, ensure_ascii=False), go}:
            at = text.find(encoded)
            while at != -1:
                spans.add(at + 1, at + len(encoded) - 1, "terraform_state_secret")
                at = text.find(encoded, at + len(encoded))
