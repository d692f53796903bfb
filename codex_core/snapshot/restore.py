"""Restore: verify, extract into staging (hashing again), install into a home, publish the index last."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codex_core import catalog
from codex_core.calibration.store import CalibratorStore
from codex_core.embedding import EmbeddingCache
from codex_core.fsio import fsync_dir, move_into_place, write_json_atomic
from codex_core.git import GitError, RepoRegistry, is_url, run_git
from codex_core.home import CodexHome
from codex_core.published import write_published
from codex_core.settings import Settings
from codex_core.snapshot import format as snapshot_format
from codex_core.snapshot.archive import Extractor
from codex_core.snapshot.format import (
    CALIBRATION_POINTER,
    EMBEDDINGS,
    REPO_FILES,
    RestoreReport,
    SnapshotError,
    SnapshotRejected,
    refuse_server_index,
)
from codex_core.snapshot.verify import read_manifest, verify_snapshot, walk_verified
from codex_core.vector_store import VERSION_FILE, VERSIONS_DIR, EmbeddedVectorIndex


def _sweep_dead_staging(root: Path) -> None:
    for entry in root.glob(".snapshot-restore-*"):
        pid = entry.name.split("-")[2] if entry.name.count("-") >= 3 else ""
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass


def _install_version(staging_vdir: Path, vroot: Path, version: str) -> None:
    """Put the restored version directory at ``vroot/<version>``, replacing a (damaged) one of that id.

    Temporary names live next to ``versions/`` (never inside it, where ``prune`` would take them for
    dead stages); the swap itself is two renames.
    """
    vroot.mkdir(parents=True, exist_ok=True)
    incoming = staging_vdir
    if os.stat(staging_vdir).st_dev != os.stat(vroot).st_dev:  # another filesystem: copy next to it first
        incoming = vroot.parent / f".restore-{version}-{secrets.token_hex(4)}"
        shutil.copytree(staging_vdir, incoming)
    target = vroot / version
    aside = None
    if target.exists():
        aside = vroot.parent / f".replaced-{version}-{secrets.token_hex(4)}"
        os.rename(target, aside)
    try:
        os.rename(incoming, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
        raise
    fsync_dir(vroot)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _install_calibration(staging: Path, cal_dir: Path) -> int:
    src_dir = staging / "repo" / "calibration"
    pointer_src = src_dir / CALIBRATION_POINTER
    if not pointer_src.is_file():
        return 0
    pointer = json.loads(pointer_src.read_text())
    # Calibrator numbers are per home: a different calibrator under the same number is renumbered.
    CalibratorStore(cal_dir).install(pointer, src_dir / pointer["path"], move_into_place)
    return 2


def _merge_embeddings(home: CodexHome, snapshot_db: Path) -> tuple[int, int]:
    """INSERT OR IGNORE the snapshot's rows into the live cache: (rows in snapshot, rows added)."""
    EmbeddingCache(home.embedding_cache_path).close()  # creates the file and table when absent
    conn = sqlite3.connect(home.embedding_cache_path, timeout=60)
    try:
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("ATTACH DATABASE ? AS snap", [str(snapshot_db)])
        kind = conn.execute("SELECT type FROM snap.sqlite_master WHERE name = 'vectors'").fetchone()
        if kind != ("table",):
            raise SnapshotError(f"{EMBEDDINGS} in the snapshot has no vectors table (found {kind})")
        total = conn.execute("SELECT COUNT(*) FROM snap.vectors").fetchone()[0]
        before = conn.total_changes
        conn.execute(
            "INSERT OR IGNORE INTO main.vectors (model, hash, dim, vector)"
            " SELECT model, hash, dim, vector FROM snap.vectors"
        )
        conn.commit()
        added = conn.total_changes - before
        conn.execute("DETACH DATABASE snap")
    finally:
        conn.close()
    return total, added


