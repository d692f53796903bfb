"""Code graph, stage 1 -- extraction: one file's definitions and the edges leaving it, as written.

:func:`extract_file_graph` parses one file with tree-sitter and records every ``calls`` /
``imports`` / ``inherits`` edge with its target *as written*; :mod:`.resolve` later looks the
targets up across the repository.

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
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import tree_sitter

from codex_core.graph.syntax import (
    _DEFINITION_NODES,
    _EDGE_NODES,
    _FAMILY,
    _GO_CHAIN,
    _JAVA_CHAIN,
    _JS_CHAIN,
    _NO_EDGES_INSIDE,
    _PY_CHAIN,
    _RUST_CHAIN,
    GRAPH_LANGUAGES,
    MODULE,
    _chain,
    _go_receiver_name,
    _java_type_name,
    _line,
    _module_stem,
    _rust_type,
    _rust_use_paths,
    _text,
    _unquote,
)
from codex_core.models import Definition, Edge
from codex_core.parsing import definitions as parse_definitions
from codex_core.parsing import parse


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
                    self.add("imports", self._py_imported(name), name)
            elif kind == "import_from_statement":
                module = _text(node.child_by_field_name("module_name")).replace(" ", "")
                names = node.children_by_field_name("name")
                if not names:  # from x import *
                    self.add("imports", module, node)
                for name in names:
                    imported = self._py_imported(name)
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

    def _py_imported(self, name: tree_sitter.Node) -> str:
        """The name one import clause brings in (``x`` of ``import x as y``), recording ``y`` as an
        alias of it so that calls through ``y`` resolve to ``x`` (see ``_unalias``)."""
        if name.type != "aliased_import":
            return _text(name)
        imported = _text(name.child_by_field_name("name"))
        alias = _text(name.child_by_field_name("alias"))
        if alias:
            self.aliases[alias] = imported
        return imported

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
