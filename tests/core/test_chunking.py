"""Chunking with real tree-sitter grammars: symbol chunks, splits, merges, sections, windows."""

from __future__ import annotations

import time

import pytest

from codex_core.chunking import chunk_file, count_tokens
from codex_core.models import ChunkSpan
from tests.core.test_parsing import GO, JAVA, MARKDOWN, PYTHON, RUST, SOURCES, TSX, line_of, src


def assert_valid_chunks(text: str, chunks: list[ChunkSpan]) -> None:
    """The hard contract every consumer relies on."""
    lines = text.split("\n")
    covered: set[int] = set()
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines), chunk
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line]), chunk
        assert chunk.text.strip(), f"whitespace-only chunk {chunk}"
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    assert [c.start_line for c in chunks] == sorted(c.start_line for c in chunks)
    missing = [i for i, line in enumerate(lines, start=1) if line.strip() and i not in covered]
    assert not missing, f"lines not in any chunk: {missing}"


def chunks_by_symbol(chunks: list[ChunkSpan]) -> dict[str | None, list[ChunkSpan]]:
    out: dict[str | None, list[ChunkSpan]] = {}
    for chunk in chunks:
        out.setdefault(chunk.symbol, []).append(chunk)
    return out


def one(chunks: list[ChunkSpan], symbol: str | None) -> ChunkSpan:
    (chunk,) = chunks_by_symbol(chunks)[symbol]
    return chunk


def overlap_tokens(first: ChunkSpan, second: ChunkSpan, text: str) -> int:
    lines = text.split("\n")
    shared = lines[second.start_line - 1 : first.end_line]
    return count_tokens("\n".join(shared))


YAML = "\n".join(
    f"service_{i}:\n  image: registry.example.com/team/service-{i}:1.{i}\n  replicas: {i % 5}\n" for i in range(80)
)

BIG_FUNCTION = "def big(rows):\n" + "".join(f"    total_{i} = weigh(rows[{i}], factor={i})\n" for i in range(150))

HOSTILE = [
    ("python", "def broken(:\n    return ]]\n\nclass Fine:\n    def ok(self):\n        pass\n"),
    ("python", "def f():\n    x = '\x00\x00'\n    return x\n\x00\n"),
    ("python", "import os\r\n\r\ndef f():\r\n    return os.sep\r\n\r\nclass A:\r\n    pass\r\n"),
    ("python", "def no_trailing_newline():\n\treturn 1"),
    ("python", "class Café:\n    def größe(self):\n        return 'ü' * 3\n"),
    ("python", "\ufeffx = 1\r\ry = 2\x0c\nz = 3\u2028w = 4\n"),
    ("javascript", "function ok() {}\nclass {\n  oops(\n\x00"),
    ("typescript", "export interface { \n type = ;\r\n"),
    ("tsx", "const A = () => <div>{</div>;\n"),
    ("go", "func (\n\tpackage\n"),
    ("java", "class A { void m( }\n\t\t\n}"),
    ("rust", "impl  {\nfn orphan() {}\n#[derive(\n"),
    ("markdown", "# \n##\n```\n# open fence never closed\n"),
    ("markdown", "Title\r\n=====\r\n\r\ntext\r\n"),
    ("yaml", "\n\n  \t\nkey: value"),
    ("text", "x" * 5000),
    ("python", "\n".join(["pass"] + ["y = 1 " * 400] + ["pass"])),
]


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("def f(x): return x+1") == 10
    assert count_tokens("  \n\t") == 0
    assert count_tokens("größe = 'ü'") == 5


