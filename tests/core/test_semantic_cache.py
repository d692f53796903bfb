"""SemanticCache on its own: real MiniLM vectors of the benchmark's question pairs, bounds, scopes, eviction.

The questions come from benchmarks/semantic_cache/pairs.jsonl (written about real code; docs/benchmarks.md);
the threshold is the shipped default. The clock is injected so the age limit is tested without sleeping.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from codex_core.embedding import SentenceTransformerEmbedder
from codex_core.retrieval import RetrievalConfig
from codex_core.semantic_cache import CacheScope, SemanticCache, reuse_refusal
from codex_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [json.loads(line) for line in (ROOT / "benchmarks" / "semantic_cache" / "pairs.jsonl").read_text().splitlines()]
DEFAULT = Settings.from_env({}).semantic_cache_threshold


def scope(tenant: str = "ann", commit: str = "c1", config: object = None, **indexes: tuple[str, str]) -> CacheScope:
    return CacheScope.of(tenant=tenant, indexes=indexes or {"demo": (commit, "v1")}, top_k=5,
                         config=config if config is not None else RetrievalConfig())


def pair(pair_id: str) -> dict:
    return next(p for p in PAIRS if p["id"] == pair_id)


@pytest.fixture(scope="module")
def embed():
    embedder = SentenceTransformerEmbedder()
    return lambda text: embedder.embed([text])[0]


def test_the_default_threshold_is_the_measured_one() -> None:
    results = json.loads((ROOT / "benchmarks" / "semantic_cache" / "results.json").read_text())
    assert DEFAULT == results["threshold"] and results["held_out"]["false_hit_rate"]["hits"] == 0


def test_a_retyped_question_hits_and_its_hard_negatives_do_not(embed) -> None:
    cache: SemanticCache[str] = SemanticCache(DEFAULT)
    retyped = pair("starlette-para-13")  # "... stop a path from escaping ..." / "... prevent a path ..."
    cache.store(scope(), embed(retyped["a"]), "answer about lookup_path", ref="t1")
    hit = cache.lookup(scope(), embed(retyped["b"]))
    assert hit is not None and hit.value == "answer about lookup_path" and hit.ref == "t1"
    assert DEFAULT <= hit.similarity < 1.0
    # The same subject asked as "why" (an intent negative of the same code) and a reworded paraphrase miss:
    # with MiniLM, only near-repeats are close enough to be safe.
    why = pair("starlette-diff-16")
    assert why["a"] == retyped["a"]
    assert cache.lookup(scope(), embed(why["b"])) is None
    assert cache.lookup(scope(), embed(pair("starlette-para-03")["b"])) is None
    # An exact repeat matches even at a threshold of 1 (float32 dot products land a few ulps short).
    exact: SemanticCache[str] = SemanticCache(1.0)
    exact.store(scope(), embed(retyped["a"]), "x", ref="t2")
    assert exact.lookup(scope(), embed(retyped["a"])) is not None


def test_scopes_never_share_entries(embed) -> None:
    cache: SemanticCache[str] = SemanticCache(0.5)
    vector = embed("How are failed connections retried with exponential backoff?")
    cache.store(scope(), vector, "champion answer", ref="t1")
    assert cache.lookup(scope(), vector).value == "champion answer"
    assert cache.lookup(scope(tenant="ben"), vector) is None
    assert cache.lookup(scope(commit="c2"), vector) is None
    assert cache.lookup(scope(demo=("c1", "v1"), billing=("b1", "v1")), vector) is None  # more repositories searched
    assert cache.lookup(scope(config=RetrievalConfig(graph_hops=0)), vector) is None
    other_k = CacheScope.of(tenant="ann", indexes={"demo": ("c1", "v1")}, top_k=3, config=RetrievalConfig())
    assert cache.lookup(other_k, vector) is None
    # Equal configurations are the same scope (a config loaded again compares by value).
    assert cache.lookup(scope(config=RetrievalConfig(**vars(RetrievalConfig()))), vector) is not None


def test_a_new_publish_evicts_and_refuses_stale_entries(embed) -> None:
    cache: SemanticCache[str] = SemanticCache(0.9)
    vector = embed("where is a config line parsed")
    cache.store(scope(), vector, "old", ref="t1")
    cache.store(scope(billing=("b1", "v1")), vector, "billing", ref="t2")
    assert cache.retain_published({"demo": ("c1", "v1"), "billing": ("b1", "v1")}) == 0
    assert cache.retain_published({"demo": ("c2", "v2"), "billing": ("b1", "v1")}) == 1
    assert len(cache) == 1 and cache.lookup(scope(billing=("b1", "v1")), vector).value == "billing"
    # A request that started before the publish cannot store its answer under the old commit.
    assert cache.store(scope(), vector, "late", ref="t3") is False and len(cache) == 1
    # A re-index of the same commit (new version) is a new index too.
    assert cache.retain_published({"demo": ("c2", "v2"), "billing": ("b1", "v9")}) == 1 and len(cache) == 0


def test_bounded_by_entries_and_age(embed) -> None:
    now = [0.0]
    cache: SemanticCache[int] = SemanticCache(0.99, max_entries=3, max_age_s=60, clock=lambda: now[0])
    questions = ["where is a config line parsed", "how is the cart total computed",
                 "what does the health endpoint write", "how are prices formatted"]
    vectors = [embed(q) for q in questions]
    for i, v in enumerate(vectors[:3]):
        cache.store(scope(), v, i, ref=str(i))
    assert cache.lookup(scope(), vectors[0]).value == 0  # used: no longer the least recently used
    cache.store(scope(), vectors[3], 3, ref="3")
    assert len(cache) == 3 and cache.lookup(scope(), vectors[1]) is None  # the LRU one went
    now[0] = 30.0
    assert cache.lookup(scope(), vectors[3]).age_s == 30.0
    now[0] = 61.0
    assert cache.lookup(scope(), vectors[3]) is None and len(cache) == 0


def test_concurrent_stores_and_lookups_keep_the_bound() -> None:
    rng = np.random.default_rng(0)
    cache: SemanticCache[int] = SemanticCache(0.99, max_entries=50)
    vectors = rng.standard_normal((400, 384)).astype(np.float32)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(offset, 400, 4):
                cache.store(scope(tenant=f"t{i % 3}"), vectors[i], i, ref=str(i))
                hit = cache.lookup(scope(tenant=f"t{i % 3}"), vectors[i])
                assert hit is None or hit.similarity >= 0.99
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 50


def test_what_is_worth_re_serving() -> None:
    class Generated:
        extractive = False
        abstained = False
        verification = {"ok": True}

    good = Generated()
    assert reuse_refusal(abstained=False, generation=good, cited=True, demoted=False) is None
    assert reuse_refusal(abstained=True, generation=None, cited=False, demoted=False) == "abstained"
    extractive = Generated()
    extractive.extractive = True
    assert reuse_refusal(abstained=False, generation=extractive, cited=True, demoted=False) == "extractive"
    failed = Generated()
    failed.verification = {"ok": False}
    assert reuse_refusal(abstained=False, generation=failed, cited=True, demoted=False) == "failed verification"
    assert reuse_refusal(abstained=False, generation=good, cited=False, demoted=False) == "cites no retrieved span"
    assert reuse_refusal(abstained=False, generation=good, cited=True, demoted=True) == "generated under GPU demotion"


def test_bad_settings_say_what_to_write() -> None:
    assert Settings.from_env({"CODEX_SEMANTIC_CACHE": "OFF"}).semantic_cache_threshold is None
    assert Settings.from_env({"CODEX_SEMANTIC_CACHE": "0.99"}).semantic_cache_threshold == 0.99
    for bad in ("sometimes", "1.5", "0"):
        with pytest.raises(ValidationError, match="CODEX_SEMANTIC_CACHE") as info:
            Settings.from_env({"CODEX_SEMANTIC_CACHE": bad})
        assert "or `off`" in str(info.value)
    with pytest.raises(ValidationError, match="CODEX_SEMANTIC_CACHE_SIZE"):
        Settings.from_env({"CODEX_SEMANTIC_CACHE_SIZE": "0"})
    with pytest.raises(ValueError, match="CODEX_SEMANTIC_CACHE=off"):
        SemanticCache(0.0)
