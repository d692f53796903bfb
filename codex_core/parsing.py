"""Tree-sitter parsing and definition extraction with qualified names.

Qualified-name rule (graph building, chunking and serving all rely on it): the names of the
enclosing definitions inside the file joined by ``"."`` from outermost to innermost, with no
module or path prefix — ``Outer.Inner.method``, ``outer.inner``, ``Receiver.Method`` (Go),
``Type.method`` (Rust impl and trait blocks), ``Class.Class`` (a Java constructor).

Line numbers are 1-based and inclusive, and always index ``text.split("\\n")``: tree-sitter
counts rows on ``"\\n"`` bytes only, so rows line up with that split even for ``"\\r\\n"`` files.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import tree_sitter

from codex_core.languages import PARSED_LANGUAGES
from codex_core.models import Definition

# language -> (module, function returning the grammar's language pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "java": ("tree_sitter_java", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "markdown": ("tree_sitter_markdown", "language"),
}


@cache
def _language(language: str) -> tree_sitter.Language | None:
    if language not in PARSED_LANGUAGES or language not in _GRAMMARS:
        return None
    module_name, function_name = _GRAMMARS[language]
    module = importlib.import_module(module_name)
    return tree_sitter.Language(getattr(module, function_name)())


# A tree-sitter parser is stateful and not safe to share between threads (serving answers
# requests on a thread pool), so each thread keeps its own parser per language.
_thread_parsers = threading.local()


def get_parser(language: str) -> tree_sitter.Parser | None:
    """This thread's cached parser for ``language``, or None when it has no grammar here."""
    lang = _language(language)
    if lang is None:
        return None
    parsers: dict[str, tree_sitter.Parser] = _thread_parsers.__dict__.setdefault("by_language", {})
    parser = parsers.get(language)
    if parser is None:
        parser = parsers[language] = tree_sitter.Parser(lang)
    return parser


def parse(language: str, text: str) -> tree_sitter.Tree | None:
    """Parse ``text``; None when the language has no grammar or the parser gives up.

    Tree-sitter recovers from syntax errors, so a broken file still yields a (partial) tree.
    """
    parser = get_parser(language)
    if parser is None:
        return None
    # "replace" keeps lone surrogates from raising; it never adds or removes a newline, so
    # rows still match text.split("\n").
    data = text.encode("utf-8", errors="replace")
    try:
        return parser.parse(data)
    except (ValueError, RuntimeError):
        return None


def start_line(node: tree_sitter.Node) -> int:
    """1-based line on which ``node`` starts."""
    return node.start_point.row + 1


def end_line(node: tree_sitter.Node) -> int:
    """1-based line of the last character of ``node``.

    A node that ends at column 0 of a later row (it swallowed a trailing newline) really ends
    on the row before.
    """
    end = node.end_point
    if end.column == 0 and end.row > node.start_point.row:
        return end.row
    return end.row + 1


def node_text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


@dataclass(frozen=True)
class DefinitionNode:
    """A definition and the definitions nested directly inside it."""

    definition: Definition
    children: tuple[DefinitionNode, ...] = ()


# ---------------------------------------------------------------------------------------------
# Per-language recognisers. Each looks at one node in its context and says whether it defines
# something: ``_Found(name, kind, outer, body_context)``. ``outer`` is the node whose span is
# the definition's span (a decorator or ``export`` wrapper included); the walk continues into
# the node's children with the new prefix either way.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    name: str
    kind: str
    outer: tree_sitter.Node
    # What the children of this definition sit in: "class", "function", "impl", "module", ...
    context: str
    # Name pushed onto the prefix for nested definitions (Rust impl: the type name).
    prefix: str | None = None


_Recogniser = Callable[[tree_sitter.Node, str], "_Found | None"]


def _field_text(node: tree_sitter.Node, field: str) -> str | None:
    child = node.child_by_field_name(field)
    if child is None:
        return None
    text = node_text(child).strip()
    return text or None


def _wrapped(node: tree_sitter.Node, wrappers: frozenset[str]) -> tree_sitter.Node:
    """The outermost wrapper (decorator list, ``export``) directly around ``node``."""
    outer = node
    while outer.parent is not None and outer.parent.type in wrappers:
        outer = outer.parent
    return outer