@pytest.mark.parametrize("target", [20, 60, 300])
@pytest.mark.parametrize("language", sorted(SOURCES))
def test_invariant_holds_on_every_fixture(language: str, target: int) -> None:
    text = SOURCES[language]
    assert_valid_chunks(text, chunk_file("f", text, language, target_tokens=target, overlap_tokens=target // 6))


@pytest.mark.parametrize(("language", "text"), HOSTILE)
def test_hostile_input_never_crashes_and_keeps_the_invariant(language: str, text: str) -> None:
    for target in (10, 300):
        assert_valid_chunks(text, chunk_file("f", text, language, target_tokens=target))


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n", "\r\n\r\n"])
@pytest.mark.parametrize("language", ["python", "markdown", "yaml"])
def test_empty_or_whitespace_file_has_no_chunks(language: str, text: str) -> None:
    assert chunk_file("f", text, language) == []


def test_small_python_file_keeps_whole_definitions() -> None:
    chunks = chunk_file("parser.py", PYTHON, "python")
    assert_valid_chunks(PYTHON, chunks)
    # The class fits in 1.5 x target: one chunk from its decorator to its last line.
    parser = one(chunks, "Parser")
    assert (parser.kind, parser.start_line, parser.end_line) == ("class", 12, 32)
    # Imports and a constant are merged into the small function after them, which names the chunk.
    tokenize = one(chunks, "tokenize")
    assert (tokenize.kind, tokenize.start_line, tokenize.end_line) == ("function", 1, 9)
    assert len(chunks) == 2


def test_oversized_class_is_split_into_header_and_method_chunks() -> None:
    chunks = chunk_file("parser.py", PYTHON, "python", target_tokens=60)
    assert_valid_chunks(PYTHON, chunks)
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks] == [
        (None, "module", 1, 5),
        ("tokenize", "function", 8, 9),
        # Header: decorator, class line, docstring and fields.
        ("Parser", "class", 12, 16),
        # A decorated method starts at its first decorator and ends on its last line; its
        # nested function stays inside it.
        ("Parser.parse_line", "method", 18, 24),
        ("Parser.parse_stream", "method", 26, 28),
        ("Parser.Options", "class", 30, 32),
    ]


def test_split_is_recursive_and_leaf_functions_become_windows() -> None:
    body = "".join(f"            step_{i} = transform(step_{i - 1}, weight={i})\n" for i in range(1, 60))
    text = (
        src('''
        class Outer:
            """Outer docs."""

            class Inner:
                def small(self):
                    return 1

                def huge(self, step_0):
        ''')
        + body
        + "            return step_59\n"
    )
    chunks = chunk_file("nested.py", text, "python", target_tokens=200, overlap_tokens=50)
    assert_valid_chunks(text, chunks)
    by_symbol = chunks_by_symbol(chunks)
    assert [(c.kind, c.start_line) for c in by_symbol["Outer"]] == [("class", 1)]
    assert [(c.kind, c.start_line) for c in by_symbol["Outer.Inner"]] == [("class", 4)]
    assert one(chunks, "Outer.Inner.small").start_line == 5
    huge = by_symbol["Outer.Inner.huge"]
    assert len(huge) >= 3
    assert huge[0].start_line == line_of(text, "def huge")
    assert huge[-1].end_line == len(text.split("\n")) - 1
    assert {c.kind for c in huge} == {"method"}


def test_oversized_function_windows_overlap_by_whole_lines_and_advance() -> None:
    chunks = chunk_file("big.py", BIG_FUNCTION, "python", target_tokens=300, overlap_tokens=50)
    assert_valid_chunks(BIG_FUNCTION, chunks)
    assert len(chunks) > 5
    assert {(c.symbol, c.kind) for c in chunks} == {("big", "function")}
    assert chunks[0].start_line == 1
    assert chunks[-1].end_line == len(BIG_FUNCTION.split("\n")) - 1
    for first, second in zip(chunks, chunks[1:], strict=False):
        assert first.start_line < second.start_line
        assert first.end_line < second.end_line
        assert second.start_line <= first.end_line, "consecutive windows must overlap"
        assert 40 <= overlap_tokens(first, second, BIG_FUNCTION) <= 60
        assert count_tokens(first.text) <= 300


def test_tiny_neighbours_merge_and_the_largest_names_the_chunk() -> None:
    text = src("""
        def one():
            return 1


        def two():
            return 2


        def three(values):
            return sorted(value * 3 for value in values if value is not None)


        def four():
            return 4
    """)
    chunks = chunk_file("tiny.py", text, "python")
    assert_valid_chunks(text, chunks)
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks] == [("three", "function", 1, 14)]


def test_module_code_is_its_own_chunk_next_to_a_large_definition() -> None:
    body = "".join(f"    value_{i} = compute(value, step={i})\n" for i in range(15))
    header = "import os\nimport sys\nfrom pathlib import Path\n\nLIMIT = 10\nROOT = Path(os.sep)\n\n\n"
    text = header + "def work(value):\n" + body + "    return value\n"
    chunks = chunk_file("work.py", text, "python")
    assert_valid_chunks(text, chunks)
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks] == [
        (None, "module", 1, 6),
        ("work", "function", 9, 25),
    ]


def test_a_closing_scrap_sticks_to_its_neighbour() -> None:
    text = "def work(value):\n" + "    value += 1\n" * 30 + "    return value\n\n\nmain()\n"
    chunks = chunk_file("work.py", text, "python")
    assert_valid_chunks(text, chunks)
    assert [(c.symbol, c.start_line, c.end_line) for c in chunks] == [("work", 1, 35)]


