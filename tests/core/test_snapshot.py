"""Snapshots end to end on real parts: a real git repo ingested in-process (real MiniLM, real
qdrant-edge, ephemeral Dagster), real archives, restores answered through serving's QueryEngine.

No LLM can run here: the Answerer points at a closed port, so answers are the extractive fallback
(deterministic), which is what makes "identical answers" a meaningful assertion.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from codex_assets.ingestion import code_chunks, code_files, repo_snapshot, unique_chunks
from codex_cli.main import CliError
from codex_cli.snapshot_cmds import register
from codex_core import catalog
from codex_core.calibration import FEATURES, Calibrator
from codex_core.embedding import DEFAULT_MODEL_ID, embedding_document
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.models import content_hash
from codex_core.snapshot import (
    SnapshotError,
    SnapshotRejected,
    apply_retention,
    canonical_json,
    create_snapshot,
    find_snapshot,
    index_files_intact,
    key_fingerprint,
    list_snapshots,
    restore_snapshot,
    verify_snapshot,
)
from codex_core.vector_store import EmbeddedVectorIndex
from codex_resources import shared_embedder
from serving.engine import QueryEngine
from tests.assets.test_ingestion import REPO, ingest
from tests.conftest import build_fixture_repo, commit_all
from tests.support.ingest import metadata
from tests.support.llm import offline_answerer

KEY = b"test-snapshot-key-0123456789abcdef"
OTHER_KEY = b"some-other-key-0123456789abcdefgh"
QUESTIONS = [
    "How are failed connections retried with exponential backoff?",
    "Where is the shopping cart total price computed?",
    "How does the LRU cache evict the oldest entry when full?",
    "Where are key = value configuration lines parsed?",
]


# --------------------------------------------------------------------------- fixtures and helpers


def publish_calibrator(home: CodexHome) -> None:
    """A published Platt calibrator, as the calibration asset would leave it."""
    calibrator = Calibrator(
        method="platt", feature_names=list(FEATURES), means=[0.0] * len(FEATURES), stds=[1.0] * len(FEATURES),
        coef=[0.5] * len(FEATURES), intercept=-0.5, tau=0.2, version=1,
    )
    out = home.calibration_dir(REPO)
    calibrator.save(out / "calibrator-1.json")
    catalog.write_json(out / "current.json", {"version": 1, "path": "calibrator-1.json", "tau": 0.2})


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[CodexHome, Path]:
    root = tmp_path_factory.mktemp("snapshot-source")
    repo = build_fixture_repo(root)
    result = ingest(root / "home", repo)
    assert result.success
    home = CodexHome(root / "home")
    publish_calibrator(home)
    return home, repo


@pytest.fixture(scope="module")
def archive(source, tmp_path_factory) -> Path:
    home, _ = source
    info = create_snapshot(home, REPO, key=KEY, out_dir=tmp_path_factory.mktemp("snapshots"))
    assert info.signed and info.key_id == key_fingerprint(KEY)
    return info.path


def answers(home: CodexHome) -> list[dict]:
    engine = QueryEngine(
        home, embedder=shared_embedder(None, DEFAULT_MODEL_ID, "cpu"), answerer=offline_answerer(), abstain_below=0.0
    )
    try:
        keep = ("answer", "citations", "confidence", "confidence_kind", "abstained", "model", "index_commit")
        return [{k: engine.query(q, repo=REPO, top_k=3).model_dump()[k] for k in keep} for q in QUESTIONS]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def expected_answers(source) -> list[dict]:
    home, _ = source
    found = answers(home)
    assert all(a["citations"] for a in found)
    assert {a["confidence_kind"] for a in found} == {"calibrated"}
    return found


def points(home: CodexHome) -> dict[str, tuple[dict, list[float]]]:
    index = EmbeddedVectorIndex(home.index_dir)
    try:
        current = index.current(REPO)
        payloads = dict(index.iter_payloads(REPO, current.version))
        vectors = {p.id: p.vector for p in index.get(REPO, list(payloads), with_vectors=True)}
        return {pid: (payload, vectors[pid]) for pid, payload in payloads.items()}
    finally:
        index.close()


def copy_home(home: CodexHome, dest: Path) -> CodexHome:
    shutil.copytree(home.root, dest, symlinks=True)
    return CodexHome(dest)


def rewrite(src: Path, dst: Path, *, edit=None, resign: bytes | None = None, extra=()) -> Path:
    """Copy an archive member by member: ``edit(manifest)`` changes the manifest, ``resign`` signs the
    result with that key (otherwise the original signature is kept), ``extra`` appends (TarInfo, bytes)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        members = tin.getmembers()
        manifest = json.loads(tin.extractfile(members[0]).read())
        signature = json.loads(tin.extractfile(members[1]).read())
        if edit:
            edit(manifest)
        if resign:
            from codex_core.snapshot import sign_manifest

            signature = sign_manifest(manifest, resign)
        for name, data in (("manifest.json", canonical_json(manifest)), ("signature.json", canonical_json(signature))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
        for member in members[2:]:
            data = tin.extractfile(member).read()
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def nothing_published(home: CodexHome) -> bool:
    return not (home.index_dir / REPO / "CURRENT.json").exists() and not list(home.root.glob(".snapshot-restore-*"))


def assert_refused(path: Path, target_root: Path, *, match: str, reason: str) -> None:
    """``verify_snapshot`` refuses ``path`` for ``reason``, and ``restore_snapshot`` (which verifies first)
    refuses it too, leaving nothing published or staged in a fresh home at ``target_root``."""
    with pytest.raises(SnapshotRejected, match=match) as err:
        verify_snapshot(path, KEY)
    assert err.value.reason == reason
    target = CodexHome(target_root)
    with pytest.raises(SnapshotRejected, match=match):
        restore_snapshot(target, path, KEY)
    assert nothing_published(target)


# --------------------------------------------------------------------------- round trip


def test_restore_into_fresh_home_gives_identical_points_and_answers(
    source, archive, expected_answers, tmp_path
) -> None:
    home, repo = source
    fresh = CodexHome(tmp_path / "fresh")
    report = restore_snapshot(fresh, archive, KEY)

    assert report.repo == REPO and report.previous_version is None and report.warnings == []
    assert report.registry == "added"
    assert RepoRegistry(fresh.registry_path).get(REPO).source == str(repo)
    assert set(report.seconds) == {"verify", "extract", "install", "publish", "total"}
    assert index_files_intact(fresh, REPO) == []

    original, restored = points(home), points(fresh)
    assert restored.keys() == original.keys() and len(restored) == report.points
    assert restored == original  # same ids, payloads and vectors

    for rel in ("unique_chunks.parquet", "files.parquet", "graph/edges.parquet", "graph/definitions.parquet",
                "calibration/calibrator-1.json", "calibration/current.json"):
        assert (fresh.repo_dir(REPO) / rel).read_bytes() == (home.repo_dir(REPO) / rel).read_bytes(), rel
    published = json.loads((fresh.repo_dir(REPO) / catalog.PUBLISHED).read_text())
    assert published["version"] == report.index_version and published["commit"] == report.commit

    # The embedding cache holds every chunk's vector, so re-ingesting the same commit embeds nothing.
    chunks = catalog.read_chunks(fresh.repo_dir(REPO) / catalog.UNIQUE_CHUNKS)
    hashes = sorted({content_hash(embedding_document(c)) for c in chunks})
    query = "SELECT hash, vector FROM vectors WHERE model = ?"
    with closing(sqlite3.connect(fresh.embedding_cache_path)) as conn:
        rows = dict(conn.execute(query, [DEFAULT_MODEL_ID]).fetchall())
    with closing(sqlite3.connect(home.embedding_cache_path)) as conn:
        live = dict(conn.execute(query, [DEFAULT_MODEL_ID]).fetchall())
    assert sorted(rows) == hashes
    assert all(np.array_equal(np.frombuffer(rows[h], np.float32), np.frombuffer(live[h], np.float32)) for h in hashes)
    assert report.embeddings_added == report.embeddings_in_snapshot == len(hashes)

    assert answers(fresh) == expected_answers


def test_list_find_and_verify(archive) -> None:
    (info,) = list_snapshots(archive.parent)
    assert info.id == archive.name.removesuffix(".tar") and info.repo == REPO and info.signed
    assert info.id.startswith(f"{REPO}-{info.commit[:7]}-")
    assert find_snapshot(archive.parent, info.id) == archive
    report = verify_snapshot(archive, KEY)
    assert report.signed and report.files_checked == info.files and report.manifest_sha256 == info.manifest_sha256
    with pytest.raises(SnapshotError, match="no snapshot 'nope'"):
        find_snapshot(archive.parent, "nope")


def test_gz_archives_round_trip(source, tmp_path) -> None:
    home, _ = source
    info = create_snapshot(home, REPO, key=KEY, out_dir=tmp_path / "gz", compression="gz")
    assert info.path.name.endswith(".tar.gz")
    report = restore_snapshot(CodexHome(tmp_path / "fresh"), info.path, KEY)
    assert points(CodexHome(tmp_path / "fresh")) == points(home) and report.points > 0


# --------------------------------------------------------------------------- refusals


def largest_index_member(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        return max((m for m in tar.getmembers() if m.name.startswith("index/")), key=lambda m: m.size).name


@pytest.mark.parametrize("member_name", ["repo/unique_chunks.parquet", "largest index file (sparse)"])
def test_flipped_byte_in_a_member_is_refused_and_nothing_is_installed(archive, tmp_path, member_name) -> None:
    if member_name.startswith("largest"):
        member_name = largest_index_member(archive)
    tampered = tmp_path / archive.name
    shutil.copy(archive, tampered)
    with tarfile.open(tampered) as tar:
        member = tar.getmember(member_name)
        stored = sum(n for _, n in member.sparse) if member.sparse else member.size
        offset = member.offset_data + stored // 2
    with tampered.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))

    assert_refused(tampered, tmp_path / "target", match=f"{member_name}.*sha256", reason="sha256")


