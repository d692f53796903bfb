"""Evaluation sets: versioned, immutable (query -> gold files/symbols) sets, hand-written or mined.

An evaluation set answers "which code should a correct answer cite?" for a list of queries. Sets
live under ``CODEX_HOME/evals/<name>/`` as ``v<version>.jsonl`` (one item per line) plus
``v<version>.manifest.json`` (repo, creation time, meta, sha256 of the items file). A version is
never rewritten: re-writing it with different items is an error, with the same items a no-op.

One module per concern, importing one way (``data`` <- ``registry`` <- ``mining`` <- ``plain``):

* :mod:`.data` -- :class:`EvalItem` (with its ``style``: ``mined`` or ``plain``), :class:`EvalSet`,
  the errors, :func:`lexical_overlap`.
* :mod:`.registry` -- :class:`EvalRegistry` (versions on disk) and JSONL import/export.
* :mod:`.mining` -- :func:`mine_eval_set` and its selection, cleaning and gold-symbol rules.
* :mod:`.plain` -- :func:`generate_plain_set`: plain where/how questions from the repository's
  docstrings, README sections and function names, with the documented code as gold.
"""

from __future__ import annotations

from codex_core.evalsets.data import (
    MINED,
    PLAIN,
    STYLES,
    EvalItem,
    EvalSet,
    EvalSetError,
    EvalSetExistsError,
    EvalSetImportError,
    EvalSetSummary,
    lexical_overlap,
)
from codex_core.evalsets.mining import (
    DEFAULT_MAX_ITEMS,
    MAX_BODY_CHARS,
    MAX_SOURCE_FILES,
    MIN_WORDS,
    MINER_VERSION,
    NON_SOURCE_DIRS,
    NON_SOURCE_NAMES,
    SOURCE_LANGUAGES,
    _Commit,
    _message_reason,
    clean_message,
    is_source_path,
    mine_eval_set,
)
from codex_core.evalsets.plain import DEFAULT_MAX_PLAIN_ITEMS, GENERATOR_VERSION, generate_plain_set
from codex_core.evalsets.registry import EvalRegistry, parse_jsonl

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_PLAIN_ITEMS",
    "GENERATOR_VERSION",
    "MINED",
    "PLAIN",
    "STYLES",
    "generate_plain_set",
    "MAX_BODY_CHARS",
    "MAX_SOURCE_FILES",
    "MINER_VERSION",
    "MIN_WORDS",
    "NON_SOURCE_DIRS",
    "NON_SOURCE_NAMES",
    "SOURCE_LANGUAGES",
    "EvalItem",
    "EvalRegistry",
    "EvalSet",
    "EvalSetError",
    "EvalSetExistsError",
    "EvalSetImportError",
    "EvalSetSummary",
    "_Commit",  # tests build commits to check the exclusion rules
    "_message_reason",
    "clean_message",
    "is_source_path",
    "lexical_overlap",
    "mine_eval_set",
    "parse_jsonl",
]
