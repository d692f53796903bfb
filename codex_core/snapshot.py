"""Signed snapshots of one repository's published state, and their verified, atomic restore.

A snapshot is ONE tar archive (uncompressed by default, ``compression="gz"`` optional) holding::

    manifest.json                       first member: what is inside, sha256 + size of every file
    signature.json                      second member: HMAC-SHA256 over the canonical manifest
    index/<version>/version.json        the SEALED index version directory (never a reader copy)
    index/<version>/shard/...           qdrant-edge shard files (sparse files stay sparse)
    repo/unique_chunks.parquet          chunk catalog
    repo/files.parquet, repo/skipped.json
    repo/snapshot.json, repo/published_index.json
    repo/graph/...                      every file of the code graph directory
    repo/calibration/current.json       the current calibrator pointer and the file it names (if any)
    repo/calibration/calibrator-N.json
    configs/<id>.json                   the content-addressed answer configs of the home
    embeddings.sqlite                   the embedding-cache rows of the repo's chunks (same schema)

The repository's ``repos.json`` entry (source path or URL) is stored in the manifest, so it is
signed too; restore registers it in the target home when the repo is not registered there yet.

Signing: ``signature.json`` = ``{"algorithm": "HMAC-SHA256", "hmac": hex, "key_id": fp}`` where the
HMAC covers :func:`canonical_json` of the manifest and ``key_id`` is a short fingerprint of the key
(never the key) that tells an operator WHICH key signed an archive after a rotation. Creating an
unsigned snapshot needs ``allow_unsigned=True`` (CLI ``--unsigned``), and verifying or restoring
one needs the same explicit opt-in.

Verification (:func:`verify_snapshot`, always the first step of :func:`restore_snapshot`) refuses,
with a :class:`SnapshotRejected` naming what failed:

* members that are not regular files (symlinks, hard links, devices, fifos, directories), absolute
  paths, ``..`` or empty path components, duplicates, and any path outside the fixed layout above;
* a first member that is not ``manifest.json`` or a second that is not ``signature.json``;
* an unsigned archive (unless allowed), an HMAC that does not match any key given, a manifest
  naming a repo, version or commit that is malformed;
* any member whose size or sha256 differs from the manifest, members missing from the archive or
  absent from the manifest, and index files that differ from the version's own ``version.json``.

Restore = verify the whole archive, extract into a staging directory under ``CODEX_HOME`` (hashing
every byte again while writing, so an archive swapped between the two passes is still caught),
then install: catalog, graph, calibrator and config files are moved in with ``os.replace``, the
embedding rows are merged (``INSERT OR IGNORE``), the version directory is moved to
``index/<repo>/versions/<version>/`` and, LAST, the pointer is swapped with
:meth:`EmbeddedVectorIndex.publish` — the index's own atomic ``CURRENT.json`` replace. Serving
therefore switches only after everything it reads is in place and verified.

Retention (:func:`apply_retention`): per repo, the newest snapshot of each of the ``keep_daily``
most recent UTC days that have snapshots, plus every snapshot tagged ``release``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core import catalog
from codex_core.embedding import DEFAULT_MODEL_ID, EmbeddingCache, embedding_document
from codex_core.git import GitError, RepoRegistry, is_url, run_git
from codex_core.home import CodexHome, validate_repo_name
from codex_core.models import content_hash
from codex_core.secrets import MASKER_VERSION
from codex_core.vector_store import (
    CURRENT_FILE,
    SHARD_DIR,
    VERSION_FILE,
    VERSION_PATTERN,
    VERSIONS_DIR,
    EmbeddedVectorIndex,
)

FORMAT = "precision-codex-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
EMBEDDINGS = "embeddings.sqlite"
ALGORITHM = "HMAC-SHA256"
RELEASE_TAG = "release"
KEY_ENV = "CODEX_SNAPSHOT_KEY"
PREVIOUS_KEYS_ENV = "CODEX_SNAPSHOT_PREVIOUS_KEYS"
MIN_KEY_BYTES = 16
COMPRESSIONS = {"none": ".tar", "gz": ".tar.gz"}
REPO_FILES = (
    catalog.UNIQUE_CHUNKS,
    catalog.FILES,
    catalog.SKIPPED,
    catalog.SNAPSHOT,
    catalog.PUBLISHED,
)
CALIBRATION_POINTER = "current.json"

_BLOCK = 1 << 20
_ZEROS = bytes(_BLOCK)
_SPARSE_GRAIN = 1 << 16
_MAX_MANIFEST_BYTES = 64 << 20
_MAX_SIGNATURE_BYTES = 64 << 10
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}"
_VERSION = VERSION_PATTERN.pattern
_LAYOUT = re.compile(
    "|".join(
        [
            rf"index/{_VERSION}/{re.escape(VERSION_FILE)}",
            rf"index/{_VERSION}/{SHARD_DIR}(/{_COMPONENT})+",
            "repo/(" + "|".join(re.escape(f) for f in REPO_FILES) + ")",
            rf"repo/graph(/{_COMPONENT})+",
            r"repo/calibration/(current\.json|calibrator-[0-9]{1,9}\.json)",
            rf"configs/{_COMPONENT}\.json",
            re.escape(EMBEDDINGS),
        ]
    )
)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar")


# --------------------------------------------------------------------------- errors and reports


class SnapshotError(ValueError):
    """A snapshot could not be created, found or restored; the message says what to do."""


class SnapshotRejected(SnapshotError):
    """Verification failed: the archive is unsigned, tampered with, hostile or malformed.

    ``reason`` is one of ``unsigned``, ``key``, ``hmac``, ``sha256``, ``hostile``, ``layout``,
    ``malformed``, ``incomplete``.
    """

    def __init__(self, path: Path, reason: str, detail: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"refusing snapshot {self.path.name}: {detail}")


@dataclass(frozen=True)
class SnapshotInfo:
    id: str  # the file name without .tar / .tar.gz
    path: Path
    repo: str
    commit: str
    index_version: str
    created_at: str
    size: int  # bytes of the archive
    files: int
    tags: tuple[str, ...]
    signed: bool
    key_id: str | None
    manifest_sha256: str
    seconds: float | None = None  # creation time, when just created
    problem: str | None = None  # set by list_snapshots for an unreadable archive
    # The secret masker's version its text was masked with (None: made before snapshots recorded it,
    # i.e. masker 1). A snapshot of another version may hold text the current rules mask.
    masker_version: int | None = None

    @property
    def stale_masking(self) -> bool:
        return self.problem is None and self.masker_version != MASKER_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["tags"] = list(self.tags)
        data["stale_masking"] = self.stale_masking
        return data


@dataclass(frozen=True)
class VerifyReport:
    id: str
    path: Path
    repo: str
    commit: str
    index_version: str
    created_at: str
    tags: tuple[str, ...]
    signed: bool
    key_id: str | None
    files_checked: int
    bytes_checked: int
    manifest_sha256: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["tags"] = list(self.tags)
        data["ok"] = True
        return data


@dataclass
class RestoreReport:
    id: str
    repo: str
    commit: str
    index_version: str
    points: int
    previous_version: str | None
    files_installed: int = 0
    embeddings_in_snapshot: int = 0
    embeddings_added: int = 0
    registry: str = "unchanged"  # added | unchanged | kept-existing | missing
    seconds: dict[str, float] = field(default_factory=dict)  # verify, extract, install, publish, total
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- keys and signing


def key_fingerprint(key: bytes) -> str:
    """Names a key without revealing it (12 hex characters)."""
    return hashlib.sha256(b"codex-snapshot-key:" + key).hexdigest()[:12]


def _as_keys(key: bytes | str | Sequence[bytes | str] | None) -> list[bytes]:
    if key is None:
        return []
    raw = [key] if isinstance(key, bytes | str) else list(key)
    keys = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in raw]
    for k in keys:
        if len(k) < MIN_KEY_BYTES:
            raise SnapshotError(
                f"snapshot key too short ({len(k)} bytes, need at least {MIN_KEY_BYTES}); generate one with: "
                "python -c 'import secrets; print(secrets.token_hex(32))'"
            )
    return keys


def parse_key(value: bytes | str) -> bytes:
    """A signing key from its configured form (a string is used as UTF-8 bytes); refuses short keys."""
    return _as_keys(value)[0]


def keys_from_env(environ: Mapping[str, str] | None = None) -> list[bytes]:
    """``CODEX_SNAPSHOT_KEY`` (signs and verifies) then ``CODEX_SNAPSHOT_PREVIOUS_KEYS`` (comma-separated,
    verify/restore only: keys retired by a rotation). Read when a command runs, never at import."""
    env = os.environ if environ is None else environ
    values = [env.get(KEY_ENV, "")] + env.get(PREVIOUS_KEYS_ENV, "").split(",")
    return _as_keys([v.strip() for v in values if v.strip()])


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _signature(manifest: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    if key is None:
        return {"algorithm": "none"}
    mac = hmac.new(key, canonical_json(manifest), hashlib.sha256).hexdigest()
    return {"algorithm": ALGORITHM, "hmac": mac, "key_id": key_fingerprint(key)}


# --------------------------------------------------------------------------- small helpers


def _utc_now() -> datetime:
    return datetime.now(UTC)


def codex_version() -> str:
    try:
        from importlib.metadata import version

        return version("precision-codex")
    except Exception:
        return "unknown"


def snapshot_id(path: Path) -> str:
    name = Path(path).name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data regions of a file; one region when holes cannot be found."""
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            return [(0, size)]
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        pos = end
    return extents


