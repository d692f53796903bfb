"""Ingestion end to end, in process: real git repos, real MiniLM, real qdrant-edge, ephemeral Dagster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from codex_assets.ingestion import (
    ingestion_assets,
    ingestion_checks,
    published_index,
    staged_index,
)
from codex_core import catalog
from codex_core.git import RepoRegistry, show_file
from codex_core.models import span_text
from codex_core.vector_store import EmbeddedVectorIndex
from codex_resources import EmbeddedVectorStoreResource, EmbedderResource
from tests.conftest import commit_all
from tests.support.ingest import ingest as support_ingest
from tests.support.ingest import make_resources, metadata

REPO = "demo"


class SimulatedKill(RuntimeError):
    pass


class _ExplodingEmbedder:
    """Wraps the real model; raises after N batches like a run killed mid-embedding."""

    def __init__(self, real, fail_after_batches: int):
        self.real = real
        self.model_id = real.model_id
        self.fail_after_batches = fail_after_batches
        self.batches = 0

    @property
    def dim(self) -> int:
        return self.real.dim

    def embed(self, texts):
        if self.batches >= self.fail_after_batches:
            raise SimulatedKill(f"killed after {self.batches} batches")
        self.batches += 1
        return self.real.embed(texts)


class ExplodingEmbedderResource(EmbedderResource):
    fail_after_batches: int = 1

    def get_embedder(self):
        return _ExplodingEmbedder(super().get_embedder(), self.fail_after_batches)


def ingest(home: Path, source: Path, **kwargs):
    return support_ingest(home, source, name=REPO, **kwargs)


def published_points(home: Path) -> dict[str, dict]:
    index = EmbeddedVectorIndex(home / "index")
    try:
        current = index.current(REPO)
        assert current is not None, "nothing published"
        return dict(index.iter_payloads(REPO, current.version))
    finally:
        index.close()


def test_ingest_publishes_exact_spans_and_skips_with_reasons(tmp_path: Path, fixture_repo: Path) -> None:
    home = tmp_path / "home"
    result = ingest(home, fixture_repo)
    assert result.success

    files = metadata(result, "code_files")
    assert files["skipped_by_reason"] == {
        "binary": 1, "symlink_outside_repo": 2, "too_large": 1,
    }
    assert files["decoded_with_replacement"] == 1

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(
        ["index_not_empty", "vector_dim_consistent", "spans_within_files", "point_count_matches_unique_chunks"],
        True,
    )

    points = published_points(home)
    unique = catalog.read_chunks(home / "repos" / REPO / catalog.UNIQUE_CHUNKS)
    assert len(points) == len(unique) == metadata(result, "published_index")["points"]
    commit = metadata(result, "repo_snapshot")["commit"]
    for payload in points.values():
        lines = show_file(fixture_repo, commit, payload["path"]).decode("utf-8", "replace").split("\n")
        assert span_text(lines, payload["start_line"], payload["end_line"]) == payload["text"], payload["path"]
        assert payload["commit"] == commit

    paths = {p["path"] for p in points.values()}
    assert {"app/config_parser.py", "web/cart.js", "server/health.go", "cache/lru.rs", "README.md",
            "app/legacy.py"} <= paths
    assert not paths & {"logo.dat", "big.txt", "outside_link", "parent_link"}

    # The duplicated module is stored once and remembers both places.
    retry = [p for p in points.values() if "def retry_with_backoff" in p["text"]]
    assert len(retry) == 1
    locations = {retry[0]["path"]} | {d["path"] for d in retry[0]["duplicates"]}
    assert locations == {"app/retry.py", "app/retry_copy.py"}

    parse_line = [p for p in points.values() if p["symbol"] == "ConfigParser.parse_line"]
    if parse_line:  # merged with its neighbours when small; then the class chunk holds it
        assert parse_line[0]["text"].lstrip().startswith("def parse_line")

    graph = metadata(result, "code_graph")
    assert graph["definitions"] > 0 and graph["edges"] > 0


def test_rematerializing_unchanged_repo_embeds_nothing(tmp_path: Path, fixture_repo: Path) -> None:
    home = tmp_path / "home"
    first = ingest(home, fixture_repo)
    ids_before = set(published_points(home))
    second = ingest(home, fixture_repo)
    emb = metadata(second, "chunk_embeddings")
    assert emb["embeddings_computed"] == 0
    assert emb["embeddings_cached"] == metadata(first, "chunk_embeddings")["embeddings_computed"]
    assert set(published_points(home)) == ids_before
    assert metadata(second, "published_index")["points"] == len(ids_before)


def test_killed_run_then_rerun_converges(tmp_path: Path, repo_factory) -> None:
    clean_home, killed_home = tmp_path / "clean", tmp_path / "killed"
    source = repo_factory()
    ingest(clean_home, source)
    expected = published_points(clean_home)

    killed = ingest(
        killed_home, source, raise_on_error=False,
        embedder_cls=ExplodingEmbedderResource, fail_after_batches=2, batch_size=4,
    )
    assert not killed.success
    assert not (killed_home / "repos" / REPO / catalog.PUBLISHED).exists()
    index = EmbeddedVectorIndex(killed_home / "index")
    assert index.current(REPO) is None  # serving sees nothing half-built
    index.close()

    rerun = ingest(killed_home, source, batch_size=4)
    emb = metadata(rerun, "chunk_embeddings")
    assert emb["embeddings_cached"] == 8  # the two batches paid for before the kill
    assert emb["embeddings_computed"] == len(expected) - 8 if len(expected) > 8 else True
    converged = published_points(killed_home)
    assert set(converged) == set(expected)
    assert {k: v["text"] for k, v in converged.items()} == {k: v["text"] for k, v in expected.items()}


def test_failing_blocking_check_keeps_previous_index_published(tmp_path: Path, fixture_repo: Path) -> None:
    home = tmp_path / "home"
    ingest(home, fixture_repo)
    before = published_points(home)

    (fixture_repo / "app" / "new_module.py").write_text("def brand_new():\n    return 'new'\n")
    commit_all(fixture_repo, "Add a module")
    staged = ingest(home, fixture_repo, selection=dg.AssetSelection.all() - dg.AssetSelection.assets(published_index)
                    - dg.AssetSelection.checks_for_assets(staged_index))
    assert staged.success
    # Tamper with the catalog after staging: the staged index no longer matches the unique chunks.
    unique_path = home / "repos" / REPO / catalog.UNIQUE_CHUNKS
    catalog.write_chunks(unique_path, catalog.read_chunks(unique_path)[1:])

    gated = ingest(
        home, fixture_repo, raise_on_error=False,
        selection=dg.AssetSelection.assets(published_index) | dg.AssetSelection.checks_for_assets(staged_index),
    )
    checks = {e.check_name: e.passed for e in gated.get_asset_check_evaluations()}
    assert checks["point_count_matches_unique_chunks"] is False
    assert not gated.asset_materializations_for_node("published_index")
    assert published_points(home) == before


def test_definitions_validate(tmp_path: Path) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "CODEX_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_definitions_list_assets_with_descriptions_and_checks() -> None:
    from codex_assets.definitions import defs

    graph = defs().resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "repo_snapshot", "code_files", "code_chunks", "unique_chunks", "chunk_embeddings", "code_graph",
        "staged_index", "published_index", "eval_set", "file_ranker", "retrieval_eval", "calibration", "ab_judgement",
        "drift_report", "index_snapshot",
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, key
    check_names = {c.name for c in graph.asset_check_keys}
    assert {"spans_within_files", "point_count_matches_unique_chunks"} <= check_names
    # A one-file re-index must not pay a process start (and a model load) per step.
    assert defs().get_job_def("ingest").executor_def.name == "in_process"


@pytest.mark.parametrize("bad", ["../escape", "a b"])
def test_bad_repo_names_are_rejected(tmp_path: Path, fixture_repo: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid repository name"):
        RepoRegistry(tmp_path / "repos.json").add(bad, str(fixture_repo))


class _TinyHnswStore(EmbeddedVectorStoreResource):
    """The embedded store with the HNSW threshold lowered to 5 points (150k in production)."""

    def open(self):
        return EmbeddedVectorIndex(self.codex_home.home.index_dir, hnsw_min_points=5)


def test_an_hnsw_published_version_is_restaged_in_full(tmp_path: Path, fixture_repo: Path) -> None:
    home = tmp_path / "home"
    RepoRegistry(home / "repos.json").add(REPO, str(fixture_repo))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("repos", [REPO])
    resources = make_resources(home)
    resources["vector_store"] = _TinyHnswStore(codex_home=resources["codex_home"])

    def run():
        return dg.materialize([*ingestion_assets, *ingestion_checks], instance=instance, resources=resources,
                              partition_key=REPO)

    assert run().success
    (fixture_repo / "app" / "new_module.py").write_text("def brand_new():\n    return 'new'\n")
    commit_all(fixture_repo, "Add a module")
    again = run()
    assert again.success
    staged = metadata(again, "staged_index")
    assert (staged["mode"], staged["mode_reason"]) == ("full", "the published version is an HNSW index")
    assert "app/new_module.py" in {p["path"] for p in published_points(home).values()}
