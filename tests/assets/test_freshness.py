"""Freshness: a commit -> one sensor tick -> one incremental run -> answers cite the new code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg

from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.vector_store import EmbeddedVectorIndex
from codex_resources import CodexHomeResource
from codex_sensors import git_head_sensor
from serving.engine import QueryEngine
from tests.conftest import commit_all, git
from tests.support.ingest import make_resources, metadata
from tests.support.llm import offline_answerer

NEW_RETRY = '''import time


def retry_with_backoff(fn, attempts: int = 5, base_delay: float = 0.1, max_delay: float = 30.0):
    """Call fn until it succeeds; the exponential sleep is capped at max_delay seconds (jitterless)."""
    for attempt in range(attempts):
        try:
            return fn()
        except (ConnectionError, TimeoutError):
            if attempt == attempts - 1:
                raise
            time.sleep(min(max_delay, base_delay * (2 ** attempt)))
'''


def tick(instance, home: Path, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"codex_home": CodexHomeResource(root=str(home))}
    )
    return git_head_sensor(context)


def run_requested(instance, home: Path, request: dg.RunRequest):
    return dg.materialize(
        [*ingestion_assets, *ingestion_checks],
        instance=instance,
        resources=make_resources(home),
        partition_key=request.partition_key,
    )


def _published(home: Path) -> dict[str, dict]:
    """Published points, without the commit each chunk was built at (a full re-index rebuilds
    every chunk at HEAD; the incremental run keeps unchanged chunks from the earlier commit)."""
    index = EmbeddedVectorIndex(home / "index")
    try:
        current = index.current("demo")
        return {pid: {k: v for k, v in p.items() if k != "commit"}
                for pid, p in index.iter_payloads("demo", current.version)}
    finally:
        index.close()


def test_commit_tick_run_then_new_lines_are_cited_and_deleted_file_is_gone(tmp_path: Path, fixture_repo: Path) -> None:
    home = tmp_path / "home"
    RepoRegistry(home / "repos.json").add("demo", str(fixture_repo))
    instance = dg.DagsterInstance.ephemeral()

    first = tick(instance, home, None)
    assert [r.partition_key for r in first.run_requests] == ["demo"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["demo"]
    instance.add_dynamic_partitions("repos", ["demo"])
    initial = run_requested(instance, home, first.run_requests[0])
    assert initial.success
    assert tick(instance, home, first.cursor).run_requests == []  # nothing moved

    # A serving engine that already holds the first version switches by reading only the delta.
    engine = QueryEngine(CodexHome(home), answerer=offline_answerer(), abstain_below=0.0)
    engine.refresh(force=True)
    (fixture_repo / "app" / "retry.py").write_text(NEW_RETRY)
    git(fixture_repo, "rm", "-q", "server/health.go")
    head = commit_all(fixture_repo, "Cap the retry backoff delay and drop the health handler")

    second = tick(instance, home, first.cursor)
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.run_key == f"demo:{head}" and request.partition_key == "demo"
    rerun = run_requested(instance, home, request)
    assert rerun.success

    chunks = metadata(rerun, "code_chunks")
    assert chunks["files_rechunked"] == 1 and chunks["files_removed"] == 1
    assert metadata(rerun, "code_graph")["files_reparsed"] == 1
    embeddings = metadata(rerun, "chunk_embeddings")
    assert 1 <= embeddings["embeddings_computed"] <= 2  # only the changed module's chunk(s)
    staged = metadata(rerun, "staged_index")
    assert staged["mode"] == "delta", staged["mode_reason"]
    assert staged["base_version"] == metadata(initial, "published_index")["version"]
    assert 1 <= staged["points_written"] <= 2 and staged["points_deleted"] >= 1  # health.go's chunk(s)
    checks = {e.check_name: e for e in rerun.get_asset_check_evaluations()}
    assert all(e.passed for e in checks.values())
    spans = {k: getattr(v, "value", v) for k, v in checks["spans_within_files"].metadata.items()}
    assert 1 <= spans["points_checked"] < staged["points"]

    # The delta version holds exactly what a from-scratch index of the same commit holds.
    full_home = tmp_path / "full"
    (full_home / "embeddings").mkdir(parents=True)
    shutil.copy(home / "embeddings" / "cache.sqlite", full_home / "embeddings" / "cache.sqlite")
    RepoRegistry(full_home / "repos.json").add("demo", str(fixture_repo))
    full_instance = dg.DagsterInstance.ephemeral()
    full_instance.add_dynamic_partitions("repos", ["demo"])
    full = run_requested(full_instance, full_home, request)
    assert metadata(full, "staged_index")["mode"] == "full"
    assert _published(full_home) == _published(home)

    try:
        engine.refresh(force=True)
        held = engine.reader.view.corpora["demo"]
        fresh = QueryEngine(CodexHome(home), answerer=offline_answerer())
        fresh.refresh(force=True)
        loaded = fresh.reader.view.corpora["demo"]
        assert (held.version, held.ids, held.payloads) == (loaded.version, loaded.ids, loaded.payloads)
        fresh.close()
        # The graph, repaired after publishing, was picked up too: the deleted file's symbols are gone.
        paths = {d.path for d in engine.reader.view.graphs["demo"].definitions}
        assert "app/retry.py" in paths and "server/health.go" not in paths
        answer = engine.query("how is the exponential backoff delay capped", repo="demo", top_k=5).model_dump()
        top = answer["citations"][0]
        assert top["path"] in {"app/retry.py", "app/retry_copy.py"}
        new_lines = NEW_RETRY.split("\n")
        retry = next(c for c in answer["citations"] if c["path"] == "app/retry.py")
        assert retry["snippet"] == "\n".join(new_lines[retry["line_start"] - 1 : retry["line_end"]])
        assert "max_delay" in retry["snippet"]
        assert answer["index_commit"] == head
        every_path = {c.path for c in engine.query("health handler ServeHTTP status", top_k=20).citations}
        assert "server/health.go" not in every_path
    finally:
        engine.close()

    third = tick(instance, home, second.cursor)
    assert third.run_requests == []
    assert json.loads(third.cursor) == {"demo": head}


def test_sensor_skips_unreadable_repos_and_retries(tmp_path: Path) -> None:
    home = tmp_path / "home"
    RepoRegistry(home / "repos.json").add("ghost", str(tmp_path))  # not a git repo
    result = tick(dg.DagsterInstance.ephemeral(), home, None)
    assert result.run_requests == []
    assert json.loads(result.cursor) == {}
