"""Read server-sent events from the lines of a ``text/event-stream`` body.

httpx has no SSE reader, and the format is small: ``field: value`` lines, a blank line ends an event,
``data`` lines of one event are joined with newlines, lines starting with ``:`` are comments. One
addition: llama.cpp's ``llama-server`` reports an error raised mid-stream as an ``error: {...}`` line
instead of ``event: error`` + ``data: {...}``; both come out as an ``error`` event here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEvent:
    event: str  # "message" unless the stream named it
    data: str


def read_events(lines: Iterable[str]) -> Iterator[SSEvent]:
    """Events in order; ``lines`` without their line endings (``httpx.Response.iter_lines()``)."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield SSEvent(event, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value or "message"
        elif field == "error":
            event = "error"
            data.append(value)
    if data:  # a stream cut off without its final blank line
        yield SSEvent(event, "\n".join(data))
