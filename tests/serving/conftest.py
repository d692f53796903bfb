"""Serving fixtures: two real repositories ingested once per session by the real assets.

``demo`` is the shared multi-language fixture repo; ``billing`` is a second, unrelated Python
repository, so tenant isolation can be tested with a query that matches one repo's code exactly.
Tests that change serving state (tenants, kill-switch, canary) use their own ``state_dir``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from codex_core.embedding import SentenceTransformerEmbedder
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from serving.app import create_app
from serving.engine import QueryEngine
from serving.logs import AccessLog
from serving.quotas import QuotaConfig, quota_config_from_dict
from tests.conftest import build_fixture_repo, commit_all, git
from tests.support.ingest import ingest
from tests.support.llm import offline_answerer

BILLING_INVOICE = '''"""Invoices and their taxes."""


def compute_invoice_tax(subtotal_cents: int, region: str) -> int:
    """Value-added tax owed on an invoice subtotal, by tax region."""
    rates = {"eu": 0.20, "uk": 0.20, "texas": 0.0825}
    return round(subtotal_cents * rates.get(region, 0.0))


class LedgerEntry:
    """One line of the general ledger: an account debited or credited."""

    def __init__(self, account: str, amount_cents: int):
        self.account = account
        self.amount_cents = amount_cents

    def is_debit(self) -> bool:
        return self.amount_cents > 0
'''

BILLING_DUNNING = '''"""Reminders for unpaid invoices."""

REMINDER_DAYS = (7, 14, 30)


def next_reminder(days_overdue: int) -> int | None:
    """The next dunning reminder day for an overdue invoice, or None after the last one."""
    for day in REMINDER_DAYS:
        if days_overdue < day:
            return day
    return None
'''

# Query text copied from billing's code: the strongest possible pull towards the billing repo.
BILLING_EXACT = "def compute_invoice_tax(subtotal_cents: int, region: str) -> int: rates eu uk texas"
DEMO_EXACT = "total() { return this.items.reduce((sum, item) => sum + item.price * item.quantity, 0); }"

PERMISSIVE_QUOTAS: dict[str, Any] = {
    "queues": {
        "fast": {"concurrency": 2, "max_waiting": 64, "max_wait_s": 30},
        "batch": {"concurrency": 1, "max_waiting": 64, "max_wait_s": 30},
    },
    "defaults": {
        "max_inflight": 64,
        "fast": {"rate": 1000, "burst": 1000, "max_inflight": 64},
        "batch": {"rate": 1000, "burst": 1000, "max_inflight": 64},
    },
}


def build_billing_repo(root: Path) -> Path:
    repo = root / "billing"
    (repo / "billing").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "billing" / "invoice.py").write_text(BILLING_INVOICE)
    (repo / "billing" / "dunning.py").write_text(BILLING_DUNNING)
    commit_all(repo, "Billing")
    return repo


@dataclass(frozen=True)
class Corpus:
    home: Path
    repos: dict[str, Path]


def ingest_into(home: Path, name: str, repo: Path) -> None:
    assert ingest(home, repo, name=name).success


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("serving-two-repos")
    home = root / "home"
    demo = build_fixture_repo(root)
    billing = build_billing_repo(root)
    ingest_into(home, "demo", demo)
    ingest_into(home, "billing", billing)
    return Corpus(home, {"demo": demo, "billing": billing})


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """Loaded once: each test's engine reuses the model instead of loading it again."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def make_engine(corpus, embedder) -> Callable[..., QueryEngine]:
    def make(home: Path | None = None, **kwargs: Any) -> QueryEngine:
        kwargs.setdefault("answerer", offline_answerer())
        kwargs.setdefault("abstain_below", 0.0)
        return QueryEngine(CodexHome(home or corpus.home), embedder=embedder, **kwargs)

    return make


class CapturedLog:
    """The JSON access log lines of one app, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"codex.serving.access.test.{id(self)}")
        self.logger.handlers[:] = [logging.StreamHandler(self.stream)]
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def make_app(make_engine, tmp_path) -> Iterator[Callable[..., Any]]:
    """``make_app(quotas=..., **create_app kwargs)`` -> (app, captured log); state in ``tmp_path/state``."""

    def make(*, quotas: QuotaConfig | dict | None = None, engine_kwargs: dict | None = None, home: Path | None = None,
             **kwargs: Any):
        log = CapturedLog()
        if isinstance(quotas, dict) or quotas is None:
            quotas = quota_config_from_dict(quotas or PERMISSIVE_QUOTAS)
        kwargs.setdefault("state_dir", tmp_path / "state")
        kwargs.setdefault("env", {})
        app = create_app(lambda: make_engine(home, **(engine_kwargs or {})), quotas=quotas,
                         access_log=AccessLog(log.logger), **kwargs)
        return app, log

    yield make


def copy_home(corpus: Corpus, target: Path) -> tuple[Path, dict[str, Path]]:
    """A private copy of the ingested home and its repositories (for tests that commit or break things)."""
    home = target / "home"
    shutil.copytree(corpus.home, home)
    repos = {}
    for name, path in corpus.repos.items():
        repos[name] = target / name
        shutil.copytree(path, repos[name], symlinks=True)
        RepoRegistry(home / "repos.json").add(name, str(repos[name]))
    return home, repos


@pytest.fixture
def cli_home(tmp_path, monkeypatch) -> Path:
    """CODEX_HOME for CLI commands (the CLI writes DAGSTER_HOME too; monkeypatch restores both)."""
    home = tmp_path / "cli-home"
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def run_cli(*argv: str) -> tuple[int, str]:
    """``feriactl <argv>`` in-process through serving_cmds.register (as main.build_parser wires it)."""
    import argparse
    import contextlib

    from codex_cli.serving_cmds import register

    parser = argparse.ArgumentParser(prog="feriactl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()
