"""Configuration files are read strictly: a key the reader does not know is an error that names it
(a typo such as ``contex_window`` must not silently fall back to a default)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def check_keys(data: Mapping[str, Any], known: Iterable[str], where: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming every key of ``data`` not in ``known`` (with the closest known key)."""
    allowed = sorted(known)
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise error(f"{where}: unknown key {', '.join(hints)}; known keys: {', '.join(allowed)}")
