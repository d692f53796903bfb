"""Code graph, stage 3 -- storage and queries: the two parquet files and :class:`CodeGraph`.

:func:`write_graph` / :func:`load_graph` keep a resolved graph as ``definitions.parquet`` and
``edges.parquet``; :class:`CodeGraph` answers "what is near this definition" (callers, callees,
importers, bases, ...) for retrieval's graph hop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codex_core.fsio import replace_all
from codex_core.graph.syntax import EDGE_TYPES, MODULE
from codex_core.models import Definition, Edge

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
        self._file_degrees: dict[str, int] | None = None
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

    def file_degree(self, path: str) -> int:
        """How many other files this file's code is linked to, either direction (a centrality prior)."""
        if self._file_degrees is None:
            linked: dict[str, set[str]] = defaultdict(set)
            for node, others in self._adjacent.items():
                linked[node[0]].update(other[0] for other in others if other[0] != node[0])
            self._file_degrees = {p: len(files) for p, files in linked.items()}
        return self._file_degrees.get(path, 0)

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
    definition_table = pa.Table.from_pylist([asdict(d) for d in definitions], schema=_DEFINITION_SCHEMA)
    edge_table = pa.Table.from_pylist([asdict(e) for e in edges], schema=_EDGE_SCHEMA)
    # Both written before either is replaced, edges.parquet last: readers reload on its stamp.
    replace_all({
        directory / DEFINITIONS_FILE: lambda tmp: pq.write_table(definition_table, tmp),
        directory / EDGES_FILE: lambda tmp: pq.write_table(edge_table, tmp),
    })


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
