"""Definitions and qualified names from real tree-sitter grammars, one realistic file per language."""

from __future__ import annotations

import re
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from codex_core.languages import PARSED_LANGUAGES
from codex_core.parsing import (
    comment_only_lines,
    definition_tree,
    definitions,
    end_line,
    get_parser,
    parse,
)


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def tabs(text: str) -> str:
    """Indent with tabs, as gofmt does (written with spaces here to keep this file tab-free)."""
    return re.sub(r"(?m)^(?:    )+", lambda m: "\t" * (len(m.group(0)) // 4), text)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [i for i, line in enumerate(text.split("\n"), start=1) if needle in line]
    return hits[occurrence - 1]


PYTHON = src('''
    """Key=value line parsing."""
    import re
    from dataclasses import dataclass

    PATTERN = re.compile(r"(\\w+)=(\\S+)")


    def tokenize(line: str) -> list[str]:
        return line.split()


    @dataclass
    class Parser:
        """Parses key=value lines."""

        strict: bool = False

        @staticmethod
        @cache
        def parse_line(line: str) -> dict[str, str]:
            def clean(value: str) -> str:
                return value.strip('"')

            return {k: clean(v) for k, v in PATTERN.findall(line)}

        async def parse_stream(self, stream):
            async for line in stream:
                yield self.parse_line(line)

        class Options:
            def merge(self, other):
                return other
''')

JAVASCRIPT = src("""
    import { readFile } from "node:fs/promises";

    export class Cache {
      constructor(limit) {
        this.limit = limit;
        this.items = new Map();
      }

      get(key) {
        return this.items.get(key);
      }

      onEvict = (key) => {
        this.items.delete(key);
      };
    }

    const loadJson = async (path) => {
      const raw = await readFile(path, "utf8");
      return JSON.parse(raw);
    };

    export const toKey = function (parts) {
      return parts.join(":");
    };

    function* range(n) {
      for (let i = 0; i < n; i++) yield i;
    }

    export default function main() {
      return new Cache(10);
    }
""")

TYPESCRIPT = src("""
    export interface User {
      id: string;
      name: string;
    }

    export type UserId = User["id"];

    export enum Role {
      Admin,
      Member,
    }

    export abstract class Repository<T> {
      abstract find(id: string): Promise<T>;

      async findAll(ids: string[]): Promise<T[]> {
        return Promise.all(ids.map((id) => this.find(id)));
      }
    }

    export class UserRepository extends Repository<User> {
      private readonly users = new Map<string, User>();

      async find(id: string): Promise<User> {
        const user = this.users.get(id);
        if (!user) throw new Error(`no user ${id}`);
        return user;
      }
    }

    export const isAdmin = (user: User, role: Role): boolean => role === Role.Admin;
""")

TSX = src("""
    import React, { useState } from "react";

    type Props = { label: string; onClick?: () => void };

    export const Button = ({ label, onClick }: Props) => (
      <button className="btn" onClick={onClick}>
        {label}
      </button>
    );

    export default function Counter() {
      const [count, setCount] = useState(0);
      const increment = () => setCount(count + 1);
      return <Button label={`clicked ${count}`} onClick={increment} />;
    }
""")

GO = tabs(
    src("""
    package store

    import (
        "errors"
        "sync"
    )

    // ErrMissing is returned when a key is absent.
    var ErrMissing = errors.New("missing")

    // Store is a concurrency-safe map.
    type Store struct {
        mu    sync.Mutex
        items map[string]string
    }

    type Getter interface {
        Get(key string) (string, error)
    }

    type Key string

    // Get returns the value stored under key.
    func (s *Store) Get(key string) (string, error) {
        s.mu.Lock()
        defer s.mu.Unlock()
        v, ok := s.items[key]
        if !ok {
            return "", ErrMissing
        }
        return v, nil
    }

    func (s Store) Len() int { return len(s.items) }

    // New makes an empty store.
    func New() *Store {
        return &Store{items: map[string]string{}}
    }
""")
)

JAVA = src("""
    package com.example.shop;

    import java.util.ArrayList;
    import java.util.List;

    /** A shopping cart. */
    public class Cart {
        private final List<Item> items = new ArrayList<>();

        public Cart() {
            this(new ArrayList<>());
        }

        @Override
        public String toString() {
            return "Cart" + items;
        }

        public static class Item {
            private final String sku;

            Item(String sku) {
                this.sku = sku;
            }

            String sku() {
                return sku;
            }
        }

        interface Discount {
            long apply(long cents);
        }

        enum Currency { EUR, USD }

        record Line(String sku, int qty) {}
    }
""")

RUST = src("""
    use std::fmt;

    /// A point in the plane.
    #[derive(Debug, Clone)]
    pub struct Point {
        pub x: f64,
        pub y: f64,
    }

    pub enum Shape {
        Circle(f64),
        Square(f64),
    }

    impl Point {
        pub fn new(x: f64, y: f64) -> Self {
            Point { x, y }
        }

        pub fn norm(&self) -> f64 {
            (self.x * self.x + self.y * self.y).sqrt()
        }
    }

    impl fmt::Display for Point {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "({}, {})", self.x, self.y)
        }
    }

    pub trait Area {
        fn area(&self) -> f64;

        fn describe(&self) -> String {
            format!("area {}", self.area())
        }
    }

    impl<T: Area> Area for Vec<T> {
        fn area(&self) -> f64 {
            self.iter().map(|s| s.area()).sum()
        }
    }

    mod geometry {
        pub fn origin() -> super::Point {
            super::Point::new(0.0, 0.0)
        }
    }
""")

MARKDOWN = src("""
    Intro paragraph before any heading.

    # Project

    Some words.

    ## Install

    ```sh
    # not a heading: a shell comment
    pip install project
    ```

    ### From source

    Clone it.

    ## Usage

    Run it.
""")

SOURCES = {
    "python": PYTHON,
    "javascript": JAVASCRIPT,
    "typescript": TYPESCRIPT,
    "tsx": TSX,
    "go": GO,
    "java": JAVA,
    "rust": RUST,
    "markdown": MARKDOWN,
}


def spans(language: str, text: str) -> dict[str, tuple[str, int, int]]:
    """symbol -> (kind, start_line, end_line); fails on an unexpected duplicate symbol."""
    found: dict[str, tuple[str, int, int]] = {}
    for d in definitions(f"file.{language}", language, text):
        assert d.symbol not in found, f"duplicate {d.symbol}"
        found[d.symbol] = (d.kind, d.start_line, d.end_line)
    return found


def kinds(language: str, text: str) -> dict[str, str]:
    return {d.symbol: d.kind for d in definitions("f", language, text)}


@pytest.mark.parametrize("language", PARSED_LANGUAGES)
def test_every_parsed_language_has_a_cached_parser(language: str) -> None:
    parser = get_parser(language)
    assert parser is not None
    assert get_parser(language) is parser
    assert parse(language, SOURCES[language]).root_node.has_error is False


def test_languages_without_grammar_have_no_parser_and_no_definitions() -> None:
    assert get_parser("yaml") is None
    assert parse("yaml", "a: 1\n") is None
    assert definitions("x.yaml", "yaml", "def f():\n  pass\n") == []


def test_rows_match_split_lines_with_crlf_and_node_ending_at_column_zero() -> None:
    text = "x = 1\r\n\r\ndef f():\r\n    return 2\r\n"
    (d,) = definitions("a.py", "python", text)
    lines = text.split("\n")
    assert (d.start_line, d.end_line) == (3, 4)
    assert lines[d.start_line - 1].startswith("def f")
    # A markdown heading node swallows its newline: it ends at column 0 of the next row.
    heading = parse("markdown", "# Title\nbody\n").root_node.child(0).child(0)
    assert heading.type == "atx_heading" and heading.end_point.column == 0
    assert end_line(heading) == 1


def test_python_qualified_names_kinds_and_decorated_spans() -> None:
    found = spans("python", PYTHON)
    assert list(found) == [
        "tokenize",
        "Parser",
        "Parser.parse_line",
        "Parser.parse_line.clean",
        "Parser.parse_stream",
        "Parser.Options",
        "Parser.Options.merge",
    ]
    assert found["tokenize"] == ("function", line_of(PYTHON, "def tokenize"), line_of(PYTHON, "line.split()"))
    # A decorated definition starts at its first decorator.
    assert found["Parser"] == ("class", line_of(PYTHON, "@dataclass"), len(PYTHON.split("\n")) - 1)
    assert found["Parser.parse_line"] == (
        "method",
        line_of(PYTHON, "@staticmethod"),
        line_of(PYTHON, "return {k: clean"),
    )
    assert found["Parser.parse_line.clean"][0] == "function"
    assert found["Parser.parse_stream"] == (
        "method",
        line_of(PYTHON, "async def parse_stream"),
        line_of(PYTHON, "yield self.parse_line"),
    )
    assert found["Parser.Options"][0] == "class"
    assert found["Parser.Options.merge"][0] == "method"


def test_python_definitions_are_sorted_outer_first() -> None:
    defs = definitions("p.py", "python", PYTHON)
    keys = [(d.start_line, -d.end_line) for d in defs]
    assert keys == sorted(keys)
    assert all(d.path == "p.py" and d.language == "python" for d in defs)
    assert all(d.name == d.symbol.split(".")[-1] for d in defs)


def test_javascript_classes_methods_arrow_consts_and_exports() -> None:
    found = spans("javascript", JAVASCRIPT)
    assert {s: k for s, (k, _, _) in found.items()} == {
        "Cache": "class",
        "Cache.constructor": "method",
        "Cache.get": "method",
        "Cache.onEvict": "method",
        "loadJson": "function",
        "toKey": "function",
        "range": "function",
        "main": "function",
    }
    # ``export`` is part of the span, and a const's span is the whole declaration.
    assert found["Cache"][1:] == (3, 16)
    assert found["Cache.onEvict"][1:] == (13, 15)
    assert found["loadJson"][1:] == (18, 21)
    assert found["toKey"][1] == line_of(JAVASCRIPT, "export const toKey")
    assert found["main"][1:] == (line_of(JAVASCRIPT, "export default function"), len(JAVASCRIPT.split("\n")) - 1)


def test_typescript_interfaces_types_enums_and_classes() -> None:
    assert kinds("typescript", TYPESCRIPT) == {
        "User": "interface",
        "UserId": "type",
        "Role": "enum",
        "Repository": "class",
        "Repository.findAll": "method",
        "UserRepository": "class",
        "UserRepository.find": "method",
        "isAdmin": "function",
    }
    found = spans("typescript", TYPESCRIPT)
    assert found["User"][1:] == (1, 4)
    assert found["UserRepository.find"][1:] == (
        line_of(TYPESCRIPT, "async find(id"),
        line_of(TYPESCRIPT, "return user;") + 1,
    )


def test_tsx_component_definitions() -> None:
    assert kinds("tsx", TSX) == {
        "Props": "type",
        "Button": "function",
        "Counter": "function",
        "Counter.increment": "function",
    }
    found = spans("tsx", TSX)
    assert found["Button"][1:] == (line_of(TSX, "export const Button"), line_of(TSX, ");"))


def test_go_structs_interfaces_and_receiver_methods() -> None:
    found = spans("go", GO)
    assert {s: k for s, (k, _, _) in found.items()} == {
        "Store": "struct",
        "Getter": "interface",
        "Key": "type",
        "Store.Get": "method",
        "Store.Len": "method",
        "New": "function",
    }
    # A lone ``type`` declaration's span includes the ``type`` keyword line.
    assert found["Store"][1:] == (line_of(GO, "type Store struct"), line_of(GO, "items map") + 1)
    assert found["Store.Get"][1:] == (line_of(GO, "func (s *Store) Get"), line_of(GO, "return v, nil") + 1)


def test_go_generic_receiver_and_grouped_types() -> None:
    text = tabs(
        src("""
        package p

        type (
            ID   int
            List[T any] struct{ items []T }
        )

        func (l *List[T]) Push(v T) { l.items = append(l.items, v) }
    """)
    )
    found = spans("go", text)
    assert found == {
        "ID": ("type", 4, 4),
        "List": ("struct", 5, 5),
        "List.Push": ("method", 8, 8),
    }


def test_java_nested_types_constructors_and_annotations() -> None:
    found = spans("java", JAVA)
    assert {s: k for s, (k, _, _) in found.items()} == {
        "Cart": "class",
        "Cart.Cart": "method",
        "Cart.toString": "method",
        "Cart.Item": "class",
        "Cart.Item.Item": "method",
        "Cart.Item.sku": "method",
        "Cart.Discount": "interface",
        "Cart.Discount.apply": "method",
        "Cart.Currency": "enum",
        "Cart.Line": "record",
    }
    # Annotations belong to the method they annotate.
    assert found["Cart.toString"][1:] == (line_of(JAVA, "@Override"), line_of(JAVA, '"Cart" + items') + 1)
    assert found["Cart.Item.Item"][1:] == (line_of(JAVA, "Item(String sku)"), line_of(JAVA, "this.sku") + 1)


def test_rust_impls_traits_and_modules() -> None:
    defs = definitions("lib.rs", "rust", RUST)
    assert [(d.symbol, d.kind) for d in defs] == [
        ("Point", "struct"),
        ("Shape", "enum"),
        ("Point", "impl"),
        ("Point.new", "method"),
        ("Point.norm", "method"),
        ("Point", "impl"),
        ("Point.fmt", "method"),
        ("Area", "trait"),
        ("Area.area", "method"),
        ("Area.describe", "method"),
        ("Vec", "impl"),
        ("Vec.area", "method"),
        ("geometry", "module"),
        ("geometry.origin", "function"),
    ]
    point = defs[0]
    # Attributes belong to the item; the doc comment above them does not.
    assert (point.start_line, point.end_line) == (line_of(RUST, "#[derive"), line_of(RUST, "pub y: f64") + 1)
    fmt = next(d for d in defs if d.symbol == "Point.fmt")
    assert (fmt.start_line, fmt.end_line) == (line_of(RUST, "fn fmt("), line_of(RUST, "write!(f") + 1)


def test_markdown_has_no_definitions() -> None:
    assert definitions("README.md", "markdown", MARKDOWN) == []


def test_definition_tree_nests_children() -> None:
    (tokenize, parser) = definition_tree("p.py", "python", PYTHON)
    assert tokenize.children == ()
    assert [c.definition.symbol for c in parser.children] == [
        "Parser.parse_line",
        "Parser.parse_stream",
        "Parser.Options",
    ]
    assert [c.definition.symbol for c in parser.children[0].children] == ["Parser.parse_line.clean"]


def test_comment_only_lines_finds_doc_comments_not_trailing_ones() -> None:
    tree = parse("go", GO)
    lines = GO.split("\n")
    found = comment_only_lines("go", tree, lines)
    assert line_of(GO, "// Store is a concurrency-safe map.") in found
    assert line_of(GO, "type Store struct") not in found
    text = "int x; // trailing\n/* a\n   b */\nclass A {}\n"
    assert comment_only_lines("java", parse("java", text), text.split("\n")) == {2, 3}


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("python", "def broken(:\n    return\n\nclass Fine:\n    def ok(self):\n        pass\n"),
        ("python", "def f():\n    x = '\x00'\n    return x\n"),
        ("javascript", "function ok() {}\nclass {\n  oops(\n"),
        ("rust", "impl  {\nfn orphan() {}\n"),
        ("go", "func (\n"),
        ("java", "class A { void m( }"),
    ],
)
def test_broken_and_hostile_code_never_crashes(language: str, text: str) -> None:
    lines = text.split("\n")
    for d in definitions("f", language, text):
        assert 1 <= d.start_line <= d.end_line <= len(lines)
        assert d.symbol


