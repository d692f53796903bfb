"""Code graph: definitions plus the ``calls`` / ``imports`` / ``inherits`` edges between them.

Two stages. :func:`extract_file_graph` reads one file (tree-sitter) and records every edge with
its target *as written*; :func:`resolve_edges` then looks the targets up across the repository.
:class:`CodeGraph` answers "what is near this definition" for retrieval's graph hop, and
:func:`write_graph` / :func:`load_graph` keep the graph as two parquet files.

Edge rules (``from_symbol`` is always the qualified name of the innermost enclosing definition,
or ``<module>`` at file level; ``line`` is the 1-based line of the call, import or base):

``imports`` -- ``to_symbol`` is the imported thing as written, one edge per imported name:

* Python ``import os.path`` -> ``os.path``; ``from .util import helper`` -> ``.util.helper``
  (module and name joined by ``"."``, so the name is the last component); ``from . import util``
  -> ``.util``; ``from a import *`` -> ``a``.
* JS/TS the module specifier (``./util``), also for ``export ... from``, ``require("x")`` and
  ``import("x")``. Go the import path. Java the fully-qualified name (``a.b.C``, ``a.b.*``,
  static ``a.b.C.m``). Rust the ``use`` path with ``::`` (``crate::a::b::C``), one edge per leaf
  of a ``{...}`` group.

``calls`` -- ``to_symbol`` is the callee as written, reduced to a dotted chain of plain names:
``foo()`` -> ``foo``; ``self.bar()`` / ``this.bar()`` / ``obj.bar()`` -> ``self.bar`` /
``this.bar`` / ``obj.bar`` (the receiver is kept as a prefix when it is a chain of plain names,
e.g. ``os.path.join``, and dropped when it is an expression: ``f().bar()`` -> ``bar``);
``pkg.Func()`` -> ``pkg.Func``; ``new Foo()`` -> ``Foo``; Rust ``Type::new()`` -> ``Type.new``
and ``a::b::c()`` -> ``a.b.c``; Python ``super().m()`` -> ``super.m``. Go has no ``self``
keyword, so a call on a method's receiver variable (``s.helper()`` in ``func (s *S)``) is written
``self.helper``. Import aliases are undone (``import numpy as np; np.array()`` ->
``numpy.array``, ``from .u import helper as h; h()`` -> ``helper``). The callee's own name is
always ``to_symbol.rsplit(".", 1)[-1]``.

``inherits`` -- from the class to each base as written (generic arguments dropped, dotted):
Python bases, JS/TS/Java ``extends`` and ``implements``, TS/Java interface ``extends``, Go
struct and interface embedding, Rust ``impl Trait for Type`` (from ``Type``) and supertraits.

Resolution (see :func:`resolve_edges`) rewrites ``to_symbol`` to the target's qualified name
and sets ``to_path`` when the target is a definition in the repository, or ``<module>`` when an
import's target is a whole file. Anything external or ambiguous keeps its raw name.
"""

from __future__ import annotations

import builtins
import os
import posixpath
import sys
import tempfile
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tree_sitter

from codex_core.languages import detect_language
from codex_core.models import Definition, Edge
from codex_core.parsing import definitions as parse_definitions
from codex_core.parsing import parse

MODULE = "<module>"
EDGE_TYPES = ("calls", "imports", "inherits")
GRAPH_LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "java", "rust")

# Receivers that mean "the enclosing class" (``super`` means "its bases").
_SELF_WORDS = frozenset({"self", "this", "cls", "super", "Self"})
# Definition kinds that can be called but never hold methods or be inherited from.
_CALLABLE_KINDS = frozenset({"function", "method"})


# =============================================================================================
# Extraction
# =============================================================================================


def extract_file_graph(path: str, language: str, text: str) -> tuple[list[Definition], list[Edge]]:
    """Definitions of one file and the edges leaving it, targets unresolved (as written).

    Languages without graph support give ``([], [])``; broken source (syntax errors, NUL bytes)
    gives whatever tree-sitter's error recovery still recognises, never an exception.
    """
    if language not in GRAPH_LANGUAGES:
        return [], []
    defs = parse_definitions(path, language, text)
    tree = parse(language, text)
    if tree is None:
        return defs, []
    extractor = _Extractor(path, language, defs)
    try:
        extractor.walk(tree.root_node)
    except RecursionError:  # pathological nesting in a helper; keep what was found so far
        pass
    return defs, extractor.edges


def _text(node: tree_sitter.Node | None) -> str:
    if node is None:
        return ""
    return (node.text or b"").decode("utf-8", errors="replace")


def _line(node: tree_sitter.Node) -> int:
    return node.start_point.row + 1


def _unquote(literal: str) -> str:
    return literal.strip().strip("\"'`").strip()


