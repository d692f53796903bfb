"""Ingestion assets: a git repository becomes a published, checked vector index and a code graph.

One dynamic partition per repository. Every asset writes its product under
``CODEX_HOME/repos/<name>/`` (atomically) and reports the numbers a person wants in the UI.
"""


import time

import dagster as dg

from codex_core import catalog
from codex_core import published as published_state
from codex_core.dedup import dedup_chunks
from codex_core.embedding import embed_documents, embedding_document
from codex_core.files import scan_repository
from codex_core.graph import write_graph
from codex_core.ingest import (
    chunk_source_files,
    counts,
    group_by_path,
    incremental_graph,
    index_points,
    load_blob_index,
    markdown_table,
    payload_digest,
    plan_delta,
    repo_dir_for,
    reuse_or_rebuild,
    span_check_scope,
    span_problems,
    take_snapshot,
    versions_to_keep,
)
from codex_core.models import Definition, Edge
from codex_core.secrets import MASKER_VERSION
from codex_resources import CodexHomeResource, EmbedderResource, VectorStoreResource

repos_partitions = dg.DynamicPartitionsDefinition(name="repos")

_COMMON = dict(group_name="ingestion", partitions_def=repos_partitions)


@dg.asset(kinds={"git"}, **_COMMON)
def repo_snapshot(context: dg.AssetExecutionContext, codex_home: CodexHomeResource) -> dg.MaterializeResult:
    """The repository opened (or cloned / fast-forwarded) with its HEAD commit pinned for this run."""
    home = codex_home.home
    snapshot = take_snapshot(home, codex_home.registry, context.partition_key)
    catalog.write_json(repo_dir_for(home, snapshot.name) / catalog.SNAPSHOT, snapshot.to_dict())
    return dg.MaterializeResult(
        metadata={"commit": snapshot.commit, "source": snapshot.source, "worktree": snapshot.worktree},
        data_version=dg.DataVersion(snapshot.commit),
    )