def _open_archive(path: Path) -> tarfile.TarFile:
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {path} (list them: feriactl snapshot list)") from None
    try:
        return tarfile.open(path, "r:gz" if magic == b"\x1f\x8b" else "r:")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise SnapshotRejected(path, "malformed", f"not a readable tar archive ({exc})") from None


# --------------------------------------------------------------------------- archive writing


@dataclass
class _Entry:
    """One archive member before it is written: bytes in memory, or a file read with its holes."""

    arcname: str
    size: int
    sha256: str
    data: bytes | None = None
    source: Path | None = None


class _StreamReader:
    """``read(n)`` over an iterator of byte strings, returning exactly n bytes until the end."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            n = len(self._buffer)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def drain(self) -> int:
        """Run the iterator to its end; returns the bytes that were left unread."""
        return len(self._buffer) + sum(len(chunk) for chunk in self._chunks)


def _file_stream(fd: int, extents: list[tuple[int, int]], size: int, digest) -> Iterator[bytes]:
    """The stored bytes (data regions only) of a file; ``digest`` sees the whole file, holes as zeros."""
    pos = 0
    for offset, length in extents:
        while pos < offset:
            step = min(_BLOCK, offset - pos)
            digest.update(_ZEROS[:step])
            pos += step
        end = offset + length
        while pos < end:
            block = os.pread(fd, min(_BLOCK, end - pos), pos)
            if not block:
                raise SnapshotError(f"file shrank while being archived (at offset {pos})")
            digest.update(block)
            pos += len(block)
            yield block
    while pos < size:
        step = min(_BLOCK, size - pos)
        digest.update(_ZEROS[:step])
        pos += step


def _sparse_map(extents: list[tuple[int, int]], size: int) -> bytes:
    """GNU tar sparse format 1.0 map block (read by GNU tar and Python's tarfile)."""
    entries = list(extents)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))  # GNU convention: a trailing hole ends with an empty region
    text = f"{len(entries)}\n" + "".join(f"{o}\n{n}\n" for o, n in entries)
    raw = text.encode("ascii")
    return raw + b"\0" * (-len(raw) % tarfile.BLOCKSIZE)


