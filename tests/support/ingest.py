"""Ingest a real git repository in process: ephemeral Dagster instance, real MiniLM, real qdrant-edge."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_core.git import RepoRegistry
from codex_resources import CodexHomeResource, EmbeddedVectorStoreResource, EmbedderResource

DEFAULT_REPO = "demo"


def make_resources(home: Path, embedder_cls=EmbedderResource, **embedder_kwargs) -> dict[str, object]:
    codex_home = CodexHomeResource(root=str(home))
    return {
        "codex_home": codex_home,
        "embedder": embedder_cls(codex_home=codex_home, **embedder_kwargs),
        "vector_store": EmbeddedVectorStoreResource(codex_home=codex_home),
    }


def metadata(result, asset: str) -> dict:
    """The metadata of ``asset``'s one materialization in ``result``, as plain values."""
    (event,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def ingest(
    home: Path, source: Path, *, name: str = DEFAULT_REPO, instance: dg.DagsterInstance | None = None,
    assets: Sequence[Any] = (), resources: dict[str, object] | None = None, selection=None,
    raise_on_error: bool = True, **embedder_kwargs,
):
    """Register ``source`` as ``name`` in ``home`` and materialize the ingestion assets (plus ``assets``)
    for its partition. ``resources`` are added to (and override) the ingestion resources."""
    RepoRegistry(home / "repos.json").add(name, str(source))
    instance = instance or dg.DagsterInstance.ephemeral()
    if not instance.has_dynamic_partition("repos", name):
        instance.add_dynamic_partitions("repos", [name])
    return dg.materialize(
        [*ingestion_assets, *ingestion_checks, *assets],
        instance=instance,
        resources={**make_resources(home, **embedder_kwargs), **(resources or {})},
        partition_key=name,
        raise_on_error=raise_on_error,
        selection=selection,
    )