def _registry_and_sources(home: CodexHome, manifest: Mapping[str, Any], report: RestoreReport) -> Path | None:
    """Register the repo from the manifest if the home does not know it; warn when citations cannot be verified."""
    repo, commit = manifest["repo"], manifest["commit"]
    registry = RepoRegistry(home.registry_path)
    known = registry.all().get(repo)
    snap = manifest.get("registry") or None
    if known is None and snap:
        known = registry.add(repo, snap["source"])
        report.registry = "added"
    elif known is None:
        report.registry = "missing"
        report.warnings.append(
            f"the snapshot has no repos.json entry for {repo!r}: register its source (feriactl ingest PATH --name "
            f"{repo}) so serving can verify citations"
        )
        return None
    elif snap and known.source != snap["source"]:
        report.registry = "kept-existing"
        report.warnings.append(
            f"{repo!r} is registered here with source {known.source!r}; the snapshot recorded {snap['source']!r}. "
            "Kept the registered source."
        )
    worktree = home.checkout_dir(repo) if is_url(known.source) else Path(known.source)
    try:
        run_git(worktree, "cat-file", "-e", f"{commit}^{{commit}}", timeout=60)
    except (GitError, OSError, subprocess.TimeoutExpired):
        report.warnings.append(
            f"{worktree} does not hold commit {commit[:12]}: serving cannot verify citations of {repo!r} (and drops "
            f"them) until it does — "
            + (f"clone {known.source} there (feriactl ingest {known.source} --name {repo})" if is_url(known.source)
               else f"make {known.source} a clone that contains {commit[:12]}")
        )
    return worktree


def restore_snapshot(
    home: CodexHome,
    path: Path,
    key: bytes | str | Sequence[bytes | str] | None,
    *,
    allow_unsigned: bool = False,
    settings: Settings | None = None,
) -> RestoreReport:
    """Verify ``path`` completely, then install it into ``home`` and publish its index version.

    Nothing under ``home`` changes before the whole archive verified. The previously published
    version stays on disk, so ``EmbeddedVectorIndex.publish`` of it is a rollback of the restore.
    A snapshot masked by another masker version is refused: it may hold credentials the current
    rules mask, and its spans would not verify against files masked today. Refused before anything
    is read when ``settings`` (from the environment when not given) name a Qdrant server: serving
    reads that server, never the embedded index a restore would publish.
    """
    refuse_server_index(settings or Settings.from_env(), "restore")
    started = time.perf_counter()
    path = Path(path)
    verified = verify_snapshot(path, key, allow_unsigned=allow_unsigned)
    masker = read_manifest(path)[0].get("masker_version")
    if masker != snapshot_format.MASKER_VERSION:
        raise SnapshotError(
            f"{path.name} was masked by secret masker v{masker or 1}, this is v{snapshot_format.MASKER_VERSION}: "
            "it may hold credentials the current rules mask. Re-ingest the repository instead (feriactl ingest NAME), "
            "then delete such snapshots (feriactl snapshot prune --stale-masking)"
        )
    t_verify = time.perf_counter()

    home.root.mkdir(parents=True, exist_ok=True)
    _sweep_dead_staging(home.root)
    staging = home.root / f".snapshot-restore-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        # Second pass: extract while hashing again, so an archive swapped after the first pass is caught.
        extractor = Extractor(staging)
        again, manifest = walk_verified(path, key, allow_unsigned, on_member=extractor)
        if again.manifest_sha256 != verified.manifest_sha256:
            raise SnapshotRejected(path, "hmac", "the archive changed between verification and extraction")
        for rel in manifest.get("empty_dirs") or []:
            (staging / rel).mkdir(parents=True, exist_ok=True)
        t_extract = time.perf_counter()
        report = _install(home, staging, manifest, verified.id)
        t_install = time.perf_counter()
        index = EmbeddedVectorIndex(home.index_dir)
        try:
            # The pointer swap comes last: serving switches only to a complete, verified installation.
            published = index.publish(report.repo, report.index_version, commit=report.commit)
        finally:
            index.close()
        write_published(home, report.repo, {**published.__dict__, "masker_version": snapshot_format.MASKER_VERSION})
        t_publish = time.perf_counter()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = {
        "verify": round(t_verify - started, 3),
        "extract": round(t_extract - t_verify, 3),
        "install": round(t_install - t_extract, 3),
        "publish": round(t_publish - t_install, 3),
        "total": round(time.perf_counter() - started, 3),
    }
    return report