class _Extractor:
    """Walks one syntax tree and collects its edges (targets as written)."""

    def __init__(self, path: str, language: str, defs: list[Definition]) -> None:
        self.path = path
        self.language = language
        self.edges: list[Edge] = []
        # local alias -> what it stands for (dotted), e.g. "np" -> "numpy", "h" -> "helper".
        self.aliases: dict[str, str] = {}
        self.defs_by_name: dict[str, list[Definition]] = defaultdict(list)
        for d in defs:
            self.defs_by_name[d.name].append(d)
        # Qualified name of the innermost definition around the node being visited.
        self.scope = MODULE

    # ---- helpers ------------------------------------------------------------------------

    def definition_of(self, node: tree_sitter.Node) -> Definition | None:
        """The parsed definition that ``node`` declares, matched by name and span."""
        if node.type == "impl_item":
            name = _rust_type(node.child_by_field_name("type")).rsplit(".", 1)[-1]
        else:
            name_node = node.child_by_field_name("name") or node.child_by_field_name("property")
            name = _text(name_node)
        candidates = self.defs_by_name.get(name)
        if not candidates:
            return None
        first, last = _line(node), node.end_point.row + 1
        fitting = [d for d in candidates if d.start_line <= first and last <= d.end_line + 1]
        if not fitting:
            return None
        # Innermost: the shortest span, then the deepest name (a Java constructor ``A.A`` on
        # the same line as its class ``A``).
        return min(fitting, key=lambda d: (d.end_line - d.start_line, -d.symbol.count(".")))

    def add(self, edge_type: str, target: str, node: tree_sitter.Node, from_symbol: str | None = None) -> None:
        target = target.strip()
        if not target:
            return
        line = _line(node)
        self.edges.append(
            Edge(
                from_symbol=from_symbol or self.scope,
                to_symbol=target,
                type=edge_type,
                path=self.path,
                line=line,
            )
        )

    def call(self, parts: list[str], node: tree_sitter.Node) -> None:
        parts = [p for p in parts if p]
        if parts:
            self.add("calls", ".".join(parts), node)

    # ---- walk ---------------------------------------------------------------------------

    def walk(self, root: tree_sitter.Node) -> None:
        handler = getattr(self, f"_{_FAMILY[self.language]}")
        family = _FAMILY[self.language]
        interesting = _EDGE_NODES[family]
        definition_types = _DEFINITION_NODES[family]
        stack: list[tuple[tree_sitter.Node, str]] = [(root, MODULE)]
        while stack:
            node, scope = stack.pop()
            kind = node.type
            if kind in definition_types:
                own = self.definition_of(node)
                if own is not None:
                    scope = own.symbol
            if kind in interesting:
                self.scope = scope
                handler(node)
            if node.named_child_count:
                stack.extend(
                    (child, scope) for child in reversed(node.named_children) if child.type not in _NO_EDGES_INSIDE
                )
        if self.aliases:
            # Aliases are file-wide, and an import may come after its first use.
            self.edges = [self._unalias(e) for e in self.edges]

    def _unalias(self, edge: Edge) -> Edge:
        if edge.type == "imports":
            return edge
        head, _, rest = edge.to_symbol.partition(".")
        original = self.aliases.get(head)
        if original is None:
            return edge
        return replace(edge, to_symbol=f"{original}.{rest}" if rest else original)

    # ---- python -------------------------------------------------------------------------

    def _python(self, node: tree_sitter.Node) -> None:
        kind = node.type
        if kind in ("import_statement", "import_from_statement"):
            if kind == "import_statement":
                for name in node.children_by_field_name("name"):
                    if name.type == "aliased_import":
                        module = _text(name.child_by_field_name("name"))
                        alias = _text(name.child_by_field_name("alias"))
                        if alias:
                            self.aliases[alias] = module
                    else:
                        module = _text(name)
                    self.add("imports", module, name)
            elif kind == "import_from_statement":
                module = _text(node.child_by_field_name("module_name")).replace(" ", "")
                names = node.children_by_field_name("name")
                if not names:  # from x import *
                    self.add("imports", module, node)
                for name in names:
                    if name.type == "aliased_import":
                        imported = _text(name.child_by_field_name("name"))
                        alias = _text(name.child_by_field_name("alias"))
                        if alias:
                            self.aliases[alias] = imported
                    else:
                        imported = _text(name)
                    joiner = "" if module.endswith(".") else "."
                    self.add("imports", f"{module}{joiner}{imported}", name)
            return
        if kind == "call":
            function = node.child_by_field_name("function")
            if function is None:
                return
            parts = _chain(function, _PY_CHAIN)
            if parts is None and function.type == "attribute":
                obj = function.child_by_field_name("object")
                attr = _text(function.child_by_field_name("attribute"))
                is_super = (
                    obj is not None and obj.type == "call" and _text(obj.child_by_field_name("function")) == "super"
                )
                parts = ["super", attr] if is_super else [attr]
            if parts:
                self.call(parts, node)
        elif kind == "class_definition":
            owner = self.scope
            bases = node.child_by_field_name("superclasses")
            for base in bases.named_children if bases is not None else ():
                if base.type == "keyword_argument":
                    continue
                if base.type in ("subscript", "generic_type"):
                    base = base.child_by_field_name("value") or base.named_children[0]
                parts = _chain(base, _PY_CHAIN)
                if parts:
                    self.add("inherits", ".".join(parts), base, owner)

    # ---- javascript / typescript --------------------------------------------------------

    def _js(self, node: tree_sitter.Node) -> None:
        kind = node.type
        if kind in ("import_statement", "export_statement"):
            if kind in ("import_statement", "export_statement"):
                source = node.child_by_field_name("source")
                if source is None:
                    return
                module = _unquote(_text(source))
                self.add("imports", module, source)
                self._js_aliases(node, module)
            return
        if kind == "call_expression":
            function = node.child_by_field_name("function")
            if function is None:
                return
            if function.type == "import" or (function.type == "identifier" and _text(function) == "require"):
                args = node.child_by_field_name("arguments")
                first = args.named_children[0] if args is not None and args.named_children else None
                if first is not None and first.type == "string":
                    self.add("imports", _unquote(_text(first)), first)
                return
            parts = _chain(function, _JS_CHAIN)
            if parts is None and function.type == "member_expression":
                parts = [_text(function.child_by_field_name("property"))]
            if parts:
                self.call(parts, node)
        elif kind == "new_expression":
            constructor = node.child_by_field_name("constructor")
            parts = _chain(constructor, _JS_CHAIN) if constructor is not None else None
            if parts:
                self.call(parts, node)
        elif kind in ("class_declaration", "class", "abstract_class_declaration", "interface_declaration"):
            owner = self.scope
            for heritage in node.named_children:
                if heritage.type == "class_heritage":
                    clauses = heritage.named_children
                    # JavaScript: ``extends <expr>`` directly; TypeScript: extends/implements clauses.
                    for clause in clauses:
                        if clause.type in ("extends_clause", "implements_clause"):
                            for base in clause.named_children:
                                if base.type != "type_arguments":
                                    self._js_base(base, owner)
                        else:
                            self._js_base(clause, owner)
                elif heritage.type == "extends_type_clause":
                    for base in heritage.named_children:
                        self._js_base(base, owner)

    def _js_base(self, base: tree_sitter.Node, owner: str) -> None:
        if base.type == "generic_type":
            base = base.child_by_field_name("name") or base.named_children[0]
        parts = _chain(base, _JS_CHAIN)
        if parts:
            self.add("inherits", ".".join(parts), base, owner)

    def _js_aliases(self, node: tree_sitter.Node, module: str) -> None:
        stem = _module_stem(module)
        for clause in node.named_children:
            if clause.type != "import_clause":
                continue
            for part in clause.named_children:
                if part.type == "namespace_import":
                    ident = next((c for c in part.named_children if c.type == "identifier"), None)
                    if ident is not None and stem:
                        self.aliases[_text(ident)] = stem
                elif part.type == "named_imports":
                    for spec in part.named_children:
                        name = _text(spec.child_by_field_name("name"))
                        alias = _text(spec.child_by_field_name("alias"))
                        if name and alias:
                            self.aliases[alias] = name

    # ---- go -----------------------------------------------------------------------------

    def _go(self, node: tree_sitter.Node) -> None:
        kind = node.type
        if kind in ("import_spec",):
            if kind == "import_spec":
                path_node = node.child_by_field_name("path")
                import_path = _unquote(_text(path_node))
                alias = _text(node.child_by_field_name("name"))
                if alias and alias not in ("_", "."):
                    self.aliases[alias] = import_path.rsplit("/", 1)[-1]
                self.add("imports", import_path, path_node or node)
            return
        if kind == "call_expression":
            function = node.child_by_field_name("function")
            while function is not None and function.type in ("index_expression", "generic_type"):
                function = function.child_by_field_name("operand") or function.child_by_field_name("type")
            if function is None:
                return
            parts = _chain(function, _GO_CHAIN)
            if parts is None and function.type == "selector_expression":
                parts = [_text(function.child_by_field_name("field"))]
            if parts and len(parts) == 2 and parts[0] == _go_receiver_name(node):
                parts = ["self", parts[1]]
            if parts:
                self.call(parts, node)
        elif kind == "type_spec":
            type_node = node.child_by_field_name("type")
            if type_node is None or type_node.type not in ("struct_type", "interface_type"):
                return
            owner = self.scope
            if type_node.type == "struct_type":
                fields = next((c for c in type_node.named_children if c.type == "field_declaration_list"), None)
                for field in fields.named_children if fields is not None else ():
                    if field.type == "field_declaration" and field.child_by_field_name("name") is None:
                        self._go_base(field.child_by_field_name("type"), owner)
            else:
                for elem in type_node.named_children:
                    if elem.type == "type_elem":
                        for base in elem.named_children:
                            self._go_base(base, owner)

    def _go_base(self, base: tree_sitter.Node | None, owner: str) -> None:
        while base is not None and base.type in ("pointer_type", "generic_type"):
            base = base.child_by_field_name("type") or (base.named_children[0] if base.named_children else None)
        if base is None:
            return
        if base.type == "qualified_type":
            package = _text(base.child_by_field_name("package"))
            target = f"{package}.{_text(base.child_by_field_name('name'))}"
        elif base.type == "type_identifier":
            target = _text(base)
        else:
            return
        self.add("inherits", target, base, owner)

    # ---- java ---------------------------------------------------------------------------

    def _java(self, node: tree_sitter.Node) -> None:
        kind = node.type
        if kind in ("import_declaration",):
            if kind == "import_declaration":
                name = next((c for c in node.named_children if c.type in ("scoped_identifier", "identifier")), None)
                if name is None:
                    return
                target = _text(name).replace(" ", "")
                if any(c.type == "asterisk" for c in node.named_children):
                    target += ".*"
                self.add("imports", target, node)
            return
        if kind == "method_invocation":
            name = _text(node.child_by_field_name("name"))
            obj = node.child_by_field_name("object")
            parts: list[str] | None = [name]
            if obj is not None:
                receiver = _chain(obj, _JAVA_CHAIN)
                parts = [*receiver, name] if receiver else [name]
            self.call(parts, node)
        elif kind == "object_creation_expression":
            type_node = _java_type_name(node.child_by_field_name("type"))
            if type_node:
                self.call(type_node.split("."), node)
        elif kind in ("class_declaration", "interface_declaration", "enum_declaration", "record_declaration"):
            owner = self.scope
            for child in node.named_children:
                if child.type == "superclass":
                    bases = child.named_children
                elif child.type in ("super_interfaces", "extends_interfaces"):
                    type_list = next((c for c in child.named_children if c.type == "type_list"), None)
                    bases = type_list.named_children if type_list is not None else []
                else:
                    continue
                for base in bases:
                    target = _java_type_name(base)
                    if target:
                        self.add("inherits", target, base, owner)

    # ---- rust ---------------------------------------------------------------------------

    def _rust(self, node: tree_sitter.Node) -> None:
        kind = node.type
        if kind in ("use_declaration",):
            if kind == "use_declaration":
                argument = node.child_by_field_name("argument")
                if argument is None:
                    return
                for use_path, alias in _rust_use_paths(argument, []):
                    if alias:
                        self.aliases[alias] = use_path.split("::")[-1]
                    self.add("imports", use_path, node)
            return
        if kind == "call_expression":
            function = node.child_by_field_name("function")
            if function is not None and function.type == "generic_function":
                function = function.child_by_field_name("function")
            if function is None:
                return
            parts = _chain(function, _RUST_CHAIN)
            if parts is None:
                name = function.child_by_field_name("field") or function.child_by_field_name("name")
                parts = [_text(name)] if name is not None else None
            if parts:
                self.call(parts, node)
        elif kind == "impl_item":
            trait = node.child_by_field_name("trait")
            target = _rust_type(trait) if trait is not None else ""
            if target:
                self.add("inherits", target, trait, self.scope)
        elif kind == "trait_item":
            bounds = node.child_by_field_name("bounds")
            owner = self.scope
            for bound in bounds.named_children if bounds is not None else ():
                target = _rust_type(bound)
                if target:
                    self.add("inherits", target, bound, owner)


