"""Which chunks of a cited file are cited (``RetrievalConfig.in_file_order``).

The first-stage searches are cut repository-wide (``lexical_k``, ``dense_k``), so a file that is
rightly cited first may be cited with the chunks that happened to be in those pools rather than
with the part of it that answers. ``"bm25"`` (the default, with ``in_file_prose_weight``) ranks
every chunk of each cited file by its own BM25 score, discounted by its share of comments and
docstrings; ``"signals"`` by BM25 and cosine within that file; ``"fused"`` is the order before both.

Real BM25 over a small corpus; dense is off here (no vectors), so BM25 alone orders a file's chunks.
The reader's per-file dense search is checked in tests/serving/test_query.py and
tests/core/test_vector_store.py.
"""

from __future__ import annotations

import pytest

from codex_core.retrieval import HybridRetriever, RetrievalConfig, is_test_chunk
from tests.support.corpus import chunk_retriever

CHUNKS = [
    ("cart.py", "Cart.apply_coupon",
     "def apply_coupon(self, coupon):\n    # a coupon takes its percent off the cart total\n"
     "    self.total -= self.total * coupon.percent // 100"),
    ("cart.py", "Cart.add_item",
     "def add_item(self, sku, price):\n    self.items.append(sku)\n    self.total += price"),
    ("cart.py", "Cart.checkout",
     "def checkout(self, payment):\n    payment.charge(self.total)\n    self.items.clear()"),
    ("cart.py", "Cart.coupon_total",
     "def coupon_total(self, coupon):\n    # the total a coupon would leave on the cart\n    return self.total"),
    ("coupons.py", "load_coupons", "def load_coupons(rows):\n    return [Coupon(**row) for row in rows]"),
]
QUERY = "how does a coupon take its percent off the cart total"
NARROW = {"dense": False, "graph_hops": 0, "lexical_k": 1}  # the chunk search keeps its single best chunk
SIGNALS = {**NARROW, "in_file_order": "signals", "in_file_prose_weight": 0.0}


def retriever(file_scores=None) -> HybridRetriever:
    return chunk_retriever(CHUNKS, file_scores=file_scores)


def cited(config: RetrievalConfig) -> list[str]:
    return [c.payload["symbol"] for c in retriever().retrieve(QUERY, top_k=3, config=config).candidates]


def test_the_file_is_cited_with_its_best_matching_parts_not_only_what_the_cut_pool_held() -> None:
    # The repository-wide chunk search kept apply_coupon alone: under the old order cart.py is cited
    # with it and nothing else of cart.py (coupons.py entered through the whole-file search).
    assert cited(RetrievalConfig(**NARROW, in_file_order="fused")) == ["Cart.apply_coupon", "load_coupons"]
    # In-file, coupon_total matches the question next best: it is cited with apply_coupon, before the
    # next file, and its trace says it came from the in-file order.
    result = retriever().retrieve(QUERY, top_k=3, config=RetrievalConfig(**SIGNALS))
    symbols = [c.payload["symbol"] for c in result.candidates]
    assert symbols == ["Cart.apply_coupon", "Cart.coupon_total", "load_coupons"]
    second = result.candidates[1]
    assert second.via == "in_file" and second.verified is True
    assert second.to_trace()["raw_scores"]["in_file"] == pytest.approx(0.5)
    assert "in_file_ms" in result.timings_ms


def test_the_in_file_order_does_not_move_files_or_change_confidence() -> None:
    old = retriever().retrieve(QUERY, top_k=3, config=RetrievalConfig(**NARROW, in_file_order="fused"))
    new = retriever().retrieve(QUERY, top_k=3, config=RetrievalConfig(**SIGNALS))
    files = [c.payload["path"] for c in new.candidates]
    assert list(dict.fromkeys(files)) == list(dict.fromkeys(c.payload["path"] for c in old.candidates))
    # What calibrated confidence reads is unchanged (the first cited file's best chunk by fused score);
    # only the number of citations differs, which no calibrator reads (schema 3).
    assert {k: v for k, v in new.features.items() if k != "citations"} == {
        k: v for k, v in old.features.items() if k != "citations"}
    assert (old.features["citations"], new.features["citations"]) == (2.0, 3.0)


def test_an_unknown_in_file_order_is_refused() -> None:
    with pytest.raises(ValueError, match="in_file_order"):
        RetrievalConfig(in_file_order="random")


def test_a_failed_file_search_leaves_bm25_to_order_the_file_and_says_so(caplog) -> None:
    def unreadable(repo, paths, vector, k):
        raise ConnectionError("vector store unreachable")

    config = RetrievalConfig(**{**SIGNALS, "dense": True})  # the query is embedded: cosine would be read
    with caplog.at_level("WARNING", logger="codex_core.retrieval"):
        result = retriever(unreadable).retrieve(QUERY, top_k=3, config=config)
    assert [c.payload["symbol"] for c in result.candidates] == ["Cart.apply_coupon", "Cart.coupon_total",
                                                                "load_coupons"]
    assert "cart.py" in caplog.text and "vector store unreachable" in caplog.text


def test_one_citation_per_file_skips_the_in_file_order() -> None:
    """The self-evaluation cites one chunk per file: the lead, whatever the order, so no work is done."""
    result = retriever().retrieve(QUERY, top_k=3, config=RetrievalConfig(**NARROW, max_per_file=1))
    assert "in_file_ms" not in result.timings_ms
    assert [c.payload["symbol"] for c in result.candidates] == ["Cart.apply_coupon", "load_coupons"]


