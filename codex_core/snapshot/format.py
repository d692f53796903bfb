"""The snapshot format: names, the member layout, canonical JSON, and the error and report types.

Also the one place the snapshot code reads the secret masker's version: :mod:`.create` writes
``MASKER_VERSION`` of THIS module into the manifest and :mod:`.restore` and
:attr:`SnapshotInfo.stale_masking` compare against it (tests patch it here to play an older masker).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codex_core import catalog
from codex_core.secrets import MASKER_VERSION
from codex_core.settings import Settings
from codex_core.vector_store import SHARD_DIR, VERSION_FILE, VERSION_PATTERN

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

COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}"
_VERSION = VERSION_PATTERN.pattern
LAYOUT = re.compile(
    "|".join(
        [
            rf"index/{_VERSION}/{re.escape(VERSION_FILE)}",
            rf"index/{_VERSION}/{SHARD_DIR}(/{COMPONENT})+",
            "repo/(" + "|".join(re.escape(f) for f in REPO_FILES) + ")",
            rf"repo/graph(/{COMPONENT})+",
            r"repo/calibration/(current\.json|calibrator-[0-9]{1,9}\.json)",
            rf"configs/{COMPONENT}\.json",
            re.escape(EMBEDDINGS),
        ]
    )
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tar")


class SnapshotError(ValueError):
    """A snapshot could not be created, found or restored; the message says what to do."""


def refuse_server_index(settings: Settings, action: str) -> None:
    """Snapshots hold the embedded index only. With ``QDRANT_URL`` the published vectors live on
    that server: a snapshot of CODEX_HOME would miss them (or hold a stale embedded index from
    before the switch), and a restore would publish into an index serving never reads."""
    if settings.qdrant_url:
        raise SnapshotError(
            f"cannot {action} a snapshot while QDRANT_URL is set: the index lives on that Qdrant server, and "
            "feriactl snapshots hold only the embedded index under CODEX_HOME. Back up and restore the server "
            "with Qdrant's own snapshot API: POST /collections/<collection>/snapshots, then "
            "PUT /collections/<collection>/snapshots/recover (once per node in a cluster; qdrant-client "
            "create_snapshot / recover_snapshot). A repository's published collection is the one its alias "
            "codex__<repo> names; aliases are not in collection snapshots, so point the alias again after a "
            "recover. Unset QDRANT_URL only for a home that really uses the embedded index."
        )


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


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def codex_version() -> str:
    try:
        from importlib.metadata import version

        return version("precision-codex")
    except Exception:
        return "unknown"


def snapshot_id(path: Path) -> str:
    name = Path(path).name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
