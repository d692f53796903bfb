"""Code graph, stage 2 -- resolution: raw edge targets looked up across the repository.

:func:`resolve_edges` resolves imports first (:class:`.resolve_imports.ImportResolver`), then
``inherits`` and ``calls`` (this module: ``self``/``super`` chains through resolved bases, the
file, package and imports tiers, qualified names, a unique repo-wide match).

Resolution (see :func:`resolve_edges`) rewrites ``to_symbol`` to the target's qualified name
and sets ``to_path`` when the target is a definition in the repository, or ``<module>`` when an
import's target is a whole file. Anything external or ambiguous keeps its raw name.
"""

from __future__ import annotations

import builtins
import posixpath
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from codex_core.graph.resolve_imports import _JS_FAMILY, ImportResolver, _External
from codex_core.graph.syntax import _FAMILY, MODULE
from codex_core.models import Definition, Edge

# Receivers that mean "the enclosing class" (``super`` means "its bases").
_SELF_WORDS = frozenset({"self", "this", "cls", "super", "Self"})
# Definition kinds that can be called but never hold methods or be inherited from.
_CALLABLE_KINDS = frozenset({"function", "method"})
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


class _Resolver(ImportResolver):
    """Resolves one edge at a time: imports by the inherited rules, calls and inherits here."""

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
