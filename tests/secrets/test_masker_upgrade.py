"""Upgrading the secret masker re-masks an existing index on the next ingest and leaves no old text.

The "old" masker is simulated at the one place ingestion calls it (``codex_core.files``): it knows no
rule at all and calls itself version 1, as an index built before a rule existed would have been.
Everything else is real: git repository, Dagster in-process materialization, MiniLM, qdrant-edge.
"""

from __future__ import annotations

import json
from pathlib import Path

from codex_core import catalog
from codex_core.home import CodexHome
from codex_core.secrets import MASKER_VERSION
from serving.engine import QueryEngine
from tests.assets.test_ingestion import REPO, ingest
from tests.conftest import commit_all, git
from tests.secrets.home_scan import leaked_in_home
from tests.support.llm import offline_answerer

NPM_TOKEN = "npm" + "_" + "Zq8Wv4Xr2Ty6Uo0Pa9Sb7Dc5Fe3Gh1Jk2Lm4"
KEY_ID = "3f2a9c1e8d7b6a5f" + "4e3d2c1b0a9f8e7d6c5b4a39"


def build_repo(root: Path) -> Path:
    repo = root / "upgrade"
    (repo / "config").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".npmrc").write_text(f"registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken={NPM_TOKEN}\n")
    (repo / "config" / "service_account.json").write_text(json.dumps(
        {"type": "service_account", "project_id": "demo", "private_key_id": KEY_ID,
         "client_email": "ci@demo.iam.gserviceaccount.com"}, indent=2) + "\n")
    (repo / "publish.py").write_text(
        'def publish(registry: str) -> None:\n    """Push the package to the npm registry."""\n    print(registry)\n'
    )
    commit_all(repo, "npm publishing")
    return repo


def test_a_new_masker_remasks_and_republishes_leaving_no_old_text(tmp_path, monkeypatch) -> None:
    repo = build_repo(tmp_path)
    home = tmp_path / "home"
    secrets = {"npm token": NPM_TOKEN, "private_key_id": KEY_ID}

    with monkeypatch.context() as old:
        old.setattr("codex_core.files.mask_secrets", lambda text, path=None: (text, []))
        old.setattr("codex_core.files.MASKER_VERSION", 1)
        old.setattr("codex_assets.ingestion.MASKER_VERSION", 1)
        assert ingest(home, repo).success
    before = catalog.read_json(home / "repos" / REPO / catalog.PUBLISHED)
    assert leaked_in_home(home, secrets), "the old index must hold the credentials, or this test proves nothing"

    assert ingest(home, repo).success  # the upgraded masker, same commit
    after = catalog.read_json(home / "repos" / REPO / catalog.PUBLISHED)
    staged = catalog.read_json(home / "repos" / REPO / catalog.STAGED)
    assert after["commit"] == before["commit"] and after["version"] != before["version"]
    assert after["masker_version"] == MASKER_VERSION and staged["base_version"] is None  # a full stage
    versions = sorted(p.name for p in (home / "index" / REPO / "versions").iterdir())
    assert versions == [after["version"]], "the version masked by the old masker is gone"
    assert leaked_in_home(home, secrets) == []

    engine = QueryEngine(CodexHome(home), answerer=offline_answerer(), abstain_below=0.0)
    try:
        answer = engine.query("npm registry auth token for publishing", repo=REPO, top_k=10).model_dump()
    finally:
        engine.close()
    cited = {c["path"]: c["snippet"] for c in answer["citations"]}
    assert ".npmrc" in cited and "«redacted:npm_token»" in cited[".npmrc"]  # verified against today's masking
    assert NPM_TOKEN not in json.dumps(answer)


def test_an_unchanged_masker_keeps_the_rollback_version(tmp_path) -> None:
    repo = build_repo(tmp_path)
    home = tmp_path / "home"
    assert ingest(home, repo).success
    (repo / "publish.py").write_text((repo / "publish.py").read_text() + "\n\ndef unpublish() -> None:\n    pass\n")
    commit_all(repo, "unpublish")
    assert ingest(home, repo).success
    assert len(list((home / "index" / REPO / "versions").iterdir())) == 2
