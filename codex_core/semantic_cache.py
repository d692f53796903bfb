"""Semantic answer cache: a question close enough in meaning to a recent one, asked of exactly the same
indexed code, gets that question's verified answer back without retrieval or a model call.

**Scope** (:class:`CacheScope`): an entry is reachable only by a request with the same tenant, the same
set of repositories searched, each at the same commit *and* index version, the same ``top_k`` and the
same retrieval configuration (a value: canary arms hold different ``RetrievalConfig`` objects, so a
challenger's answer is never served to a champion request, nor the reverse). Two tenants never share
an entry even when they see the same repositories: an answer is written from its question and may
echo it, and the question is that tenant's. A new published commit (or a re-index of the same
commit) makes older entries unreachable, and :meth:`SemanticCache.retain_published` evicts them.

**Match**: cosine similarity of L2-normalised query embeddings (the vector retrieval embeds anyway:
a miss costs no extra model call) at or above ``threshold``; the most similar entry wins. The
threshold is measured, not guessed: ``benchmarks/semantic_cache_bench.py`` on hand-written paraphrase
and hard-negative pairs (docs/benchmarks.md). With MiniLM, "where is X serialized" and "where is X
deserialized" are closer than most true paraphrases, so only near-repeats of a question can hit.

**Bounds**: at most ``max_entries`` entries (least recently used evicted first) and none older than
``max_age_s`` (a calibrator, a model or the config behind an answer may change without a commit).
Thread-safe: one lock; a lookup is one matrix-vector product over its scope's entries.

**What is worth re-serving** (:func:`reuse_refusal`), judged as a user who re-asks expects the
answer they would get now:

- abstentions are not stored: they are cheap to recompute, and a rephrased question, a new
  calibrator or a recovered model may well answer;
- extractive answers are not stored: no model answered (an outage, an open circuit, or a chain that
  failed verification to the end), so re-serving would keep users on the degraded answer after the
  models are back; they are cheap to recompute anyway;
- a model's "the snippets do not say", an answer that failed verification, or one that cites no
  retrieved span is not stored;
- an answer generated while the GPU governor demoted generation (smaller route, smaller budget) is
  not stored: the pressure passes, the cache would not;
- everything else — a model answer that passed the citation check and verification, including one
  written by a later model of the chain after the draft failed — is stored: it is exactly what a
  fresh request would return at best, and the most expensive answers are the ones worth reusing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_AGE_S = 3600.0
# The dot product of a float32 unit vector with itself can land a few ulps below 1.0: a threshold of 1
# must still match an exact repeat.
_ROUNDING = 1e-6


@dataclass(frozen=True)
class CacheScope:
    """Everything an answer depends on besides the question's meaning (an entry's key space)."""

    tenant: str | None
    indexes: tuple[tuple[str, str, str], ...]  # (repository, commit, index version), sorted: what was searched
    top_k: int
    config: Hashable  # the retrieval configuration as a value (equal configs answer alike)

    @classmethod
    def of(cls, *, tenant: str | None, indexes: Mapping[str, tuple[str, str]], top_k: int,
           config: Hashable) -> CacheScope:
        """``indexes``: repository -> (commit, index version) of every repository the request searches."""
        return cls(tenant, tuple(sorted((repo, c, v) for repo, (c, v) in indexes.items())), top_k, config)

    def current_in(self, published: Mapping[str, tuple[str, str]]) -> bool:
        """Whether every repository of this scope is still published at the same commit and version."""
        return all(published.get(repo) == (commit, version) for repo, commit, version in self.indexes)


@dataclass(frozen=True)
class CacheHit(Generic[T]):
    value: T
    similarity: float
    ref: str  # what the stored value refers to (serving: the trace id of the request that computed it)
    age_s: float


@dataclass
class _Entry(Generic[T]):
    scope: CacheScope
    vector: np.ndarray
    value: T
    ref: str
    stored_at: float


@dataclass
class _Group:
    """The entries of one scope and their stacked vectors (rebuilt lazily after a change)."""

    ids: list[int] = field(default_factory=list)
    matrix: np.ndarray | None = None


def _unit(vector: np.ndarray) -> np.ndarray | None:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return v / norm


def check_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"a semantic cache threshold is a cosine similarity in (0, 1], got {threshold}; "
            "set CODEX_SEMANTIC_CACHE=off to turn the cache off"
        )
    return float(threshold)


class SemanticCache(Generic[T]):
    """Bounded, thread-safe map from (scope, query embedding) to a value, matched by similarity."""

    def __init__(self, threshold: float, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_age_s: float = DEFAULT_MAX_AGE_S, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.threshold = check_threshold(threshold)
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry[T]] = OrderedDict()  # least recently used first
        self._groups: dict[CacheScope, _Group] = {}
        self._next_id = 0
        self._published: dict[str, tuple[str, str]] | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def nearest(self, scope: CacheScope, vector: np.ndarray) -> tuple[CacheHit[T] | None, float | None]:
        """(the hit, or None; the best similarity seen in ``scope``, or None when it holds nothing)."""
        unit = _unit(vector)
        if unit is None:
            return None, None
        with self._lock:
            self._expire(scope)
            group = self._groups.get(scope)
            if group is None or not group.ids:
                return None, None
            if group.matrix is None:
                group.matrix = np.stack([self._entries[i].vector for i in group.ids])
            similarities = group.matrix @ unit
            best = int(np.argmax(similarities))
            similarity = float(similarities[best])
            if similarity < self.threshold - _ROUNDING:
                return None, similarity
            entry_id = group.ids[best]
            entry = self._entries[entry_id]
            self._entries.move_to_end(entry_id)
            age = self._clock() - entry.stored_at
            return CacheHit(entry.value, similarity, entry.ref, age), similarity

    def lookup(self, scope: CacheScope, vector: np.ndarray) -> CacheHit[T] | None:
        return self.nearest(scope, vector)[0]

    def store(self, scope: CacheScope, vector: np.ndarray, value: T, *, ref: str) -> bool:
        """Keep ``value`` for questions near ``vector`` in ``scope``; False when the vector is unusable or
        the scope is no longer published (a publish raced the request)."""
        unit = _unit(vector)
        if unit is None:
            return False
        with self._lock:
            if self._published is not None and not scope.current_in(self._published):
                return False
            entry_id = self._next_id
            self._next_id += 1
            self._entries[entry_id] = _Entry(scope, unit, value, ref, self._clock())
            group = self._groups.setdefault(scope, _Group())
            group.ids.append(entry_id)
            group.matrix = None
            while len(self._entries) > self.max_entries:
                oldest = next(iter(self._entries))
                self._drop(oldest)
            return True

    def retain_published(self, published: Mapping[str, tuple[str, str]]) -> int:
        """Evict every entry whose repositories are no longer published at the commit and version it was
        answered from (``published``: repository -> (commit, index version) of everything published).
        Cheap when nothing changed since the last call; returns how many entries were evicted."""
        with self._lock:
            if self._published == published:
                return 0
            self._published = dict(published)
            stale = [scope for scope in self._groups if not scope.current_in(self._published)]
            evicted = 0
            for scope in stale:
                for entry_id in list(self._groups[scope].ids):
                    self._drop(entry_id)
                    evicted += 1
            return evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._groups.clear()

    def _expire(self, scope: CacheScope) -> None:
        group = self._groups.get(scope)
        if group is None:
            return
        cutoff = self._clock() - self.max_age_s
        for entry_id in [i for i in group.ids if self._entries[i].stored_at < cutoff]:
            self._drop(entry_id)

    def _drop(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        group = self._groups[entry.scope]
        group.ids.remove(entry_id)
        group.matrix = None
        if not group.ids:
            del self._groups[entry.scope]


def reuse_refusal(*, abstained: bool, generation: Any | None, cited: bool, demoted: bool) -> str | None:
    """Why an answer must not be re-served to other questions (None: it may be). ``generation`` is the
    :class:`codex_core.llm.GenerationResult` (None when no model was asked); ``cited``: the answer cites
    at least one retrieved span; ``demoted``: generation ran under the GPU governor's demotion. The
    rules are in the module docstring."""
    if abstained or generation is None:
        return "abstained"
    if generation.extractive:
        return "extractive"
    if getattr(generation, "abstained", False):
        return "the model said the snippets do not answer it"
    verification = getattr(generation, "verification", None)
    if verification is not None and not verification.get("ok", False):
        return "failed verification"
    if not cited:
        return "cites no retrieved span"
    if demoted:
        return "generated under GPU demotion"
    return None
