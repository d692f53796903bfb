"""Freshness: every answer and /v1/health say which commit is indexed and how far HEAD has moved on."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from serving.freshness import FreshnessTracker
from tests.conftest import commit_all, git
from tests.serving.conftest import copy_home


def test_answers_and_health_count_commits_behind_head(corpus, make_app, tmp_path) -> None:
    home, repos = copy_home(corpus, tmp_path)
    demo = repos["demo"]
    indexed = git(demo, "rev-parse", "HEAD")
    app, log = make_app(home=home, engine_kwargs={"freshness_ttl_s": 0.0})
    with TestClient(app) as client:
        body = client.post("/v1/query", json={"query": "cart total", "repo": "demo"}).json()
        assert body["index_commit"] == indexed and body["commits_behind"] == 0
        assert body["index_freshness"] == {"demo": {"commit": indexed, "commits_behind": 0}}

        for n in range(2):
            (demo / f"NOTES{n}.md").write_text(f"note {n}\n")
            commit_all(demo, f"note {n}")
        body = client.post("/v1/query", json={"query": "cart total"}).json()
        assert body["citations"][0]["repo"] == "demo"
        assert body["index_commit"] == indexed and body["commits_behind"] == 2
        assert body["index_freshness"]["demo"]["commits_behind"] == 2
        assert body["index_freshness"]["billing"]["commits_behind"] == 0

        health = client.get("/v1/health").json()
        assert health["index"]["demo"] == indexed
        assert health["freshness"]["demo"] == {"commit": indexed, "head": git(demo, "rev-parse", "HEAD"),
                                               "commits_behind": 2}
        assert client.get("/v1/repos").json()["repos"]["demo"]["commits_behind"] == 2
    assert [r["commits_behind"] for r in log.records() if r["path"] == "/v1/query"] == [0, 2]


def test_freshness_is_cached_and_unknown_when_the_work_tree_is_gone(corpus, tmp_path) -> None:
    home, repos = copy_home(corpus, tmp_path)
    demo = repos["demo"]
    indexed = git(demo, "rev-parse", "HEAD")
    cached = FreshnessTracker(lambda repo: demo, ttl_s=60)
    fresh = FreshnessTracker(lambda repo: demo, ttl_s=0)
    assert cached.of("demo", indexed)["commits_behind"] == fresh.of("demo", indexed)["commits_behind"] == 0
    (demo / "NEW.md").write_text("new\n")
    commit_all(demo, "new")
    assert cached.of("demo", indexed)["commits_behind"] == 0  # within the cache window: no git call
    assert fresh.of("demo", indexed)["commits_behind"] == 1
    # A commit the repository does not have (history rewritten) and a vanished work tree: unknown, not an error.
    assert fresh.of("demo", "0" * 40)["commits_behind"] is None
    shutil.rmtree(demo)
    assert fresh.of("demo", indexed) == {"commit": indexed, "head": None, "commits_behind": None}
