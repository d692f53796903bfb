"""Serving end to end: a real repo ingested by the real assets, queried through the real FastAPI app.

No LLM can run in CI here: the Answerer points at a closed loopback port, so these tests exercise
the outage path (extractive answers), which is the product's promise when no model answers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.models import span_text
from codex_core.ranker import shipped_ranker
from codex_core.retrieval import RetrievalConfig
from serving.app import create_app
from serving.engine import QueryEngine
from tests.conftest import build_fixture_repo, git
from tests.support.ingest import ingest
from tests.support.llm import closed_port, offline_answerer  # noqa: F401  (closed_port: used by importers)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serving")
    repo = build_fixture_repo(root)
    home = root / "home"
    assert ingest(home, repo).success
    return home, repo


@pytest.fixture(scope="module")
def engine(ingested) -> QueryEngine:
    home, _ = ingested
    eng = QueryEngine(CodexHome(home), answerer=offline_answerer(), abstain_below=0.0)
    yield eng
    eng.close()


def file_lines(repo: Path, path: str) -> list[str]:
    return git(repo, "show", f"HEAD:{path}").split("\n")


@pytest.mark.parametrize(
    ("question", "path", "needle"),
    [
        ("How are failed connections retried with exponential backoff?", "app/retry", "def retry_with_backoff"),
        ("Where is the shopping cart total price computed?", "web/cart.js", "total()"),
        ("What does the health endpoint write in its HTTP response?", "server/health.go", "func (h *HealthHandler)"),
        ("How does the LRU cache evict the oldest entry when full?", "cache/lru.rs", "let oldest"),
        ("Where are key = value configuration lines parsed?", "app/config_parser.py", "def parse_line"),
    ],
)
def test_behaviour_questions_cite_the_implementation_exactly(engine, ingested, question, path, needle) -> None:
    _, repo = ingested
    result = engine.query(question, repo="demo", top_k=3).model_dump()
    top = result["citations"][0]
    assert top["path"].startswith(path), [c["path"] for c in result["citations"]]
    lines = file_lines(repo, top["path"])
    assert span_text(lines, top["line_start"], top["line_end"]) == top["snippet"]
    assert needle in top["snippet"]
    assert result["index_commit"] == git(repo, "rev-parse", "HEAD")


def test_the_in_file_order_reads_the_cosines_the_dense_search_scores(engine) -> None:
    """``in_file_order = "signals"`` ranks a cited file's chunks by a dense search filtered to that
    file: the same published version and cosines as the repository-wide search, every chunk of it."""
    question = "Where are key = value configuration lines parsed?"
    vector = engine.reader.retriever.embed_query(question)
    engine.reader.refresh(force=True)
    repo, pid, score = engine.reader._dense_search(vector, ["demo"], 1)[0]
    corpus = engine.reader.view.corpora[repo]
    path = corpus.payloads[corpus.by_id[pid]]["path"]
    ids = {corpus.ids[i] for i in corpus.by_path[path]}
    cosines = engine.reader.index.file_scores(repo, [path], vector, len(ids))
    assert set(cosines) == ids  # this file's chunks, no other file's
    assert cosines[pid] == pytest.approx(score, abs=1e-5)
    assert max(cosines.values()) == pytest.approx(score, abs=1e-5)
    signals = RetrievalConfig(in_file_order="signals")
    result = engine.retrieve(question, repo="demo", top_k=3, config=signals).result
    assert "in_file" in result.candidates[0].raw_scores and "in_file_ms" in result.timings_ms


def test_no_llm_still_answers_extractively_and_health_says_why(ingested) -> None:
    home, _ = ingested
    app = create_app(lambda: QueryEngine(CodexHome(home), answerer=offline_answerer(), abstain_below=0.0))
    with TestClient(app) as client:
        health = client.get("/v1/health").json()
        assert health["status"] == "degraded"
        assert health["llm"]["reachable"] is False
        assert any("no LLM reachable" in r for r in health["reasons"])
        assert set(health["index"]) == {"demo"}

        response = client.post("/v1/query", json={"query": "how is the cart total computed", "repo": "demo"})
        assert response.status_code == 200
        body = response.json()
        assert body["model"] == "extractive" and not body["abstained"]
        assert body["citations"] and "[web/cart.js:" in body["answer"]

        trace = client.get(f"/v1/trace/{body['trace_id']}").json()
        assert trace["candidates"] and {"dense", "lexical"} & set(trace["candidates"][0]["ranks"])
        assert trace["generation"]["fallbacks"], "the outage walk must be visible in the trace"

        assert client.get("/v1/repos").json()["repos"]["demo"]["chunks"] > 0
        assert client.get("/v1/trace/nope").status_code == 404
        assert client.post("/v1/query", json={"query": "x", "repo": "../etc"}).status_code == 422
        assert client.post("/v1/query", json={"query": ""}).status_code == 422
        assert client.post("/v1/query", json={"query": "x", "top_k": 10_000}).status_code == 422
        assert client.post("/v1/query", content=b"{not json").status_code == 422
        missing = client.post("/v1/query", json={"query": "x", "repo": "ghost"})
        assert missing.status_code == 404 and "feriactl ingest" in missing.json()["detail"]
        assert client.get("/openapi.json").status_code == 200


def test_citation_that_fails_verification_is_dropped_and_traced(ingested, tmp_path) -> None:
    home, repo = ingested
    # A copy of the index whose repository has vanished: nothing can be verified any more.
    moved_home = tmp_path / "home"
    shutil.copytree(home, moved_home)
    moved_repo = tmp_path / "gone"
    shutil.copytree(repo, moved_repo, symlinks=True)
    RepoRegistry(moved_home / "repos.json").add("demo", str(moved_repo))
    shutil.rmtree(moved_repo / ".git")
    engine = QueryEngine(CodexHome(moved_home), answerer=offline_answerer(), abstain_below=0.0)
    try:
        result = engine.query("how is the cart total computed", repo="demo").model_dump()
        assert result["citations"] == []
        assert result["abstained"] is True
        trace = engine.trace(result["trace_id"])
        assert any((c["dropped"] or "").startswith("verification failed") for c in trace["candidates"])
        # No ranker of its own published for this repository: the shipped general one ordered its files.
        assert trace["ranked_by"] == f"learned:{shipped_ranker().meta['id']}"
    finally:
        engine.close()


def test_test_files_are_preferred_only_when_asked(tmp_path) -> None:
    repo = build_fixture_repo(tmp_path)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_retry.py").write_text(
        "from app.retry import retry_with_backoff\n\n\n"
        "def test_retry_with_backoff_retries_connection_errors():\n"
        "    calls = []\n\n"
        "    def flaky():\n"
        "        calls.append(1)\n"
        "        if len(calls) < 3:\n"
        "            raise ConnectionError('retry backoff')\n"
        "        return 'ok'\n\n"
        "    assert retry_with_backoff(flaky, base_delay=0) == 'ok'\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "test retry")
    home = tmp_path / "home"
    assert ingest(home, repo).success
    engine = QueryEngine(CodexHome(home), answerer=offline_answerer(), abstain_below=0.0)
    try:
        behaviour = engine.query("how does retry with backoff handle connection errors", top_k=3).model_dump()
        assert behaviour["citations"][0]["path"] in {"app/retry.py", "app/retry_copy.py"}
        tests = engine.query("which test covers retry with backoff of connection errors", top_k=3).model_dump()
        assert tests["citations"][0]["path"] == "tests/test_retry.py"
        # A commit message naming a test is about the code: the shipped ranker, which learned from commit
        # messages that tests are not what they change, keeps the implementation first.
        commit = engine.query("Fix the retry with backoff test for connection errors", top_k=3).model_dump()
        assert commit["citations"][0]["path"] in {"app/retry.py", "app/retry_copy.py"}
    finally:
        engine.close()