def _install(home: CodexHome, staging: Path, manifest: Mapping[str, Any], snapshot: str) -> RestoreReport:
    """Move everything but the pointer from ``staging`` into ``home``."""
    repo, version, commit = manifest["repo"], manifest["index_version"], manifest["commit"]
    index = EmbeddedVectorIndex(home.index_dir)
    try:
        try:
            previous = index.current(repo)
        except (ValueError, TypeError, KeyError):  # a garbled CURRENT.json: publish will replace it
            previous = None
        report = RestoreReport(
            id=snapshot, repo=repo, commit=commit, index_version=version,
            points=int((manifest.get("index") or {}).get("points") or 0),
            previous_version=previous.version if previous else None,
        )
        worktree = _registry_and_sources(home, manifest, report)
        repo_dir = home.repo_dir(repo)
        installed = 0
        for name in REPO_FILES:
            src = staging / "repo" / name
            if name == catalog.PUBLISHED or not src.is_file():
                continue  # published_index.json is rewritten from the publish that follows
            if name == catalog.SNAPSHOT and worktree is not None:
                data = json.loads(src.read_text())
                data |= {"worktree": str(worktree), "source": RepoRegistry(home.registry_path).get(repo).source}
                write_json_atomic(src, data, indent=2, sort_keys=True)
            move_into_place(src, repo_dir / name)
            installed += 1
        # Incremental-ingest indexes (<stage>_blobs.json) describe the files just replaced: drop them so
        # the next ingest rebuilds from scratch instead of reusing rows of another commit.
        for stale in repo_dir.glob("*_blobs.json"):
            stale.unlink()
        graph_src = staging / "repo" / "graph"
        if graph_src.is_dir():
            graph_dir = home.graph_dir(repo)
            incoming = {p.relative_to(graph_src) for p in graph_src.rglob("*") if p.is_file()}
            for rel in sorted(incoming):
                move_into_place(graph_src / rel, graph_dir / rel)
                installed += 1
            for old in list(graph_dir.rglob("*")):
                if old.is_file() and old.relative_to(graph_dir) not in incoming:
                    old.unlink()  # e.g. an incremental index of another commit
        installed += _install_calibration(staging, home.calibration_dir(repo))
        configs_src = staging / "configs"
        if configs_src.is_dir():
            for src in sorted(configs_src.iterdir()):
                if not (home.configs_dir / src.name).exists():  # content-addressed: same name, same content
                    move_into_place(src, home.configs_dir / src.name)
                    installed += 1
        report.embeddings_in_snapshot, report.embeddings_added = _merge_embeddings(home, staging / EMBEDDINGS)
        _install_version(staging / "index" / version, home.index_dir / repo / VERSIONS_DIR, version)
        damaged = index.check_files(repo, version)
        if damaged:
            raise SnapshotError(f"restored version {version} differs from its {VERSION_FILE}: {damaged[:3]}")
        report.files_installed = installed + sum(1 for f in manifest["files"] if f.startswith("index/"))
        return report
    finally:
        index.close()


def index_files_intact(home: CodexHome, repo: str) -> list[str]:
    """Files of the published version whose bytes differ from its version.json (empty = intact)."""
    index = EmbeddedVectorIndex(home.index_dir)
    try:
        current = index.current(repo)
        if current is None:
            return []
        return index.check_files(repo, current.version)
    finally:
        index.close()