def _add_entry(tar: tarfile.TarFile, entry: _Entry, mtime: int, sparse_counter: list[int]) -> str:
    """Write one member; returns the sha256 of the content actually written."""
    info = tarfile.TarInfo(entry.arcname)
    info.mtime = mtime
    info.mode = 0o644
    if entry.data is not None:
        info.size = len(entry.data)
        tar.addfile(info, io.BytesIO(entry.data))
        return hashlib.sha256(entry.data).hexdigest()
    assert entry.source is not None
    digest = hashlib.sha256()
    fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if size != entry.size:
            raise SnapshotError(f"{entry.source} changed size while being archived ({entry.size} -> {size})")
        extents = _data_extents(fd, size)
        stored = sum(n for _, n in extents)
        if stored < size:
            sparse_counter[0] += 1
            smap = _sparse_map(extents, size)
            info.name = f"GNUSparseFile.0/{sparse_counter[0]}"  # ASCII and short: no pax "path" record
            info.size = len(smap) + stored
            info.pax_headers = {
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
                "GNU.sparse.name": entry.arcname,
                "GNU.sparse.realsize": str(size),
            }
            reader = _StreamReader(_chain(smap, _file_stream(fd, extents, size, digest)))
        else:
            info.size = size
            reader = _StreamReader(_file_stream(fd, [(0, size)] if size else [], size, digest))
        tar.addfile(info, reader)
        if reader.drain():  # tarfile stops at info.size; draining also hashes a trailing hole
            raise SnapshotError(f"{entry.source} grew while being archived")
    finally:
        os.close(fd)
    return digest.hexdigest()


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        for _ in _file_stream(fd, _data_extents(fd, size), size, digest):
            pass
    finally:
        os.close(fd)
    return size, digest.hexdigest()