_PY_WRAPPERS = frozenset({"decorated_definition"})


def _python(node: tree_sitter.Node, context: str) -> _Found | None:
    if node.type == "class_definition":
        name = _field_text(node, "name")
        return _Found(name, "class", _wrapped(node, _PY_WRAPPERS), "class") if name else None
    if node.type == "function_definition":
        name = _field_text(node, "name")
        if not name:
            return None
        kind = "method" if context == "class" else "function"
        return _Found(name, kind, _wrapped(node, _PY_WRAPPERS), "function")
    return None


_JS_WRAPPERS = frozenset({"export_statement"})
_JS_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_JS_SIMPLE = {
    "function_declaration": ("function", "function"),
    "generator_function_declaration": ("function", "function"),
    "class_declaration": ("class", "class"),
    "abstract_class_declaration": ("class", "class"),
    "interface_declaration": ("interface", "interface"),
    "type_alias_declaration": ("type", "type"),
    "enum_declaration": ("enum", "enum"),
    "internal_module": ("namespace", "module"),
}


def _js(node: tree_sitter.Node, context: str) -> _Found | None:
    simple = _JS_SIMPLE.get(node.type)
    if simple is not None:
        name = _field_text(node, "name")
        if not name:
            return None
        kind, inner = simple
        return _Found(name, kind, _wrapped(node, _JS_WRAPPERS), inner)
    if node.type == "method_definition" and context == "class":
        name = _field_text(node, "name")
        return _Found(name, "method", node, "function") if name else None
    if node.type in ("field_definition", "public_field_definition") and context == "class":
        value = node.child_by_field_name("value")
        name = _field_text(node, "name") or _field_text(node, "property")
        if name and value is not None and value.type in _JS_FUNCTION_VALUES:
            return _Found(name, "method", node, "function")
        return None
    if node.type == "variable_declarator":
        return _js_variable(node)
    return None


def _js_variable(node: tree_sitter.Node) -> _Found | None:
    """``const name = () => ...`` / ``= function ...`` / ``= class ...``."""
    name_node = node.child_by_field_name("name")
    value = node.child_by_field_name("value")
    if name_node is None or value is None or name_node.type != "identifier":
        return None
    if value.type in _JS_FUNCTION_VALUES:
        kind, context = "function", "function"
    elif value.type == "class":
        kind, context = "class", "class"
    else:
        return None
    declaration = node.parent
    # The whole statement (with ``export``) when it declares only this name.
    outer = node
    if declaration is not None and declaration.type in ("lexical_declaration", "variable_declaration"):
        if len([c for c in declaration.named_children if c.type == "variable_declarator"]) == 1:
            outer = _wrapped(declaration, _JS_WRAPPERS)
    return _Found(node_text(name_node), kind, outer, context)


def _go_receiver_type(node: tree_sitter.Node) -> str | None:
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return None
    for param in receiver.named_children:
        if param.type != "parameter_declaration":
            continue
        type_node = param.child_by_field_name("type")
        while type_node is not None and type_node.type in (
            "pointer_type",
            "generic_type",
            "parenthesized_type",
        ):
            inner = type_node.child_by_field_name("type")
            if inner is None:
                inner = next(iter(type_node.named_children), None)
            type_node = inner
        if type_node is not None:
            return node_text(type_node).strip() or None
    return None


def _go(node: tree_sitter.Node, context: str) -> _Found | None:
    if node.type == "function_declaration":
        name = _field_text(node, "name")
        return _Found(name, "function", node, "function") if name else None
    if node.type == "method_declaration":
        name = _field_text(node, "name")
        if not name:
            return None
        receiver = _go_receiver_type(node)
        return _Found(name, "method", node, "function", prefix=f"{receiver}.{name}" if receiver else None)
    if node.type in ("type_spec", "type_alias"):
        name = _field_text(node, "name")
        if not name:
            return None
        type_node = node.child_by_field_name("type")
        kind = "type"
        if node.type == "type_spec" and type_node is not None:
            kind = {"struct_type": "struct", "interface_type": "interface"}.get(type_node.type, "type")
        outer = node
        parent = node.parent
        if parent is not None and parent.type == "type_declaration":
            specs = [c for c in parent.named_children if c.type in ("type_spec", "type_alias")]
            if len(specs) == 1:
                outer = parent
        return _Found(name, kind, outer, "type")
    return None


