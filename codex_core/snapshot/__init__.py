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

Modules (import from this package): :mod:`.format` (names, layout, canonical JSON, errors and
reports; the masker version), :mod:`.signing` (keys, HMAC), :mod:`.archive` (tar member I/O with
sparse files), :mod:`.create`, :mod:`.verify`, :mod:`.restore`, :mod:`.retention` (listing, lookup,
retention). ``MASKER_VERSION`` is deliberately not re-exported here: it is read (and patched) as
``codex_core.snapshot.format.MASKER_VERSION``, so one attribute serves create, restore and listing.
"""

from codex_core.snapshot.create import create_snapshot
from codex_core.snapshot.format import (
    ALGORITHM,
    CALIBRATION_POINTER,
    COMPRESSIONS,
    EMBEDDINGS,
    FORMAT,
    FORMAT_VERSION,
    KEY_ENV,
    MANIFEST,
    MIN_KEY_BYTES,
    PREVIOUS_KEYS_ENV,
    RELEASE_TAG,
    REPO_FILES,
    SIGNATURE,
    RestoreReport,
    SnapshotError,
    SnapshotInfo,
    SnapshotRejected,
    VerifyReport,
    canonical_json,
    codex_version,
    snapshot_id,
)
from codex_core.snapshot.restore import index_files_intact, restore_snapshot
from codex_core.snapshot.retention import apply_retention, find_snapshot, list_snapshots, retention_plan
from codex_core.snapshot.signing import key_fingerprint, keys_from_env, parse_key, sign_manifest
from codex_core.snapshot.verify import read_manifest, verify_snapshot

__all__ = [
    "ALGORITHM",
    "CALIBRATION_POINTER",
    "COMPRESSIONS",
    "EMBEDDINGS",
    "FORMAT",
    "FORMAT_VERSION",
    "KEY_ENV",
    "MANIFEST",
    "MIN_KEY_BYTES",
    "PREVIOUS_KEYS_ENV",
    "RELEASE_TAG",
    "REPO_FILES",
    "SIGNATURE",
    "RestoreReport",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotRejected",
    "VerifyReport",
    "apply_retention",
    "canonical_json",
    "codex_version",
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
    "sign_manifest",
    "snapshot_id",
    "verify_snapshot",
]
