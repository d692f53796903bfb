"""Create: collect the published state of one repo, check it is consistent, write one signed archive."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core import catalog
from codex_core.calibration.store import CalibratorStore
from codex_core.embedding import DEFAULT_MODEL_ID, EmbeddingCache, embedding_document
from codex_core.fsio import fsync_dir, fsync_file
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome, validate_repo_name
from codex_core.models import content_hash
from codex_core.settings import Settings
from codex_core.snapshot import format as snapshot_format
from codex_core.snapshot.archive import Entry, add_entry, hash_file
from codex_core.snapshot.format import (
    CALIBRATION_POINTER,
    COMPONENT,
    COMPRESSIONS,
    EMBEDDINGS,
    FORMAT,
    FORMAT_VERSION,
    KEY_ENV,
    MANIFEST,
    REPO_FILES,
    SIGNATURE,
    SnapshotError,
    SnapshotInfo,
    canonical_json,
    codex_version,
    refuse_server_index,
    snapshot_id,
)
from codex_core.snapshot.signing import as_keys, sign_manifest
from codex_core.vector_store import CURRENT_FILE, SHARD_DIR, VERSION_FILE, VERSIONS_DIR, EmbeddedVectorIndex


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _collect_index(home: CodexHome, repo: str) -> tuple[dict[str, Any], dict[str, Any], list[Entry], list[str]]:
    """The published version's pointer, version.json, file entries (hashed) and empty directories."""
    index_root = home.index_dir
    pointer_path = index_root / repo / CURRENT_FILE
    if not pointer_path.is_file():
        raise SnapshotError(
            f"repository {repo!r} has no published embedded index under {index_root} (no {CURRENT_FILE}); "
            f"ingest it first (feriactl ingest PATH --name {repo}). Deployments on a Qdrant server "
            "(QDRANT_URL) back up with Qdrant's own snapshots."
        )
    try:
        pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
        version = pointer["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(
            f"{pointer_path} is unreadable ({exc}): the index pointer is damaged; restore the newest good snapshot "
            "(feriactl snapshot restore ID) or re-ingest"
        ) from None
    vdir = index_root / repo / VERSIONS_DIR / version
    try:
        version_bytes = (vdir / VERSION_FILE).read_bytes()
    except FileNotFoundError:
        raise SnapshotError(
            f"published version {version} of {repo!r} is missing its {VERSION_FILE} under {vdir}: the index is "
            "damaged; restore the newest good snapshot (feriactl snapshot restore ID) or re-ingest"
        ) from None
    staged = json.loads(version_bytes)
    entries = [Entry(f"index/{version}/{VERSION_FILE}", len(version_bytes),
                      hashlib.sha256(version_bytes).hexdigest(), data=version_bytes)]
    shard = vdir / SHARD_DIR
    actual: dict[str, list[Any]] = {}
    empty_dirs: list[str] = []
    for path in sorted(shard.rglob("*")):
        rel = path.relative_to(shard).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise SnapshotError(f"{path} is not a regular file or directory; the index version is damaged")
        if path.is_dir():
            if not any(path.iterdir()):
                empty_dirs.append(f"index/{version}/{SHARD_DIR}/{rel}")
            continue
        size, sha = hash_file(path)
        actual[rel] = [size, sha]
        entries.append(Entry(f"index/{version}/{SHARD_DIR}/{rel}", size, sha, source=path))
    expected = staged.get("files") or {}
    damaged = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
    if damaged:
        raise SnapshotError(
            f"published version {version} of {repo!r} does not match its {VERSION_FILE} "
            f"({len(damaged)} files differ, e.g. {damaged[:3]}): the live index is damaged and a snapshot of it "
            "would be useless; restore the newest good snapshot (feriactl snapshot restore ID) or re-ingest"
        )
    return pointer, staged, entries, empty_dirs


def _embedding_rows(home: CodexHome, unique_chunks: bytes, model_id: str, workdir: Path) -> tuple[Path, int, int]:
    """Export the cache rows of the repo's chunks to a small sqlite file: (path, rows, chunks)."""
    parquet = workdir / catalog.UNIQUE_CHUNKS
    parquet.write_bytes(unique_chunks)
    hashes = sorted({content_hash(embedding_document(c)) for c in catalog.read_chunks(parquet)})
    out = workdir / EMBEDDINGS
    target = EmbeddingCache(out)  # same schema as the live cache
    target.close()
    rows = 0
    source = home.embedding_cache_path
    if source.exists():
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
        dst = sqlite3.connect(out)
        try:
            for start in range(0, len(hashes), 500):
                part = hashes[start : start + 500]
                marks = ",".join("?" * len(part))
                found = src.execute(
                    f"SELECT model, hash, dim, vector FROM vectors WHERE model = ? AND hash IN ({marks})",
                    [model_id, *part],
                ).fetchall()
                dst.executemany("INSERT OR IGNORE INTO vectors (model, hash, dim, vector) VALUES (?, ?, ?, ?)", found)
                rows += len(found)
            dst.commit()
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal sidecar
        finally:
            src.close()
            dst.close()
    return out, rows, len(hashes)


