"""The `index_snapshot` asset in process: a real repo ingested by the real assets, then snapshotted."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_assets.snapshots import SnapshotKeyResource, index_snapshot
from codex_core.home import CodexHome
from codex_core.snapshot import key_fingerprint, list_snapshots, restore_snapshot, verify_snapshot
from codex_sensors import nightly_snapshot, snapshot_job
from tests.assets.test_ingestion import REPO, ingest
from tests.support.ingest import make_resources

KEY = "asset-test-snapshot-key-0123456789"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import build_fixture_repo

    root = tmp_path_factory.mktemp("snapshot-asset")
    repo = build_fixture_repo(root)
    assert ingest(root / "home", repo).success
    return root / "home", repo


def snapshot(home: Path, key_resource: SnapshotKeyResource, *, run_config=None, raise_on_error: bool = True):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("repos", [REPO])
    return dg.materialize(
        [*ingestion_assets, *ingestion_checks, index_snapshot],
        selection=[index_snapshot],
        instance=instance,
        resources={**make_resources(home), "snapshot_key": key_resource},
        partition_key=REPO,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def metadata(result) -> dict:
    (event,) = result.asset_materializations_for_node("index_snapshot")
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_snapshot_asset_writes_a_verifiable_signed_archive_and_applies_retention(ingested, tmp_path) -> None:
    home, _ = ingested
    first = metadata(snapshot(home, SnapshotKeyResource(key=KEY)))
    path = Path(first["path"])
    assert path.parent == CodexHome(home).snapshots_dir / REPO and path.exists()
    assert first["key_id"] == key_fingerprint(KEY.encode()) and first["files"] > 10 and first["size_bytes"] > 0
    report = verify_snapshot(path, KEY)
    assert report.manifest_sha256 == first["manifest_sha256"] and report.files_checked == first["files"]

    # A second snapshot the same UTC day supersedes the first (keep 7 daily = newest per day) ...
    second = metadata(snapshot(home, SnapshotKeyResource(key=KEY)))
    assert second["retention_deleted"] == 1 and not path.exists()
    # ... unless the first one is a release.
    config = {"ops": {"index_snapshot": {"config": {"tags": ["release"]}}}}
    release = metadata(snapshot(home, SnapshotKeyResource(key=KEY), run_config=config))
    third = metadata(snapshot(home, SnapshotKeyResource(key=KEY)))
    kept = {s.id: s.tags for s in list_snapshots(CodexHome(home).snapshots_dir / REPO)}
    assert kept == {release["snapshot_id"]: ("release",), third["snapshot_id"]: ()}

    # The archive restores into an empty home.
    restored = restore_snapshot(CodexHome(tmp_path / "fresh"), third["path"], KEY)
    assert restored.repo == REPO and restored.warnings == []


def test_key_is_read_from_the_environment_at_execution_time(ingested, monkeypatch) -> None:
    home, _ = ingested
    monkeypatch.setenv("CODEX_SNAPSHOT_KEY", KEY)
    result = metadata(snapshot(home, SnapshotKeyResource()))
    assert result["key_id"] == key_fingerprint(KEY.encode())


def test_missing_key_fails_with_instructions(ingested, monkeypatch) -> None:
    home, _ = ingested
    monkeypatch.delenv("CODEX_SNAPSHOT_KEY", raising=False)
    before = set(list_snapshots(CodexHome(home).snapshots_dir))
    result = snapshot(home, SnapshotKeyResource(), raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "no snapshot key: set CODEX_SNAPSHOT_KEY" in message and "token_hex" in message
    assert set(list_snapshots(CodexHome(home).snapshots_dir)) == before


def test_nightly_snapshot_schedule_requests_every_repository() -> None:
    when = datetime(2025, 3, 10, 2, 30, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        empty = nightly_snapshot(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
        assert isinstance(empty, dg.SkipReason)
        instance.add_dynamic_partitions("repos", ["a", "b"])
        requests = nightly_snapshot(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("a", "snapshot:a:2025-03-10"), ("b", "snapshot:b:2025-03-10"),
    ]
    assert snapshot_job.name == "snapshot"