# --------------------------------------------------------------------------- create


def _collect_index(home: CodexHome, repo: str) -> tuple[dict[str, Any], dict[str, Any], list[_Entry], list[str]]:
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
    entries = [_Entry(f"index/{version}/{VERSION_FILE}", len(version_bytes),
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
        size, sha = _hash_file(path)
        actual[rel] = [size, sha]
        entries.append(_Entry(f"index/{version}/{SHARD_DIR}/{rel}", size, sha, source=path))
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


def _check_commits(repo: str, commit: str, files: Mapping[str, bytes]) -> None:
    import pandas as pd

    found: dict[str, set[str]] = {}
    for name in (catalog.SNAPSHOT, catalog.SKIPPED):
        if name in files:
            found[name] = {json.loads(files[name]).get("commit")}
    frame = pd.read_parquet(io.BytesIO(files[catalog.UNIQUE_CHUNKS]), columns=["commit"])
    found[catalog.UNIQUE_CHUNKS] = set(frame["commit"].unique()) or {commit}
    stale = {name: sorted(str(c) for c in commits) for name, commits in found.items() if commits != {commit}}
    if stale:
        raise SnapshotError(
            f"repository {repo!r}: the published index is for commit {commit[:12]} but {stale} are not; an ingest "
            "run is in progress or failed after it started. Snapshot after the run publishes (or re-run "
            f"feriactl ingest --name {repo})"
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
) -> SnapshotInfo:
    """Write one signed archive of ``repo``'s published state into ``out_dir``.

    ``key`` signs it (HMAC-SHA256); ``key=None`` is refused unless ``allow_unsigned``. ``now`` fixes the
    creation time (backfills, tests). Refuses a damaged live index or a catalog whose commit is not the
    published one, so every archive is internally consistent.
    """
    started = time.perf_counter()
    validate_repo_name(repo)
    keys = _as_keys(key)
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
    _check_commits(repo, commit, repo_files)
    for name, data in repo_files.items():
        entries.append(_Entry(f"repo/{name}", len(data), hashlib.sha256(data).hexdigest(), data=data))

    graph_dir = home.graph_dir(repo)
    if graph_dir.is_dir():
        for path in sorted(p for p in graph_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            data = path.read_bytes()
            rel = path.relative_to(graph_dir).as_posix()
            entries.append(_Entry(f"repo/graph/{rel}", len(data), hashlib.sha256(data).hexdigest(), data=data))

    calibrator = None
    pointer_file = home.calibration_dir(repo) / CALIBRATION_POINTER
    if pointer_file.is_file():
        cal_bytes = pointer_file.read_bytes()
        cal = json.loads(cal_bytes)
        name = str(cal.get("path", ""))
        if not re.fullmatch(r"calibrator-[0-9]{1,9}\.json", name) or not (pointer_file.parent / name).is_file():
            raise SnapshotError(f"{pointer_file} names {name!r}, which is not a calibrator file next to it")
        cal_file = (pointer_file.parent / name).read_bytes()
        entries.append(_Entry(f"repo/calibration/{CALIBRATION_POINTER}", len(cal_bytes),
                              hashlib.sha256(cal_bytes).hexdigest(), data=cal_bytes))
        entries.append(_Entry(f"repo/calibration/{name}", len(cal_file), hashlib.sha256(cal_file).hexdigest(),
                              data=cal_file))
        calibrator = {"version": cal.get("version"), "file": name}

    if home.configs_dir.is_dir():
        for path in sorted(home.configs_dir.glob("*.json")):
            if re.fullmatch(rf"{_COMPONENT}\.json", path.name) and not path.name.startswith("."):
                data = path.read_bytes()
                entries.append(_Entry(f"configs/{path.name}", len(data), hashlib.sha256(data).hexdigest(), data=data))

    registry_entry = RepoRegistry(home.registry_path).all().get(repo)
    created = (now or _utc_now()).astimezone(UTC)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=out_dir) as work:
        emb_path, emb_rows, chunk_count = _embedding_rows(home, repo_files[catalog.UNIQUE_CHUNKS], model_id, Path(work))
        emb_bytes = emb_path.read_bytes()
        entries.append(_Entry(EMBEDDINGS, len(emb_bytes), hashlib.sha256(emb_bytes).hexdigest(), data=emb_bytes))

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "repo": repo,
            "commit": commit,
            "index_version": version,
            "index": {"points": staged.get("points"), "dim": staged.get("dim"), "kind": staged.get("index")},
            "model_id": model_id,
            "masker_version": MASKER_VERSION,
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
        signature = _signature(manifest, keys[0] if keys else None)
        base = f"{repo}-{commit[:7]}-{created.strftime('%Y%m%dT%H%M%SZ')}"
        tmp = out_dir / f".{base}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        mode = "w:gz" if compression == "gz" else "w"
        options: dict[str, Any] = {"compresslevel": 6} if compression == "gz" else {}
        try:
            mtime = int(created.timestamp())
            sparse_counter = [0]
            with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT, **options) as tar:
                head = [
                    _Entry(MANIFEST, len(manifest_bytes), "", data=manifest_bytes),
                    _Entry(SIGNATURE, 0, "", data=canonical_json(signature)),
                ]
                for entry in head:
                    _add_entry(tar, entry, mtime, sparse_counter)
                for entry in entries:
                    written = _add_entry(tar, entry, mtime, sparse_counter)
                    if written != entry.sha256:
                        raise SnapshotError(f"{entry.arcname} changed while the snapshot was written; retry")
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            final = _claim_name(tmp, out_dir, base, COMPRESSIONS[compression])
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    _fsync_dir(out_dir)
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


# --------------------------------------------------------------------------- reading and verification


def _member_problem(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """(reason, detail) when a member must be refused for its type or path, None when acceptable."""
    name = member.name
    kind = (
        "a symlink" if member.issym() else
        "a hard link" if member.islnk() else
        "a device file" if member.ischr() or member.isblk() else
        "a fifo" if member.isfifo() else
        "a directory entry" if member.isdir() else
        None if member.isreg() else f"of unsupported type {member.type!r}"
    )
    if kind is not None:
        return "hostile", f"member {name!r} is {kind}; snapshots contain only regular files"
    if not name or "\0" in name or "\\" in name:
        return "hostile", f"member name {name!r} is empty or contains NUL or backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "hostile", f"member {name!r} has an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "hostile", f"member {name!r} escapes the archive (path traversal with '..')"
    if any(p in ("", ".") for p in parts):
        return "hostile", f"member {name!r} has an empty or '.' path component"
    return None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, path: Path) -> bytes:
    if member.size > limit:
        raise SnapshotRejected(path, "malformed", f"{member.name} is {member.size} bytes (limit {limit})")
    return b"".join(_member_blocks(tar, member, path))


def _next_member(tar: tarfile.TarFile, path: Path) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # ValueError: a garbled sparse map
        raise SnapshotRejected(path, "malformed", f"the archive is truncated or corrupt ({exc})") from None


def _read_head(tar: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The manifest (parsed, raw) and the signature: the archive's first two members."""
    head = []
    for expected, limit in ((MANIFEST, _MAX_MANIFEST_BYTES), (SIGNATURE, _MAX_SIGNATURE_BYTES)):
        member = _next_member(tar, path)
        if member is None:
            raise SnapshotRejected(path, "malformed", f"the archive ends before its {expected}")
        problem = _member_problem(member)
        if problem:
            raise SnapshotRejected(path, *problem)
        if member.name != expected:
            raise SnapshotRejected(
                path, "layout", f"member {member.name!r} comes where {expected} must be (not a feriactl snapshot?)"
            )
        head.append(_read_member(tar, member, limit, path))
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
    with _open_archive(Path(path)) as tar:
        manifest, _, signature = _read_head(tar, Path(path))
    return manifest, signature


def _check_signature(
    path: Path, manifest: Mapping[str, Any], signature: Mapping[str, Any], keys: list[bytes], allow_unsigned: bool
) -> str | None:
    algorithm = signature.get("algorithm")
    if algorithm == "none":
        if not allow_unsigned:
            raise SnapshotRejected(
                path, "unsigned",
                "it is unsigned (created with --unsigned); pass --allow-unsigned if you trust its origin",
            )
        return None
    if algorithm != ALGORITHM or not isinstance(signature.get("hmac"), str):
        raise SnapshotRejected(path, "malformed", f"unknown signature algorithm {algorithm!r}")
    if not keys:
        raise SnapshotRejected(
            path, "key", f"it is signed (key {signature.get('key_id')}) but no key was given: set {KEY_ENV}"
        )
    body = canonical_json(manifest)
    for key in keys:
        if hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), signature["hmac"]):
            return key_fingerprint(key)
    given = ", ".join(key_fingerprint(k) for k in keys)
    if signature.get("key_id") not in {key_fingerprint(k) for k in keys}:
        raise SnapshotRejected(
            path, "key",
            f"it was signed with key {signature.get('key_id')} but the key(s) given are {given}: set {KEY_ENV} to "
            f"the key that signed it (after a rotation, list old keys in {PREVIOUS_KEYS_ENV})",
        )
    raise SnapshotRejected(path, "hmac", "HMAC mismatch: manifest.json was modified after it was signed")


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
            problem = _layout_problem(name, version, _LAYOUT)
            if problem:
                raise ValueError(problem)
        empty_dir = re.compile(rf"index/{re.escape(version)}/{SHARD_DIR}(/{_COMPONENT})+")
        for name in manifest.get("empty_dirs") or []:
            problem = _layout_problem(name, version, empty_dir)
            if problem:
                raise ValueError(problem)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotRejected(path, "malformed", f"manifest.json is invalid ({exc})") from None
    return files


