"""A git history built commit by commit, with controlled authors and strictly increasing dates."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class HistoryBuilder:
    """Commits with controlled authors and strictly increasing dates (so log order is fixed)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.tick = 0
        repo.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def env(self, author: tuple[str, str]) -> dict[str, str]:
        self.tick += 1
        date = f"@{1_700_000_000 + self.tick * 60} +0000"
        name, email = author
        return {
            **os.environ,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": "Test Author",
            "GIT_COMMITTER_EMAIL": "author@example.com",
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_DATE": date,
        }

    def git(self, *args: str, author: tuple[str, str] = ("Test Author", "author@example.com")) -> str:
        return subprocess.run(
            ["git", "-C", str(self.repo), *args], check=True, capture_output=True, text=True, env=self.env(author)
        ).stdout.strip()

    def write(self, path: str, text: str) -> None:
        target = self.repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def edit(self, path: str, old: str, new: str) -> None:
        text = (self.repo / path).read_text()
        assert old in text, f"{old!r} not in {path}"
        self.write(path, text.replace(old, new, 1))

    def commit(self, message: str, author: tuple[str, str] = ("Test Author", "author@example.com")) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, author=author)
        return self.git("rev-parse", "HEAD")