def test_edited_manifest_fails_the_hmac(archive, tmp_path) -> None:
    def promote(manifest: dict) -> None:
        manifest["tags"] = ["release"]  # e.g. to dodge retention

    tampered = rewrite(archive, tmp_path / "edited.tar", edit=promote)
    with pytest.raises(SnapshotRejected, match="HMAC mismatch: manifest.json was modified") as err:
        verify_snapshot(tampered, KEY)
    assert err.value.reason == "hmac"


def test_wrong_key_is_refused_naming_both_keys_and_a_retired_key_still_verifies(archive) -> None:
    with pytest.raises(SnapshotRejected) as err:
        verify_snapshot(archive, OTHER_KEY)
    assert err.value.reason == "key"
    assert key_fingerprint(KEY) in str(err.value) and key_fingerprint(OTHER_KEY) in str(err.value)
    with pytest.raises(SnapshotRejected, match="no key was given"):
        verify_snapshot(archive, None)
    # After a rotation: new key first, the retired one still verifies old snapshots.
    assert verify_snapshot(archive, [OTHER_KEY, KEY]).key_id == key_fingerprint(KEY)


def test_unsigned_snapshots_need_an_explicit_opt_in_both_ways(source, tmp_path) -> None:
    home, _ = source
    with pytest.raises(SnapshotError, match="CODEX_SNAPSHOT_KEY"):
        create_snapshot(home, REPO, key=None, out_dir=tmp_path)
    with pytest.raises(SnapshotError, match="too short"):
        create_snapshot(home, REPO, key=b"short", out_dir=tmp_path)
    info = create_snapshot(home, REPO, key=None, out_dir=tmp_path, allow_unsigned=True)
    assert not info.signed
    assert_refused(info.path, tmp_path / "target", match="unsigned", reason="unsigned")
    assert not verify_snapshot(info.path, None, allow_unsigned=True).signed


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    data = b"pwned\n" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    return info, data


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../escape.txt"), "path traversal"),
        (_member("repo/graph/../../../escape.txt"), "path traversal"),
        (_member("/tmp/codex-snapshot-escape.txt"), "absolute path"),
        (_member("repo/graph/evil", tarfile.SYMTYPE, "/etc/passwd"), "is a symlink"),
        (_member("repo/graph/evil", tarfile.LNKTYPE, "manifest.json"), "is a hard link"),
        (_member("repo/graph/evil", tarfile.CHRTYPE), "is a device file"),
        (_member("repo/graph/evil", tarfile.FIFOTYPE), "is a fifo"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_hostile_members_are_refused_even_in_a_validly_signed_archive(archive, tmp_path, member, message) -> None:
    hostile = rewrite(archive, tmp_path / "hostile.tar", extra=[member])  # manifest and signature untouched
    assert_refused(hostile, tmp_path / "target", match=message, reason="hostile")
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/codex-snapshot-escape.txt").exists()


def test_a_signed_manifest_listing_a_traversal_path_is_refused(archive, tmp_path) -> None:
    """Even someone holding the key cannot make restore write outside CODEX_HOME."""
    info, data = _member("../escape.txt")

    def add(manifest: dict) -> None:
        manifest["files"]["../escape.txt"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    hostile = rewrite(archive, tmp_path / "signed-hostile.tar", edit=add, resign=KEY, extra=[(info, data)])
    with pytest.raises(SnapshotRejected, match="path traversal"):
        restore_snapshot(CodexHome(tmp_path / "target"), hostile, KEY)
    assert not (tmp_path / "escape.txt").exists()


def test_members_missing_or_unlisted_are_refused(archive, tmp_path) -> None:
    def drop(manifest: dict) -> None:
        del manifest["files"]["repo/files.parquet"]

    unlisted = rewrite(archive, tmp_path / "unlisted.tar", edit=drop, resign=KEY)
    with pytest.raises(SnapshotRejected, match="'repo/files.parquet' is not listed in the manifest"):
        verify_snapshot(unlisted, KEY)
    with pytest.raises(SnapshotRejected, match="not a readable tar archive|truncated"):
        truncated = tmp_path / "truncated.tar"
        truncated.write_bytes(archive.read_bytes()[: 50_000])
        verify_snapshot(truncated, KEY)


# --------------------------------------------------------------------------- restore drill


def test_restore_drill_after_the_live_index_is_damaged(source, archive, expected_answers, tmp_path) -> None:
    home = copy_home(source[0], tmp_path / "home")
    index = EmbeddedVectorIndex(home.index_dir)
    version = index.current(REPO).version
    index.close()
    shard = home.index_dir / REPO / "versions" / version / "shard"
    files = sorted((p for p in shard.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with files[-1].open("r+b") as fh:  # garble the largest file (vectors or payloads) ...
        fh.write(os.urandom(4096))
    files[0].unlink()  # ... and delete another
    damaged = index_files_intact(home, REPO)
    assert len(damaged) == 2
    with pytest.raises(SnapshotError, match="damaged"):
        create_snapshot(home, REPO, key=KEY, out_dir=tmp_path / "out")  # never archive a broken index

    report = restore_snapshot(home, archive, KEY)
    assert report.previous_version == version == report.index_version
    assert report.registry == "unchanged" and report.warnings == []
    assert index_files_intact(home, REPO) == []
    assert not list((home.index_dir / REPO).glob(".replaced-*")) and not list(home.root.glob(".snapshot-restore-*"))
    assert answers(home) == expected_answers


def test_restore_switches_serving_to_the_snapshot_version(source, archive, tmp_path) -> None:
    """A newer version is published after the snapshot; restoring swaps the pointer back, a running
    reader picks it up on its next refresh, and the newer version stays on disk for a rollback."""
    home = copy_home(source[0], tmp_path / "home")
    index = EmbeddedVectorIndex(home.index_dir)
    old = index.current(REPO)
    payloads = dict(index.iter_payloads(REPO, old.version))
    pid = next(iter(payloads))
    (stored,) = index.get(REPO, [pid], with_vectors=True)
    from codex_core.vector_store import IndexPoint

    newer = index.stage(REPO, old.dim, [IndexPoint(pid, stored.vector, payloads[pid])], commit=old.commit)
    index.publish(REPO, newer, commit=old.commit)
    index.close()

    engine = QueryEngine(home, embedder=shared_embedder(None, DEFAULT_MODEL_ID, "cpu"), answerer=offline_answerer(),
                         abstain_below=0.0, refresh_every_s=0.0)
    try:
        assert engine.repos()[REPO]["chunks"] == 1
        report = restore_snapshot(home, archive, KEY)
        assert report.previous_version == newer
        now = engine.repos()[REPO]
        assert (now["commit"], now["version"], now["chunks"]) == (old.commit, old.version, len(payloads))
    finally:
        engine.close()
    assert (home.index_dir / REPO / "versions" / newer / "version.json").exists()


def test_restore_keeps_an_existing_registration_and_warns(source, archive, tmp_path) -> None:
    home = CodexHome(tmp_path / "home")
    RepoRegistry(home.registry_path).add(REPO, str(tmp_path / "elsewhere"))
    report = restore_snapshot(home, archive, KEY)
    assert report.registry == "kept-existing"
    assert RepoRegistry(home.registry_path).get(REPO).source == str(tmp_path / "elsewhere")
    assert any("Kept the registered source" in w for w in report.warnings)
    assert any("cannot verify citations" in w for w in report.warnings)


# --------------------------------------------------------------------------- after an incremental ingest

JITTER = "time.sleep(base_delay * (2 ** attempt) + random.uniform(0, base_delay))"


def commit_jitter(repo: Path) -> str:
    """The next commit: ``retry_with_backoff`` (and its copy) gains jitter; every other file is unchanged."""
    for path in (repo / "app" / "retry.py", repo / "app" / "retry_copy.py"):
        text = path.read_text().replace("import time\n", "import random\nimport time\n")
        path.write_text(text.replace("time.sleep(base_delay * (2 ** attempt))", JITTER))
    return commit_all(repo, "Jitter for retries")


def copy_source(source, dest: Path) -> tuple[CodexHome, Path]:
    """A copy of the ingested home and of its git repository, to commit to and re-ingest freely."""
    home = copy_home(source[0], dest / "home")
    repo = dest / "demo"
    shutil.copytree(source[1], repo, symlinks=True)
    return home, repo


@pytest.fixture(scope="module")
def delta_ingested(source, tmp_path_factory) -> tuple[CodexHome, Path, str]:
    """The source's next commit ingested the default way: a delta on the published version."""
    home, repo = copy_source(source, tmp_path_factory.mktemp("snapshot-delta"))
    commit = commit_jitter(repo)
    staged = metadata(ingest(home.root, repo), "staged_index")
    assert (staged["mode"], staged["commit"]) == ("delta", commit), staged["mode_reason"]
    return home, repo, commit


def test_snapshot_after_an_incremental_ingest_creates_verifies_and_restores(delta_ingested, tmp_path) -> None:
    """Unchanged points of a delta keep the commit that first chunked them, so the published version
    holds chunks of two commits; that is the normal state after any commit, and snapshots work on it."""
    home, _, commit = delta_ingested
    chunk_commits = {c.commit for c in catalog.read_chunks(home.repo_dir(REPO) / catalog.UNIQUE_CHUNKS)}
    assert commit in chunk_commits and len(chunk_commits) == 2  # the premise: reused chunks kept theirs

    info = create_snapshot(home, REPO, key=KEY, out_dir=tmp_path / "snaps")
    assert info.commit == commit
    assert verify_snapshot(info.path, KEY).commit == commit

    fresh = CodexHome(tmp_path / "fresh")
    report = restore_snapshot(fresh, info.path, KEY)
    assert (report.commit, report.warnings) == (commit, [])
    assert index_files_intact(fresh, REPO) == []
    assert points(fresh) == points(home)
    live = answers(home)
    assert live[0]["index_commit"] == commit
    assert any(JITTER in c["snippet"] for c in live[0]["citations"])  # the new commit's code is cited
    assert answers(fresh) == live


def test_snapshot_refuses_while_a_run_for_the_next_commit_has_not_published(delta_ingested, tmp_path) -> None:
    """A run stopped after rewriting the catalog for a newer commit (killed, or gated by a failing
    check) is refused and writes nothing; once a run publishes that commit, the snapshot succeeds."""
    home = copy_home(delta_ingested[0], tmp_path / "home")
    repo = tmp_path / "demo"
    shutil.copytree(delta_ingested[1], repo, symlinks=True)
    (repo / "app" / "config_parser.py").write_text("def parse(line):\n    return line.split('=', 1)\n")
    newer = commit_all(repo, "Simpler parser")
    stopped = ingest(home.root, repo, selection=dg.AssetSelection.assets(
        repo_snapshot, code_files, code_chunks, unique_chunks))
    assert stopped.success

    out = tmp_path / "snaps"
    with pytest.raises(SnapshotError, match="an ingest run is in progress or failed") as refused:
        create_snapshot(home, REPO, key=KEY, out_dir=out)
    assert delta_ingested[2][:12] in str(refused.value) and f"feriactl ingest --name {REPO}" in str(refused.value)
    assert not out.exists() or not list(out.iterdir())

    assert ingest(home.root, repo).success
    assert create_snapshot(home, REPO, key=KEY, out_dir=out).commit == newer


def test_snapshot_refuses_a_catalog_that_does_not_hold_the_published_points(delta_ingested, tmp_path) -> None:
    """A run of the published commit itself that rewrote unique_chunks.parquet and did not publish:
    the commits agree, the points do not, and the archive would not restore to what serving reads."""
    home = copy_home(delta_ingested[0], tmp_path / "home")
    unique_path = home.repo_dir(REPO) / catalog.UNIQUE_CHUNKS
    catalog.write_chunks(unique_path, catalog.read_chunks(unique_path)[1:])
    with pytest.raises(SnapshotError, match="1 of its points are missing") as refused:
        create_snapshot(home, REPO, key=KEY, out_dir=tmp_path / "snaps")
    assert "an ingest run is in progress or failed" in str(refused.value)


# --------------------------------------------------------------------------- retention


def test_retention_keeps_newest_per_day_and_every_release(source, tmp_path) -> None:
    home, _ = source
    out = tmp_path / "snaps"
    today = datetime(2025, 3, 10, tzinfo=UTC)
    plan = [  # (offset in days, hour, tags)
        (0, 1, ()), (0, 12, ()), (0, 23, ()),
        (-1, 8, ()),
        (-2, 3, ("release",)), (-2, 9, ()),
        (-3, 5, ()),
        (-5, 5, ("release",)),
        (-9, 5, ()),
    ]
    made = {}
    for days, hour, tags in plan:
        when = today + timedelta(days=days, hours=hour)
        made[(days, hour)] = create_snapshot(home, REPO, key=KEY, out_dir=out, tags=tags, now=when).path
    deleted = apply_retention(out, keep_daily=3)
    kept = {p for p in made.values() if p.exists()}
    assert kept == {made[(0, 23)], made[(-1, 8)], made[(-2, 9)], made[(-2, 3)], made[(-5, 5)]}
    assert set(deleted) == set(made.values()) - kept
    assert apply_retention(out, keep_daily=3) == []  # idempotent
    with pytest.raises(ValueError, match="keep_daily"):
        apply_retention(out, keep_daily=0)


def test_a_snapshot_masked_by_an_older_masker_is_refused_and_purged(source, tmp_path, monkeypatch) -> None:
    """After a masker upgrade, an older snapshot may hold credentials the new rules mask: restoring
    it would publish them again. It is refused, listed as stale, and ``--stale-masking`` deletes it
    (a release tag does not save it)."""
    home, _ = source
    out = tmp_path / "snaps"
    current = create_snapshot(home, REPO, key=KEY, out_dir=out, now=datetime(2025, 3, 10, 9, tzinfo=UTC))
    monkeypatch.setattr("codex_core.snapshot.format.MASKER_VERSION", 1)  # the one place snapshot code reads it
    older = create_snapshot(home, REPO, key=KEY, out_dir=out, tags=("release",),
                            now=datetime(2025, 3, 9, 9, tzinfo=UTC))
    monkeypatch.undo()
    assert {i.path: i.stale_masking for i in list_snapshots(out)} == {current.path: False, older.path: True}
    with pytest.raises(SnapshotError, match="masker v1"):
        restore_snapshot(CodexHome(tmp_path / "fresh"), older.path, KEY)
    assert not (tmp_path / "fresh" / "index").exists()  # nothing installed
    assert apply_retention(out, keep_daily=7) == []  # plain retention keeps both (two days, one release)
    assert apply_retention(out, keep_daily=7, drop_stale_masking=True) == [older.path]
    assert [i.path for i in list_snapshots(out)] == [current.path]


# --------------------------------------------------------------------------- CLI


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="feriactl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_create_list_verify_restore(source, tmp_path, monkeypatch, capsys) -> None:
    """``feriactl snapshot ...`` through its parser (feriactl's main maps CliError to exit code 2)."""
    home = copy_home(source[0], tmp_path / "home")
    monkeypatch.setenv("CODEX_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.delenv("CODEX_SNAPSHOT_KEY", raising=False)
    with pytest.raises(CliError, match="no snapshot key.*--unsigned"):
        run_cli("snapshot", "create", "--repo", REPO)

    monkeypatch.setenv("CODEX_SNAPSHOT_KEY", KEY.decode())
    assert run_cli("snapshot", "create", "--repo", REPO, "--tag", "release", "--json") == 0
    created = json.loads(capsys.readouterr().out)
    assert created["tags"] == ["release"] and Path(created["path"]).parent == home.snapshots_dir / REPO

    assert run_cli("snapshot", "list", "--json") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [created["id"]]
    assert run_cli("snapshot", "verify", created["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    monkeypatch.setenv("CODEX_SNAPSHOT_KEY", OTHER_KEY.decode())
    assert run_cli("snapshot", "verify", created["id"]) == 1
    assert "FAILED" in capsys.readouterr().out
    monkeypatch.setenv("CODEX_SNAPSHOT_PREVIOUS_KEYS", KEY.decode())  # rotated: the old key still verifies
    assert run_cli("snapshot", "verify", created["id"]) == 0
    capsys.readouterr()

    fresh = tmp_path / "fresh"
    monkeypatch.setenv("CODEX_HOME", str(fresh))
    assert run_cli("snapshot", "restore", created["path"], "--json") == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["repo"] == REPO and restored["registry"] == "added"
    assert (fresh / "index" / REPO / "CURRENT.json").exists()
    with pytest.raises(CliError, match="no snapshot 'missing-id'"):
        run_cli("snapshot", "restore", "missing-id")
