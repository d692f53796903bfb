"""Versioned vector index: both implementations, real engines, small random vectors.

``EmbeddedVectorIndex`` runs the real qdrant-edge engine on ``tmp_path``.

``QdrantServerIndex`` (the ``server`` parameter) runs against a Qdrant server only when
``QDRANT_URL`` is set (``QDRANT_API_KEY`` too if the server wants one); each test then uses its own
collection prefix and deletes its collections afterwards (tests/support/qdrant.py). Without it
(the default, and always on the machines this was written on: no Qdrant server binary can be
installed there) it is driven through ``QdrantClient(location=":memory:")``: the same
qdrant-client API (collections, metadata, aliases, filters, scroll) in process. Server-only
behaviour — real HNSW, payload indexes, the server's own alias swap — is then not exercised.

The server contract tests alone, against a real server::

    QDRANT_URL=http://localhost:6333 .venv/bin/pytest tests/core/test_vector_store.py -k server
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from codex_core.models import content_hash, point_id
from codex_core.vector_store import (
    EmbeddedVectorIndex,
    IndexPoint,
    QdrantServerIndex,
    UnknownRepoError,
    VectorIndex,
    file_manifest,
)
from tests.support.qdrant import QdrantUnderTest

DIM = 32
REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    # qdrant-client local mode says payload indexes and search params have no effect there.
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]


def make_points(
    repo: str, n: int, *, seed: int = 0, paths: tuple[str, ...] = ("src/app/main.py",)
) -> tuple[list[IndexPoint], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    points = []
    for i in range(n):
        path = paths[i % len(paths)]
        text = f"def f_{seed}_{i}():\n    return {i}\n"
        digest = content_hash(text)
        payload = {
            "repo": repo,
            "path": path,
            "language": "go" if path.endswith(".go") else "python",
            "symbol": f"f_{seed}_{i}",
            "kind": "function",
            "start_line": i + 1,
            "end_line": i + 2,
            "content_hash": digest,
            "commit": f"commit-{seed}",
            "text": text,
            "duplicates": [{"path": "copy/" + path, "start_line": 1, "end_line": 2, "symbol": None}],
        }
        points.append(IndexPoint(point_id(repo, path, digest), vectors[i], payload))
    return points, vectors


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


@pytest.fixture
def qdrant() -> Iterator[QdrantUnderTest]:
    """The server under test: ``QDRANT_URL`` when set, else the in-memory client (module docstring)."""
    server = QdrantUnderTest()
    yield server
    server.close()


@pytest.fixture(params=["embedded", "server"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], VectorIndex]]:
    """Factory of store handles sharing one backend: a writer and a reader are separate handles."""
    handles: list[VectorIndex] = []
    server = QdrantUnderTest() if request.param == "server" else None

    def factory() -> VectorIndex:
        if server is not None:
            store: VectorIndex = server.index()
        else:
            store = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
        handles.append(store)
        return store

    yield factory
    for handle in handles:
        handle.close()
    if server is not None:
        server.close()


def test_staged_version_is_invisible_until_published(make_store: Callable[[], VectorIndex]) -> None:
    writer, reader = make_store(), make_store()
    points, vectors = make_points("alpha", 50)
    version = writer.stage("alpha", DIM, points, commit="c1")

    assert writer.current("alpha") is None
    assert reader.repos() == []
    with pytest.raises(UnknownRepoError, match="alpha"):
        reader.search(vectors[0], repos=["alpha"])
    stats = writer.staged_stats("alpha", version)
    assert (stats.points, stats.received, stats.dim, stats.commit) == (50, 50, DIM, "c1")

    published = writer.publish("alpha", version, commit="c1")

    assert (published.version, published.points, published.dim, published.commit) == (version, 50, DIM, "c1")
    assert reader.current("alpha") == published
    assert reader.repos() == ["alpha"]
    assert reader.search(vectors[7], top_k=1)[0].id == points[7].id


def test_reader_switches_to_republished_version(make_store: Callable[[], VectorIndex]) -> None:
    writer, reader = make_store(), make_store()
    old_points, old_vectors = make_points("alpha", 60, seed=1)
    new_points, new_vectors = make_points("alpha", 40, seed=2)
    v1 = writer.stage("alpha", DIM, old_points, commit="c1")
    writer.publish("alpha", v1, commit="c1")
    assert reader.search(old_vectors[3], top_k=1)[0].id == old_points[3].id  # reader now holds v1

    v2 = writer.stage("alpha", DIM, new_points, commit="c2")
    assert reader.search(old_vectors[3], top_k=1)[0].id == old_points[3].id  # staging changes nothing
    writer.publish("alpha", v2, commit="c2")
    writer.prune("alpha", keep=1)  # v1 is gone from storage while the reader may still hold it

    old_ids = {p.id for p in old_points}
    hits = reader.search(old_vectors[3], top_k=40)
    assert len(hits) == 40
    assert not old_ids & {h.id for h in hits}
    assert reader.search(new_vectors[5], top_k=1)[0].id == new_points[5].id
    assert reader.current("alpha").commit == "c2"
    assert [v.version for v in writer.versions("alpha")] == [v2]


def test_exact_search_returns_true_nearest_neighbours(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    points, vectors = make_points("alpha", 500, seed=3)
    store.publish("alpha", store.stage("alpha", DIM, points, commit="c1", batch_size=64), commit="c1")
    queries = np.random.default_rng(99).standard_normal((25, DIM)).astype(np.float32)
    similarities = unit(queries) @ unit(vectors).T

    for q, sims in zip(queries, similarities, strict=True):
        expected = np.argsort(-sims)[:10]
        hits = store.search(q, top_k=10)
        assert [h.id for h in hits] == [points[i].id for i in expected]
        np.testing.assert_allclose([h.score for h in hits], sims[expected], atol=1e-5)


def test_repo_and_path_prefix_filters(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    paths = ("src/pkg/a.py", "src/pkg/sub/b.py", "src/other/c.py", "cmd/main.go")
    a_points, a_vectors = make_points("alpha", 200, seed=4, paths=paths)
    b_points, _ = make_points("beta", 200, seed=5, paths=paths)
    for repo, pts in (("alpha", a_points), ("beta", b_points)):
        store.publish(repo, store.stage(repo, DIM, pts, commit="c"), commit="c")
    query = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)

    both = store.search(query, top_k=30)
    assert {h.repo for h in both} == {"alpha", "beta"}
    assert all(h.payload["repo"] == h.repo for h in both)
    assert [h.score for h in both] == sorted((h.score for h in both), reverse=True)

    only_alpha = store.search(query, repos=["alpha"], top_k=30)
    assert {h.repo for h in only_alpha} == {"alpha"}

    prefixed = store.search(query, repos=["alpha"], top_k=10, path_prefix="src/pkg/")
    in_prefix = [i for i, p in enumerate(a_points) if p.payload["path"].startswith("src/pkg/")]
    sims = unit(a_vectors[in_prefix]) @ unit(query)
    assert [h.id for h in prefixed] == [a_points[in_prefix[i]].id for i in np.argsort(-sims)[:10]]

    go_only = store.search(query, top_k=10, where={"language": "go"})
    assert go_only and {h.payload["path"] for h in go_only} == {"cmd/main.go"}


def test_failed_stage_leaves_published_version_searchable(make_store: Callable[[], VectorIndex]) -> None:
    writer, reader = make_store(), make_store()
    points, vectors = make_points("alpha", 80, seed=6)
    v1 = writer.stage("alpha", DIM, points, commit="c1")
    published = writer.publish("alpha", v1, commit="c1")
    assert reader.search(vectors[0], top_k=1)[0].id == points[0].id

    replacement, _ = make_points("alpha", 700, seed=7)

    def dies_midway() -> Iterator[IndexPoint]:
        yield from replacement[:600]  # more than one batch has reached the engine
        raise RuntimeError("embedder crashed")

    with pytest.raises(RuntimeError, match="embedder crashed"):
        writer.stage("alpha", DIM, dies_midway(), commit="c2", batch_size=128)

    assert writer.current("alpha") == published
    assert [v.version for v in writer.versions("alpha")] == [v1]
    assert writer.prune("alpha") == []  # nothing half-built was left behind
    assert reader.search(vectors[0], top_k=1)[0].id == points[0].id
    assert len(reader.search(vectors[0], top_k=500)) == 80


def test_prune_never_deletes_the_current_version(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    versions = []
    for seed in (10, 11, 12):
        pts, _ = make_points("alpha", 20, seed=seed)
        versions.append(store.stage("alpha", DIM, pts, commit=f"c{seed}"))
    v_old, v_mid, v_new = versions
    store.publish("alpha", v_old, commit="c10")  # the oldest one is current (e.g. after a rollback)

    assert store.prune("alpha", keep=1) == [v_mid]
    assert [v.version for v in store.versions("alpha")] == [v_old, v_new]
    assert store.current("alpha").version == v_old
    probe = make_points("alpha", 1, seed=10)[1][0]
    assert store.search(probe, top_k=1)[0].payload["commit"] == "commit-10"
    with pytest.raises(ValueError, match="keep"):
        store.prune("alpha", keep=0)
    with pytest.raises(ValueError, match="published version"):
        store.discard("alpha", v_old)
    store.discard("alpha", v_new)
    assert [v.version for v in store.versions("alpha")] == [v_old]


@pytest.mark.parametrize("bad", ["", "..", ".", ".hidden", "../escape", "a/b", "a\\b", "a b", "é", "x" * 101, "a\x00"])
def test_bad_repo_names_are_rejected(make_store: Callable[[], VectorIndex], bad: str, tmp_path: Path) -> None:
    store = make_store()
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    points, vectors = make_points("ok", 3)
    with pytest.raises(ValueError, match="invalid repo name"):
        store.stage(bad, DIM, points, commit="c")
    with pytest.raises(ValueError, match="invalid repo name"):
        store.search(vectors[0], repos=[bad])
    with pytest.raises(ValueError, match="invalid repo name"):
        store.current(bad)
    with pytest.raises(ValueError, match="invalid repo name"):
        store.prune(bad)
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


def test_bad_version_ids_and_commit_mismatch_are_rejected(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    points, _ = make_points("alpha", 5)
    version = store.stage("alpha", DIM, points, commit="c1")
    for bad in ("../../etc", "latest", version + "/.."):
        with pytest.raises(ValueError, match="invalid version id"):
            store.publish("alpha", bad, commit="c1")
        with pytest.raises(ValueError, match="invalid version id"):
            store.discard("alpha", bad)
    with pytest.raises(ValueError, match="staged for commit 'c1'"):
        store.publish("alpha", version, commit="c2")
    with pytest.raises(LookupError):
        store.publish("alpha", "20000101T000000000000Z-abcdef", commit="c1")
    assert store.current("alpha") is None


def test_bad_points_fail_the_stage_and_leave_nothing(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    good, vectors = make_points("alpha", 5)
    cases = {
        "dimensions": IndexPoint(good[0].id, vectors[0][:-1], {}),
        "NaN": IndexPoint(good[0].id, np.full(DIM, np.nan), {}),
        "all zeros": IndexPoint(good[0].id, np.zeros(DIM), {}),
        "not a uuid": IndexPoint("chunk-1", vectors[0], {}),
        "must be a dict": IndexPoint(good[0].id, vectors[0], ["x"]),  # type: ignore[arg-type]
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            store.stage("alpha", DIM, [*good, bad], commit="c")
    assert store.versions("alpha") == []


def test_payload_round_trip_and_get(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    points, vectors = make_points("alpha", 30, seed=8)
    odd = IndexPoint(
        point_id("alpha", "docs/ü.md", "h"),
        vectors[0] + 0.5,
        {
            "repo": "alpha",
            "path": "docs/ü.md",
            "symbol": None,
            "text": "naïve → ok\n\ttab",
            "nested": {"a": [1, 2.5, True]},
            "duplicates": [],
        },
    )
    points.append(odd)
    version = store.stage("alpha", DIM, points, commit="c1")

    payloads = dict(store.iter_payloads("alpha", version))
    assert payloads == {p.id: p.payload for p in points}

    store.publish("alpha", version, commit="c1")
    assert store.search(odd.vector, top_k=1)[0].payload == odd.payload
    got = store.get("alpha", [points[3].id, "00000000-0000-0000-0000-000000000000", odd.id], with_vectors=True)
    assert [g.id for g in got] == [points[3].id, odd.id]
    assert got[0].payload == points[3].payload
    np.testing.assert_allclose(got[0].vector, unit(vectors[3]), atol=1e-6)  # stored unit-normalized
    assert store.get("alpha", [odd.id])[0].vector is None
    # One file's best chunks by cosine (retrieval's in-file order): that file only, the search's scores
    by_file = store.file_scores("alpha", ["docs/ü.md"], odd.vector, 5)
    assert list(by_file) == [odd.id]
    assert by_file[odd.id] == pytest.approx(store.search(odd.vector, top_k=1)[0].score, abs=1e-5)
    some_path = points[3].payload["path"]
    same_file = [p.id for p in points if p.payload["path"] == some_path]
    assert set(store.file_scores("alpha", [some_path], vectors[3], len(same_file))) == set(same_file)
    both = store.file_scores("alpha", [some_path, "docs/ü.md"], vectors[3], len(same_file) + 1)
    assert set(both) == {*same_file, odd.id}
    assert len(store.file_scores("alpha", [some_path, "docs/ü.md"], vectors[3], 3)) == 3  # the best 3 of both
    assert store.file_scores("alpha", [some_path], vectors[3], 0) == {}


def test_duplicate_ids_are_counted_once(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    points, _ = make_points("alpha", 10)
    version = store.stage("alpha", DIM, points + points[:3], commit="c1")
    stats = store.staged_stats("alpha", version)
    assert (stats.points, stats.received) == (10, 13)


def test_publishing_an_older_version_is_a_rollback(make_store: Callable[[], VectorIndex]) -> None:
    writer, reader = make_store(), make_store()
    old_points, old_vectors = make_points("alpha", 30, seed=14)
    new_points, new_vectors = make_points("alpha", 30, seed=15)
    v1 = writer.stage("alpha", DIM, old_points, commit="c1")
    v2 = writer.stage("alpha", DIM, new_points, commit="c2")
    writer.publish("alpha", v1, commit="c1")
    writer.publish("alpha", v2, commit="c2")
    assert reader.search(new_vectors[4], top_k=1)[0].id == new_points[4].id
    assert reader.refresh(["alpha"]) == {"alpha": v2}

    back = writer.publish("alpha", v1, commit="c1")  # the swap back: readers follow on their next call

    assert (back.version, back.commit) == (v1, "c1")
    assert reader.current("alpha").version == v1
    assert reader.search(old_vectors[4], top_k=1)[0].id == old_points[4].id
    assert {h.id for h in reader.search(new_vectors[4], top_k=30)}.isdisjoint(p.id for p in new_points)
    assert reader.refresh() == {"alpha": v1}
    assert reader.refresh(["beta"]) == {}  # nothing published for it: nothing to open
    with pytest.raises(UnknownRepoError, match="beta"):
        reader.get("beta", [old_points[0].id])


def test_delta_version_equals_a_full_build(make_store: Callable[[], VectorIndex]) -> None:
    writer, reader = make_store(), make_store()
    assert writer.supports_delta
    points, vectors = make_points("alpha", 200, seed=21, paths=("a/x.py", "b/y.py"))
    base = writer.publish("alpha", writer.stage("alpha", DIM, points, commit="c1"), commit="c1").version
    assert reader.search(vectors[0], top_k=1)[0].id == points[0].id  # the reader holds the base
    base_payloads = dict(writer.iter_payloads("alpha", base))

    new_points, new_vectors = make_points("alpha", 5, seed=22, paths=("c/z.py",))
    moved = IndexPoint(points[3].id, vectors[7], {**points[3].payload, "start_line": 40, "end_line": 41})
    doomed = [p.id for p in points[:3]]
    delta = writer.stage_delta("alpha", DIM, base, [*new_points, moved], doomed, commit="c2", batch_size=64)

    stats = writer.staged_stats("alpha", delta)
    assert (stats.base_version, stats.received, stats.points, stats.commit) == (base, 6, 202, "c2")
    assert stats.changed_ids == sorted(p.id for p in [*new_points, moved])
    assert stats.deleted_ids == sorted(doomed)
    full = writer.stage("alpha", DIM, [moved, *points[4:], *new_points], commit="c2")
    assert dict(writer.iter_payloads("alpha", delta)) == dict(writer.iter_payloads("alpha", full))
    assert writer.staged_stats("alpha", full).base_version is None
    assert dict(writer.iter_payloads("alpha", base)) == base_payloads  # the base was only read
    assert reader.search(new_vectors[2], top_k=1)[0].payload["commit"] == "commit-21"  # not published yet

    writer.publish("alpha", delta, commit="c2")
    assert reader.search(new_vectors[2], top_k=1)[0].id == new_points[2].id
    assert reader.get("alpha", [moved.id])[0].payload["start_line"] == 40
    np.testing.assert_allclose(reader.get("alpha", [moved.id], with_vectors=True)[0].vector, unit(vectors[7]),
                               atol=1e-6)
    unchanged = reader.get("alpha", [points[150].id], with_vectors=True)[0]  # carried over from the base
    assert unchanged.payload == points[150].payload
    np.testing.assert_allclose(unchanged.vector, unit(vectors[150]), atol=1e-6)
    assert {h.id for h in reader.search(vectors[0], top_k=202)}.isdisjoint(doomed)
    only = dict(reader.iter_payloads("alpha", delta, ids=[moved.id, doomed[0]], with_payload=False))
    assert only == {moved.id: {}}  # deleted ids are simply absent


def test_failed_delta_leaves_the_published_version(make_store: Callable[[], VectorIndex]) -> None:
    store = make_store()
    points, vectors = make_points("alpha", 20, seed=23)
    base = store.publish("alpha", store.stage("alpha", DIM, points, commit="c1"), commit="c1")
    replacement, _ = make_points("alpha", 300, seed=25)

    def dies_midway() -> Iterator[IndexPoint]:
        yield from replacement[:200]
        raise RuntimeError("embedder crashed")

    with pytest.raises(RuntimeError, match="embedder crashed"):
        store.stage_delta("alpha", DIM, base.version, dies_midway(), [], commit="c2", batch_size=64)
    bad = IndexPoint(points[0].id, [float("nan")] * DIM, points[0].payload)
    with pytest.raises(ValueError, match="NaN"):
        store.stage_delta("alpha", DIM, base.version, [bad], [], commit="c2")
    with pytest.raises(ValueError, match="not a uuid"):
        store.stage_delta("alpha", DIM, base.version, [], ["chunk-1"], commit="c2")
    with pytest.raises(ValueError, match="dim"):
        store.stage_delta("alpha", DIM + 1, base.version, [], [], commit="c2")
    with pytest.raises(LookupError):
        store.stage_delta("alpha", DIM, "20000101T000000000000Z-abcdef", [], [], commit="c2")
    with pytest.raises(ValueError, match="invalid version id"):
        store.stage_delta("alpha", DIM, "../x", [], [], commit="c2")

    assert [v.version for v in store.versions("alpha")] == [base.version]
    assert store.prune("alpha") == []  # nothing half-built was left behind
    assert store.current("alpha") == base
    assert len(store.search(vectors[0], top_k=100)) == 20


# ---------------------------------------------------------------- embedded-only behaviour


def tree_state(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(directory).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_readers_never_modify_the_published_directory(tmp_path: Path) -> None:
    writer = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    points, vectors = make_points("alpha", 300, seed=9, paths=("a/x.py", "b/y.py"))
    version = writer.publish("alpha", writer.stage("alpha", DIM, points, commit="c1"), commit="c1").version
    published_dir = tmp_path / "index" / "alpha" / "versions" / version
    before = tree_state(published_dir)

    reader = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    assert reader.search(vectors[1], top_k=1)[0].id == points[1].id
    (copy,) = (tmp_path / "readers").iterdir()
    # The loaded private copy holds the same bytes as the sealed version, stored sparsely.
    assert file_manifest(copy / "shard") == writer.staged_stats("alpha", version).files
    copied = [p.stat() for p in copy.rglob("*") if p.is_file()]
    assert sum(st.st_blocks * 512 for st in copied) < sum(st.st_size for st in copied) / 4
    reader.search(vectors[2], path_prefix="b/")
    reader.get("alpha", [points[0].id])
    assert list(reader.iter_payloads("alpha", version))
    # A second reader in another process at the same time.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from codex_core.vector_store import EmbeddedVectorIndex
        idx = EmbeddedVectorIndex({str(tmp_path / "index")!r}, reader_dir={str(tmp_path / "readers")!r})
        print(idx.search([1.0] * {DIM}, top_k=1)[0].id)
        idx.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() in {p.id for p in points}
    reader.close()

    assert tree_state(published_dir) == before  # same bytes and same mtimes
    assert writer.check_files("alpha", version) == []
    assert list((tmp_path / "readers").iterdir()) == []  # private copies removed on close


def test_loading_a_shard_in_place_writes_to_it(tmp_path: Path) -> None:
    """Why readers copy: qdrant-edge 0.9 rewrites files of a shard it loads, even to only query it.

    If this starts failing after an engine upgrade, loads became side-effect free and the private
    copy in EmbeddedVectorIndex could be reconsidered (see docs/vector-store.md).
    """
    import qdrant_edge as qe

    writer = EmbeddedVectorIndex(tmp_path / "index")
    points, vectors = make_points("alpha", 50)
    version = writer.stage("alpha", DIM, points, commit="c1")
    shard_dir = tmp_path / "index" / "alpha" / "versions" / version / "shard"
    before = tree_state(shard_dir)

    shard = qe.EdgeShard.load(str(shard_dir))
    shard.query(qe.QueryRequest(limit=3, query=qe.Query.Nearest(vectors[0].tolist())))
    shard.close()

    after = tree_state(shard_dir)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # sealed: same bytes
    assert after != before  # ...but files were rewritten (mtimes moved)


def test_large_versions_switch_to_hnsw(tmp_path: Path) -> None:
    store = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers", hnsw_min_points=400)
    points, vectors = make_points("alpha", 600, seed=13)
    version = store.stage("alpha", DIM, points, commit="c1")
    assert store.staged_stats("alpha", version).index == "hnsw"
    store.publish("alpha", version, commit="c1")
    queries = np.random.default_rng(5).standard_normal((20, DIM)).astype(np.float32)
    sims = unit(queries) @ unit(vectors).T
    recall = np.mean(
        [
            len({h.id for h in store.search(q, top_k=10)} & {points[i].id for i in np.argsort(-s)[:10]}) / 10
            for q, s in zip(queries, sims, strict=True)
        ]
    )
    assert recall >= 0.95
    store.close()


def test_killed_stage_is_ignored_and_pruned(tmp_path: Path) -> None:
    store = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    points, _ = make_points("alpha", 10)
    good = store.stage("alpha", DIM, points, commit="c1")
    store.publish("alpha", good, commit="c1")
    killed = "20000101T000000000000Z-0a0b0c"  # what a stage killed before writing version.json leaves
    (tmp_path / "index" / "alpha" / "versions" / killed / "shard").mkdir(parents=True)

    assert [v.version for v in store.versions("alpha")] == [good]
    with pytest.raises(LookupError, match="did not finish"):
        store.publish("alpha", killed, commit="c1")
    assert store.prune("alpha") == [killed]
    assert store.current("alpha").version == good


def test_reader_keeps_one_private_copy_per_repo(tmp_path: Path) -> None:
    writer = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "w-readers")
    reader = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    for seed in (1, 2, 3):
        points, vectors = make_points("alpha", 20, seed=seed)
        writer.publish("alpha", writer.stage("alpha", DIM, points, commit=f"c{seed}"), commit=f"c{seed}")
        assert reader.search(vectors[0], top_k=1)[0].id == points[0].id
        assert len(list((tmp_path / "readers").iterdir())) == 1
    # a copy left by a dead process is swept when a new reader starts
    stale = tmp_path / "readers" / "999999999-alpha-stale"
    stale.mkdir()
    fresh = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    fresh.search(vectors[0], top_k=1)
    assert not stale.exists()
    for store in (writer, reader, fresh):
        store.close()
    assert list((tmp_path / "readers").iterdir()) == []


def test_reader_rereads_the_pointer_when_its_target_is_pruned_mid_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codex_core.vector_store import embedded  # where EmbeddedVectorIndex looks the copy function up

    writer = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "w-readers")
    reader = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    staged = {}
    for seed in (1, 2, 3):
        points, vectors = make_points("alpha", 20, seed=seed)
        staged[seed] = (writer.stage("alpha", DIM, points, commit=f"c{seed}"), points, vectors)
    writer.publish("alpha", staged[1][0], commit="c1")
    reader.search(staged[1][2][0])
    writer.publish("alpha", staged[2][0], commit="c2")

    copied: list[Path] = []
    real_copy = embedded.copy_tree_sparse

    def copy_racing_a_publish(src: Path, dst: Path) -> None:
        if not copied:  # the reader has read "v2 is current"; v3 is published and v2 pruned under it
            writer.publish("alpha", staged[3][0], commit="c3")
            writer.prune("alpha", keep=1)
        copied.append(src)
        real_copy(src, dst)

    monkeypatch.setattr(embedded, "copy_tree_sparse", copy_racing_a_publish)
    _, points3, vectors3 = staged[3]
    assert reader.search(vectors3[4], top_k=1)[0].id == points3[4].id
    assert [p.parent.name for p in copied] == [staged[2][0], staged[3][0]]
    assert len(list((tmp_path / "readers").iterdir())) == 1  # the failed copy was cleaned up
    writer.close()
    reader.close()


def test_delta_copies_the_base_directory_without_loading_it(tmp_path: Path) -> None:
    store = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers")
    points, vectors = make_points("alpha", 200, seed=21, paths=("a/x.py", "b/y.py"))
    base = store.publish("alpha", store.stage("alpha", DIM, points, commit="c1"), commit="c1").version
    base_dir = tmp_path / "index" / "alpha" / "versions" / base
    before = tree_state(base_dir)

    new_points, _ = make_points("alpha", 5, seed=22, paths=("c/z.py",))
    delta = store.stage_delta("alpha", DIM, base, new_points, [points[0].id], commit="c2")
    store.publish("alpha", delta, commit="c2")
    assert store.search(vectors[1], top_k=1)[0].id == points[1].id

    assert tree_state(base_dir) == before  # same bytes and mtimes: copied, never loaded in place
    assert store.check_files("alpha", delta) == []
    store.close()


def test_hnsw_bases_are_refused(tmp_path: Path) -> None:
    store = EmbeddedVectorIndex(tmp_path / "index", reader_dir=tmp_path / "readers", hnsw_min_points=400)
    big, _ = make_points("beta", 450, seed=24)
    hnsw = store.stage("beta", DIM, big, commit="c1")
    with pytest.raises(ValueError, match="HNSW"):
        store.stage_delta("beta", DIM, hnsw, [], [], commit="c2")
    store.close()


# ---------------------------------------------------------------- server-only behaviour


def test_server_ignores_and_prunes_a_killed_stage(qdrant: QdrantUnderTest) -> None:
    """What a stage killed before sealing leaves on a server: a collection whose metadata says
    ``codex_sealed: false``. It is no version, cannot be published, and prune removes it."""
    from qdrant_client import models

    store = qdrant.index()
    points, vectors = make_points("alpha", 10)
    good = store.publish("alpha", store.stage("alpha", DIM, points, commit="c1"), commit="c1").version
    killed = "20000101T000000000000Z-0a0b0c"
    qdrant.client().create_collection(
        f"{qdrant.prefix}__alpha__{killed}",
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        metadata={"codex_repo": "alpha", "codex_version": killed, "codex_commit": "c2", "codex_dim": DIM,
                  "codex_created_at": "2000-01-01T00:00:00+00:00", "codex_sealed": False},
    )

    assert [v.version for v in store.versions("alpha")] == [good]
    with pytest.raises(LookupError, match="did not finish"):
        store.publish("alpha", killed, commit="c2")
    with pytest.raises(LookupError, match="did not finish"):
        store.stage_delta("alpha", DIM, killed, [], [], commit="c2")
    assert store.prune("alpha") == [killed]
    assert qdrant.collections() == [f"{qdrant.prefix}__alpha__{good}"]
    assert store.search(vectors[2], top_k=1)[0].id == points[2].id


def test_server_collections_and_alias_are_named_by_prefix(qdrant: QdrantUnderTest) -> None:
    """Two deployments (prefixes) share a server without seeing each other's repositories."""
    ours, theirs = qdrant.index(), QdrantServerIndex(qdrant.client(), prefix=f"{qdrant.prefix}-other")
    points, vectors = make_points("alpha", 10)
    version = ours.publish("alpha", ours.stage("alpha", DIM, points, commit="c1"), commit="c1").version

    assert theirs.repos() == [] and theirs.current("alpha") is None
    with pytest.raises(UnknownRepoError):
        theirs.search(vectors[0], repos=["alpha"])
    assert qdrant.collections() == [f"{qdrant.prefix}__alpha__{version}"]
    aliases = {a.alias_name: a.collection_name for a in qdrant.client().get_aliases().aliases}
    assert aliases[f"{qdrant.prefix}__alpha"] == f"{qdrant.prefix}__alpha__{version}"
    with pytest.raises(ValueError, match="prefix"):
        QdrantServerIndex(qdrant.client(), prefix="a_b")