_JAVA_TYPES = {
    "class_declaration": "class",
    "interface_declaration": "interface",
    "annotation_type_declaration": "interface",
    "enum_declaration": "enum",
    "record_declaration": "record",
}


def _java(node: tree_sitter.Node, context: str) -> _Found | None:
    kind = _JAVA_TYPES.get(node.type)
    if kind is not None:
        name = _field_text(node, "name")
        return _Found(name, kind, node, "class") if name else None
    if node.type == "method_declaration":
        name = _field_text(node, "name")
        return _Found(name, "method", node, "function") if name else None
    if node.type in ("constructor_declaration", "compact_constructor_declaration"):
        name = _field_text(node, "name")
        return _Found(name, "method", node, "function") if name else None
    return None


def _rust_type_name(type_node: tree_sitter.Node | None) -> str | None:
    """``&mut foo::Bar<T>`` -> ``Bar``: the implementing type without path or generics."""
    while type_node is not None:
        if type_node.type in ("type_identifier", "primitive_type", "identifier"):
            return node_text(type_node).strip() or None
        if type_node.type == "scoped_type_identifier":
            type_node = type_node.child_by_field_name("name")
        elif type_node.type in ("reference_type", "pointer_type", "generic_type"):
            type_node = type_node.child_by_field_name("type")
        else:
            text = node_text(type_node).strip()
            return text.split("<", 1)[0].split("::")[-1].strip() or None
    return None


_RUST_WRAPPER_ATTRIBUTES = frozenset({"attribute_item"})


def _rust_outer_start(node: tree_sitter.Node) -> tree_sitter.Node:
    """The first of the ``#[...]`` attributes directly above ``node`` (or ``node`` itself)."""
    first = node
    sibling = node.prev_named_sibling
    while sibling is not None and sibling.type in _RUST_WRAPPER_ATTRIBUTES:
        first = sibling
        sibling = sibling.prev_named_sibling
    return first


_RUST_TYPES = {"struct_item": "struct", "enum_item": "enum", "trait_item": "trait", "mod_item": "module"}


def _rust(node: tree_sitter.Node, context: str) -> _Found | None:
    if node.type in ("function_item", "function_signature_item"):
        name = _field_text(node, "name")
        if not name:
            return None
        kind = "method" if context in ("impl", "trait") else "function"
        return _Found(name, kind, node, "function")
    kind = _RUST_TYPES.get(node.type)
    if kind is not None:
        name = _field_text(node, "name")
        if not name:
            return None
        context_for = {"trait": "trait", "module": "module"}.get(kind, "type")
        return _Found(name, kind, node, context_for)
    if node.type == "impl_item":
        name = _rust_type_name(node.child_by_field_name("type"))
        return _Found(name, "impl", node, "impl") if name else None
    return None


_RECOGNISERS: dict[str, _Recogniser] = {
    "python": _python,
    "javascript": _js,
    "typescript": _js,
    "tsx": _js,
    "go": _go,
    "java": _java,
    "rust": _rust,
}


# Subtrees that never contain a definition; skipping them keeps the walk cheap.
_SKIP = frozenset(
    {
        "comment",
        "line_comment",
        "block_comment",
        "string",
        "string_literal",
        "raw_string_literal",
        "interpreted_string_literal",
        "template_string",
        "regex",
        "integer",
        "float",
        "number",
        "identifier",
        "type_identifier",
        "field_identifier",
        "property_identifier",
        "attribute_item",
        "token_tree",
    }
)


@dataclass
class _Builder:
    definition: Definition
    start_byte: int
    children: list[_Builder]

    def order(self) -> tuple[int, int, int]:
        return (self.definition.start_line, -self.definition.end_line, self.start_byte)


