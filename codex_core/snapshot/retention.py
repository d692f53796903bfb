"""Listing, lookup by id and retention of the archives in a directory (from unverified manifests)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.snapshot.format import (
    ALGORITHM,
    ARCHIVE_SUFFIXES,
    RELEASE_TAG,
    SnapshotError,
    SnapshotInfo,
    canonical_json,
    snapshot_id,
)
from codex_core.snapshot.verify import read_manifest


def _archives(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)  # temp files and dirs
    )


def _info_from(path: Path, manifest: Mapping[str, Any], signature: Mapping[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(
        id=snapshot_id(path),
        path=path,
        repo=str(manifest.get("repo")),
        commit=str(manifest.get("commit")),
        index_version=str(manifest.get("index_version")),
        created_at=str(manifest.get("created_at", "")),
        size=path.stat().st_size,
        files=len(manifest.get("files") or {}),
        tags=tuple(manifest.get("tags") or ()),
        signed=signature.get("algorithm") == ALGORITHM,
        key_id=signature.get("key_id"),
        manifest_sha256=hashlib.sha256(canonical_json(manifest)).hexdigest(),
        masker_version=manifest.get("masker_version"),
    )


def list_snapshots(directory: Path, *, repo: str | None = None) -> list[SnapshotInfo]:
    """Every archive under ``directory`` (recursively), oldest first, from its (unverified) manifest.

    An unreadable archive is listed with ``problem`` set instead of failing the whole listing.
    """
    infos = []
    for path in _archives(directory):
        try:
            manifest, signature = read_manifest(path)
            info = _info_from(path, manifest, signature)
        except SnapshotError as exc:
            info = SnapshotInfo(snapshot_id(path), path, "?", "?", "?", "", path.stat().st_size, 0, (), False, None,
                                "", problem=str(exc))
        if repo is None or info.repo == repo:
            infos.append(info)
    return sorted(infos, key=lambda i: (i.created_at, i.id))


def find_snapshot(directory: Path, id_or_path: str) -> Path:
    """An archive by path, or by id (file name without extension) anywhere under ``directory``."""
    candidate = Path(id_or_path).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    matches = [p for p in _archives(directory) if snapshot_id(p) == id_or_path or p.name == id_or_path]
    if not matches:
        raise SnapshotError(f"no snapshot {id_or_path!r} under {directory} (list them: feriactl snapshot list)")
    if len(matches) > 1:
        raise SnapshotError(f"snapshot id {id_or_path!r} is ambiguous: {[str(m) for m in matches]}; pass a path")
    return matches[0]


def retention_plan(infos: Sequence[SnapshotInfo], keep_daily: int, keep_releases: bool = True) -> set[Path]:
    """The archives to KEEP: per repo, the newest of each of the ``keep_daily`` most recent UTC days
    that have a snapshot, plus every ``release``-tagged one; unreadable archives are always kept."""
    if keep_daily < 1:
        raise ValueError(f"keep_daily must be at least 1, got {keep_daily}")
    keep = {i.path for i in infos if i.problem is not None}
    by_repo: dict[str, list[SnapshotInfo]] = {}
    for info in infos:
        if info.problem is None:
            by_repo.setdefault(info.repo, []).append(info)
    for items in by_repo.values():
        newest_per_day: dict[str, SnapshotInfo] = {}
        for info in sorted(items, key=lambda i: (_parse_time(i.created_at), i.id), reverse=True):
            newest_per_day.setdefault(_parse_time(info.created_at).date().isoformat(), info)
        for day in sorted(newest_per_day, reverse=True)[:keep_daily]:
            keep.add(newest_per_day[day].path)
        if keep_releases:
            keep |= {i.path for i in items if RELEASE_TAG in i.tags}
    return keep


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def apply_retention(
    directory: Path, keep_daily: int, keep_releases: bool = True, *, drop_stale_masking: bool = False
) -> list[Path]:
    """Delete the archives under ``directory`` that :func:`retention_plan` does not keep; returns them.
    ``drop_stale_masking`` also deletes every snapshot masked by another masker version (releases too)."""
    infos = list_snapshots(directory)
    keep = retention_plan(infos, keep_daily, keep_releases)
    if drop_stale_masking:
        keep -= {i.path for i in infos if i.stale_masking}
    deleted = []
    for info in infos:
        if info.path not in keep:
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()
            deleted.append(info.path)
    return deleted
