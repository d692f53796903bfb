"""Lifecycle assets: a signed snapshot of each repository's published state, with retention.

The work is :mod:`codex_core.snapshot`; this module only wires it to a partition, a key and the UI.
"""

import time

import dagster as dg

from codex_assets.ingestion import published_index, repos_partitions
from codex_core.settings import Settings
from codex_core.snapshot import KEY_ENV, apply_retention, create_snapshot, parse_key
from codex_resources import CodexHomeResource, EmbedderResource

DEFAULT_KEEP_DAILY = 7


class SnapshotKeyResource(dg.ConfigurableResource):
    """The HMAC key that signs snapshots.

    ``key`` empty means: read ``CODEX_SNAPSHOT_KEY`` when a run executes (never at import or load).
    Wire it in ``build_resources`` as ``SnapshotKeyResource(key=dg.EnvVar("CODEX_SNAPSHOT_KEY"))``
    only when that variable is set at load time; otherwise ``SnapshotKeyResource()``.
    """

    key: str = ""

    def signing_key(self) -> bytes:
        configured = Settings.from_env().snapshot_key
        value = self.key or (configured.get_secret_value().strip() if configured else "")
        if not value:
            raise dg.Failure(
                description=(
                    f"no snapshot key: set {KEY_ENV} in the environment of the Dagster code location "
                    f"(e.g. export {KEY_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))') before "
                    "`feriactl up`), keep a copy of it somewhere safe (snapshots cannot be verified or restored "
                    "without it), then re-run this asset"
                )
            )
        return parse_key(value)


class SnapshotConfig(dg.Config):
    keep_daily: int = DEFAULT_KEEP_DAILY
    tags: list[str] = []


@dg.asset(
    deps=[published_index],
    group_name="lifecycle",
    partitions_def=repos_partitions,
    kinds={"tar"},
)
def index_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    codex_home: CodexHomeResource,
    embedder: EmbedderResource,
    snapshot_key: SnapshotKeyResource,
) -> dg.MaterializeResult:
    """A signed archive of the published index version, chunk catalog, embeddings, code graph and calibrator.

    Written under `CODEX_HOME/snapshots/<repo>/`; afterwards only the newest snapshot of each of the
    last `keep_daily` days (and every `release`-tagged one) is kept. Restore: `feriactl snapshot restore ID`.
    """
    repo = context.partition_key
    home = codex_home.home
    key = snapshot_key.signing_key()
    out_dir = home.snapshots_dir / repo
    info = create_snapshot(home, repo, key=key, out_dir=out_dir, tags=config.tags, model_id=embedder.model_id)
    started = time.perf_counter()
    deleted = apply_retention(out_dir, keep_daily=config.keep_daily)
    if deleted:
        context.log.info(f"retention deleted {len(deleted)} snapshots: {', '.join(p.name for p in deleted)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(info.path)),
            "snapshot_id": info.id,
            "size_bytes": info.size,
            "size_mib": round(info.size / 2**20, 2),
            "files": info.files,
            "seconds": info.seconds,
            "manifest_sha256": info.manifest_sha256,
            "key_id": info.key_id,
            "commit": info.commit,
            "index_version": info.index_version,
            "tags": dg.MetadataValue.json(list(info.tags)),
            "retention_deleted": len(deleted),
            "retention_seconds": round(time.perf_counter() - started, 3),
        },
        data_version=dg.DataVersion(info.manifest_sha256),
    )


snapshot_assets = [index_snapshot]
