"""Qdrant server mode end to end: one commit answers the same through the embedded index and through
``QdrantServerIndex``; ``feriactl snapshot`` refuses while ``QDRANT_URL`` is set.

The server side is tests/support/qdrant.py's: the Qdrant server at ``QDRANT_URL`` when that is set
(a collection prefix of this module's own, deleted at the end), otherwise qdrant-client's
in-memory mode, ``QdrantClient(location=":memory:")`` — no Qdrant server binary can be installed
on the machines this was written on, so by default the server is that in-process stand-in, and
server-only behaviour (HNSW, HTTP, the server's own alias swap) is not exercised.

Everything else is real: a git repository built here, the ingestion assets run in process
(ephemeral Dagster instance, real MiniLM) into two homes — one with the embedded index, one with
the server index — and serving's ``QueryEngine`` over each. No LLM can run here: the answerer
points at a closed port, so answers are the deterministic extractive ones, which is what makes
"the same answer" a meaningful comparison.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from codex_cli.common import CliError
from codex_core.answer import Answer
from codex_core.embedding import DEFAULT_MODEL_ID
from codex_core.home import CodexHome
from codex_core.settings import Settings
from codex_core.vector_store import EmbeddedVectorIndex, QdrantServerIndex, VectorIndex
from codex_resources import VectorStoreResource, shared_embedder
from serving.engine import QueryEngine
from tests.conftest import build_fixture_repo, commit_all
from tests.support.ingest import ingest, metadata
from tests.support.llm import offline_answerer
from tests.support.qdrant import QdrantUnderTest

REPO = "demo"
QUESTIONS = {
    "How are failed connections retried with exponential backoff?": "app/retry.py",
    "Where is the shopping cart total price computed?": "web/cart.js",
    "How does the LRU cache evict the oldest entry when full?": "cache/lru.rs",
    "Where are key = value configuration lines parsed?": "app/config_parser.py",
}
# The second commit: one file changed, one added, one deleted (a delta on both backends).
NEW_FILE = "app/jitter.py"
NEW_QUESTION = "How is random jitter added to a sleep delay?"
JITTER = '''import random


def sleep_with_jitter(delay: float, spread: float = 0.25) -> float:
    """Add random jitter to a sleep delay so that retrying clients do not wake up together."""
    return delay * (1 + random.uniform(-spread, spread))
'''

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

_SERVERS: dict[str, QdrantUnderTest] = {}


class ServerUnderTestStore(VectorStoreResource):
    """What ``build_resources`` wires for ``QDRANT_URL`` (``QdrantServerStoreResource``), but opening
    the server under test with this module's collection prefix (tests/support/qdrant.py)."""

    server_key: str

    def open(self) -> VectorIndex:
        return _SERVERS[self.server_key].index()


@dataclass
class Deployment:
    """One home and the index its ingestion wrote to."""

    home: Path
    store: VectorStoreResource | None  # None: the embedded default of tests.support.ingest

    def index(self) -> VectorIndex:
        return self.store.open() if self.store is not None else EmbeddedVectorIndex(CodexHome(self.home).index_dir)

    def ingest(self, repo: Path):
        resources = {"vector_store": self.store} if self.store is not None else None
        return ingest(self.home, repo, name=REPO, resources=resources)

    def engine(self) -> QueryEngine:
        return QueryEngine(
            CodexHome(self.home), index=self.index(), embedder=shared_embedder(None, DEFAULT_MODEL_ID, "cpu"),
            answerer=offline_answerer(), abstain_below=0.0, refresh_every_s=0.0, settings=Settings(),
        )


@dataclass
class Pair:
    repo: Path
    embedded: Deployment
    server: Deployment
    qdrant: QdrantUnderTest
    first_commit: dict[str, dict]  # backend -> staged_index metadata of the first ingest


def what_a_user_sees(answer: Answer) -> dict:
    """Everything of an answer but its timing and trace id."""
    return {
        "answer": answer.answer,
        "citations": [(c.repo, c.path, c.line_start, c.line_end, c.symbol, c.cited_in_answer, c.snippet)
                      for c in answer.citations],
        "scores": [c.score for c in answer.citations],  # rounded to 6 digits by the engine
        "confidence": round(answer.confidence, 6),
        "confidence_kind": answer.confidence_kind,
        "abstained": answer.abstained,
        "index_commit": answer.index_commit,
    }


def answers(deployment: Deployment, questions) -> dict[str, dict]:
    engine = deployment.engine()
    try:
        return {q: what_a_user_sees(engine.query(q, repo=REPO)) for q in questions}
    finally:
        engine.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("qdrant-server-mode")
    repo = build_fixture_repo(root)
    qdrant = QdrantUnderTest()
    _SERVERS[qdrant.prefix] = qdrant
    embedded = Deployment(root / "embedded-home", None)
    server = Deployment(root / "server-home", ServerUnderTestStore(server_key=qdrant.prefix))
    try:
        first = {"embedded": metadata(embedded.ingest(repo), "staged_index")}
        # The same vectors without embedding twice (~10 chunks/s here): copy the embedding cache.
        cache = CodexHome(embedded.home).embedding_cache_path
        target = CodexHome(server.home).embedding_cache_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cache, target)
        first["server"] = metadata(server.ingest(repo), "staged_index")
        yield Pair(repo, embedded, server, qdrant, first)
    finally:
        _SERVERS.pop(qdrant.prefix, None)
        qdrant.close()


