"""Verification: the head members, the signature, the manifest, then every member's type, path, size
and sha256 in one streaming pass (:func:`walk_verified`, also the extraction pass of restore).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codex_core.home import validate_repo_name
from codex_core.snapshot.archive import (
    hash_blocks,
    member_blocks,
    member_problem,
    next_member,
    open_archive,
    read_member,
)
from codex_core.snapshot.format import (
    COMPONENT,
    FORMAT,
    FORMAT_VERSION,
    LAYOUT,
    MANIFEST,
    SIGNATURE,
    SnapshotRejected,
    VerifyReport,
    snapshot_id,
)
from codex_core.snapshot.signing import as_keys, check_signature
from codex_core.vector_store import SHARD_DIR, VERSION_FILE, VERSION_PATTERN

_MAX_MANIFEST_BYTES = 64 << 20
_MAX_SIGNATURE_BYTES = 64 << 10


def read_head(tar: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The manifest (parsed, raw) and the signature: the archive's first two members."""
    head = []
    for expected, limit in ((MANIFEST, _MAX_MANIFEST_BYTES), (SIGNATURE, _MAX_SIGNATURE_BYTES)):
        member = next_member(tar, path)
        if member is None:
            raise SnapshotRejected(path, "malformed", f"the archive ends before its {expected}")
        problem = member_problem(member)
        if problem:
            raise SnapshotRejected(path, *problem)
        if member.name != expected:
            raise SnapshotRejected(
                path, "layout", f"member {member.name!r} comes where {expected} must be (not a feriactl snapshot?)"
            )
        head.append(read_member(tar, member, limit, path))
    try:
        manifest = json.loads(head[0])
        signature = json.loads(head[1])
    except ValueError as exc:
        raise SnapshotRejected(path, "malformed", f"manifest or signature is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(signature, dict):
        raise SnapshotRejected(path, "malformed", "manifest.json is not a precision-codex snapshot manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotRejected(
            path, "malformed",
            f"snapshot format version {manifest.get('format_version')!r}; this codex reads {FORMAT_VERSION}",
        )
    return manifest, head[0], signature


def read_manifest(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, signature) of an archive, UNVERIFIED — for listing only."""
    with open_archive(Path(path)) as tar:
        manifest, _, signature = read_head(tar, Path(path))
    return manifest, signature


def _check_manifest(path: Path, manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    try:
        validate_repo_name(manifest["repo"])
        if not VERSION_PATTERN.fullmatch(str(manifest["index_version"])):
            raise ValueError(f"bad index version {manifest['index_version']!r}")
        if not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", str(manifest["commit"])):
            raise ValueError(f"bad commit {manifest['commit']!r}")
        files = manifest["files"]
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
            for v in files.values()
        ):
            raise ValueError("files must map names to {size, sha256}")
        version = manifest["index_version"]
        for name in files:
            problem = _layout_problem(name, version, LAYOUT)
            if problem:
                raise ValueError(problem)
        empty_dir = re.compile(rf"index/{re.escape(version)}/{SHARD_DIR}(/{COMPONENT})+")
        for name in manifest.get("empty_dirs") or []:
            problem = _layout_problem(name, version, empty_dir)
            if problem:
                raise ValueError(problem)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotRejected(path, "malformed", f"manifest.json is invalid ({exc})") from None
    return files


def _layout_problem(name: str, version: str, allowed: re.Pattern[str]) -> str | None:
    problem = member_problem(tarfile.TarInfo(name))
    if problem:
        return problem[1]
    if not allowed.fullmatch(name):
        return f"member {name!r} is outside the snapshot layout"
    if name.startswith("index/") and name.split("/")[1] != version:
        return f"member {name!r} belongs to another index version than {version}"
    return None


def walk_verified(
    path: Path, key: bytes | str | Sequence[bytes | str] | None, allow_unsigned: bool, on_member=hash_blocks
) -> tuple[VerifyReport, dict[str, Any]]:
    """One pass over the archive: signature first, then every member's type, path, size and sha256.

    ``on_member(member, blocks)`` gets each member's content (an iterator of byte blocks) once its
    header passed every check, and returns the sha256 of what it consumed: hashing only for
    verification, hashing while writing for restore's extraction.
    """
    started = time.perf_counter()
    path = Path(path)
    keys = as_keys(key)
    with open_archive(path) as tar:
        manifest, manifest_bytes, signature = read_head(tar, path)
        key_id = check_signature(path, manifest, signature, keys, allow_unsigned)
        files = _check_manifest(path, manifest)
        seen: set[str] = set()
        version_json: bytes | None = None
        checked_bytes = 0
        while (member := next_member(tar, path)) is not None:
            problem = member_problem(member)
            if problem:
                raise SnapshotRejected(path, *problem)
            name = member.name
            if name in seen or name in (MANIFEST, SIGNATURE):
                raise SnapshotRejected(path, "hostile", f"member {name!r} appears twice")
            seen.add(name)
            expected = files.get(name)
            if expected is None:
                raise SnapshotRejected(path, "layout", f"member {name!r} is not listed in the manifest")
            if member.size != expected["size"]:
                raise SnapshotRejected(
                    path, "sha256", f"member {name!r} is {member.size} bytes, the manifest says {expected['size']}"
                )
            if name.endswith(f"/{VERSION_FILE}") and name.count("/") == 2:
                version_json = b"".join(member_blocks(tar, member, path))  # checked against the shard below
                actual = on_member(member, [version_json])
            else:
                actual = on_member(member, member_blocks(tar, member, path))
            if actual != expected["sha256"]:
                raise SnapshotRejected(
                    path, "sha256", f"member {name!r} has sha256 {actual[:16]}…, the manifest says "
                    f"{expected['sha256'][:16]}… (the archive was modified or damaged)",
                )
            checked_bytes += member.size
        missing = sorted(set(files) - seen)
        if missing:
            raise SnapshotRejected(
                path, "incomplete",
                f"{len(missing)} files of the manifest are missing from the archive, e.g. {missing[:3]}",
            )
    _check_version_consistency(path, manifest, files, version_json)
    report = VerifyReport(
        id=snapshot_id(path),
        path=path,
        repo=manifest["repo"],
        commit=manifest["commit"],
        index_version=manifest["index_version"],
        created_at=manifest.get("created_at", ""),
        tags=tuple(manifest.get("tags") or ()),
        signed=key_id is not None,
        key_id=key_id,
        files_checked=len(seen),
        bytes_checked=checked_bytes,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        seconds=round(time.perf_counter() - started, 3),
    )
    return report, manifest


def _check_version_consistency(
    path: Path, manifest: Mapping[str, Any], files: Mapping[str, Mapping[str, Any]], version_json: bytes | None
) -> None:
    """The index files in the archive are exactly the ones the version's own version.json lists."""
    version = manifest["index_version"]
    if version_json is None:
        raise SnapshotRejected(path, "incomplete", f"index/{version}/{VERSION_FILE} is missing")
    try:
        staged = json.loads(version_json)
        recorded = {k: [int(v[0]), str(v[1])] for k, v in staged["files"].items()}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SnapshotRejected(path, "malformed", f"index/{version}/{VERSION_FILE} is invalid ({exc})") from None
    if staged.get("repo") != manifest["repo"] or staged.get("version") != version or staged.get(
        "commit"
    ) != manifest["commit"]:
        raise SnapshotRejected(path, "malformed", f"{VERSION_FILE} names another repo, version or commit")
    prefix = f"index/{version}/{SHARD_DIR}/"
    archived = {k[len(prefix):]: [v["size"], v["sha256"]] for k, v in files.items() if k.startswith(prefix)}
    differ = sorted(k for k in set(recorded) | set(archived) if recorded.get(k) != archived.get(k))
    if differ:
        raise SnapshotRejected(
            path, "incomplete", f"the index files differ from {VERSION_FILE} ({len(differ)}, e.g. {differ[:3]})"
        )


def verify_snapshot(
    path: Path, key: bytes | str | Sequence[bytes | str] | None, *, allow_unsigned: bool = False
) -> VerifyReport:
    """Check the signature, every member's sha256 and size, and refuse hostile members.

    ``key`` may be a list (current key first, then keys retired by a rotation). Raises
    :class:`SnapshotRejected` naming what failed; returns the report only for a sound archive.
    """
    return walk_verified(Path(path), key, allow_unsigned)[0]