# Node types that may declare a definition (mirrors codex_core.parsing's recognisers).
_DEFINITION_NODES = {
    "python": frozenset({"class_definition", "function_definition"}),
    "js": frozenset(
        """
        function_declaration generator_function_declaration class_declaration
        abstract_class_declaration interface_declaration type_alias_declaration enum_declaration
        internal_module method_definition field_definition public_field_definition
        variable_declarator
        """.split()
    ),
    "go": frozenset({"function_declaration", "method_declaration", "type_spec", "type_alias"}),
    "java": frozenset(
        """
        class_declaration interface_declaration annotation_type_declaration enum_declaration
        record_declaration method_declaration constructor_declaration
        compact_constructor_declaration
        """.split()
    ),
    "rust": frozenset(
        """
        function_item function_signature_item struct_item enum_item trait_item mod_item impl_item
        """.split()
    ),
}

_FAMILY = {
    "python": "python",
    "javascript": "js",
    "typescript": "js",
    "tsx": "js",
    "go": "go",
    "java": "java",
    "rust": "rust",
}

# Node types the per-language handlers look at.
_EDGE_NODES = {
    "python": frozenset({"import_statement", "import_from_statement", "call", "class_definition"}),
    "js": frozenset(
        """
        import_statement export_statement call_expression new_expression class_declaration class
        abstract_class_declaration interface_declaration
        """.split()
    ),
    "go": frozenset({"import_spec", "call_expression", "type_spec"}),
    "java": frozenset(
        """
        import_declaration method_invocation object_creation_expression class_declaration
        interface_declaration enum_declaration record_declaration
        """.split()
    ),
    "rust": frozenset({"use_declaration", "call_expression", "impl_item", "trait_item"}),
}

# Subtrees that never hold an edge.
# Strings stay in: f-strings and template literals hold calls. Rust macro bodies are token
# trees, not syntax, so calls inside ``println!(...)`` are not seen.
_NO_EDGES_INSIDE = frozenset(
    """
    comment line_comment block_comment string_content string_fragment escape_sequence
    string_literal raw_string_literal interpreted_string_literal regex token_tree identifier
    property_identifier field_identifier type_identifier integer float number true false none
    null
    """.split()
)

# (name node types, member node type -> (object field, name field)) per language family.
_ChainSpec = tuple[frozenset[str], dict[str, tuple[str, str]]]
_PY_CHAIN: _ChainSpec = (frozenset({"identifier"}), {"attribute": ("object", "attribute")})
_JS_CHAIN: _ChainSpec = (
    frozenset({"identifier", "this", "super", "property_identifier", "type_identifier"}),
    {"member_expression": ("object", "property"), "nested_type_identifier": ("module", "name")},
)
_GO_CHAIN: _ChainSpec = (
    frozenset({"identifier", "field_identifier", "package_identifier", "type_identifier"}),
    {"selector_expression": ("operand", "field"), "qualified_type": ("package", "name")},
)
_JAVA_CHAIN: _ChainSpec = (
    frozenset({"identifier", "this", "super", "type_identifier"}),
    {"field_access": ("object", "field"), "scoped_identifier": ("scope", "name")},
)
_RUST_CHAIN: _ChainSpec = (
    frozenset({"identifier", "self", "crate", "super", "type_identifier", "field_identifier", "metavariable"}),
    {
        "scoped_identifier": ("path", "name"),
        "scoped_type_identifier": ("path", "name"),
        "field_expression": ("value", "field"),
        "generic_type": ("type", ""),
    },
)


