"""Code graph, shared vocabulary: the tree-sitter node types and name readers of each language.

Which node types declare a definition or carry an edge per language family, and the helpers
that read a dotted chain of plain names (``a.b.c``), a Java or Rust type name, Rust ``use``
trees and a Go method's receiver out of a syntax tree. Extraction (:mod:`.extract`) walks trees
with these; resolution (:mod:`.resolve_imports`) reuses the language families and
:func:`_module_stem`. Nothing here reads files or holds state.
"""

from __future__ import annotations

import tree_sitter

MODULE = "<module>"
EDGE_TYPES = ("calls", "imports", "inherits")
GRAPH_LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "java", "rust")


def _text(node: tree_sitter.Node | None) -> str:
    if node is None:
        return ""
    return (node.text or b"").decode("utf-8", errors="replace")


def _line(node: tree_sitter.Node) -> int:
    return node.start_point.row + 1


def _unquote(literal: str) -> str:
    return literal.strip().strip("\"'`").strip()


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