def test_code_without_definitions_is_module_chunks() -> None:
    text = "".join(f"print('line {i}', {i} * {i})\n" for i in range(200))
    chunks = chunk_file("script.py", text, "python")
    assert_valid_chunks(text, chunks)
    assert len(chunks) > 1
    assert {(c.symbol, c.kind) for c in chunks} == {(None, "module")}


def test_javascript_chunks() -> None:
    text = SOURCES["javascript"]
    chunks = chunk_file("cache.js", text, "javascript", target_tokens=60)
    assert_valid_chunks(text, chunks)
    cache = one(chunks, "Cache")
    assert (cache.kind, cache.start_line, cache.end_line) == ("class", 3, 16)
    assert one(chunks, "loadJson").start_line == 18
    assert one(chunks, "toKey").text.startswith("export const toKey = function")


def test_typescript_chunks_split_a_class_into_methods() -> None:
    text = SOURCES["typescript"]
    chunks = chunk_file("repo.ts", text, "typescript", target_tokens=40)
    assert_valid_chunks(text, chunks)
    symbols = {c.symbol: c.kind for c in chunks}
    assert symbols["User"] == "interface"
    assert symbols["UserRepository"] == "class"
    find = one(chunks, "UserRepository.find")
    assert (find.kind, find.start_line) == ("method", line_of(text, "async find(id"))
    assert find.end_line >= line_of(text, "return user;") + 1


def test_tsx_component_chunks() -> None:
    chunks = chunk_file("counter.tsx", TSX, "tsx", target_tokens=40)
    assert_valid_chunks(TSX, chunks)
    button = one(chunks, "Button")
    assert (button.kind, button.start_line, button.end_line) == ("function", 5, 9)
    counter = one(chunks, "Counter")
    assert (counter.start_line, counter.end_line) == (11, 15)


def test_go_chunks_include_doc_comments() -> None:
    chunks = chunk_file("store.go", GO, "go", target_tokens=60)
    assert_valid_chunks(GO, chunks)
    get = one(chunks, "Store.Get")
    # The doc comment directly above the method is part of its chunk.
    assert (get.kind, get.start_line, get.end_line) == ("method", 23, 32)
    assert get.text.startswith("// Get returns the value stored under key.")
    store = one(chunks, "Store")
    assert (store.kind, store.start_line, store.end_line) == ("struct", 11, 15)
    assert one(chunks, None).kind == "module"


def test_java_chunks_nested_class_and_constructor() -> None:
    chunks = chunk_file("Cart.java", JAVA, "java", target_tokens=20)
    assert_valid_chunks(JAVA, chunks)
    header = one(chunks, "Cart")
    # The Javadoc above the class opens its header chunk.
    assert (header.kind, header.start_line) == ("class", 6)
    ctor = one(chunks, "Cart.Cart")
    assert (ctor.kind, ctor.start_line, ctor.end_line) == ("method", 10, 12)
    to_string = one(chunks, "Cart.toString")
    assert (to_string.start_line, to_string.end_line) == (14, 17)
    # The nested class is split too: its own header, then its constructor and method.
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks if c.start_line >= 19] == [
        ("Cart.Item", "class", 19, 20),
        ("Cart.Item.Item", "method", 22, 24),
        ("Cart.Item.sku", "method", 26, 29),
        ("Cart.Discount", "interface", 31, 33),
        ("Cart.Currency", "enum", 35, 35),
        # The class's closing brace sticks to the last member.
        ("Cart.Line", "record", 37, 38),
    ]


def test_rust_chunks_structs_impls_traits_and_modules() -> None:
    chunks = chunk_file("geom.rs", RUST, "rust", target_tokens=60)
    assert_valid_chunks(RUST, chunks)
    (point,) = [c for c in chunks if c.symbol == "Point" and c.kind == "struct"]
    assert (point.kind, point.start_line, point.end_line) == ("struct", 3, 8)
    assert point.text.startswith("/// A point in the plane.\n#[derive(Debug, Clone)]")
    impls = [c for c in chunks if c.kind == "impl"]
    assert [(c.symbol, c.start_line, c.end_line) for c in impls] == [
        ("Point", 15, 23),
        ("Point", 25, 29),
        ("Vec", 39, 43),
    ]
    assert (one(chunks, "Area").start_line, one(chunks, "geometry").kind) == (31, "module")
    split = chunk_file("geom.rs", RUST, "rust", target_tokens=30)
    assert_valid_chunks(RUST, split)
    by_symbol = chunks_by_symbol(split)
    # The impl's header keeps the impl's name; its methods get their own chunks.
    assert [(c.kind, c.text) for c in by_symbol["Point"] if c.kind == "impl"] == [
        ("impl", "impl Point {"),
        ("impl", "impl fmt::Display for Point {"),
    ]
    assert [(c.kind, c.start_line, c.end_line) for c in by_symbol["Point.new"]] == [("method", 16, 18)]
    # Too big for 1.5 x 30 tokens and no children: line windows that keep the method's name.
    assert [(c.kind, c.start_line, c.end_line) for c in by_symbol["Point.fmt"]] == [
        ("method", 26, 26),
        ("method", 27, 29),
    ]


