"""How far behind its repository's HEAD each published index is.

``commits_behind = git rev-list --count <indexed commit>..HEAD`` in the repository's work tree
(the registered path, or the clone kept under CODEX_HOME for URL sources), cached for ``ttl_s``
seconds per repository. ``None`` when it cannot be known: no work tree, git failing, or the indexed
commit no longer in the repository (history rewritten).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codex_core.git import GitError, run_git

DEFAULT_TTL_S = 5.0


class FreshnessTracker:
    def __init__(self, worktree_of: Callable[[str], Path | None], ttl_s: float = DEFAULT_TTL_S):
        self._worktree_of = worktree_of
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str, dict[str, Any]]] = {}  # repo -> (at, indexed commit, info)

    def of(self, repo: str, indexed_commit: str) -> dict[str, Any]:
        """``{commit, head, commits_behind}`` of ``repo``; ``head`` / ``commits_behind`` may be None."""
        now = time.monotonic()
        held = self._cache.get(repo)
        if held is not None and held[1] == indexed_commit and now - held[0] < self.ttl_s:
            return held[2]
        info = self._measure(repo, indexed_commit)
        with self._lock:
            self._cache[repo] = (now, indexed_commit, info)
        return info

    def _measure(self, repo: str, indexed_commit: str) -> dict[str, Any]:
        info: dict[str, Any] = {"commit": indexed_commit, "head": None, "commits_behind": None}
        worktree = self._worktree_of(repo)
        if worktree is None or not worktree.exists():
            return info
        try:
            info["head"] = run_git(worktree, "rev-parse", "--verify", "HEAD^{commit}", timeout=5).decode().strip()
            count = run_git(worktree, "rev-list", "--count", f"{indexed_commit}..HEAD", timeout=5)
            info["commits_behind"] = int(count.decode().strip())
        except (GitError, ValueError, OSError, subprocess.TimeoutExpired):
            pass  # unknown freshness must never fail an answer
        return info