def test_broken_python_still_reports_the_definitions_it_can() -> None:
    text = "def broken(:\n    return\n\nclass Fine:\n    def ok(self):\n        pass\n"
    assert {"Fine", "Fine.ok"} <= set(kinds("python", text))


def test_non_ascii_identifiers_keep_their_names_and_lines() -> None:
    text = "# café\nclass Café:\n    def größe(self):\n        return 'ü'\n"
    assert spans("python", text) == {"Café": ("class", 2, 4), "Café.größe": ("method", 3, 4)}


def test_each_thread_gets_its_own_parser_and_the_same_answers() -> None:
    expected = {language: definitions("f", language, text) for language, text in SOURCES.items()}

    def run(language: str) -> tuple[bool, bool]:
        parser = get_parser(language)
        return parser is get_parser(language), definitions("f", language, SOURCES[language]) == expected[language]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, [language for language in SOURCES for _ in range(25)]))
    assert all(same_parser and same_answer for same_parser, same_answer in results)


def test_deeply_nested_definitions_keep_their_full_qualified_names() -> None:
    depth = 3000
    text = "".join(f"function f{i}() {{\n" for i in range(depth)) + "}\n" * depth
    defs = definitions("deep.js", "javascript", text)
    assert len(defs) == depth
    assert defs[-1].symbol == ".".join(f"f{i}" for i in range(depth))
    assert (defs[-1].start_line, defs[-1].end_line) == (depth, depth + 1)