def _layout_problem(name: str, version: str, allowed: re.Pattern[str]) -> str | None:
    problem = _member_problem(tarfile.TarInfo(name))
    if problem:
        return problem[1]
    if not allowed.fullmatch(name):
        return f"member {name!r} is outside the snapshot layout"
    if name.startswith("index/") and name.split("/")[1] != version:
        return f"member {name!r} belongs to another index version than {version}"
    return None


def _member_blocks(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> Iterator[bytes]:
    fh = tar.extractfile(member)
    assert fh is not None
    while True:
        try:
            block = fh.read(_BLOCK)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise SnapshotRejected(
                path, "malformed", f"member {member.name!r} cannot be read: the archive is truncated or corrupt ({exc})"
            ) from None
        if not block:
            return
        yield block


def _hash_blocks(member: tarfile.TarInfo, blocks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


def _walk_verified(
    path: Path, key: bytes | str | Sequence[bytes | str] | None, allow_unsigned: bool, on_member=_hash_blocks
) -> tuple[VerifyReport, dict[str, Any]]:
    """One pass over the archive: signature first, then every member's type, path, size and sha256.

    ``on_member(member, blocks)`` gets each member's content (an iterator of byte blocks) once its
    header passed every check, and returns the sha256 of what it consumed: hashing only for
    verification, hashing while writing for restore's extraction.
    """
    started = time.perf_counter()
    path = Path(path)
    keys = _as_keys(key)
    with _open_archive(path) as tar:
        manifest, manifest_bytes, signature = _read_head(tar, path)
        key_id = _check_signature(path, manifest, signature, keys, allow_unsigned)
        files = _check_manifest(path, manifest)
        seen: set[str] = set()
        version_json: bytes | None = None
        checked_bytes = 0
        while (member := _next_member(tar, path)) is not None:
            problem = _member_problem(member)
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
                version_json = b"".join(_member_blocks(tar, member, path))  # checked against the shard below
                actual = on_member(member, [version_json])
            else:
                actual = on_member(member, _member_blocks(tar, member, path))
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
    return _walk_verified(Path(path), key, allow_unsigned)[0]


# --------------------------------------------------------------------------- listing and retention


def _archives(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.name.endswith(_ARCHIVE_SUFFIXES)
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


# --------------------------------------------------------------------------- restore


class _Extractor:
    """Writes verified members under a staging directory, sparse (all-zero blocks become holes)."""

    def __init__(self, staging: Path):
        self.staging = staging
        self.files = 0

    def __call__(self, member: tarfile.TarInfo, blocks: Iterable[bytes]) -> str:
        target = self.staging / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        digest = hashlib.sha256()
        pos = 0
        try:
            for block in blocks:
                digest.update(block)
                if block != _ZEROS[: len(block)]:
                    for off in range(0, len(block), _SPARSE_GRAIN):
                        piece = block[off : off + _SPARSE_GRAIN]
                        if piece != _ZEROS[: len(piece)]:
                            os.pwrite(fd, piece, pos + off)
                pos += len(block)
            os.ftruncate(fd, pos)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.files += 1
        return digest.hexdigest()


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


def _move_into_place(src: Path, dst: Path) -> None:
    """os.replace within one filesystem; copy to a temp name next to ``dst`` first across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)


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
    _fsync_dir(vroot)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _install_calibration(staging: Path, cal_dir: Path) -> int:
    src_dir = staging / "repo" / "calibration"
    pointer_src = src_dir / CALIBRATION_POINTER
    if not pointer_src.is_file():
        return 0
    pointer = json.loads(pointer_src.read_text())
    src_file = src_dir / pointer["path"]
    cal_dir.mkdir(parents=True, exist_ok=True)
    name = pointer["path"]
    existing = cal_dir / name
    if existing.exists() and existing.read_bytes() != src_file.read_bytes():
        # Calibrator numbers are per home: never overwrite a different calibrator with the same number.
        number = 1 + max((int(p.stem.split("-")[1]) for p in cal_dir.glob("calibrator-*.json")), default=0)
        name = f"calibrator-{number}.json"
        pointer = {**pointer, "path": name, "version": number}
    _move_into_place(src_file, cal_dir / name)
    catalog.write_json(cal_dir / CALIBRATION_POINTER, pointer)  # the pointer last
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
    home: CodexHome, path: Path, key: bytes | str | Sequence[bytes | str] | None, *, allow_unsigned: bool = False
) -> RestoreReport:
    """Verify ``path`` completely, then install it into ``home`` and publish its index version.

    Nothing under ``home`` changes before the whole archive verified. The previously published
    version stays on disk, so ``EmbeddedVectorIndex.publish`` of it is a rollback of the restore.
    A snapshot masked by another masker version is refused: it may hold credentials the current
    rules mask, and its spans would not verify against files masked today.
    """
    started = time.perf_counter()
    path = Path(path)
    verified = verify_snapshot(path, key, allow_unsigned=allow_unsigned)
    masker = read_manifest(path)[0].get("masker_version")
    if masker != MASKER_VERSION:
        raise SnapshotError(
            f"{path.name} was masked by secret masker v{masker or 1}, this is v{MASKER_VERSION}: it may hold "
            "credentials the current rules mask. Re-ingest the repository instead (feriactl ingest NAME), then "
            "delete such snapshots (feriactl snapshot prune --stale-masking)"
        )
    t_verify = time.perf_counter()

    home.root.mkdir(parents=True, exist_ok=True)
    _sweep_dead_staging(home.root)
    staging = home.root / f".snapshot-restore-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        # Second pass: extract while hashing again, so an archive swapped after the first pass is caught.
        extractor = _Extractor(staging)
        again, manifest = _walk_verified(path, key, allow_unsigned, on_member=extractor)
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
        catalog.write_json(home.repo_dir(report.repo) / catalog.PUBLISHED,
                           {**published.__dict__, "masker_version": MASKER_VERSION})
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
                src.write_text(json.dumps(data, indent=2, sort_keys=True))
            _move_into_place(src, repo_dir / name)
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
                _move_into_place(graph_src / rel, graph_dir / rel)
                installed += 1
            for old in list(graph_dir.rglob("*")):
                if old.is_file() and old.relative_to(graph_dir) not in incoming:
                    old.unlink()  # e.g. an incremental index of another commit
        installed += _install_calibration(staging, home.calibration_dir(repo))
        configs_src = staging / "configs"
        if configs_src.is_dir():
            for src in sorted(configs_src.iterdir()):
                if not (home.configs_dir / src.name).exists():  # content-addressed: same name, same content
                    _move_into_place(src, home.configs_dir / src.name)
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


__all__ = [
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotRejected",
    "RestoreReport",
    "VerifyReport",
    "apply_retention",
    "create_snapshot",
    "find_snapshot",
    "index_files_intact",
    "key_fingerprint",
    "keys_from_env",
    "list_snapshots",
    "parse_key",
    "read_manifest",
    "restore_snapshot",
    "retention_plan",
    "verify_snapshot",
]
