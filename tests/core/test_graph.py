"""Code graph: real tree-sitter parses of small multi-file repositories, resolved repo-wide."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codex_core.graph import (
    CodeGraph,
    extract_file_graph,
    load_graph,
    resolve_edges,
    write_graph,
)
from codex_core.languages import detect_language
from codex_core.models import Definition, Edge


def build(files: dict[str, str]) -> tuple[list[Definition], list[Edge]]:
    definitions: list[Definition] = []
    edges: list[Edge] = []
    for path, text in files.items():
        defs, file_edges = extract_file_graph(path, detect_language(path), text)
        definitions += defs
        edges += file_edges
    return definitions, resolve_edges(definitions, edges, list(files))


def links(edges: list[Edge], edge_type: str) -> set[tuple[str, str, str | None, str]]:
    """(path, from_symbol, to_path, to_symbol) of the resolved edges of one type."""
    return {(e.path, e.from_symbol, e.to_path, e.to_symbol) for e in edges if e.type == edge_type and e.resolved}


def find(edges: list[Edge], **fields: object) -> Edge:
    matches = [e for e in edges if all(getattr(e, k) == v for k, v in fields.items())]
    assert len(matches) == 1, (fields, matches)
    return matches[0]


# --------------------------------------------------------------------------------------------
# Python
# --------------------------------------------------------------------------------------------

PYTHON_REPO = {
    "pkg/__init__.py": "",
    "pkg/util.py": (
        "import re\n"
        "\n"
        "\n"
        "def helper(items):\n"
        "    return [i for i in items if i]\n"
        "\n"
        "\n"
        "def format_name(name, total):\n"
        '    return re.sub(r"\\s+", " ", f"{name}: {total}")\n'
    ),
    "pkg/base.py": (
        "class Base:\n"
        "    def setup(self):\n"
        "        self.ready = True\n"
        "\n"
        "    def close(self):\n"
        "        self.ready = False\n"
    ),
    "pkg/service.py": (
        "import os\n"
        "from .util import helper\n"
        "from .base import Base\n"
        "from . import util\n"
        "\n"
        "\n"
        "class Service(Base):\n"
        "    def run(self, items):\n"
        "        self.validate(items)\n"
        "        self.setup()\n"
        "        total = helper(items)\n"
        "        return util.format_name(os.path.basename(__file__), total)\n"
        "\n"
        "    def validate(self, items):\n"
        "        return bool(items)\n"
        "\n"
        "\n"
        "def main():\n"
        "    import json\n"
        "    service = Service()\n"
        "    print(json.dumps(service.run([1, 2])))\n"
    ),
}


@pytest.fixture(scope="module")
def python_graph() -> tuple[list[Definition], list[Edge]]:
    return build(PYTHON_REPO)


def test_python_definitions_carry_qualified_names(python_graph) -> None:
    definitions, _ = python_graph
    service = {d.symbol: (d.start_line, d.end_line) for d in definitions if d.path == "pkg/service.py"}
    assert service == {"Service": (7, 15), "Service.run": (8, 12), "Service.validate": (14, 15), "main": (18, 21)}


def test_python_imports_resolve_to_modules_and_names(python_graph) -> None:
    _, edges = python_graph
    imports = links(edges, "imports")
    assert ("pkg/service.py", "<module>", "pkg/util.py", "helper") in imports  # from .util import helper
    assert ("pkg/service.py", "<module>", "pkg/base.py", "Base") in imports
    assert ("pkg/service.py", "<module>", "pkg/util.py", "<module>") in imports  # from . import util
    os_import = find(edges, path="pkg/service.py", type="imports", line=1)
    assert (os_import.to_symbol, os_import.resolved, os_import.to_path) == ("os", False, None)
    # A function-local import belongs to the function.
    json_import = find(edges, path="pkg/service.py", type="imports", line=19)
    assert (json_import.from_symbol, json_import.to_symbol) == ("main", "json")
    raw = find(edges, path="pkg/service.py", type="imports", line=2)
    assert raw.line == 2 and raw.to_symbol == "helper"


def test_python_class_inherits_base_from_another_file(python_graph) -> None:
    _, edges = python_graph
    inherits = find(edges, path="pkg/service.py", type="inherits")
    assert (inherits.from_symbol, inherits.to_path, inherits.to_symbol, inherits.line) == (
        "Service",
        "pkg/base.py",
        "Base",
        7,
    )


def test_python_calls_resolve_through_self_bases_and_imports(python_graph) -> None:
    _, edges = python_graph
    calls = links(edges, "calls")
    assert ("pkg/service.py", "Service.run", "pkg/service.py", "Service.validate") in calls  # self.validate()
    assert ("pkg/service.py", "Service.run", "pkg/base.py", "Base.setup") in calls  # inherited self.setup()
    assert ("pkg/service.py", "Service.run", "pkg/util.py", "helper") in calls  # from .util import helper
    assert ("pkg/service.py", "Service.run", "pkg/util.py", "format_name") in calls  # util.format_name()
    assert ("pkg/service.py", "main", "pkg/service.py", "Service") in calls  # constructor call
    assert ("pkg/service.py", "main", "pkg/service.py", "Service.run") in calls  # service.run(...)
    helper_call = find(edges, path="pkg/service.py", type="calls", to_symbol="helper")
    assert helper_call.line == 11
    # Standard library and builtins stay unresolved, with the callee as written.
    external = {e.to_symbol for e in edges if e.type == "calls" and not e.resolved}
    assert {"os.path.basename", "json.dumps", "print", "bool", "re.sub"} <= external


def test_python_absolute_imports_in_a_src_layout() -> None:
    files = {
        "src/shop/__init__.py": "",
        "src/shop/models.py": "class Order:\n    def total(self):\n        return 0\n",
        "src/shop/api.py": (
            "from shop.models import Order\n"
            "import shop.models as models\n"
            "\n"
            "def handler():\n"
            "    order = models.Order()\n"
            "    return order.total()\n"
        ),
        "tests/test_api.py": "from shop.api import handler\n\ndef test_handler():\n    assert handler() == 0\n",
    }
    _, edges = build(files)
    assert links(edges, "imports") >= {
        ("src/shop/api.py", "<module>", "src/shop/models.py", "Order"),
        ("src/shop/api.py", "<module>", "src/shop/models.py", "<module>"),
        ("tests/test_api.py", "<module>", "src/shop/api.py", "handler"),
    }
    assert links(edges, "calls") >= {
        ("src/shop/api.py", "handler", "src/shop/models.py", "Order"),  # alias undone: shop.models.Order
        ("src/shop/api.py", "handler", "src/shop/models.py", "Order.total"),
        ("tests/test_api.py", "test_handler", "src/shop/api.py", "handler"),
    }


# --------------------------------------------------------------------------------------------
# JavaScript / TypeScript
# --------------------------------------------------------------------------------------------


def test_typescript_and_javascript_relative_imports_and_extends() -> None:
    files = {
        "web/src/lib/widget.ts": (
            "export abstract class BaseWidget {\n"
            "  mount(el: HTMLElement): void {}\n"
            "}\n"
            "export function formatDate(d: Date): string {\n"
            "  return d.toISOString();\n"
            "}\n"
        ),
        "web/src/lib/logger.ts": "export default function log(msg: string) {\n  console.log(msg);\n}\n",
        "web/src/components/clock.tsx": (
            'import { BaseWidget, formatDate } from "../lib/widget";\n'
            'import log from "../lib/logger.js";\n'
            "\n"
            "export class Clock extends BaseWidget implements Renderable {\n"
            "  render() {\n"
            "    log(formatDate(this.now()));\n"
            "    return <span>{formatDate(this.now())}</span>;\n"
            "  }\n"
            "  now(): Date {\n"
            "    return new Date();\n"
            "  }\n"
            "}\n"
        ),
        "web/legacy/widgets/index.js": "class Legacy {}\nmodule.exports = { Legacy };\n",
        "web/legacy/app.js": (
            'const { Legacy } = require("./widgets");\n'
            "class App extends Legacy {\n"
            "  start() { return new Legacy(); }\n"
            "}\n"
        ),
    }
    _, edges = build(files)
    clock = "web/src/components/clock.tsx"
    assert links(edges, "imports") >= {
        (clock, "<module>", "web/src/lib/widget.ts", "<module>"),
        (clock, "<module>", "web/src/lib/logger.ts", "<module>"),  # "./logger.js" is the TS source
        ("web/legacy/app.js", "<module>", "web/legacy/widgets/index.js", "<module>"),
    }
    assert (clock, "Clock", "web/src/lib/widget.ts", "BaseWidget") in links(edges, "inherits")
    assert ("web/legacy/app.js", "App", "web/legacy/widgets/index.js", "Legacy") in links(edges, "inherits")
    unresolved_base = find(edges, path=clock, type="inherits", to_symbol="Renderable")
    assert not unresolved_base.resolved
    calls = links(edges, "calls")
    assert (clock, "Clock.render", "web/src/lib/widget.ts", "formatDate") in calls
    assert (clock, "Clock.render", clock, "Clock.now") in calls  # this.now()
    assert (clock, "Clock.render", "web/src/lib/logger.ts", "log") in calls
    assert ("web/legacy/app.js", "App.start", "web/legacy/widgets/index.js", "Legacy") in calls  # new Legacy()
    # ``new Date()`` and console.log are the platform's, not the repo's.
    assert not find(edges, path=clock, type="calls", to_symbol="Date").resolved


# --------------------------------------------------------------------------------------------
# Go
# --------------------------------------------------------------------------------------------

GO_REPO = {
    "go.mod": "module example.com/shop\n\ngo 1.22\n",
    "internal/store/store.go": (
        "package store\n"
        "\n"
        "type Base struct{}\n"
        "\n"
        "func (b *Base) Close() error { return nil }\n"
        "\n"
        "type DB struct {\n"
        "\tBase\n"
        "\tdsn string\n"
        "}\n"
        "\n"
        "func Open(dsn string) *DB { return &DB{dsn: dsn} }\n"
        "\n"
        "func (d *DB) Get(key string) string {\n"
        "\treturn d.lookup(normalize(key))\n"
        "}\n"
        "\n"
        "func (d *DB) lookup(key string) string { return key }\n"
    ),
    "internal/store/keys.go": 'package store\n\nimport "strings"\n\nfunc normalize(k string) string {\n'
    "\treturn strings.ToLower(k)\n}\n",
    "cmd/server/main.go": (
        "package main\n"
        "\n"
        "import (\n"
        '\t"fmt"\n'
        '\tst "example.com/shop/internal/store"\n'
        ")\n"
        "\n"
        "type Server struct {\n"
        "\t*st.DB\n"
        "\tname string\n"
        "}\n"
        "\n"
        "type Runner interface {\n"
        "\tfmt.Stringer\n"
        "\tRun()\n"
        "}\n"
        "\n"
        "func (s *Server) Run() {\n"
        "\tdefer s.Close()\n"
        '\tfmt.Println(s.Get("k"))\n'
        "}\n"
        "\n"
        "func main() {\n"
        '\tsrv := &Server{DB: st.Open("x")}\n'
        "\tsrv.Run()\n"
        "}\n"
    ),
}


def test_go_imports_embedding_and_method_calls() -> None:
    _, edges = build(GO_REPO)
    main = "cmd/server/main.go"
    store_import = find(edges, path=main, type="imports", to_path="internal/store/store.go")
    assert (store_import.to_symbol, store_import.line) == ("<module>", 5)
    assert not find(edges, path=main, type="imports", line=4).resolved  # "fmt"
    inherits = links(edges, "inherits")
    assert (main, "Server", "internal/store/store.go", "DB") in inherits  # *st.DB embedding
    assert ("internal/store/store.go", "DB", "internal/store/store.go", "Base") in inherits
    assert not find(edges, path=main, type="inherits", to_symbol="fmt.Stringer").resolved  # interface embedding
    calls = links(edges, "calls")
    assert (main, "main", "internal/store/store.go", "Open") in calls  # st.Open() through the alias
    assert (main, "main", main, "Server.Run") in calls
    assert (main, "Server.Run", "internal/store/store.go", "DB.Get") in calls  # promoted from embedded *DB
    assert (main, "Server.Run", "internal/store/store.go", "Base.Close") in calls  # two embeddings deep
    store = "internal/store/store.go"
    assert (store, "DB.Get", store, "DB.lookup") in calls  # d.lookup() on the receiver
    assert (store, "DB.Get", "internal/store/keys.go", "normalize") in calls  # same package, other file
    raw = find(edges, path=store, type="calls", to_symbol="DB.lookup")
    assert raw.line == 15
    assert not find(edges, path=main, type="calls", line=20, to_symbol="fmt.Println").resolved


# --------------------------------------------------------------------------------------------
# Java
# --------------------------------------------------------------------------------------------


def test_java_extends_implements_and_imports() -> None:
    files = {
        "src/main/java/com/acme/model/Animal.java": (
            "package com.acme.model;\n"
            "\n"
            "public abstract class Animal {\n"
            "    public abstract String sound();\n"
            "    protected String describe() { return sound(); }\n"
            "}\n"
        ),
        "src/main/java/com/acme/model/Named.java": "package com.acme.model;\n\npublic interface Named {\n"
        "    String name();\n}\n",
        "src/main/java/com/acme/util/Strings.java": (
            "package com.acme.util;\n\npublic final class Strings {\n"
            "    public static String shout(String s) { return s.toUpperCase(); }\n}\n"
        ),
        "src/main/java/com/acme/app/Dog.java": (
            "package com.acme.app;\n"
            "\n"
            "import com.acme.model.Animal;\n"
            "import com.acme.model.Named;\n"
            "import com.acme.util.Strings;\n"
            "import java.util.List;\n"
            "\n"
            "public class Dog extends Animal implements Named {\n"
            '    public String sound() { return Strings.shout("woof"); }\n'
            "    public String name() { return describe() + List.of(1); }\n"
            "    public static Dog make() { return new Dog(); }\n"
            "}\n"
        ),
    }
    _, edges = build(files)
    dog = "src/main/java/com/acme/app/Dog.java"
    animal = "src/main/java/com/acme/model/Animal.java"
    assert links(edges, "imports") >= {
        (dog, "<module>", animal, "Animal"),
        (dog, "<module>", "src/main/java/com/acme/model/Named.java", "Named"),
        (dog, "<module>", "src/main/java/com/acme/util/Strings.java", "Strings"),
    }
    assert not find(edges, path=dog, type="imports", to_symbol="java.util.List").resolved
    assert links(edges, "inherits") == {
        (dog, "Dog", animal, "Animal"),
        (dog, "Dog", "src/main/java/com/acme/model/Named.java", "Named"),
    }
    calls = links(edges, "calls")
    assert (dog, "Dog.name", animal, "Animal.describe") in calls  # implicit this, inherited
    assert (dog, "Dog.sound", "src/main/java/com/acme/util/Strings.java", "Strings.shout") in calls
    assert (dog, "Dog.make", dog, "Dog") in calls  # new Dog()
    assert (animal, "Animal.describe", animal, "Animal.sound") in calls
    assert not find(edges, path=dog, type="calls", to_symbol="List.of").resolved


# --------------------------------------------------------------------------------------------
# Rust
# --------------------------------------------------------------------------------------------


def test_rust_use_paths_impl_trait_and_associated_functions() -> None:
    files = {
        "Cargo.toml": '[package]\nname = "zoo"\n',
        "src/lib.rs": (
            "pub mod animals;\n"
            "pub mod traits;\n"
            "\n"
            "use crate::animals::Dog;\n"
            "use crate::traits::{Speak, helpers::shout};\n"
            "\n"
            "pub fn run() -> String {\n"
            '    let dog = Dog::new("rex");\n'
            "    shout(&dog.speak())\n"
            "}\n"
        ),
        "src/traits/mod.rs": (
            "pub mod helpers;\n"
            "\n"
            "pub trait Speak {\n"
            "    fn speak(&self) -> String;\n"
            "    fn loud(&self) -> String { self.speak().to_uppercase() }\n"
            "}\n"
        ),
        "src/traits/helpers.rs": 'pub fn shout(s: &str) -> String {\n    format!("{}!", s)\n}\n',
        "src/animals.rs": (
            "use std::fmt;\n"
            "use crate::traits::Speak;\n"
            "\n"
            "pub struct Dog {\n"
            "    name: String,\n"
            "}\n"
            "\n"
            "impl Dog {\n"
            "    pub fn new(name: &str) -> Self {\n"
            "        Dog { name: name.to_string() }\n"
            "    }\n"
            "}\n"
            "\n"
            "impl Speak for Dog {\n"
            "    fn speak(&self) -> String {\n"
            "        self.loud()\n"
            "    }\n"
            "}\n"
            "\n"
            "impl fmt::Display for Dog {\n"
            "    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {\n"
            '        write!(f, "{}", self.name)\n'
            "    }\n"
            "}\n"
        ),
    }
    _, edges = build(files)
    assert links(edges, "imports") >= {
        ("src/lib.rs", "<module>", "src/animals.rs", "Dog"),
        ("src/lib.rs", "<module>", "src/traits/mod.rs", "Speak"),
        ("src/lib.rs", "<module>", "src/traits/helpers.rs", "shout"),
        ("src/animals.rs", "<module>", "src/traits/mod.rs", "Speak"),
    }
    raw_use = [
        e.to_symbol for e in extract_file_graph("src/lib.rs", "rust", files["src/lib.rs"])[1] if e.type == "imports"
    ]
    assert raw_use == ["crate::animals::Dog", "crate::traits::Speak", "crate::traits::helpers::shout"]
    inherits = find(edges, path="src/animals.rs", type="inherits", to_symbol="Speak")
    assert (inherits.from_symbol, inherits.to_path, inherits.line) == ("Dog", "src/traits/mod.rs", 14)
    assert not find(edges, path="src/animals.rs", type="inherits", to_symbol="fmt.Display").resolved
    calls = links(edges, "calls")
    assert ("src/lib.rs", "run", "src/animals.rs", "Dog.new") in calls  # Dog::new()
    assert ("src/lib.rs", "run", "src/traits/helpers.rs", "shout") in calls
    assert ("src/animals.rs", "Dog.speak", "src/traits/mod.rs", "Speak.loud") in calls  # default trait method
    assert ("src/traits/mod.rs", "Speak.loud", "src/traits/mod.rs", "Speak.speak") in calls


# --------------------------------------------------------------------------------------------
# Extraction details and ambiguity
# --------------------------------------------------------------------------------------------


def test_callees_are_recorded_as_written_before_resolution() -> None:
    cases = [
        ("a.py", "import numpy as np\nclass A:\n    def m(self):\n        self.bar(); obj.bar(); np.array(1)\n"),
        ("a.ts", "class A { m() { this.bar(); obj.bar(); new Foo(); f()(); } }\n"),
        ("a.go", "package a\nfunc (s *S) M() { s.bar(); pkg.Func(); other.x.Y() }\n"),
        ("A.java", "class A { void m() { this.bar(); obj.bar(); bar(); new Foo<>(); } }\n"),
        ("a.rs", "impl A { fn m(&self) { self.bar(); Type::new(); a::b::c(); make().bar(); } }\n"),
    ]
    got = {}
    for path, text in cases:
        _, edges = extract_file_graph(path, detect_language(path), text)
        got[path] = [e.to_symbol for e in edges if e.type == "calls"]
    assert got == {
        "a.py": ["self.bar", "obj.bar", "numpy.array"],
        "a.ts": ["this.bar", "obj.bar", "Foo", "f"],
        "a.go": ["self.bar", "pkg.Func", "other.x.Y"],
        "A.java": ["this.bar", "obj.bar", "bar", "Foo"],
        "a.rs": ["self.bar", "Type.new", "a.b.c", "bar", "make"],
    }


def test_ambiguous_targets_stay_unresolved() -> None:
    files = {
        "jobs/a.py": "def process(x):\n    return x\n\nclass Saver:\n    def save(self):\n        pass\n",
        "jobs/b.py": "def process(x):\n    return -x\n\nclass Writer:\n    def save(self):\n        pass\n",
        "jobs/run.py": "def main(store):\n    process(1)\n    store.save()\n",
        "jobs/pick.py": "from jobs.a import process\n\ndef main():\n    return process(2)\n",
    }
    _, edges = build(files)
    ambiguous = find(edges, path="jobs/run.py", type="calls", to_symbol="process")
    assert (ambiguous.resolved, ambiguous.to_path) == (False, None)
    method = find(edges, path="jobs/run.py", type="calls", line=3)
    assert (method.to_symbol, method.resolved) == ("store.save", False)
    # An import settles it.
    picked = find(edges, path="jobs/pick.py", type="calls")
    assert (picked.to_path, picked.to_symbol, picked.resolved) == ("jobs/a.py", "process", True)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("broken.py", "def f(:\n    return g(\nclass A(B:\n  x\x00 = y()\n"),
        ("broken.ts", "import { a from './x';\nclass A extends { m( { this.x( } \x00\n"),
        ("broken.js", "\x00\x00\x00 new () require(\n"),
        ("broken.go", 'package\nimport (\n"x\nfunc (s *) M( { s.x( }\x00\n'),
        ("Broken.java", "class A extends implements { void m( { new (); } \x00\n"),
        ("broken.rs", "use crate::{;\nimpl for X { fn f( { Self::( } }\x00\n"),
        ("deep.py", "x = " + "(" * 3000 + "f()" + ")" * 3000 + "\n" + "a." * 3000 + "b()\n"),
        ("surrogate.py", "def f():\n    return g('\ud800')\n"),
    ],
)
def test_bad_input_never_crashes(path: str, text: str) -> None:
    defs, edges = extract_file_graph(path, detect_language(path), text)
    for e in edges:
        assert e.line >= 1 and e.type in ("calls", "imports", "inherits")
    resolved = resolve_edges(defs, edges, [path])
    CodeGraph(defs, resolved).neighbors(path, None, hops=2)


def test_languages_without_a_graph_give_nothing() -> None:
    assert extract_file_graph("README.md", "markdown", "# Title\n\n```py\nf()\n```\n") == ([], [])
    assert extract_file_graph("x.c", "c", "int main() { f(); }") == ([], [])


def test_resolution_scales_to_tens_of_thousands_of_definitions() -> None:
    """Synthetic definitions and edges (no parsing): resolution must use indexes, not scans."""
    modules = 3000
    definitions: list[Definition] = []
    edges: list[Edge] = []
    files = []
    for m in range(modules):
        path = f"pkg/m{m}.py"
        files.append(path)
        for c in range(3):
            cls = f"C{m}_{c}"
            definitions.append(Definition(cls, cls, "class", path, "python", c * 20 + 1, c * 20 + 19))
            for name in ("get", "run", "__init__"):
                definitions.append(Definition(f"{cls}.{name}", name, "method", path, "python", c * 20 + 2, c * 20 + 4))
        definitions.append(Definition(f"f{m}", f"f{m}", "function", path, "python", 70, 72))
        edges.append(Edge("<module>", f"pkg.m{(m + 1) % modules}.f{(m + 1) % modules}", "imports", path, 1))
        for c in range(3):
            cls = f"C{m}_{c}"
            for line in range(5):
                edges.append(Edge(f"{cls}.run", "self.get", "calls", path, c * 20 + 3))
                edges.append(Edge(f"{cls}.run", "obj.get", "calls", path, c * 20 + 3))
                edges.append(Edge(f"{cls}.run", f"f{(m + 1) % modules}", "calls", path, c * 20 + 3))
                edges.append(Edge(f"{cls}.get", "get", "calls", path, c * 20 + 3 + line))
    assert len(definitions) >= 30_000 and len(edges) >= 150_000
    started = time.perf_counter()
    resolved = resolve_edges(definitions, edges, files)
    elapsed = time.perf_counter() - started
    assert elapsed < 20, f"resolving took {elapsed:.1f}s"
    cross_file = [e for e in resolved if e.type == "calls" and e.to_symbol.startswith("f") and e.resolved]
    assert len(cross_file) == modules * 3 * 5
    assert all(e.to_path != e.path for e in cross_file)


# --------------------------------------------------------------------------------------------
# CodeGraph and storage
# --------------------------------------------------------------------------------------------


def test_neighbors_walk_callers_and_callees(python_graph) -> None:
    definitions, edges = python_graph
    graph = CodeGraph(definitions, edges)
    one_hop = graph.neighbors("pkg/service.py", "Service.run", hops=1)
    assert [n for n in one_hop if n[2] != 1] == []
    assert {(p, s, t) for p, s, _, t in one_hop} >= {
        ("pkg/util.py", "helper", "calls"),
        ("pkg/util.py", "format_name", "calls"),
        ("pkg/base.py", "Base.setup", "calls"),
        ("pkg/service.py", "Service.validate", "calls"),
        ("pkg/service.py", "main", "calls"),  # a caller
    }
    assert len(one_hop) == len({(p, s) for p, s, _, _ in one_hop})  # deduplicated

    two_hops = graph.neighbors("pkg/util.py", "helper", hops=2)
    distances = {(p, s): d for p, s, d, _ in two_hops}
    assert distances[("pkg/service.py", "Service.run")] == 1
    assert distances[("pkg/service.py", None)] == 1  # the importing file
    assert distances[("pkg/base.py", "Base.setup")] == 2
    assert distances[("pkg/service.py", "main")] == 2
    assert [d for _, _, d, _ in two_hops] == sorted(d for _, _, d, _ in two_hops)  # nearest first

    # A class starts from its methods too; the filter keeps only the asked-for edge types.
    bases = graph.neighbors("pkg/service.py", "Service", hops=1, types=("inherits",))
    assert bases == [("pkg/base.py", "Base", 1, "inherits")]


def test_definition_at_and_edge_counts(python_graph) -> None:
    definitions, edges = python_graph
    graph = CodeGraph(definitions, edges)
    at = graph.definition_at("pkg/service.py", 10)
    assert at is not None and at.symbol == "Service.run"
    at = graph.definition_at("pkg/service.py", 13)  # blank line between methods
    assert at is not None and at.symbol == "Service"
    assert graph.definition_at("pkg/service.py", 1) is None
    assert graph.definition_at("nope.py", 1) is None
    counts = graph.edge_counts()
    assert counts["total"] == len(edges) == counts["resolved"] + counts["unresolved"]
    assert counts["calls"] + counts["imports"] + counts["inherits"] == counts["total"]
    assert counts["inherits"] == counts["inherits_resolved"] == 1
    assert counts["imports_resolved"] == 3


def test_write_and_load_round_trip(python_graph, tmp_path: Path) -> None:
    definitions, edges = python_graph
    target = tmp_path / "graph"
    write_graph(target, [], [])  # an empty graph first: the rewrite must replace it whole
    write_graph(target, definitions, edges)
    assert sorted(p.name for p in target.iterdir()) == ["definitions.parquet", "edges.parquet"]
    graph = load_graph(target)
    assert graph.definitions == definitions
    assert graph.edges == edges
    assert graph.neighbors("pkg/util.py", "helper") == CodeGraph(definitions, edges).neighbors("pkg/util.py", "helper")
    empty = tmp_path / "empty"
    write_graph(empty, [], [])
    assert load_graph(empty).edge_counts()["total"] == 0


def test_load_graph_explains_a_missing_graph(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="code_graph"):
        load_graph(tmp_path / "missing")
