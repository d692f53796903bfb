"""Evaluation sets, storage: the versioned registry and hand-written JSONL import/export.

An evaluation set answers "which code should a correct answer cite?" for a list of queries. Sets
live under ``CODEX_HOME/evals/<name>/`` as ``v<version>.jsonl`` (one item per line) plus
``v<version>.manifest.json`` (repo, creation time, meta, sha256 of the items file). A version is
never rewritten: re-writing it with different items is an error, with the same items a no-op.

:class:`EvalRegistry` keeps the versions; :func:`parse_jsonl` validates a hand-written file.
"""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from codex_core.evalsets.data import (
    STYLES,
    EvalItem,
    EvalSet,
    EvalSetError,
    EvalSetExistsError,
    EvalSetImportError,
    EvalSetSummary,
    _items_bytes,
    _now,
    _sha256,
    lexical_overlap,
)
from codex_core.fsio import file_lock, write_bytes_atomic, write_json_atomic
from codex_core.home import is_valid_name

_VERSION_FILE_RE = re.compile(r"^v(\d+)\.manifest\.json$")


def _validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise EvalSetError(
            f"invalid eval set name {name!r}: use 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit"
        )
    return name


class EvalRegistry:
    """Versioned evaluation sets under ``root`` (normally ``CODEX_HOME/evals``).

    Layout: ``<root>/<name>/v<N>.jsonl`` + ``<root>/<name>/v<N>.manifest.json``. The manifest is
    written last, so a version exists exactly when its manifest does; ``get`` re-checks the items
    file against the manifest's sha256. Writers of one set are serialised with a lock file.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- paths ------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / _validate_name(name)

    def items_path(self, name: str, version: int) -> Path:
        return self._dir(name) / f"v{int(version)}.jsonl"

    def manifest_path(self, name: str, version: int) -> Path:
        return self._dir(name) / f"v{int(version)}.manifest.json"

    def _lock(self, name: str) -> AbstractContextManager[None]:
        return file_lock(self._dir(name) / ".lock")

    # -- reading ----------------------------------------------------------------------------

    def versions(self, name: str) -> list[int]:
        directory = self._dir(name)
        if not directory.is_dir():
            return []
        found = (_VERSION_FILE_RE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_version(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def next_version(self, name: str) -> int:
        versions = self.versions(name)
        return (versions[-1] + 1) if versions else 1

    def _manifest(self, name: str, version: int) -> dict[str, Any]:
        path = self.manifest_path(name, version)
        if not path.exists():
            known = self.versions(name)
            hint = f"known versions: {known}" if known else "no versions exist (mine or import one first)"
            raise KeyError(f"eval set {name!r} v{version} does not exist under {self.root}; {hint}")
        return json.loads(path.read_text())

    def get(self, name: str, version: int | None = None) -> EvalSet:
        """The stored set; the latest version when ``version`` is None."""
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise KeyError(f"eval set {name!r} does not exist under {self.root} (mine or import one first)")
            version = versions[-1]
        manifest = self._manifest(name, version)
        data = self.items_path(name, version).read_bytes()
        if _sha256(data) != manifest["items_sha256"]:
            raise EvalSetError(
                f"{self.items_path(name, version)} does not match the sha256 in its manifest: the file was "
                "modified after it was written. Eval sets are immutable; restore it or write a new version."
            )
        items = [EvalItem.from_dict(json.loads(line)) for line in data.decode("utf-8").splitlines() if line.strip()]
        return EvalSet(
            name=name,
            version=version,
            repo=manifest["repo"],
            items=items,
            created_at=manifest["created_at"],
            meta=manifest.get("meta") or {},
        )

    def list(self) -> list[EvalSetSummary]:
        """Every stored version of every set, by name then version."""
        if not self.root.is_dir():
            return []
        out = []
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir() and is_valid_name(p.name)):
            for version in self.versions(directory.name):
                m = self._manifest(directory.name, version)
                out.append(
                    EvalSetSummary(
                        name=directory.name,
                        version=version,
                        repo=m["repo"],
                        n_items=int(m["n_items"]),
                        created_at=m["created_at"],
                        items_sha256=m["items_sha256"],
                    )
                )
        return out

    # -- writing ----------------------------------------------------------------------------

    def add(self, evalset: EvalSet) -> EvalSet:
        """Store ``evalset`` and return it with its version.

        With ``version=None`` the set gets ``next_version`` — unless the latest stored version
        already holds the same items for the same repo, which is returned instead (re-running a
        miner on an unchanged repository does not pile up identical versions). With an explicit
        version, an existing version with identical items is a no-op and different items raise
        ``EvalSetExistsError``.
        """
        _validate_name(evalset.name)
        _check_items(evalset.items)
        data = _items_bytes(evalset.items)
        digest = _sha256(data)
        with self._lock(evalset.name):
            version = evalset.version
            if version is None:
                versions = self.versions(evalset.name)
                if versions:
                    latest = self._manifest(evalset.name, versions[-1])
                    if latest["items_sha256"] == digest and latest["repo"] == evalset.repo:
                        return self.get(evalset.name, versions[-1])
                version = (versions[-1] + 1) if versions else 1
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise EvalSetError(f"eval set versions are integers >= 1, got {version!r}")
            manifest_path = self.manifest_path(evalset.name, version)
            if manifest_path.exists():
                existing = json.loads(manifest_path.read_text())
                if existing["items_sha256"] == digest:
                    return self.get(evalset.name, version)
                raise EvalSetExistsError(
                    f"eval set {evalset.name!r} v{version} already exists with different items "
                    f"(stored sha256 {existing['items_sha256'][:12]}, new {digest[:12]}). Eval sets are immutable: "
                    f"write it as a new version (next is v{self.next_version(evalset.name)})."
                )
            write_bytes_atomic(self.items_path(evalset.name, version), data)
            manifest = {
                "name": evalset.name,
                "version": version,
                "repo": evalset.repo,
                "created_at": evalset.created_at,
                "n_items": len(evalset.items),
                "items_file": self.items_path(evalset.name, version).name,
                "items_sha256": digest,
                "meta": evalset.meta,
            }
            write_json_atomic(manifest_path, manifest, indent=2, sort_keys=True)
            return replace(evalset, version=version)

    def write(self, evalset: EvalSet) -> Path:
        """Store ``evalset`` (see ``add``) and return the path of its items file."""
        stored = self.add(evalset)
        assert stored.version is not None
        return self.items_path(stored.name, stored.version)

    # -- JSONL ------------------------------------------------------------------------------

    def import_jsonl(self, path: Path, name: str, repo: str) -> EvalSet:
        """Read a hand-written JSONL file into a new version of ``name`` (see ``parse_jsonl``)."""
        path = Path(path)
        items = parse_jsonl(path)
        evalset = EvalSet(
            name=_validate_name(name),
            version=None,
            repo=repo,
            items=items,
            created_at=_now(),
            meta={"imported_from": str(path.resolve()), "source_sha256": _sha256(path.read_bytes())},
        )
        return self.add(evalset)

    def export_jsonl(self, name: str, version: int | None, path: Path) -> Path:
        """Write the items of a stored version to ``path`` as JSONL (re-importable as is)."""
        evalset = self.get(name, version)
        write_bytes_atomic(Path(path), _items_bytes(evalset.items))
        return Path(path)


def _check_items(items: list[EvalItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.style not in STYLES:
            raise EvalSetError(f"item {item.id!r} has style {item.style!r}; expected one of {list(STYLES)}")
        if item.id in seen:
            raise EvalSetError(f"duplicate item id {item.id!r}: ids must be unique within an eval set")
        seen.add(item.id)


_ALLOWED_KEYS = frozenset({"id", "query", "gold_files", "gold_symbols", "source", "lexical_overlap", "style"})


def parse_jsonl(path: Path) -> list[EvalItem]:
    """Validated items from a JSONL file; raises ``EvalSetImportError`` listing every bad line.

    Each non-blank line is an object with ``query`` (non-empty string) and ``gold_files``
    (non-empty list of repository-relative paths); optional ``gold_symbols`` (``"path::Name"``,
    the path being one of the gold files), ``id`` (default: 12 hex digits of the sha256 of the
    query and gold files) and ``source`` (default ``"hand"``). ``lexical_overlap`` is always
    recomputed.
    """
    errors: list[tuple[int, str]] = []
    items: list[EvalItem] = []
    ids: dict[str, int] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalSetImportError(Path(path), [(1, f"not UTF-8 text ({exc.reason})")]) from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append((lineno, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        problem = _row_problem(row)
        if problem:
            errors.append((lineno, problem))
            continue
        gold_files = list(row["gold_files"])
        item_id = row.get("id") or _sha256(json.dumps([row["query"], gold_files]).encode())[:12]
        if item_id in ids:
            errors.append((lineno, f"duplicate id {item_id!r} (first on line {ids[item_id]})"))
            continue
        ids[item_id] = lineno
        gold_symbols = list(row.get("gold_symbols") or [])
        items.append(
            EvalItem(
                id=item_id,
                query=row["query"].strip(),
                gold_files=gold_files,
                gold_symbols=gold_symbols,
                source=row.get("source") or "hand",
                lexical_overlap=lexical_overlap(row["query"], gold_files, gold_symbols),
                style=row.get("style") or "plain",
            )
        )
    if not items and not errors:
        errors.append((1, "the file holds no items"))
    if errors:
        raise EvalSetImportError(Path(path), errors)
    return items


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    unknown = sorted(set(row) - _ALLOWED_KEYS)
    if unknown:
        return f"unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}"
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        return '"query" must be a non-empty string'
    files = row.get("gold_files")
    if not isinstance(files, list) or not files:
        return '"gold_files" must be a non-empty list of paths'
    for f in files:
        if not isinstance(f, str) or not f.strip() or f.startswith("/") or ".." in PurePosixPath(f).parts:
            return f'"gold_files" entries must be repository-relative paths, got {f!r}'
    symbols = row.get("gold_symbols", [])
    if symbols is None:
        symbols = []
    if not isinstance(symbols, list):
        return '"gold_symbols" must be a list of "path::Qualified.name" strings'
    for s in symbols:
        if not isinstance(s, str) or "::" not in s:
            return f'"gold_symbols" entries look like "path::Qualified.name", got {s!r}'
        sym_path, _, qualified = s.rpartition("::")
        if not qualified or sym_path not in files:
            return f'gold symbol {s!r} must name one of the gold files before "::" and a symbol after it'
    if "id" in row and (not isinstance(row["id"], str) or not row["id"].strip()):
        return '"id" must be a non-empty string'
    if "source" in row and not isinstance(row["source"], str):
        return '"source" must be a string'
    if "style" in row and row["style"] not in STYLES:
        return f'"style" must be one of {list(STYLES)}, got {row["style"]!r}'
    return None