def test_markdown_sections_follow_heading_paths() -> None:
    chunks = chunk_file("README.md", MARKDOWN, "markdown")
    assert_valid_chunks(MARKDOWN, chunks)
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks] == [
        (None, "section", 1, 1),
        ("Project", "section", 3, 5),
        # The shell comment inside the fence is not a heading.
        ("Project > Install", "section", 7, 12),
        ("Project > Install > From source", "section", 14, 16),
        ("Project > Usage", "section", 18, 20),
    ]


def test_markdown_setext_headings_closing_hashes_and_bare_headings() -> None:
    text = src("""
        Guide
        =====

        ## API ##

        ### Client

        Call it.

        Notes
        -----

        Done.
    """)
    chunks = chunk_file("guide.md", text, "markdown")
    assert_valid_chunks(text, chunks)
    assert [(c.symbol, c.start_line, c.end_line) for c in chunks] == [
        # "Guide" and "API" have no text of their own: they open their first sub-section.
        ("Guide > API > Client", 1, 8),
        ("Guide > Notes", 10, 13),
    ]


def test_oversized_markdown_section_becomes_windows_keeping_its_path() -> None:
    text = "# Intro\n\nshort\n\n# Reference\n\n" + "".join(
        f"- option `flag_{i}` sets the value of setting number {i}\n" for i in range(120)
    )
    chunks = chunk_file("ref.md", text, "markdown", target_tokens=200, overlap_tokens=50)
    assert_valid_chunks(text, chunks)
    reference = chunks_by_symbol(chunks)["Reference"]
    assert len(reference) > 3
    assert {c.kind for c in reference} == {"section"}
    assert reference[0].start_line == 5
    for first, second in zip(reference, reference[1:], strict=False):
        assert 40 <= overlap_tokens(first, second, text) <= 60


def test_yaml_is_chunked_into_overlapping_line_windows() -> None:
    chunks = chunk_file("compose.yaml", YAML, "yaml", target_tokens=120, overlap_tokens=30)
    assert_valid_chunks(YAML, chunks)
    assert len(chunks) > 10
    assert {(c.symbol, c.kind) for c in chunks} == {(None, "window")}
    for first, second in zip(chunks, chunks[1:], strict=False):
        assert first.start_line < second.start_line <= first.end_line
        assert count_tokens(first.text) <= 120


def test_a_line_longer_than_the_target_is_its_own_chunk() -> None:
    long_line = "value: " + "token " * 1000
    text = "a: 1\nb: 2\n" + long_line + "\nc: 3\nd: 4\n"
    chunks = chunk_file("long.yaml", text, "yaml", target_tokens=50)
    assert_valid_chunks(text, chunks)
    assert (3, 3) in {(c.start_line, c.end_line) for c in chunks}
    assert all(c.text == long_line or long_line not in c.text for c in chunks)


def test_a_5000_line_file_chunks_quickly() -> None:
    parts = []
    for i in range(500):
        parts.append(
            f"class Handler{i}:\n"
            f'    """Handles case {i}."""\n\n'
            f"    def run(self, payload):\n"
            f"        result = process(payload, index={i})\n"
            f"        return [item * 2 for item in result]\n\n"
            f"    def close(self):\n"
            f"        return None\n\n"
        )
    text = "".join(parts)
    assert len(text.split("\n")) > 5000
    started = time.perf_counter()
    chunks = chunk_file("generated.py", text, "python")
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"chunking 5,000 lines took {elapsed:.1f}s"
    assert_valid_chunks(text, chunks)
    assert len(chunks) > 50


def test_front_matter_is_preamble_not_a_heading() -> None:
    text = "---\ntitle: Hello\n---\n\n# Real\n\ntext\n"
    chunks = chunk_file("post.md", text, "markdown")
    assert_valid_chunks(text, chunks)
    assert [(c.symbol, c.start_line, c.end_line) for c in chunks] == [(None, 1, 3), ("Real", 5, 7)]


def test_thousands_of_nested_definitions_do_not_hit_the_recursion_limit() -> None:
    depth = 3000
    text = "".join(f"function level{i}() {{\n  const v{i} = {i};\n" for i in range(depth)) + "}\n" * depth
    chunks = chunk_file("deep.js", text, "javascript")
    assert_valid_chunks(text, chunks)
    assert chunks[0].symbol == "level0"
