"""Code graph: definitions plus the ``calls`` / ``imports`` / ``inherits`` edges between them.

Two stages. :func:`extract_file_graph` reads one file (tree-sitter) and records every edge with
its target *as written*; :func:`resolve_edges` then looks the targets up across the repository.
:class:`CodeGraph` answers "what is near this definition" for retrieval's graph hop, and
:func:`write_graph` / :func:`load_graph` keep the graph as two parquet files.

One module per stage, importing one way (``syntax`` <- ``extract``; ``syntax`` <-
``resolve_imports`` <- ``resolve``; ``syntax`` <- ``store``):

* :mod:`.syntax` -- the per-language tree-sitter vocabulary shared by the stages.
* :mod:`.extract` -- stage 1, one file's definitions and raw edges (the edge rules).
* :mod:`.resolve_imports` -- the repository indexes and where each import lands.
* :mod:`.resolve` -- stage 2, :func:`resolve_edges` (the resolution rules), calls and inherits.
* :mod:`.store` -- stage 3, the parquet files and the :class:`CodeGraph` queries.

Resolution rewrites ``to_symbol`` to the target's qualified name and sets ``to_path`` when the
target is a definition in the repository, or ``<module>`` when an import's target is a whole
file. Anything external or ambiguous keeps its raw name.
"""

from __future__ import annotations

from codex_core.graph.extract import extract_file_graph
from codex_core.graph.resolve import resolve_edges
from codex_core.graph.store import DEFINITIONS_FILE, EDGES_FILE, CodeGraph, Node, load_graph, write_graph
from codex_core.graph.syntax import EDGE_TYPES, GRAPH_LANGUAGES, MODULE

__all__ = [
    "DEFINITIONS_FILE",
    "EDGES_FILE",
    "EDGE_TYPES",
    "GRAPH_LANGUAGES",
    "MODULE",
    "CodeGraph",
    "Node",
    "extract_file_graph",
    "load_graph",
    "resolve_edges",
    "write_graph",
]
