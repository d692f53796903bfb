"""`feriactl` as a user runs it: real subprocesses, a real repo, CODEX_HOME in a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.test_query import closed_port

FERIACTL = str(Path(sys.executable).parent / "feriactl")


def feriactl(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}",
    }
    return subprocess.run([FERIACTL, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def ingested_home(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import build_fixture_repo

    root = tmp_path_factory.mktemp("cli")
    repo = build_fixture_repo(root)
    home = root / "home"
    proc = feriactl(home, "ingest", str(repo), "--name", "demo", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home, repo, json.loads(proc.stdout)


def test_ingest_summary_reports_every_stage(ingested_home) -> None:
    _, repo, summary = ingested_home
    assert summary["success"] is True
    assert summary["skipped_by_reason"] == {"binary": 1, "symlink_outside_repo": 2, "too_large": 1}
    assert summary["points_published"] == summary["unique_chunks"] > 0
    assert summary["duplicates_dropped"] >= 1
    assert summary["embeddings_computed"] == summary["unique_chunks"] and summary["embeddings_cached"] == 0
    assert set(summary["checks"].values()) == {True}
    assert {"code_files", "chunk_embeddings", "published_index"} <= set(summary["seconds_per_stage"])


def test_status_and_query(ingested_home) -> None:
    home, repo, summary = ingested_home
    status = json.loads(feriactl(home, "status", "--json").stdout)
    demo = status["repos"]["demo"]
    assert demo["indexed_commit"] == summary["commit"] and demo["points"] == summary["points_published"]
    assert status["last_run"]["status"] == "SUCCESS" and status["last_run"]["repo"] == "demo"

    proc = feriactl(home, "query", "how does the LRU cache evict entries", "--repo", "demo", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert answer["citations"][0]["path"] == "cache/lru.rs"
    assert answer["index_commit"] == summary["commit"]

    human = feriactl(home, "query", "how does the LRU cache evict entries", "--repo", "demo")
    assert "cache/lru.rs:" in human.stdout and "confidence" in human.stdout


def test_user_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    missing = feriactl(tmp_path, "ingest", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_name = feriactl(tmp_path, "ingest", str(tmp_path), "--name", "../escape")
    assert bad_name.returncode == 2 and "invalid repository name" in bad_name.stderr
    not_git = feriactl(tmp_path, "ingest", str(tmp_path), "--name", "plain")
    assert not_git.returncode != 0 and "not a git repository" in (not_git.stderr + not_git.stdout)
    unknown = feriactl(tmp_path, "query", "anything", "--repo", "ghost")
    assert unknown.returncode == 2 and "feriactl ingest" in unknown.stderr