def test_same_commit_gives_the_same_answers(pair: Pair) -> None:
    assert pair.first_commit["embedded"]["mode"] == pair.first_commit["server"]["mode"] == "full"
    assert pair.first_commit["embedded"]["points"] == pair.first_commit["server"]["points"] > 0
    with pair.server.index() as index:
        assert isinstance(index, QdrantServerIndex)
        published = index.current(REPO)
        assert published is not None and index.staged_stats(REPO, published.version).index == "server"
    assert pair.qdrant.collections() == [f"{pair.qdrant.prefix}__{REPO}__{published.version}"]

    embedded, server = answers(pair.embedded, QUESTIONS), answers(pair.server, QUESTIONS)

    for question, path in QUESTIONS.items():
        assert embedded[question]["citations"][0][1] == path, question  # the answers are worth comparing
    assert server == embedded


def test_next_commit_is_staged_as_a_delta_on_both_and_answers_the_same(pair: Pair) -> None:
    (pair.repo / NEW_FILE).write_text(JITTER)
    (pair.repo / "app" / "retry_copy.py").unlink()
    parser = pair.repo / "app" / "config_parser.py"
    parser.write_text(parser.read_text().replace("Reads key = value lines", "Reads `key = value` lines"))
    commit = commit_all(pair.repo, "Jitter for retries")
    before = {"embedded": pair.embedded.engine(), "server": pair.server.engine()}
    try:
        for engine in before.values():  # serving holds the first version while the second is built
            assert engine.query(NEW_QUESTION, repo=REPO).index_commit != commit

        staged = {name: metadata(d.ingest(pair.repo), "staged_index")
                  for name, d in (("embedded", pair.embedded), ("server", pair.server))}

        for name, meta in staged.items():
            assert (meta["mode"], meta["commit"]) == ("delta", commit), (name, meta["mode_reason"])
        assert staged["server"]["points_written"] == staged["embedded"]["points_written"] > 0
        assert staged["server"]["points_deleted"] == staged["embedded"]["points_deleted"]
        # A running engine switches to the new version on its next query (the reader's delta path).
        switched = {name: what_a_user_sees(engine.query(NEW_QUESTION, repo=REPO)) for name, engine in before.items()}
    finally:
        for engine in before.values():
            engine.close()

    assert switched["server"] == switched["embedded"]
    assert switched["server"]["index_commit"] == commit
    assert switched["server"]["citations"][0][1] == NEW_FILE
    questions = [*QUESTIONS, NEW_QUESTION]
    fresh_server = answers(pair.server, questions)
    assert fresh_server == answers(pair.embedded, questions)
    assert fresh_server[NEW_QUESTION] == switched["server"]
    with pair.server.index() as index:
        assert len(index.versions(REPO)) == 2  # the new one and the previous, for a rollback


# --------------------------------------------------------------------------- snapshots refuse


def run_snapshot_cli(*argv: str) -> int:
    """``feriactl snapshot ...`` in process, through the parser feriactl's main registers."""
    from codex_cli.snapshot_cmds import register

    parser = argparse.ArgumentParser(prog="feriactl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["snapshot", *argv])
    return args.func(args)


def test_snapshot_create_and_restore_refuse_while_qdrant_url_is_set(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A home whose embedded index is complete (in file order, the next commit was ingested into it as
    a delta), and QDRANT_URL set (a deployment switched to a server): a snapshot of it would not hold
    what serving reads, and a restore would publish into an index serving never reads. Both refuse,
    naming Qdrant's snapshot API, and write nothing."""
    home = tmp_path / "home"
    shutil.copytree(pair.embedded.home, home)
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("CODEX_SNAPSHOT_KEY", "test-snapshot-key-0123456789abcdef")
    monkeypatch.delenv("QDRANT_URL", raising=False)
    assert run_snapshot_cli("create", "--repo", REPO, "--json") == 0  # the embedded home can be snapshotted
    created = capsys.readouterr().out
    archive = next((home / "snapshots" / REPO).iterdir())
    assert archive.name in created

    monkeypatch.setenv("QDRANT_URL", "http://qdrant.internal:6333")
    with pytest.raises(CliError, match="QDRANT_URL is set") as refused:
        run_snapshot_cli("create", "--repo", REPO)
    assert "POST /collections/<collection>/snapshots" in str(refused.value)
    assert "codex__<repo>" in str(refused.value)
    assert list((home / "snapshots" / REPO).iterdir()) == [archive]

    fresh = tmp_path / "fresh"
    monkeypatch.setenv("CODEX_HOME", str(fresh))
    with pytest.raises(CliError, match="cannot restore a snapshot while QDRANT_URL is set") as refused:
        run_snapshot_cli("restore", str(archive))
    assert "PUT /collections/<collection>/snapshots/recover" in str(refused.value)
    assert not (fresh / "index").exists() and not (fresh / "repos").exists()