def _freeze(roots: list[_Builder]) -> list[DefinitionNode]:
    """Immutable, line-ordered nodes; iterative, as generated code can nest thousands deep."""
    frozen: dict[int, DefinitionNode] = {}
    stack: list[tuple[_Builder, bool]] = [(b, False) for b in roots]
    while stack:
        builder, children_done = stack.pop()
        if children_done:
            kids = sorted(builder.children, key=_Builder.order)
            frozen[id(builder)] = DefinitionNode(builder.definition, tuple(frozen.pop(id(k)) for k in kids))
        else:
            stack.append((builder, True))
            stack.extend((child, False) for child in builder.children)
    return [frozen[id(b)] for b in sorted(roots, key=_Builder.order)]


def definition_tree(
    path: str, language: str, text: str, *, tree: tree_sitter.Tree | None = None
) -> list[DefinitionNode]:
    """Top-level definitions of the file, each with its nested definitions, in line order.

    Pass ``tree`` when the caller already parsed ``text`` with ``parse(language, text)``.
    """
    recognise = _RECOGNISERS.get(language)
    if recognise is None:
        return []
    if tree is None:
        tree = parse(language, text)
    if tree is None:
        return []
    roots: list[_Builder] = []
    # (node, qualified prefix, context, list receiving definitions found below node)
    stack: list[tuple[tree_sitter.Node, tuple[str, ...], str, list[_Builder]]] = [
        (child, (), "module", roots) for child in reversed(tree.root_node.children)
    ]
    while stack:
        node, prefix, context, sink = stack.pop()
        if node.type in _SKIP or not node.is_named:
            continue
        found = recognise(node, context)
        if found is not None:
            first = _rust_outer_start(node) if language == "rust" else found.outer
            child_prefix = (*prefix, found.prefix or found.name)
            definition = Definition(
                symbol=".".join(child_prefix),
                name=found.name,
                kind=found.kind,
                path=path,
                language=language,
                start_line=start_line(first),
                end_line=max(end_line(found.outer), end_line(node)),
            )
            builder = _Builder(definition, node.start_byte, [])
            sink.append(builder)
            stack.extend((c, child_prefix, found.context, builder.children) for c in reversed(node.children))
        else:
            stack.extend((c, prefix, context, sink) for c in reversed(node.children))
    return _freeze(roots)


def flatten(nodes: list[DefinitionNode] | tuple[DefinitionNode, ...]) -> list[Definition]:
    """Every definition in ``nodes`` and below, sorted by (start_line, -end_line)."""
    # Pre-order then a stable sort: among definitions on the same lines, an enclosing one
    # comes first and siblings keep their source order.
    out: list[Definition] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        out.append(node.definition)
        stack.extend(reversed(node.children))
    out.sort(key=lambda d: (d.start_line, -d.end_line))
    return out


def definitions(path: str, language: str, text: str) -> list[Definition]:
    """Every definition in the file with its qualified name, sorted by (start_line, -end_line).

    Markdown and languages without a grammar have none.
    """
    return flatten(definition_tree(path, language, text))


_COMMENT_TYPES = {
    "python": ("comment",),
    "javascript": ("comment",),
    "typescript": ("comment",),
    "tsx": ("comment",),
    "go": ("comment",),
    "java": ("line_comment", "block_comment"),
    "rust": ("line_comment", "block_comment"),
}


@cache
def _comment_query(language: str) -> tree_sitter.Query | None:
    lang = _language(language)
    types = _COMMENT_TYPES.get(language)
    if lang is None or not types:
        return None
    return tree_sitter.Query(lang, "[" + " ".join(f"({t})" for t in types) + "] @comment")


def comment_only_lines(language: str, tree: tree_sitter.Tree, lines: list[str]) -> set[int]:
    """1-based lines holding nothing but (part of) a comment — doc comments, licence blocks."""
    query = _comment_query(language)
    if query is None:
        return set()
    found: set[int] = set()
    captures = tree_sitter.QueryCursor(query).captures(tree.root_node)
    for node in captures.get("comment", []):
        first, last = node.start_point, node.end_point
        last_row = end_line(node) - 1  # a comment swallowing its newline ends on the row before
        for row in range(first.row, min(last_row + 1, len(lines))):
            raw = lines[row].encode("utf-8", errors="replace")
            before = raw[: first.column] if row == first.row else b""
            after = raw[last.column :] if row == last.row else b""
            if not before.strip() and not after.strip():
                found.add(row + 1)
    return found