@dg.asset(deps=[repo_snapshot], kinds={"git", "parquet"}, **_COMMON)
def code_files(context: dg.AssetExecutionContext, codex_home: CodexHomeResource) -> dg.MaterializeResult:
    """Tracked files at the pinned commit worth indexing, with a language each.

    Skipped, each with its reason: binary, larger than 1 MiB, generated or minified, vendored,
    symlinks (those leaving the repository are reported separately), submodules, empty files.
    Invalid UTF-8 is decoded with replacement characters and counted.
    """
    started = time.perf_counter()
    repo_dir = repo_dir_for(codex_home.home, context.partition_key)
    snapshot = catalog.read_json(repo_dir / catalog.SNAPSHOT)
    previous = catalog.read_files(repo_dir) if (repo_dir / catalog.FILES).exists() else []
    scan = scan_repository(snapshot["worktree"], snapshot["commit"], previous=previous)
    catalog.write_files(repo_dir, scan)
    skipped = scan.skipped_by_reason
    return dg.MaterializeResult(
        metadata={
            "files_indexed": len(scan.files),
            "files_reused": scan.reused,
            "files_skipped": len(scan.skipped),
            "skipped_by_reason": dg.MetadataValue.json(skipped),
            "skipped_examples": dg.MetadataValue.json(dict(list(scan.skipped.items())[:50])),
            "languages": dg.MetadataValue.md(markdown_table(counts(f.language for f in scan.files), "language")),
            "decoded_with_replacement": sum(f.decoded_with_replacement for f in scan.files),
            "secrets_masked": sum(f.secrets_masked for f in scan.files),
            "files_with_secrets": sum(1 for f in scan.files if f.secrets_masked),
            "commit": snapshot["commit"],
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=dg.DataVersion(snapshot["commit"]),
    )


@dg.asset(deps=[code_files], kinds={"tree-sitter", "parquet"}, **_COMMON)
def code_chunks(context: dg.AssetExecutionContext, codex_home: CodexHomeResource) -> dg.MaterializeResult:
    """Symbol-aware chunks (functions, methods, classes; Markdown sections; line windows elsewhere).

    Every chunk carries repo, path, language, qualified symbol, kind, exact 1-based inclusive
    lines, content hash and commit.
    """
    started = time.perf_counter()
    repo = context.partition_key
    repo_dir = repo_dir_for(codex_home.home, repo)
    snapshot = catalog.read_json(repo_dir / catalog.SNAPSHOT)
    previous = catalog.read_chunks(repo_dir / catalog.CHUNKS) if (repo_dir / catalog.CHUNKS).exists() else []
    previous_by_path, blobs = group_by_path(previous), load_blob_index(repo_dir / catalog.CHUNK_BLOBS)
    # Only files whose content changed are read with their text; the rest reuse their chunks.
    files = catalog.read_file_index(repo_dir)
    changed = [f.path for f in files if blobs.get(f.path) != f.content_key or f.path not in previous_by_path]
    texts = {f.path: f for f in catalog.read_files(repo_dir, changed)}
    files = [texts.get(f.path, f) for f in files]
    chunks, reuse = reuse_or_rebuild(
        files, blobs, previous_by_path, lambda f: chunk_source_files([f], repo, snapshot["commit"])
    )
    catalog.write_chunks(repo_dir / catalog.CHUNKS, chunks)
    catalog.write_json(repo_dir / catalog.CHUNK_BLOBS, {f.path: f.content_key for f in files})
    with_symbol = sum(1 for c in chunks if c.symbol)
    return dg.MaterializeResult(
        metadata={
            "chunks": len(chunks),
            "with_symbol": with_symbol,
            "files_rechunked": reuse["files_rebuilt"],
            "files_reused": reuse["files_reused"],
            "files_removed": reuse["files_removed"],
            "by_kind": dg.MetadataValue.md(markdown_table(counts(c.kind for c in chunks), "kind")),
            "by_language": dg.MetadataValue.json(counts(c.language for c in chunks)),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


@dg.asset(deps=[code_chunks], kinds={"datasketch", "parquet"}, **_COMMON)
def unique_chunks(context: dg.AssetExecutionContext, codex_home: CodexHomeResource) -> dg.MaterializeResult:
    """Chunks with exact and near duplicates (MinHash LSH, Jaccard >= 0.9) stored once, every location kept."""
    started = time.perf_counter()
    repo_dir = repo_dir_for(codex_home.home, context.partition_key)
    chunks = catalog.read_chunks(repo_dir / catalog.CHUNKS)
    signatures = catalog.read_signatures(repo_dir / catalog.SIGNATURES)
    cached = len(signatures)
    unique, stats = dedup_chunks(chunks, signature_cache=signatures)
    catalog.write_chunks(repo_dir / catalog.UNIQUE_CHUNKS, unique)
    catalog.write_signatures(repo_dir / catalog.SIGNATURES, signatures, keep={c.content_hash for c in chunks})
    return dg.MaterializeResult(
        metadata={
            "chunks_in": stats.chunks_in,
            "unique_chunks": stats.unique,
            "exact_duplicates_dropped": stats.exact_duplicates,
            "near_duplicates_dropped": stats.near_duplicates,
            "signatures_computed": len(signatures) - cached,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


@dg.asset(deps=[unique_chunks], kinds={"sentence-transformers", "sqlite"}, **_COMMON)
def chunk_embeddings(context: dg.AssetExecutionContext, embedder: EmbedderResource) -> dg.MaterializeResult:
    """A vector for every unique chunk, in the persistent cache keyed by (model id, content hash).

    Unchanged content is never embedded twice; each batch is committed as soon as it is computed,
    so a killed run resumes where it stopped.
    """
    started = time.perf_counter()
    repo_dir = repo_dir_for(embedder.codex_home.home, context.partition_key)
    chunks = catalog.read_chunks(repo_dir / catalog.UNIQUE_CHUNKS)
    model = embedder.get_embedder()

    def progress(done: int, total: int) -> None:
        context.log.info(f"embedded {done}/{total} new chunks")

    _, stats = embed_documents(
        model, embedder.cache, [embedding_document(c) for c in chunks], batch_size=embedder.batch_size,
        on_batch=progress,
    )
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "model_id": model.model_id,
            "dim": embedder.dim,
            "chunks": stats.requested,
            "embeddings_computed": stats.computed,
            "embeddings_cached": stats.cached,
            "embedder_chunks_per_s": round(stats.computed / stats.seconds_embedding, 2)
            if stats.seconds_embedding
            else None,
            "seconds": round(seconds, 3),
        }
    )


@dg.asset(deps=[unique_chunks, chunk_embeddings], kinds={"qdrant"}, **_COMMON)
def staged_index(
    context: dg.AssetExecutionContext, embedder: EmbedderResource, vector_store: VectorStoreResource
) -> dg.MaterializeResult:
    """A new, not yet visible index version holding exactly the unique chunks (deterministic ids).

    When the published version was staged here with the same model, the new version is a copy of
    it with only the changed points rewritten and the vanished ones deleted (delta staging);
    otherwise every point is written. Serving never sees it until the blocking checks pass and
    `published_index` swaps it in.
    """
    started = time.perf_counter()
    repo = context.partition_key
    repo_dir = repo_dir_for(embedder.codex_home.home, repo)
    snapshot = catalog.read_json(repo_dir / catalog.SNAPSHOT)
    chunks = catalog.read_chunks(repo_dir / catalog.UNIQUE_CHUNKS)
    model = embedder.get_embedder()  # lazy: loads only if something must be embedded
    payloads = {c.point_id: catalog.point_payload(c) for c in chunks}
    digests = {pid: payload_digest(p) for pid, p in payloads.items()}
    digest_path = repo_dir / catalog.INDEX_DIGEST
    previous = catalog.read_json(digest_path) if digest_path.exists() else None
    index = vector_store.open()
    try:
        current = index.current(repo)
        plan = plan_delta(
            previous, digests, published_version=current.version if current else None,
            published_index=index.staged_stats(repo, current.version).index if current else None,
            supports_delta=index.supports_delta, model_id=model.model_id, masker_version=MASKER_VERSION,
        )
        wanted = set(plan.upserts)
        todo = [c for c in chunks if c.point_id in wanted]
        vectors, stats = embed_documents(model, embedder.cache, [embedding_document(c) for c in todo])
        if stats.computed:
            context.log.warning(f"{stats.computed} embeddings were missing from the cache and were computed now")
        dim = int(vectors.shape[1]) if len(todo) else int(previous["dim"]) if plan.base else embedder.dim
        points = index_points(todo, vectors, lambda c: payloads[c.point_id])
        if plan.base:
            version = index.stage_delta(repo, dim, plan.base, points, plan.deletes, commit=snapshot["commit"])
        else:
            version = index.stage(repo, dim, points, commit=snapshot["commit"])
    finally:
        index.close()
    blobs = catalog.read_file_keys(repo_dir)
    verify = span_check_scope(plan, chunks, blobs, (previous or {}).get("blobs") or {})
    catalog.write_json(
        repo_dir / catalog.STAGED,
        {"version": version, "commit": snapshot["commit"], "points": len(chunks), "dim": dim,
         "base_version": plan.base, "verify_ids": verify, "masker_version": MASKER_VERSION},
    )
    catalog.write_json(digest_path, {"version": version, "model_id": model.model_id, "dim": dim,
                                     "masker_version": MASKER_VERSION, "digests": digests, "blobs": blobs})
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "commit": snapshot["commit"],
            "points": len(chunks),
            "mode": "delta" if plan.base else "full",
            "mode_reason": plan.reason,
            "base_version": plan.base or "",
            "points_written": len(todo),
            "points_deleted": len(plan.deletes),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


def _staged(context: dg.AssetCheckExecutionContext, codex_home: CodexHomeResource) -> dict:
    return catalog.read_json(repo_dir_for(codex_home.home, context.partition_key) / catalog.STAGED)


@dg.asset_check(asset=staged_index, blocking=True, partitions_def=repos_partitions)
def index_not_empty(
    context: dg.AssetCheckExecutionContext, codex_home: CodexHomeResource, vector_store: VectorStoreResource
) -> dg.AssetCheckResult:
    """The staged version holds at least one point."""
    staged = _staged(context, codex_home)
    index = vector_store.open()
    try:
        stats = index.staged_stats(context.partition_key, staged["version"])
    finally:
        index.close()
    return dg.AssetCheckResult(passed=stats.points > 0, metadata={"points": stats.points})


@dg.asset_check(asset=staged_index, blocking=True, partitions_def=repos_partitions)
def vector_dim_consistent(
    context: dg.AssetCheckExecutionContext, embedder: EmbedderResource, vector_store: VectorStoreResource
) -> dg.AssetCheckResult:
    """Every staged vector has the embedder's dimension."""
    staged = _staged(context, embedder.codex_home)
    expected = embedder.dim
    index = vector_store.open()
    try:
        stats = index.staged_stats(context.partition_key, staged["version"])
    finally:
        index.close()
    return dg.AssetCheckResult(
        passed=stats.dim == expected == staged["dim"],
        metadata={"index_dim": stats.dim, "embedder_dim": expected},
    )


@dg.asset_check(asset=staged_index, blocking=True, partitions_def=repos_partitions)
def spans_within_files(
    context: dg.AssetCheckExecutionContext, codex_home: CodexHomeResource, vector_store: VectorStoreResource
) -> dg.AssetCheckResult:
    """Every point cites lines that exist in its file at the pinned commit, with the exact text.

    A delta version re-reads its rewritten points and every point of a changed file; its other
    points are byte-identical to the base version, which passed this check on identical files.
    """
    repo_dir = repo_dir_for(codex_home.home, context.partition_key)
    staged = _staged(context, codex_home)
    ids = staged.get("verify_ids")
    index = vector_store.open()
    try:
        checked = list(index.iter_payloads(context.partition_key, staged["version"], ids=ids))
    finally:
        index.close()
    cited = None if ids is None else {p["path"] for _, p in checked}
    problems = span_problems(checked, catalog.read_files(repo_dir, cited))
    if ids is not None and len(checked) != len(ids):
        problems.append(f"{len(ids) - len(checked)} rewritten points are missing from the staged version")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "points_checked": len(checked),
            "scope": "all points" if ids is None else f"delta on {staged.get('base_version')}",
            "bad_spans": len(problems),
            "examples": dg.MetadataValue.json(problems[:20]),
        },
    )


@dg.asset_check(asset=staged_index, blocking=True, partitions_def=repos_partitions)
def point_count_matches_unique_chunks(
    context: dg.AssetCheckExecutionContext, codex_home: CodexHomeResource, vector_store: VectorStoreResource
) -> dg.AssetCheckResult:
    """No duplicates and nothing missing: point count == number of unique chunks."""
    repo_dir = repo_dir_for(codex_home.home, context.partition_key)
    staged = _staged(context, codex_home)
    expected = set(catalog.read_point_ids(repo_dir / catalog.UNIQUE_CHUNKS))
    index = vector_store.open()
    try:
        stats = index.staged_stats(context.partition_key, staged["version"])
        stored = {pid for pid, _ in index.iter_payloads(context.partition_key, staged["version"], with_payload=False)}
    finally:
        index.close()
    missing, unexpected = expected - stored, stored - expected
    # A full version must have received exactly its points (more means duplicate ids); a delta
    # received only its rewritten points.
    received_ok = stats.base_version is not None or stats.points == stats.received
    return dg.AssetCheckResult(
        passed=received_ok and stats.points == len(expected) and not missing and not unexpected,
        metadata={
            "points": stats.points,
            "points_received": stats.received,
            "unique_chunks": len(expected),
            "missing": len(missing),
            "unexpected": len(unexpected),
        },
    )


@dg.asset(deps=[staged_index], kinds={"qdrant"}, **_COMMON)
def published_index(
    context: dg.AssetExecutionContext, codex_home: CodexHomeResource, vector_store: VectorStoreResource
) -> dg.MaterializeResult:
    """The version serving reads: swapped in atomically once every blocking check on it passed."""
    repo = context.partition_key
    repo_dir = repo_dir_for(codex_home.home, repo)
    staged = catalog.read_json(repo_dir / catalog.STAGED)
    previous = published_state.read_published(codex_home.home, repo) or {}
    masker = staged.get("masker_version", 1)
    keep = versions_to_keep(previous, masker)
    index = vector_store.open()
    try:
        published = index.publish(repo, staged["version"], commit=staged["commit"])
        pruned = index.prune(repo, keep=keep)
    finally:
        index.close()
    published_state.write_published(codex_home.home, repo, {**published.__dict__, "masker_version": masker})
    return dg.MaterializeResult(
        metadata={
            "version": published.version,
            "commit": published.commit,
            "points": published.points,
            "published_at": published.published_at,
            "secret_masker": masker,
            "versions_pruned": len(pruned),
        },
        data_version=dg.DataVersion(published.version),
    )


@dg.asset(deps=[published_index], kinds={"tree-sitter", "parquet"}, **_COMMON)
def code_graph(context: dg.AssetExecutionContext, codex_home: CodexHomeResource) -> dg.MaterializeResult:
    """Definitions and `calls` / `imports` / `inherits` edges, resolved within the repository.

    Built after `published_index`: the new commit's code is queryable without waiting for the
    graph (graph hops only add neighbours; a stale edge to a vanished symbol is skipped), and
    serving picks the repaired graph up as soon as it is written.
    """
    started = time.perf_counter()
    home = codex_home.home
    repo = context.partition_key
    repo_dir = repo_dir_for(home, repo)
    graph_dir = home.graph_dir(repo)
    files = catalog.read_files(repo_dir)
    definitions, raw_edges, edges, reuse = incremental_graph(
        files,
        load_blob_index(repo_dir / catalog.GRAPH_BLOBS),
        catalog.read_records(graph_dir / "definitions.parquet", Definition),
        catalog.read_records(graph_dir / catalog.RAW_EDGES, Edge),
    )
    write_graph(graph_dir, definitions, edges)
    catalog.write_records(graph_dir / catalog.RAW_EDGES, raw_edges, Edge)
    catalog.write_json(repo_dir / catalog.GRAPH_BLOBS, {f.path: f.content_key for f in files})
    commit = catalog.read_json(repo_dir / catalog.SNAPSHOT)["commit"]
    published_state.write_graph_commit(codex_home.home, context.partition_key, commit)  # the worker reads it
    by_type = counts(e.type for e in edges)
    return dg.MaterializeResult(
        metadata={
            "definitions": len(definitions),
            "edges": len(edges),
            "edges_by_type": dg.MetadataValue.md(markdown_table(by_type, "edge type")),
            "resolved_edges": sum(1 for e in edges if e.resolved),
            "files_reparsed": reuse["files_rebuilt"],
            "files_reused": reuse["files_reused"],
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


ingestion_assets = [
    repo_snapshot,
    code_files,
    code_chunks,
    unique_chunks,
    chunk_embeddings,
    code_graph,
    staged_index,
    published_index,
]
ingestion_checks = [index_not_empty, vector_dim_consistent, spans_within_files, point_count_matches_unique_chunks]
