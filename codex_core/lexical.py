"""Code-aware lexical search: identifiers split on camelCase / snake_case, BM25 via bm25s."""

from __future__ import annotations

import re
from collections.abc import Sequence

import bm25s
import numpy as np

_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

STOPWORDS = frozenset(
    """a an the is are was were be been of to in on at by for from with as and or not no this that these
    those it its how what where why which who when does do did can could should would will i we you they
    my our your me us there here into about than then so if else any all some get gets set sets
    function functions method methods class classes file files code implemented implementation
    implement defined define definition happens happen work works handled handle handles""".split()
)


def stem(word: str) -> str:
    """A deliberately tiny suffix stripper: retries/retrying -> retry, parses/parsed/parsing -> pars."""
    if len(word) <= 4:
        return word
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def code_tokens(text: str) -> list[str]:
    """Lower-cased, stemmed tokens; identifiers yield their parts and (if compound) themselves."""
    tokens: list[str] = []
    for word in _WORD_RE.findall(text):
        parts = [p for chunk in word.split("_") for p in _CAMEL_RE.findall(chunk)]
        lowered = [p.lower() for p in parts if len(p) > 1 or p.isdigit()]
        tokens.extend(stem(p) for p in lowered if p not in STOPWORDS)
        if len(lowered) > 1:
            tokens.append(word.lower())
    return tokens


class LexicalIndex:
    """BM25 over documents given as strings. ``search`` returns (doc index, score) best first."""

    def __init__(self, documents: Sequence[str], *, tokens: Sequence[list[str] | None] | None = None):
        """``tokens[i]``, when given and not None, is ``code_tokens(documents[i])`` computed earlier."""
        self.size = len(documents)
        self._bm25 = bm25s.BM25()
        known = tokens or [None] * len(documents)
        self.tokens = [t if t is not None else code_tokens(doc) for doc, t in zip(documents, known, strict=True)]
        corpus = [t or ["\u2205"] for t in self.tokens]
        if corpus:
            self._bm25.index(corpus, show_progress=False)
        self._vocab = set(self._bm25.vocab_dict) if corpus else set()

    def scores(self, query: str) -> np.ndarray | None:
        """BM25 score of every document (None when no query term is in the vocabulary)."""
        terms = [t for t in code_tokens(query) if t in self._vocab]
        if not terms or not self.size:
            return None
        return np.asarray(self._bm25.get_scores(terms), dtype=np.float32)

    def search(self, query: str, k: int = 50, *, scores: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``k`` best documents; ``scores`` from :meth:`scores` when the caller already has them."""
        scores = self.scores(query) if scores is None else scores
        if scores is None:
            return []
        k = min(k, self.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]