def _check_catalog(home: CodexHome, repo: str, version: str, commit: str, files: Mapping[str, bytes]) -> None:
    """Refuse a catalog that an ingest run rewrote after ``version`` was published.

    ``snapshot.json`` and ``skipped.json`` are the first files a run writes and carry its commit, so a
    run for another commit shows there. A chunk's own ``commit`` does not identify a run: a delta
    ingest keeps the commit that first chunked an unchanged file. ``unique_chunks.parquet`` is instead
    compared with the points of the published version (the pipeline stages exactly its point ids): a
    run that rewrote it and did not publish, even one of the same commit, leaves points missing or extra.
    """
    import pandas as pd

    then = (
        "an ingest run is in progress or failed after it started. Snapshot after the run publishes (or re-run "
        f"feriactl ingest --name {repo})"
    )
    markers = {name: json.loads(files[name]).get("commit") for name in (catalog.SNAPSHOT, catalog.SKIPPED)
               if name in files}
    stale = {name: found for name, found in markers.items() if found != commit}
    if stale:
        raise SnapshotError(
            f"repository {repo!r}: the published index is for commit {commit[:12]} but {stale} name another "
            f"commit; {then}"
        )
    wanted = set(pd.read_parquet(io.BytesIO(files[catalog.UNIQUE_CHUNKS]), columns=["point_id"])["point_id"])
    index = EmbeddedVectorIndex(home.index_dir)
    try:
        held = {pid for pid, _ in index.iter_payloads(repo, version, with_payload=False)}
    finally:
        index.close()
    missing, extra = held - wanted, wanted - held
    if missing or extra:
        raise SnapshotError(
            f"repository {repo!r}: {catalog.UNIQUE_CHUNKS} does not hold the points of the published version "
            f"{version} (commit {commit[:12]}): {len(missing)} of its points are missing and {len(extra)} others "
            f"are extra; {then}"
        )


