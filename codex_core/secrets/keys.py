"""Private keys: PEM blocks of every kind (RSA/EC/DSA/PKCS#8/ENCRYPTED/OPENSSH/PGP), one-line keys
with ``\\n`` escapes (service-account JSON), and PuTTY ``.ppk`` files.

The BEGIN/END markers stay (they are not secret and tell a reader what was there); the base64 body
is masked line by line. Certificates and public keys are left alone.
"""

from __future__ import annotations

import re

from codex_core.secrets._spans import REDACTED_PREFIX, Spans, line_bounds

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# One line of a key body as it appears in files and in code: indentation, an optional comment
# marker or quote, the base64, an optional "\n" escape, an optional closing quote, concatenation.
_PEM_BODY = re.compile(
    r"[ \t]*(?:#|//|\*|;)?[ \t]*(?:[bBrRuU]?[\"'`])?[ \t]*"
    r"(?P<b64>[A-Za-z0-9+/]+={0,2}|«redacted:private_key»)?"
    r"(?:\\r)?(?:\\n)?[\"'`]?[ \t]*[,+\\;)]*[ \t]*\r?"
)
_PEM_HEADER = re.compile(r"[ \t]*[\"'`]?(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset):[^\n]*")
_PEM_INLINE_BODY = re.compile(r"(?:\\[rn]|[A-Za-z0-9+/=\s]|«redacted:private_key»)+")
_PEM_EDGE = re.compile(r"[ \t]*[\"'`]?(?:\\[rn])*(?P<b64>[A-Za-z0-9+/]+={0,2})?(?:\\[rn])*[ \t]*")
_UNCONFIRMED_MIN_RUN = 40  # without an END marker, only lines that are clearly key material
# A PGP armor checksum line ("=AbCd") closes the body of a PGP private key block.
_PGP_CHECKSUM = re.compile(r"[ \t]*[\"'`]?=[A-Za-z0-9+/]{4}[\"'`]?[ \t]*[,+\\;)]*[ \t]*\r?")


def _mask_runs(text: str, start: int, end: int, spans: Spans, min_run: int) -> None:
    """Mask each base64 run in ``text[start:end]`` (``\\n`` escapes are not part of a run)."""
    for match in re.finditer(r"\\[rnt]|[A-Za-z0-9+/]+={0,2}", text[start:end]):
        if not match.group().startswith("\\") and len(match.group()) >= min_run:
            spans.add(start + match.start(), start + match.end(), "private_key")


def find_private_keys(text: str, spans: Spans) -> None:
    for begin in _PEM_BEGIN.finditer(text):
        line_start, line_end = line_bounds(text, begin.start())
        end_marker = _PEM_END.search(text, begin.end(), line_end)
        if end_marker is not None:  # the whole key on one line ("...\\nMIIE...\\n..." in JSON)
            inner = text[begin.end():end_marker.start()]
            if inner.strip() and _PEM_INLINE_BODY.fullmatch(inner) and REDACTED_PREFIX not in inner:
                spans.add(begin.end(), end_marker.start(), "private_key")
            continue
        body: list[tuple[int, int]] = []  # (start, end) of each base64 run of the following lines
        confirmed = False
        end_line: tuple[int, int, re.Match[str]] | None = None
        pos = line_end + 1
        while pos <= len(text):
            start, stop = pos, text.find("\n", pos)
            stop = len(text) if stop == -1 else stop
            line = text[start:stop]
            end_here = _PEM_END.search(line)
            if end_here is not None:
                confirmed, end_line = True, (start, stop, end_here)
                break
            body_match = _PEM_BODY.fullmatch(line)
            checksum = None if body_match is not None else _PGP_CHECKSUM.fullmatch(line)
            if checksum is not None:
                at = line.index("=")
                body.append((start + at, start + at + 5))
                pos = stop + 1
                continue
            if body_match is None and not _PEM_HEADER.fullmatch(line):
                break
            if body_match is not None and body_match.group("b64") and REDACTED_PREFIX not in body_match.group("b64"):
                body.append((start + body_match.start("b64"), start + body_match.end("b64")))
            pos = stop + 1
        min_run = 1 if confirmed else _UNCONFIRMED_MIN_RUN
        after_begin = text[begin.end():line_end]
        edge = _PEM_EDGE.fullmatch(after_begin.rstrip("\"'`,+ \t\r"))
        if edge is not None and edge.group("b64"):
            _mask_runs(text, begin.end(), line_end, spans, max(min_run, 4))
        for start, stop in body:
            if stop - start >= min_run:
                spans.add(start, stop, "private_key")
        if end_line is not None:
            start, _, marker = end_line
            before = text[start:start + marker.start()]
            edge = _PEM_EDGE.fullmatch(before.lstrip(" \t\"'`"))
            if edge is not None and edge.group("b64"):
                _mask_runs(text, start, start + marker.start(), spans, 1)



_PUTTY_LINES = re.compile(r"^[ \t]*Private-Lines:[ \t]*(\d{1,4})[ \t]*\r?$", re.MULTILINE)
_PUTTY_MAC = re.compile(r"^[ \t]*Private-(?:MAC|Hash):[ \t]*([0-9a-fA-F]{16,128})", re.MULTILINE)


def find_putty_keys(text: str, spans: Spans) -> None:
    """PuTTY ``.ppk``: the ``Private-Lines: N`` that follow the header, and the MAC."""
    for header in _PUTTY_LINES.finditer(text):
        pos = header.end() + 1
        for _ in range(int(header.group(1))):
            if pos > len(text):
                break
            stop = text.find("\n", pos)
            stop = len(text) if stop == -1 else stop
            run = re.match(r"[ \t]*([A-Za-z0-9+/]+={0,2})[ \t]*\r?$", text[pos:stop])
            if run is None:
                break
            spans.add(pos + run.start(1), pos + run.end(1), "private_key")
            pos = stop + 1
    for mac in _PUTTY_MAC.finditer(text):
        spans.add(mac.start(1), mac.end(1), "private_key")
