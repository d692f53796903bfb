"""Code graph, stage 2a -- the repository indexes and where each import lands.

:class:`ImportResolver` indexes the repository's definitions and files (Python module names and
package roots, Java files by class name, Rust workspace crates) and resolves ``imports`` edges
per language: Python dotted and relative modules, JS/TS specifiers, Go import paths, Java
fully-qualified names, Rust ``use`` paths. :meth:`ImportResolver.note` records what each file
brought in (imported files, names and module aliases, resolved bases) for the ``calls`` and
``inherits`` resolution built on top of it in :mod:`.resolve`. The rules are listed in
:func:`codex_core.graph.resolve.resolve_edges`.
"""

from __future__ import annotations

import posixpath
import sys
from collections import defaultdict
from collections.abc import Sequence

from codex_core.graph.syntax import _FAMILY, MODULE, _module_stem
from codex_core.languages import detect_language
from codex_core.models import Definition, Edge

_JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_JS_FAMILY = frozenset({"javascript", "typescript", "tsx"})
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


class ImportResolver:
    """Repository indexes, import resolution and what each file imported (filled by :meth:`note`)."""

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
