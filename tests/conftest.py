"""Shared fixtures: real git repositories built on disk, the real MiniLM embedder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=GIT_ENV
    ).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


PY_PARSER = '''"""Parsing of configuration lines."""

import re

KEY_VALUE = re.compile(r"^(\\w+)\\s*=\\s*(.*)$")


class ConfigParser:
    """Reads key = value lines into a dictionary."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.values: dict[str, str] = {}

    def parse_line(self, line: str) -> None:
        match = KEY_VALUE.match(line.strip())
        if match is None:
            if self.strict:
                raise ValueError(f"not a key = value line: {line!r}")
            return
        self.values[match.group(1)] = match.group(2)

    def parse(self, text: str) -> dict[str, str]:
        for line in text.splitlines():
            self.parse_line(line)
        return self.values
'''

PY_RETRY = '''import time


def retry_with_backoff(fn, attempts: int = 5, base_delay: float = 0.1):
    """Call fn until it succeeds, sleeping exponentially longer between failed attempts."""
    for attempt in range(attempts):
        try:
            return fn()
        except ConnectionError:
            if attempt == attempts - 1:
                raise
            time.sleep(base_delay * (2 ** attempt))
'''

# The same function again in another module: dedup must store it once with both locations.
PY_RETRY_COPY = PY_RETRY

JS_CART = '''export class ShoppingCart {
  constructor() {
    this.items = [];
  }

  addItem(name, price, quantity = 1) {
    this.items.push({ name, price, quantity });
  }

  total() {
    return this.items.reduce((sum, item) => sum + item.price * item.quantity, 0);
  }
}

export const formatPrice = (cents) => `$${(cents / 100).toFixed(2)}`;
'''

GO_SERVER = '''package server

import "net/http"

type HealthHandler struct {
	Version string
}

func (h *HealthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("ok " + h.Version))
}
'''

RUST_LRU = '''use std::collections::HashMap;

pub struct LruCache {
    capacity: usize,
    entries: HashMap<String, String>,
    order: Vec<String>,
}

impl LruCache {
    pub fn new(capacity: usize) -> Self {
        LruCache { capacity, entries: HashMap::new(), order: Vec::new() }
    }

    pub fn put(&mut self, key: String, value: String) {
        if self.entries.len() >= self.capacity {
            let oldest = self.order.remove(0);
            self.entries.remove(&oldest);
        }
        self.order.push(key.clone());
        self.entries.insert(key, value);
    }
}
'''

README = '''# Demo project

A small project used by the Precision Codex tests.

## Configuration

Settings are read by `ConfigParser` from `key = value` lines.

## Networking

Transient connection errors are retried with exponential backoff.
'''


def build_fixture_repo(root: Path) -> Path:
    """A multi-language repo with everything ingestion must skip or survive."""
    repo = root / "demo"
    (repo / "app").mkdir(parents=True)
    (repo / "web").mkdir()
    (repo / "server").mkdir()
    (repo / "cache").mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text(README)
    (repo / "app" / "config_parser.py").write_text(PY_PARSER)
    (repo / "app" / "retry.py").write_text(PY_RETRY)
    (repo / "app" / "retry_copy.py").write_text(PY_RETRY_COPY)
    (repo / "web" / "cart.js").write_text(JS_CART)
    (repo / "server" / "health.go").write_text(GO_SERVER)
    (repo / "cache" / "lru.rs").write_text(RUST_LRU)
    # Must be skipped, each for its own reason:
    (repo / "logo.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (repo / "big.txt").write_text(("x = 1\n" * 400_000)[: 2 * 1024 * 1024])
    (repo / "outside_link").symlink_to("/etc/hostname")
    (repo / "parent_link").symlink_to("../../somewhere")
    # Must be indexed despite invalid UTF-8:
    (repo / "app" / "legacy.py").write_bytes(
        b"# -*- coding: latin-1 -*-\nGREETING = 'caf\xe9'\n\n\ndef greet():\n    return GREETING\n"
    )
    commit_all(repo, "Initial demo project")
    return repo


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    return build_fixture_repo(tmp_path)


@pytest.fixture
def repo_factory(tmp_path: Path) -> Callable[[], Path]:
    counter = iter(range(1000))

    def make() -> Path:
        return build_fixture_repo(tmp_path / f"r{next(counter)}")

    return make


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server started in a temporary directory for the session and stopped at the end
    (tests/support/postgres.py); tests that need it skip, saying why, where the server binaries are absent.
    Each test creates its own database on it."""
    from tests.support.postgres import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()