def create_snapshot(
    home: CodexHome,
    repo: str,
    *,
    key: bytes | str | None,
    out_dir: Path,
    tags: Iterable[str] = (),
    allow_unsigned: bool = False,
    compression: str = "none",
    model_id: str = DEFAULT_MODEL_ID,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> SnapshotInfo:
    """Write one signed archive of ``repo``'s published state into ``out_dir``.

    ``key`` signs it (HMAC-SHA256); ``key=None`` is refused unless ``allow_unsigned``. ``now`` fixes the
    creation time (backfills, tests). Refuses a damaged live index or a catalog an unpublished ingest run
    rewrote, so every archive is internally consistent, and refuses outright when ``settings``
    (read from the environment when not given) name a Qdrant server: that index is not in CODEX_HOME.
    """
    started = time.perf_counter()
    refuse_server_index(settings or Settings.from_env(), "create")
    validate_repo_name(repo)
    keys = as_keys(key)
    if not keys and not allow_unsigned:
        raise SnapshotError(
            f"no snapshot key: set {KEY_ENV} (e.g. export {KEY_ENV}=$(python -c 'import secrets; "
            "print(secrets.token_hex(32))')) or pass --unsigned explicitly"
        )
    if compression not in COMPRESSIONS:
        raise SnapshotError(f"unknown compression {compression!r}: use one of {sorted(COMPRESSIONS)}")
    tag_list = sorted({t.strip() for t in tags if t and t.strip()})
    for tag in tag_list:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", tag):
            raise SnapshotError(f"invalid tag {tag!r}: use 1-64 characters from [A-Za-z0-9._-]")

    pointer, staged, entries, empty_dirs = _collect_index(home, repo)
    version, commit = pointer["version"], pointer["commit"]
    repo_dir = home.repo_dir(repo)
    repo_files: dict[str, bytes] = {}
    for name in REPO_FILES:
        path = repo_dir / name
        if path.is_file():
            repo_files[name] = path.read_bytes()
    if catalog.UNIQUE_CHUNKS not in repo_files:
        raise SnapshotError(f"{repo_dir / catalog.UNIQUE_CHUNKS} is missing: re-run feriactl ingest --name {repo}")
    _check_catalog(home, repo, version, commit, repo_files)
    for name, data in repo_files.items():
        entries.append(Entry(f"repo/{name}", len(data), hashlib.sha256(data).hexdigest(), data=data))

    graph_dir = home.graph_dir(repo)
    if graph_dir.is_dir():
        for path in sorted(p for p in graph_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            data = path.read_bytes()
            rel = path.relative_to(graph_dir).as_posix()
            entries.append(Entry(f"repo/graph/{rel}", len(data), hashlib.sha256(data).hexdigest(), data=data))

    calibrator = None
    try:
        published = CalibratorStore(home.calibration_dir(repo)).current()
    except ValueError as exc:
        raise SnapshotError(str(exc)) from None
    if published is not None:
        cal_bytes = published.pointer.read_bytes()
        cal = json.loads(cal_bytes)
        name = published.path.name
        cal_file = published.path.read_bytes()
        entries.append(Entry(f"repo/calibration/{CALIBRATION_POINTER}", len(cal_bytes),
                              hashlib.sha256(cal_bytes).hexdigest(), data=cal_bytes))
        entries.append(Entry(f"repo/calibration/{name}", len(cal_file), hashlib.sha256(cal_file).hexdigest(),
                              data=cal_file))
        calibrator = {"version": cal.get("version"), "file": name}

    if home.configs_dir.is_dir():
        for path in sorted(home.configs_dir.glob("*.json")):
            if re.fullmatch(rf"{COMPONENT}\.json", path.name) and not path.name.startswith("."):
                data = path.read_bytes()
                entries.append(Entry(f"configs/{path.name}", len(data), hashlib.sha256(data).hexdigest(), data=data))

    registry_entry = RepoRegistry(home.registry_path).all().get(repo)
    created = (now or _utc_now()).astimezone(UTC)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=out_dir) as work:
        emb_path, emb_rows, chunk_count = _embedding_rows(home, repo_files[catalog.UNIQUE_CHUNKS], model_id, Path(work))
        emb_bytes = emb_path.read_bytes()
        entries.append(Entry(EMBEDDINGS, len(emb_bytes), hashlib.sha256(emb_bytes).hexdigest(), data=emb_bytes))

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "repo": repo,
            "commit": commit,
            "index_version": version,
            "index": {"points": staged.get("points"), "dim": staged.get("dim"), "kind": staged.get("index")},
            "model_id": model_id,
            "masker_version": snapshot_format.MASKER_VERSION,
            "chunks": chunk_count,
            "embedding_rows": emb_rows,
            "calibrator": calibrator,
            "registry": {"source": registry_entry.source, "added_at": registry_entry.added_at}
            if registry_entry else None,
            "tags": tag_list,
            "created_at": created.isoformat(timespec="microseconds"),
            "codex_version": codex_version(),
            "empty_dirs": empty_dirs,
            "files": {e.arcname: {"size": e.size, "sha256": e.sha256} for e in entries},
        }
        manifest_bytes = canonical_json(manifest)
        signature = sign_manifest(manifest, keys[0] if keys else None)
        base = f"{repo}-{commit[:7]}-{created.strftime('%Y%m%dT%H%M%SZ')}"
        tmp = out_dir / f".{base}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        mode = "w:gz" if compression == "gz" else "w"
        options: dict[str, Any] = {"compresslevel": 6} if compression == "gz" else {}
        try:
            mtime = int(created.timestamp())
            sparse_counter = [0]
            with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT, **options) as tar:
                head = [
                    Entry(MANIFEST, len(manifest_bytes), "", data=manifest_bytes),
                    Entry(SIGNATURE, 0, "", data=canonical_json(signature)),
                ]
                for entry in head:
                    add_entry(tar, entry, mtime, sparse_counter)
                for entry in entries:
                    written = add_entry(tar, entry, mtime, sparse_counter)
                    if written != entry.sha256:
                        raise SnapshotError(f"{entry.arcname} changed while the snapshot was written; retry")
            fsync_file(tmp)
            final = _claim_name(tmp, out_dir, base, COMPRESSIONS[compression])
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    fsync_dir(out_dir)
    return SnapshotInfo(
        id=snapshot_id(final),
        path=final,
        repo=repo,
        commit=commit,
        index_version=version,
        created_at=manifest["created_at"],
        size=final.stat().st_size,
        files=len(entries),
        tags=tuple(tag_list),
        signed=bool(keys),
        key_id=signature.get("key_id"),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        seconds=round(time.perf_counter() - started, 3),
    )


def _claim_name(tmp: Path, out_dir: Path, base: str, suffix: str) -> Path:
    """Link ``tmp`` to the first free ``base[-N]suffix``: never overwrites an existing snapshot."""
    for attempt in range(1000):
        final = out_dir / f"{base}{'' if attempt == 0 else f'-{attempt}'}{suffix}"
        try:
            os.link(tmp, final)
            return final
        except FileExistsError:
            continue
        except OSError:  # no hard links on this filesystem: check-then-rename (racy only between two creators)
            if final.exists():
                continue
            os.replace(tmp, final)
            return final
    raise SnapshotError(f"could not find a free snapshot name for {base} in {out_dir}")