def _chain(node: tree_sitter.Node | None, spec: _ChainSpec) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]`` when ``node`` is a chain of plain names, else None."""
    names, members = spec
    parts: list[str] = []
    while node is not None:
        if node.type in names:
            parts.append(_text(node))
            return parts[::-1]
        member = members.get(node.type)
        if member is None:
            return None
        object_field, name_field = member
        if name_field:
            name = node.child_by_field_name(name_field)
            if name is None:
                return None
            parts.append(_text(name))
        node = node.child_by_field_name(object_field)
    return None


def _java_type_name(node: tree_sitter.Node | None) -> str:
    """``Base<T>`` -> ``Base``; ``p.J`` -> ``p.J``."""
    if node is None:
        return ""
    if node.type == "generic_type":
        node = next((c for c in node.named_children if c.type != "type_arguments"), None)
        if node is None:
            return ""
    if node.type in ("type_identifier", "identifier"):
        return _text(node)
    if node.type in ("scoped_type_identifier", "scoped_identifier"):
        parts = [_java_type_name(c) for c in node.named_children]
        return ".".join(p for p in parts if p)
    return ""


def _rust_type(node: tree_sitter.Node | None) -> str:
    """A trait or type as a dotted chain without generics: ``fmt::Display<T>`` -> ``fmt.Display``."""
    while node is not None and node.type in ("generic_type", "reference_type", "pointer_type"):
        node = node.child_by_field_name("type")
    parts = _chain(node, _RUST_CHAIN) if node is not None else None
    return ".".join(parts) if parts else ""


def _rust_use_paths(node: tree_sitter.Node, prefix: list[str]) -> list[tuple[str, str]]:
    """Every leaf of a ``use`` tree as (``a::b::C``, alias or "")."""
    kind = node.type
    if kind == "use_as_clause":
        path = node.child_by_field_name("path")
        inner = _rust_use_paths(path, prefix) if path is not None else []
        alias = _text(node.child_by_field_name("alias"))
        return [(p, alias) for p, _ in inner]
    if kind == "scoped_use_list":
        path = node.child_by_field_name("path")
        new_prefix = prefix + (_text(path).replace(" ", "").split("::") if path is not None else [])
        use_list = node.child_by_field_name("list")
        return _rust_use_paths(use_list, new_prefix) if use_list is not None else []
    if kind == "use_list":
        out: list[tuple[str, str]] = []
        for child in node.named_children:
            out.extend(_rust_use_paths(child, prefix))
        return out
    if kind == "use_wildcard":
        inner = next(iter(node.named_children), None)
        base = prefix + (_text(inner).replace(" ", "").split("::") if inner is not None else [])
        return [("::".join([*base, "*"]), "")]
    text = _text(node).replace(" ", "")
    if not text or kind in ("line_comment", "block_comment"):
        return []
    parts = text.split("::")
    if parts == ["self"] and prefix:  # use a::b::{self} -> a::b
        parts = []
    return [("::".join(prefix + parts), "")]


def _go_receiver_name(node: tree_sitter.Node) -> str | None:
    parent = node.parent
    while parent is not None and parent.type not in ("method_declaration", "function_declaration"):
        parent = parent.parent
    if parent is None or parent.type != "method_declaration":
        return None
    receiver = parent.child_by_field_name("receiver")
    for param in receiver.named_children if receiver is not None else ():
        name = param.child_by_field_name("name")
        if name is not None:
            return _text(name)
    return None


def _module_stem(specifier: str) -> str:
    """``./lib/util.js`` -> ``util``; ``@scope/pkg`` -> ``pkg``; ``example.com/m/util`` -> ``util``."""
    last = specifier.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".d.ts", ".tsx", ".ts", ".jsx", ".js", ".mjs", ".cjs"):
        if last.endswith(suffix):
            return last[: -len(suffix)]
    return last


# =============================================================================================
# Resolution
# =============================================================================================

_JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_JS_FAMILY = frozenset({"javascript", "typescript", "tsx"})
# Receivers that are language globals, never a repository module.
_GLOBAL_RECEIVERS = {
    "js": frozenset(
        """
        console Math JSON Object Array Promise window document process Number String Date
        Reflect Symbol Buffer globalThis Intl Error
        """.split()
    ),
    "java": frozenset(
        """
        System String Math Integer Long Double Boolean Objects Arrays Collections List Map Set
        Optional Stream Collectors Thread
        """.split()
    ),
}
# Plain calls that name a language builtin are never matched repo-wide by name alone.
_BUILTIN_CALLS = {
    "python": frozenset(name for name in dir(builtins) if not name.startswith("_")),
    "js": frozenset(
        """
        parseInt parseFloat setTimeout setInterval clearTimeout clearInterval require fetch
        isNaN String Number Boolean Symbol Array Object
        """.split()
    ),
    "go": frozenset(
        """
        append cap clear close complex copy delete imag len make max min new panic print println
        real recover
        """.split()
    ),
    "java": frozenset(),
    "rust": frozenset({"Some", "Ok", "Err", "Box", "drop"}),
}
# Go standard-library path roots: an import starting with one of these is never the repo's.
_GO_STD_ROOTS = frozenset(
    """
    archive bufio bytes cmp compress container context crypto database debug embed encoding
    errors expvar flag fmt go hash html image index io iter log maps math mime net os path
    plugin reflect regexp runtime slices sort strconv strings sync syscall testing text time
    unicode unique unsafe
    """.split()
)

_STDLIB = frozenset(sys.stdlib_module_names)
_External = object()  # marker: a name that an import brought in from outside the repository


def resolve_edges(definitions: Sequence[Definition], edges: Sequence[Edge], files: Sequence[str]) -> list[Edge]:
    """Resolve edge targets across the repository; returns the edges in the same order.

    A resolved edge gets ``resolved=True``, ``to_path`` and, as ``to_symbol``, the target's
    qualified name (``<module>`` for an import of a whole file). Rules:

    * imports: Python dotted modules -> ``a/b.py`` or ``a/b/__init__.py`` (relative imports by
      the importer's package; package roots found from ``__init__.py`` files, ``src/`` layouts
      and plain top-level directories), then the imported name inside that module when it is a
      definition there. JS/TS relative (and ``@/``, ``~/``, ``src/``-based) specifiers with
      extension and ``index`` resolution. Go: the longest suffix of the import path that is a
      directory with ``.go`` files; ``to_path`` is that package's main file (``<dir>.go`` or the
      first non-test file) and every file of the directory counts as imported. Java: the file
      ending ``a/b/C.java`` (nested and static members as ``C.Inner`` / ``C.m``; ``a.b.*`` stays
      unresolved but makes the package's files imported). Rust ``crate::``/``self::``/
      ``super::`` and workspace-crate paths -> ``src/a/b.rs`` / ``src/a/b/mod.rs`` / ``src/a.rs``
      (the longest module prefix that is a file), then the rest as a definition in it.
    * calls: ``self.x()`` / ``this.x()`` -> the enclosing class's method, then its bases' (via
      resolved ``inherits`` edges); ``super.x()`` starts at the bases. Otherwise, in order, and
      stopping at the first tier with any candidate: the same file (an enclosing scope first;
      in Java also the enclosing classes, as calls there have an implicit ``this``), the same
      package directory (Go, Java), what the file imports (an imported name, a module used as
      qualifier, any definition in an imported file), then a unique match repo-wide. A
      qualifier is used when it names a module or a type (``util.helper``, ``Type.new``); a
      qualifier that is an external import (``os.path.join``, ``fmt.Println``) is never
      resolved. Plain calls only match functions/classes (not methods) outside their own class,
      and builtins (``len``, ``print``) are never matched repo-wide by name. Two or more
      candidates in the deciding tier are ambiguous: the edge keeps its raw name.
    * inherits: like calls, but only type-like definitions (not functions or methods).
    """
    resolver = _Resolver(definitions, files)
    out = list(edges)
    order = {"imports": 0, "inherits": 1, "calls": 2}
    # Imports feed inherits (imported names and files), and both feed calls (class chains).
    for index in sorted(range(len(out)), key=lambda i: order.get(out[i].type, 3)):
        edge = out[index]
        if edge.resolved:
            resolver.note(edge, edge.to_path, edge.to_symbol)
            continue
        try:
            target = resolver.resolve(edge)
        except (ValueError, IndexError, KeyError, RecursionError):
            target = None
        if target is not None:
            to_path, to_symbol = target
            out[index] = replace(edge, to_path=to_path, to_symbol=to_symbol, resolved=True)
        resolver.note(edge, *(target or (None, None)))
    return out


class _Resolver:
    def __init__(self, definitions: Sequence[Definition], files: Sequence[str]) -> None:
        self.files = set(files) | {d.path for d in definitions}
        self.by_path_symbol: dict[tuple[str, str], Definition] = {}
        self.by_path_name: dict[tuple[str, str], list[Definition]] = defaultdict(list)
        self.top_level: dict[str, list[Definition]] = defaultdict(list)
        self.members: dict[str, list[Definition]] = defaultdict(list)
        self.by_owner_name: dict[tuple[str, str], list[Definition]] = defaultdict(list)
        for d in definitions:
            key = (d.path, d.symbol)
            # A Rust struct and its ``impl`` blocks share a symbol: keep the struct.
            if key not in self.by_path_symbol or self.by_path_symbol[key].kind == "impl":
                self.by_path_symbol[key] = d
            if d.kind == "impl":
                continue
            self.by_path_name[(d.path, d.name)].append(d)
            if d.symbol == d.name:
                self.top_level[d.name].append(d)
            else:
                self.members[d.name].append(d)
                owner = d.symbol.rsplit(".", 2)[-2]
                self.by_owner_name[(owner, d.name)].append(d)

        self.files_by_dir: dict[str, list[str]] = defaultdict(list)
        for f in sorted(self.files):
            self.files_by_dir[posixpath.dirname(f)].append(f)
        self._python_index()
        self._java_index()
        self._rust_index()

        # Filled while resolving (imports first): what each file brought in.
        self.imported_files: dict[str, set[str]] = defaultdict(set)
        self.imported_names: dict[str, dict[str, tuple[str, str] | object]] = defaultdict(dict)
        self.module_keys: dict[str, dict[str, list[str] | object]] = defaultdict(dict)
        self.bases: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        self.bases_by_symbol: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        self._language_cache: dict[str, str] = {}
        self._package_cache: dict[tuple[str, str], list[str]] = {}
        self._java_package_cache: dict[str, list[str]] = {}

    # ---- indexes ------------------------------------------------------------------------

    def _python_index(self) -> None:
        py_files = [f for f in self.files if f.endswith((".py", ".pyi"))]
        packages = {posixpath.dirname(f) for f in py_files if posixpath.basename(f) in ("__init__.py", "__init__.pyi")}
        self.py_modules: dict[str, list[str]] = defaultdict(list)
        for f in sorted(py_files, key=lambda p: (p.endswith(".pyi"), p)):
            parts = f.rsplit(".", 1)[0].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not parts:
                continue
            names = {".".join(parts)}
            if parts[0] in ("src", "lib", "python") and len(parts) > 1:
                names.add(".".join(parts[1:]))
            # The package root: climb while the directory is a package.
            directory = posixpath.dirname(f)
            top = len(directory.split("/")) if directory else 0
            while directory and directory in packages:
                directory = posixpath.dirname(directory)
                top -= 1
            rooted = ".".join(parts[top:]) if top < len(parts) else parts[-1]
            # ``scripts/json.py`` must not capture every ``import json`` in the repository.
            if directory in ("", "src", "lib", "python") or rooted.split(".")[0] not in _STDLIB:
                names.add(rooted)
            for name in names:
                if f not in self.py_modules[name]:
                    self.py_modules[name].append(f)

    def _java_index(self) -> None:
        self.java_by_stem: dict[str, list[str]] = defaultdict(list)
        self.java_dirs: set[str] = set()
        for f in self.files:
            if f.endswith(".java"):
                self.java_by_stem[posixpath.basename(f)[:-5]].append(f)
                self.java_dirs.add(posixpath.dirname(f))

    def _rust_index(self) -> None:
        # Workspace crates: <dir>/src/lib.rs makes <dir>'s name (dashes as underscores) a crate.
        self.rust_crates: dict[str, str] = {}
        for f in self.files:
            if f.endswith("src/lib.rs") or f.endswith("src/main.rs"):
                root = posixpath.dirname(f)
                crate_dir = posixpath.dirname(root)
                name = posixpath.basename(crate_dir) if crate_dir else ""
                if name:
                    self.rust_crates.setdefault(name.replace("-", "_"), root)

    # ---- bookkeeping ----------------------------------------------------------------------

    def language(self, path: str) -> str:
        lang = self._language_cache.get(path)
        if lang is None:
            lang = self._language_cache[path] = detect_language(path)
        return lang

    def note(self, edge: Edge, to_path: str | None, to_symbol: str | None) -> None:
        """Record what an import or inherits edge means for later edges of the same file."""
        path = edge.path
        if edge.type == "inherits":
            if to_path is not None and to_symbol is not None:
                self.bases[(path, edge.from_symbol)].append((to_path, to_symbol))
                self.bases_by_symbol[edge.from_symbol].append((path, to_path, to_symbol))
            return
        if edge.type != "imports":
            return
        raw = edge.to_symbol
        lang = self.language(path)
        family = _FAMILY.get(lang, lang)
        if lang in _JS_FAMILY:
            keys = [_module_stem(raw).lower()]
        elif lang == "go":
            keys = [raw.rsplit("/", 1)[-1]]
        elif lang == "rust":
            parts = [p for p in raw.split("::") if p and p != "*"]
            keys = [parts[-1]] if parts else []
        else:
            stripped = raw.lstrip(".")
            keys = [stripped, stripped.rsplit(".", 1)[-1]] if stripped else []
            keys = [k for k in keys if k and k != "*"]
        if to_path is None:
            for key in keys:
                self.module_keys[path].setdefault(key, _External)
                if family in ("python", "java", "rust"):
                    self.imported_names[path].setdefault(key.rsplit(".", 1)[-1], _External)
            if lang == "java" and raw.endswith(".*"):
                self.imported_files[path].update(self._java_package_files(raw[:-2]))
            return
        package = self._package_files(to_path) if lang == "go" else [to_path]
        self.imported_files[path].update(package)
        if to_symbol == MODULE:
            for key in keys:
                self.module_keys[path][key] = package
        elif to_symbol is not None:
            name = keys[-1].rsplit(".", 1)[-1] if keys else to_symbol.rsplit(".", 1)[-1]
            self.imported_names[path][name] = (to_path, to_symbol)

    def _package_files(self, path: str) -> list[str]:
        directory = posixpath.dirname(path)
        return [f for f in self.files_by_dir.get(directory, []) if f.endswith(".go")]

    # ---- dispatch -----------------------------------------------------------------------

    def resolve(self, edge: Edge) -> tuple[str, str] | None:
        lang = self.language(edge.path)
        if edge.type == "imports":
            if lang == "python":
                return self._python_import(edge.path, edge.to_symbol)
            if lang in _JS_FAMILY:
                return self._js_import(edge.path, edge.to_symbol)
            if lang == "go":
                return self._go_import(edge.to_symbol)
            if lang == "java":
                return self._java_import(edge.to_symbol)
            if lang == "rust":
                return self._rust_import(edge.path, edge.to_symbol)
            return None
        if edge.type == "calls":
            return self._symbol(edge, lang, types_only=False)
        if edge.type == "inherits":
            return self._symbol(edge, lang, types_only=True)
        return None

    # ---- imports --------------------------------------------------------------------------

    def _in_file(self, path: str, symbol: str) -> tuple[str, str]:
        """(path, symbol) when ``symbol`` is defined at the top of ``path``, else the file."""
        d = self.by_path_symbol.get((path, symbol))
        return (path, d.symbol) if d is not None else (path, MODULE)

    def _python_module(self, importer: str, module: str) -> str | None:
        candidates = self.py_modules.get(module)
        if not candidates:
            return None
        return _nearest(importer, candidates)

    def _python_import(self, importer: str, raw: str) -> tuple[str, str] | None:
        dots = len(raw) - len(raw.lstrip("."))
        parts = [p for p in raw[dots:].split(".") if p]
        if dots:
            base = posixpath.dirname(importer)
            for _ in range(dots - 1):
                base = posixpath.dirname(base)

            def find(mod: list[str]) -> str | None:
                stem = posixpath.join(base, *mod)
                candidates = (f"{stem}.py", f"{stem}.pyi") if mod else ()
                for candidate in (*candidates, f"{stem}/__init__.py", f"{stem}/__init__.pyi"):
                    if candidate.lstrip("/") in self.files:
                        return candidate.lstrip("/")
                return None
        else:

            def find(mod: list[str]) -> str | None:
                return self._python_module(importer, ".".join(mod)) if mod else None

        whole = find(parts)
        if whole is not None:
            return (whole, MODULE)
        if parts:
            module = find(parts[:-1])
            if module is not None:
                return self._in_file(module, parts[-1])
        return None

    def _js_import(self, importer: str, spec: str) -> tuple[str, str] | None:
        bases: list[str] = []
        if spec.startswith((".", "/")):
            bases.append(posixpath.normpath(posixpath.join(posixpath.dirname(importer), spec)).lstrip("/"))
        elif spec.startswith(("@/", "~/")):
            bases += [f"src/{spec[2:]}", spec[2:]]
        else:
            bases += [spec, f"src/{spec}"]
        for base in bases:
            if not base or base.startswith(".."):
                continue
            stems = [base]
            for ext in (".js", ".jsx", ".mjs", ".cjs"):
                if base.endswith(ext):  # TS sources imported by their emitted name
                    stems.append(base[: -len(ext)])
            for stem in stems:
                if stem in self.files:
                    return (stem, MODULE)
                for ext in _JS_EXTENSIONS:
                    if f"{stem}{ext}" in self.files:
                        return (f"{stem}{ext}", MODULE)
                for ext in _JS_EXTENSIONS:
                    if f"{stem}/index{ext}" in self.files:
                        return (f"{stem}/index{ext}", MODULE)
        return None

    def _go_import(self, import_path: str) -> tuple[str, str] | None:
        parts = [p for p in import_path.split("/") if p]
        if not parts or len(parts) == 1 or ("." not in parts[0] and parts[0] in _GO_STD_ROOTS):
            return None
        for start in range(len(parts)):
            directory = "/".join(parts[start:])
            go_files = [f for f in self.files_by_dir.get(directory, []) if f.endswith(".go")]
            if not go_files:
                continue
            main = f"{directory}/{parts[-1]}.go"
            if main in go_files:
                return (main, MODULE)
            non_test = [f for f in go_files if not f.endswith("_test.go")]
            return ((non_test or go_files)[0], MODULE)
        return None

    def _java_package_files(self, package: str) -> list[str]:
        cached = self._java_package_cache.get(package)
        if cached is not None:
            return cached
        suffix = package.replace(".", "/")
        out: list[str] = []
        for directory in self.java_dirs:
            if directory == suffix or directory.endswith("/" + suffix):
                out.extend(f for f in self.files_by_dir[directory] if f.endswith(".java"))
        self._java_package_cache[package] = out
        return out

    def _java_import(self, fqn: str) -> tuple[str, str] | None:
        parts = [p for p in fqn.split(".") if p]
        if not parts or parts[-1] == "*":
            return None
        for k in range(len(parts), 0, -1):
            suffix = "/".join(parts[:k]) + ".java"
            matches = [f for f in self.java_by_stem.get(parts[k - 1], []) if f == suffix or f.endswith("/" + suffix)]
            if len(matches) == 1:
                symbol = ".".join(parts[k - 1 :])
                return self._in_file(matches[0], symbol)
            if matches:
                return None  # the same class in two places: ambiguous
        return None

    def _rust_root(self, path: str) -> tuple[str, list[str]]:
        """(crate source root, module path of ``path`` inside it)."""
        parts = path.split("/")
        if "src" in parts:
            cut = len(parts) - 1 - parts[::-1].index("src")
            root, rest = "/".join(parts[: cut + 1]), parts[cut + 1 :]
        else:
            root, rest = posixpath.dirname(path), [posixpath.basename(path)]
        if rest:
            rest[-1] = rest[-1][:-3] if rest[-1].endswith(".rs") else rest[-1]
            if rest[-1] in ("mod", "lib", "main") or (len(rest) == 1 and rest[0] in ("lib", "main")):
                rest = rest[:-1]
        return root, rest

    def _rust_file(self, root: str, modules: list[str]) -> str | None:
        stem = posixpath.join(root, *modules) if modules else root
        if not modules:
            for name in ("lib.rs", "main.rs"):
                if posixpath.join(root, name) in self.files:
                    return posixpath.join(root, name)
            return None
        for candidate in (f"{stem}.rs", f"{stem}/mod.rs"):
            if candidate in self.files:
                return candidate
        return None

    def _rust_path(self, importer: str, segments: list[str]) -> tuple[str, list[str]] | None:
        """The file a Rust path lands in (longest module prefix) and the rest of the path."""
        segments = [s for s in segments if s and s != "*"]
        if not segments:
            return None
        root, current = self._rust_root(importer)
        explicit = True
        if segments[0] == "crate":
            base, segments = [], segments[1:]
        elif segments[0] in ("self", "super"):
            base = list(current)
            while segments and segments[0] in ("self", "super"):
                if segments[0] == "super" and base:
                    base.pop()
                segments = segments[1:]
        elif segments[0] in self.rust_crates and self.rust_crates[segments[0]] != root:
            root, base, segments = self.rust_crates[segments[0]], [], segments[1:]
        else:
            base, explicit = list(current), False  # a child module of the current one
        for k in range(len(segments), -1, -1):
            if k == 0 and not explicit:
                break
            found = self._rust_file(root, base + segments[:k])
            if found is not None:
                return found, segments[k:]
        return None

    def _rust_import(self, importer: str, raw: str) -> tuple[str, str] | None:
        landed = self._rust_path(importer, raw.split("::"))
        if landed is None:
            return None
        found, rest = landed
        if not rest:
            return (found, MODULE)
        d = self.by_path_symbol.get((found, ".".join(rest)))
        if d is None and len(rest) == 1:
            matches = self.by_path_name.get((found, rest[0]), [])
            d = matches[0] if len(matches) == 1 else None
        if d is not None:
            return (found, d.symbol)
        # ``use crate::config::PORT`` (a const, not a definition) still imports config.rs; but
        # a path that stopped short at the crate root or the importer itself found nothing.
        if len(rest) == 1 and found != importer and found != self._rust_file(self._rust_root(importer)[0], []):
            return (found, MODULE)
        return None

    # ---- calls and inherits ---------------------------------------------------------------

    def _symbol(self, edge: Edge, lang: str, *, types_only: bool) -> tuple[str, str] | None:
        parts = edge.to_symbol.split(".")
        name, qualifier = parts[-1], parts[:-1]
        if not name:
            return None
        path = edge.path
        family = _FAMILY.get(lang, lang)

        def fits(d: Definition) -> bool:
            return d.kind not in _CALLABLE_KINDS if types_only else True

        if len(qualifier) == 1 and qualifier[0] in _SELF_WORDS:
            if qualifier[0] == "Self" and lang == "rust":
                cls = self._enclosing_class(path, edge.from_symbol, lang)
                return self._class_member(path, cls, name, lang) if cls else None
            return self._self_call(path, edge.from_symbol, name, lang, skip_own=qualifier[0] == "super")

        if qualifier:
            return self._qualified(edge, lang, family, qualifier, name, fits, types_only)

        # Plain name: enclosing scopes, then the file's top level.
        scope = edge.from_symbol.split(".") if edge.from_symbol != MODULE else []
        if family == "java" and not types_only:
            hit = self._self_call(path, edge.from_symbol, name, lang, skip_own=False)
            if hit is not None:
                return hit
        for depth in range(len(scope), -1, -1):
            prefix = ".".join(scope[:depth])
            if 0 < depth < len(scope) and family != "java":
                # Only functions are scopes for the code nested in them (not class bodies).
                owner = self.by_path_symbol.get((path, prefix))
                if owner is None or owner.kind not in _CALLABLE_KINDS:
                    continue
            d = self.by_path_symbol.get((path, f"{prefix}.{name}" if prefix else name))
            if d is not None and fits(d) and d.kind != "impl":
                return (path, d.symbol)
        # Same package (Go, Java), then imports.
        if lang in ("go", "java"):
            hit = _unique(self._top_in(self._same_package(path, lang), name, fits))
            if hit is not _NONE:
                return hit
        imported = self.imported_names[path].get(name)
        if imported is _External:
            return None
        if isinstance(imported, tuple):
            d = self.by_path_symbol.get(imported)
            if d is not None and fits(d):
                return imported
        files = self.imported_files.get(path)
        if files:
            hit = _unique(self._top_in(files, name, fits))
            if hit is not _NONE:
                return hit
        if name in _BUILTIN_CALLS.get(family, ()):
            return None
        return _unique_or_none(_small([d for d in _small(self.top_level.get(name, [])) if fits(d)]))

    def _qualified(
        self,
        edge: Edge,
        lang: str,
        family: str,
        qualifier: list[str],
        name: str,
        fits: Callable[[Definition], bool],
        types_only: bool,
    ) -> tuple[str, str] | None:
        path = edge.path
        keys = self.module_keys.get(path, {})
        dotted = ".".join(qualifier)
        lookup = [dotted, qualifier[-1], qualifier[0]]
        if lang in _JS_FAMILY:
            lookup = [k.lower() for k in lookup]
        # 1. The qualifier is an imported module (or an imported Java class).
        for key in lookup[:2]:
            module = keys.get(key)
            if module is _External:
                return None
            if isinstance(module, list):
                owner, files = qualifier[-1], set(module)
                for candidates in (
                    self._top_in(module, name, fits),
                    [d for d in self.by_owner_name.get((owner, name), []) if d.path in files and fits(d)],
                ):
                    hit = _unique(candidates)
                    if hit is not _NONE:
                        return hit
        if keys.get(lookup[2]) is _External or qualifier[0] in _GLOBAL_RECEIVERS.get(family, ()):
            return None
        # 2. Rust module paths without a ``use`` (``crate::util::f()``, ``util::f()`` after ``mod util;``).
        if lang == "rust":
            landed = self._rust_path(path, qualifier)
            if landed is not None:
                found, rest = landed
                symbol = ".".join([*rest, name])
                d = self.by_path_symbol.get((found, symbol))
                if d is not None and fits(d):
                    return (found, d.symbol)
        # 3. The qualifier names a type: ``Type.new``, ``Util.helper``, ``Outer.Inner``.
        owner = qualifier[-1]
        typed = self.by_owner_name.get((owner, name), [])
        if any(fits(d) for d in typed):
            suffix = f"{owner}.{name}"

            def owned(d: Definition) -> bool:
                return fits(d) and (d.symbol == suffix or d.symbol.endswith("." + suffix))

            hit = self._pick_local(path, lang, name, owned, typed)
            return hit if hit is not _NONE else None
        # 4. An object of unknown type: a method of that name, nearest first.
        if types_only:

            def top_level_type(d: Definition) -> bool:
                return d.symbol == d.name and fits(d)

            hit = self._pick_local(path, lang, name, top_level_type, self.top_level.get(name, []))
        else:
            hit = self._pick_local(path, lang, name, _is_method, self.members.get(name, []))
        return hit if hit is not _NONE else None

    def _pick_local(
        self,
        path: str,
        lang: str,
        name: str,
        accept: Callable[[Definition], bool],
        everywhere: list[Definition],
    ) -> tuple[str, str] | None | object:
        """Unique accepted ``name`` in the nearest tier: file, package, imports, repo-wide.

        Returns (path, symbol), None when the deciding tier is ambiguous, ``_NONE`` when no
        tier has a candidate. Every tier is a dict lookup per file, never a repo-wide scan.
        """
        tiers: list[Iterable[str]] = [(path,)]
        if lang in ("go", "java"):
            tiers.append(self._same_package(path, lang))
        tiers.append(self.imported_files.get(path, ()))
        for files in tiers:
            found = [d for f in files for d in self.by_path_name.get((f, name), ()) if accept(d)]
            if found:
                return _unique(found)
        return _unique([d for d in _small(everywhere) if accept(d)])

    def _same_package(self, path: str, lang: str) -> list[str]:
        key = (path, lang)
        files = self._package_cache.get(key)
        if files is None:
            suffix = ".go" if lang == "go" else ".java"
            siblings = self.files_by_dir.get(posixpath.dirname(path), [])
            files = self._package_cache[key] = [f for f in siblings if f.endswith(suffix) and f != path]
        return files

    def _top_in(self, files: Iterable[str], name: str, fits: Callable[[Definition], bool]) -> list[Definition]:
        out = []
        for f in files:
            d = self.by_path_symbol.get((f, name))
            if d is not None and d.kind != "impl" and fits(d):
                out.append(d)
        return out

    def _enclosing_class(self, path: str, from_symbol: str, lang: str) -> str | None:
        if from_symbol == MODULE:
            return None
        parts = from_symbol.split(".")
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            d = self.by_path_symbol.get((path, prefix))
            if d is not None and d.kind not in _CALLABLE_KINDS:
                return prefix
            if lang in ("go", "rust") and depth == len(parts) - 1 and depth > 0:
                # Methods may sit in another file than their type: the receiver is the class.
                return prefix
        return None

    def _class_member(self, path: str, cls: str, name: str, lang: str) -> tuple[str, str] | None:
        d = self.by_path_symbol.get((path, f"{cls}.{name}"))
        if d is not None:
            return (path, d.symbol)
        if lang in ("go", "rust"):
            owner = cls.rsplit(".", 1)[-1]
            candidates = self.by_owner_name.get((owner, name), [])
            if lang == "go":
                directory = posixpath.dirname(path)
                candidates = [c for c in candidates if posixpath.dirname(c.path) == directory]
            else:
                root = self._rust_root(path)[0]
                candidates = [c for c in candidates if c.path.startswith(root + "/") or not root]
            hit = _unique(candidates)
            if hit is not _NONE:
                return hit
        return None

    def _self_call(
        self, path: str, from_symbol: str, name: str, lang: str, *, skip_own: bool
    ) -> tuple[str, str] | None:
        cls = self._enclosing_class(path, from_symbol, lang)
        if cls is None:
            return None
        seen: set[tuple[str, str]] = set()
        queue: deque[tuple[str, str, int]] = deque([(path, cls, 0)])
        while queue:
            cls_path, cls_symbol, depth = queue.popleft()
            if (cls_path, cls_symbol) in seen or depth > 8:
                continue
            seen.add((cls_path, cls_symbol))
            if not (skip_own and depth == 0):
                hit = self._class_member(cls_path, cls_symbol, name, lang)
                if hit is not None:
                    return hit
            for base in self._bases_of(cls_path, cls_symbol, lang):
                queue.append((*base, depth + 1))
        return None

    def _bases_of(self, path: str, cls: str, lang: str) -> list[tuple[str, str]]:
        found = list(self.bases.get((path, cls), []))
        if lang in ("go", "rust"):
            # Embedding and ``impl Trait for T`` may be declared in another file of the package.
            directory = posixpath.dirname(path)
            for from_path, to_path, to_symbol in self.bases_by_symbol.get(cls, []):
                if from_path != path and posixpath.dirname(from_path) == directory:
                    found.append((to_path, to_symbol))
        return found


_NONE = object()  # marker: no candidate at all (as opposed to an ambiguous tier -> None)
# More same-named candidates than this repo-wide is ambiguous without looking at them.
_REPO_WIDE_LIMIT = 16


def _small(candidates: list[Definition]) -> list[Definition]:
    return candidates if len(candidates) <= _REPO_WIDE_LIMIT else candidates[: _REPO_WIDE_LIMIT + 1]


def _is_method(d: Definition) -> bool:
    return d.kind in _CALLABLE_KINDS and d.symbol != d.name


def _unique(candidates: list[Definition]):
    """(path, symbol) of the only candidate; None when ambiguous; ``_NONE`` when empty."""
    distinct = {(d.path, d.symbol) for d in candidates}
    if not distinct:
        return _NONE
    return next(iter(distinct)) if len(distinct) == 1 else None


def _unique_or_none(candidates: list[Definition]) -> tuple[str, str] | None:
    hit = _unique(candidates)
    return None if hit is _NONE else hit


def _nearest(importer: str, candidates: list[str]) -> str | None:
    """The candidate sharing the longest directory prefix with ``importer``; None on a tie."""
    if len(candidates) == 1:
        return candidates[0]
    importer_dirs = importer.split("/")[:-1]

    def shared(candidate: str) -> int:
        n = 0
        for a, b in zip(importer_dirs, candidate.split("/")[:-1], strict=False):
            if a != b:
                break
            n += 1
        return n

    scored = sorted(((shared(c), c) for c in candidates), reverse=True)
    if scored[0][0] == scored[1][0]:
        return None
    return scored[0][1]


# =============================================================================================
# Graph queries
# =============================================================================================

Node = tuple[str, str | None]  # (path, symbol); symbol None is the file itself


def _node(path: str, symbol: str) -> Node:
    return (path, None if symbol == MODULE else symbol)


class CodeGraph:
    """Resolved edges as an undirected adjacency, for "what is related to this code" queries."""

    def __init__(self, definitions: Iterable[Definition], edges: Iterable[Edge]) -> None:
        self.definitions: list[Definition] = list(definitions)
        self.edges: list[Edge] = list(edges)
        self._defs_by_path: dict[str, list[Definition]] = defaultdict(list)
        for d in self.definitions:
            self._defs_by_path[d.path].append(d)
        # node -> {neighbour: edge types between them, in first-seen order}
        self._adjacent: dict[Node, dict[Node, list[str]]] = defaultdict(dict)
        self._nodes_by_path: dict[str, set[Node]] = defaultdict(set)
        for e in self.edges:
            if not e.resolved or e.to_path is None:
                continue
            a, b = _node(e.path, e.from_symbol), _node(e.to_path, e.to_symbol)
            if a == b:
                continue
            for one, other in ((a, b), (b, a)):
                kinds = self._adjacent[one].setdefault(other, [])
                if e.type not in kinds:
                    kinds.append(e.type)
            self._nodes_by_path[a[0]].add(a)
            self._nodes_by_path[b[0]].add(b)

    def edge_counts(self) -> dict[str, int]:
        """Edges per type, plus ``<type>_resolved``, ``resolved``, ``unresolved`` and ``total``."""
        counts: dict[str, int] = {}
        for edge_type in EDGE_TYPES:
            counts[edge_type] = 0
            counts[f"{edge_type}_resolved"] = 0
        for e in self.edges:
            counts[e.type] = counts.get(e.type, 0) + 1
            if e.resolved:
                counts[f"{e.type}_resolved"] = counts.get(f"{e.type}_resolved", 0) + 1
        counts["total"] = len(self.edges)
        counts["resolved"] = sum(1 for e in self.edges if e.resolved)
        counts["unresolved"] = counts["total"] - counts["resolved"]
        return counts

    def definition_at(self, path: str, line: int) -> Definition | None:
        """The innermost definition of ``path`` whose span holds ``line``."""
        best: Definition | None = None
        for d in self._defs_by_path.get(path, ()):
            if d.start_line <= line <= d.end_line and (
                best is None or d.end_line - d.start_line < best.end_line - best.start_line
            ):
                best = d
        return best

    def neighbors(
        self,
        path: str,
        symbol: str | None,
        hops: int = 1,
        types: Iterable[str] = EDGE_TYPES,
    ) -> list[tuple[str, str | None, int, str]]:
        """(path, symbol, hop distance, edge type) of code linked to ``path``/``symbol``.

        Edges are followed in both directions (callers and callees, importers and imports,
        subclasses and bases), only along resolved edges of ``types``. The start is the
        definition and everything nested in it (a class with its methods); with ``symbol``
        None, the whole file. Results are nearest first, each node once (at its shortest
        distance, with the type of the edge that reached it); symbol None means a whole file.
        """
        allowed = set(types)
        if symbol is None:
            starts = set(self._nodes_by_path.get(path, set())) | {(path, None)}
            starts |= {(path, d.symbol) for d in self._defs_by_path.get(path, ())}
        else:
            nested = symbol + "."
            starts = {(path, symbol)} | {
                n for n in self._nodes_by_path.get(path, set()) if n[1] is not None and n[1].startswith(nested)
            }
        seen: set[Node] = set(starts)
        frontier = sorted(starts, key=_sort_key)
        out: list[tuple[str, str | None, int, str]] = []
        for distance in range(1, max(hops, 0) + 1):
            next_frontier: list[Node] = []
            for node in frontier:
                for other, kinds in self._adjacent.get(node, {}).items():
                    edge_type = next((k for k in kinds if k in allowed), None)
                    if edge_type is None or other in seen:
                        continue
                    seen.add(other)
                    next_frontier.append(other)
                    out.append((other[0], other[1], distance, edge_type))
            if not next_frontier:
                break
            frontier = next_frontier
        return out


def _sort_key(node: Node) -> tuple[str, str]:
    return (node[0], node[1] or "")


# =============================================================================================
# Storage
# =============================================================================================

DEFINITIONS_FILE = "definitions.parquet"
EDGES_FILE = "edges.parquet"

_DEFINITION_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("path", pa.string()),
        ("language", pa.string()),
        ("start_line", pa.int64()),
        ("end_line", pa.int64()),
    ]
)
_EDGE_SCHEMA = pa.schema(
    [
        ("from_symbol", pa.string()),
        ("to_symbol", pa.string()),
        ("type", pa.string()),
        ("path", pa.string()),
        ("line", pa.int64()),
        ("to_path", pa.string()),
        ("resolved", pa.bool_()),
    ]
)


def write_graph(directory: Path, definitions: Iterable[Definition], edges: Iterable[Edge]) -> None:
    """Write ``definitions.parquet`` and ``edges.parquet``; each file appears whole or not at all."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tables = {
        DEFINITIONS_FILE: pa.Table.from_pylist([asdict(d) for d in definitions], schema=_DEFINITION_SCHEMA),
        EDGES_FILE: pa.Table.from_pylist([asdict(e) for e in edges], schema=_EDGE_SCHEMA),
    }
    staged: list[tuple[str, str]] = []
    try:
        for name, table in tables.items():
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            os.close(fd)
            staged.append((temp, name))
            pq.write_table(table, temp)
        for temp, name in staged:
            os.replace(temp, directory / name)
    finally:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.unlink(temp)


def load_graph(directory: Path) -> CodeGraph:
    """Read a graph written by :func:`write_graph`."""
    directory = Path(directory)
    missing = [n for n in (DEFINITIONS_FILE, EDGES_FILE) if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"no code graph in {directory} (missing {', '.join(missing)}); "
            "materialize the code_graph asset for this repository first"
        )
    definitions = [
        Definition(**row) for row in pq.read_table(directory / DEFINITIONS_FILE, schema=_DEFINITION_SCHEMA).to_pylist()
    ]
    edges = [Edge(**row) for row in pq.read_table(directory / EDGES_FILE, schema=_EDGE_SCHEMA).to_pylist()]
    return CodeGraph(definitions, edges)