def test_bm25_orders_every_chunk_of_the_file_by_its_own_score_without_a_dense_search() -> None:
    """``in_file_order = "bm25"``: the cited file's chunks by their BM25 score for the question, the
    lead included; no search of the vector store is made for it (the query's one dense search aside)."""
    calls = []

    def file_scores(repo, paths, vector, k):
        calls.append(paths)
        return {}

    config = RetrievalConfig(**{**NARROW, "dense": True}, in_file_order="bm25", in_file_prose_weight=0.0)
    result = chunk_retriever(CHUNKS, file_scores=file_scores).retrieve(QUERY, top_k=3, config=config)
    assert [c.payload["symbol"] for c in result.candidates] == ["Cart.apply_coupon", "Cart.coupon_total",
                                                                "load_coupons"]
    assert calls == []
    assert result.candidates[1].via == "in_file" and "in_file_ms" in result.timings_ms


def test_bm25_puts_module_level_code_behind_a_function_that_matches_about_as_well() -> None:
    """Imports and constants name what a question asks about without implementing it: a module chunk
    scores ``module_penalty`` times its BM25 score, so the function that parses is cited first."""
    module = "import re\n# a key = value configuration line\nKEY_VALUE = re.compile(r'(\\w+) = (.*)')"
    parser = ("def parse_line(raw):\n    # split one configuration entry\n"
              "    name, _, value = raw.partition('=')\n    return name.strip(), value.strip()")
    chunks = [("cfg.py", "cfg", module), ("cfg.py", "parse_line", parser)]
    query = "where is a key = value configuration line parsed"

    def order(penalty: float) -> list[str]:
        retriever = chunk_retriever(chunks)
        corpus = retriever._corpora()["r"]
        corpus.payloads[0]["kind"] = "module"
        config = RetrievalConfig(dense=False, graph_hops=0, lexical_k=1, in_file_order="bm25",
                                 module_penalty=penalty, in_file_prose_weight=0.0)
        return [c.payload["symbol"] for c in retriever.retrieve(query, top_k=2, config=config).candidates]

    assert order(1.0) == ["cfg", "parse_line"]  # by BM25 alone the constant comes first
    assert order(0.85) == ["parse_line", "cfg"]


def test_a_docstring_that_repeats_the_question_does_not_cite_before_the_code_that_does_it() -> None:
    """``in_file_prose_weight``: a chunk scores times (1 - weight x its share of comment/docstring
    lines). The class header's docstring says what the question says; the method is the answer."""
    header = ('class Signer:\n    """Signs values with a secret key. The signing key is derived\n'
              '    from the secret key and the salt for every signature.\n    """')
    method = ("def derive_key(self, secret_key):\n    mac = hmac.new(secret_key, digestmod=self.digest)\n"
              "    mac.update(self.salt)\n    return mac.digest()  # the signing key")
    chunks = [("signer.py", "Signer", header), ("signer.py", "Signer.derive_key", method)]
    query = "how is the signing key derived from the secret key and the salt"

    def order(weight: float) -> list[str]:
        config = RetrievalConfig(dense=False, graph_hops=0, lexical_k=1, in_file_order="bm25",
                                 in_file_prose_weight=weight)
        return [c.payload["symbol"] for c in chunk_retriever(chunks).retrieve(query, top_k=2, config=config).candidates]

    assert order(0.0) == ["Signer", "Signer.derive_key"]
    assert order(0.5) == ["Signer.derive_key", "Signer"]
    with pytest.raises(ValueError, match="in_file_prose_weight"):
        RetrievalConfig(in_file_prose_weight=1.5)


RUST = [
    ("src/lib.rs", "parse_headers",
     "pub fn parse_headers(buf: &[u8], headers: &mut [Header]) -> Result<usize> {\n"
     "    let mut count = 0;\n    for line in buf.split(|b| *b == b'\\n') { count += 1; }\n    Ok(count)\n}"),
    ("src/lib.rs", "tests.test_parse_headers",
     "fn test_parse_headers() {\n    let mut headers = [EMPTY_HEADER; 4];\n"
     "    assert_eq!(parse_headers(b\"Host: a\\r\\n\", &mut headers), Ok(1)); // parse headers\n}"),
]


@pytest.mark.parametrize(("question", "first"), [
    ("how does parse_headers parse the headers", "parse_headers"),
    ("which tests check that parse_headers parses the headers", "tests.test_parse_headers"),
])
def test_a_rust_files_inline_tests_are_test_code(question: str, first: str) -> None:
    """A Rust source file keeps its unit tests in ``mod tests``: they are test code like a test
    file's, behind the implementation unless the question asks for tests."""
    config = RetrievalConfig(dense=False, graph_hops=0, in_file_prose_weight=0.0)
    result = chunk_retriever(RUST, language="rust").retrieve(question, top_k=2, config=config)
    assert [c.payload["symbol"] for c in result.candidates][0] == first
    assert is_test_chunk(result.candidates[-1].payload) == (first == "parse_headers")
    assert not is_test_chunk({"path": "src/matcher.js", "language": "javascript", "symbol": "Matcher.test"})
