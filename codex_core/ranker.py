"""A file ranker learned per repository from its own history (learning to rank, pointwise).

The hand-set pipeline (dense + lexical chunks fused by RRF, path penalties, file evidence) ranks
files by rules tuned on a few repositories. Each repository's history says which files its commit
messages were about: a logistic model over the signals the pipeline already computes, fitted on
the questions mined from the repository's own older commits, re-orders the top ``DEPTH`` files.

Features (per candidate file, all from one retrieval; nothing read from git at query time):

* the hand-set ranking itself: ``hand_rr`` (1 / its position), ``file_score_rel`` (its evidence
  over the top file's), ``best_fused_rel`` (its best chunk's RRF score over the best one's);
* the retrievers: ``dense_rr`` / ``dense_cos`` (best dense rank and cosine of its chunks),
  ``lexical_rr`` / ``lexical_rel`` (chunk BM25), ``file_lexical_rr`` (whole-file BM25 rank);
* the query against the file: ``path_overlap`` (share of the path's words the query uses),
  ``symbol_overlap`` (best share of a defined name's words the query uses), ``named``;
* the file: ``chunks`` (how many of its chunks matched, log), ``is_test``, ``is_doc``,
  ``is_changelog``, ``graph_degree`` (other files its code links to, log).

Weights live in a small JSON document (no pickle: a ranker file is data, safe to load); applying one
needs numpy only. With fewer than ``MIN_QUESTIONS`` usable training questions a repository gets no
ranker of its own: the general one the product ships (``shipped_ranker``, fitted the same way on other
repositories' histories) orders its files instead, or the hand-set order when that is turned off.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codex_core.lexical import code_tokens

FEATURES = (
    "hand_rr", "file_score_rel", "best_fused_rel", "dense_rr", "dense_cos", "lexical_rr", "lexical_rel",
    "file_lexical_rr", "path_overlap", "symbol_overlap", "named", "chunks", "is_test", "is_doc", "is_changelog",
    "graph_degree",
)
DEPTH = 40  # files re-ordered; the rest keep the hand-set order after them
MIN_QUESTIONS = 30  # training questions whose gold file is among the candidates
RANKER_FORMAT = 1
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileFeatures:
    """The top files of one retrieval (hand-set order) and their feature rows."""

    files: list[tuple[str, str]]  # (repo, path)
    matrix: np.ndarray  # len(files) x len(FEATURES)


def file_features(
    query: str,
    ranked: Sequence[Any],
    *,
    file_ranks: dict[tuple[str, str], int],
    named: set[str],
    symbols_of: Any,
    degree_of: Any,
    flags_of: Any,
) -> FileFeatures:
    """Rows for the first ``DEPTH`` files of ``ranked`` (candidates grouped by file, best file first).

    ``symbols_of(repo, path)`` -> token sets of the names defined in the file; ``degree_of(repo, path)``
    -> linked files; ``flags_of(payload)`` -> (is_test, is_doc, is_changelog)."""
    by_file: dict[tuple[str, str], list[Any]] = {}
    for cand in ranked:
        f = (cand.repo, cand.payload["path"])
        if f in by_file or len(by_file) < DEPTH:
            by_file.setdefault(f, []).append(cand)
    files = list(by_file)
    if not files:
        return FileFeatures([], np.zeros((0, len(FEATURES)), dtype=np.float64))
    query_tokens = set(code_tokens(query))
    top_file_score = max((c.file_score for c in ranked), default=0.0) or 1.0
    top_fused = max((c.fused for c in ranked), default=0.0) or 1.0
    top_lexical = max((c.raw_scores.get("lexical", 0.0) for c in ranked), default=0.0) or 1.0
    rows = []
    for position, f in enumerate(files, start=1):
        cands = by_file[f]
        dense = [c.ranks["dense"] for c in cands if "dense" in c.ranks]
        lexical = [c.ranks["lexical"] for c in cands if "lexical" in c.ranks]
        path_tokens = set(code_tokens(f[1]))
        symbol_sets = symbols_of(*f)
        test, doc, changelog = flags_of(cands[0].payload)
        rows.append([
            1.0 / position,
            cands[0].file_score / top_file_score,
            max(c.fused for c in cands) / top_fused,
            1.0 / min(dense) if dense else 0.0,
            max((c.raw_scores.get("dense", 0.0) for c in cands), default=0.0),
            1.0 / min(lexical) if lexical else 0.0,
            max((c.raw_scores.get("lexical", 0.0) for c in cands), default=0.0) / top_lexical,
            1.0 / file_ranks[f] if f in file_ranks else 0.0,
            len(path_tokens & query_tokens) / len(path_tokens) if path_tokens else 0.0,
            max((len(s & query_tokens) / len(s) for s in symbol_sets if s), default=0.0),
            float(f[1] in named),
            math.log1p(len(cands)),
            float(test),
            float(doc),
            float(changelog),
            math.log1p(degree_of(*f)),
        ])
    return FileFeatures(files, np.asarray(rows, dtype=np.float64))


def without_asked_flags(features: FileFeatures, *, tests: bool, docs: bool, changelog: bool) -> FileFeatures:
    """The rows with the ``is_test`` / ``is_doc`` / ``is_changelog`` flags cleared for the kinds a plain
    question asks for. Rankers learn those flags from commit messages whose labels are source files
    only, so they learn "never a test / doc / changelog"; a user asking "which test covers ..." gets the
    hand-set order's rule for it (preferred when asked), not that learned demotion. The caller decides
    what is asked (retrieval: only for a question-style query; in a commit message "fix the test" the
    demotion is right: the localization benchmark lost 0.010 held-out nDCG@5 when it was lifted there).
    Only at ranking time: training rows are as computed."""
    cols = [FEATURES.index(name) for name, asked in (("is_test", tests), ("is_doc", docs),
                                                     ("is_changelog", changelog)) if asked]
    if not cols or features.matrix.shape[0] == 0:
        return features
    matrix = features.matrix.copy()
    matrix[:, cols] = 0.0
    return FileFeatures(features.files, matrix)


@dataclass(frozen=True)
class LearnedRanker:
    """Standardized features -> logistic score; higher ranks first."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    features: tuple[str, ...] = FEATURES
    meta: dict[str, Any] = field(default_factory=dict)
    format: int = RANKER_FORMAT

    def score(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.zeros(0)
        z = (matrix - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def order(self, features: FileFeatures) -> list[tuple[str, str]]:
        """The files re-ordered by score (ties keep the hand-set order)."""
        scores = self.score(features.matrix)
        order = sorted(range(len(features.files)), key=lambda i: (-scores[i], i))
        return [features.files[i] for i in order]

    def to_json(self) -> str:
        data = asdict(self)
        data["features"] = list(self.features)
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LearnedRanker:
        data = json.loads(text)
        if data.get("format") != RANKER_FORMAT:
            raise ValueError(f"ranker format {data.get('format')!r} is not {RANKER_FORMAT}")
        if tuple(data["features"]) != FEATURES:
            raise ValueError("ranker was trained on other features than this version computes")
        if not len(data["mean"]) == len(data["scale"]) == len(data["coef"]) == len(FEATURES):
            raise ValueError(f"ranker weights do not have one value per feature ({len(FEATURES)})")
        return cls(mean=data["mean"], scale=data["scale"], coef=data["coef"], intercept=float(data["intercept"]),
                   features=tuple(data["features"]), meta=dict(data.get("meta") or {}))

    def save(self, path: Path) -> None:
        from codex_core.fsio import write_text_atomic

        write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> LearnedRanker:
        return cls.from_json(path.read_text(encoding="utf-8"))


GLOBAL_RANKER = Path(__file__).with_name("global_ranker.json")


@functools.cache
def shipped_ranker() -> LearnedRanker | None:
    """The general ranker the product ships (``GLOBAL_RANKER``), for repositories without their own:
    fitted by ``benchmarks/localization/global_ranker.py`` on the older (tune and history) questions of
    the 12 localization repositories, never on their held-out half. None when missing or unreadable."""
    if not GLOBAL_RANKER.is_file():
        _log.warning("no shipped global ranker at %s: repositories without their own get the hand-set order",
                     GLOBAL_RANKER)
        return None
    return load_published(GLOBAL_RANKER)


def load_published(path: Path) -> LearnedRanker | None:
    """The ranker at ``path`` for a reader: one that this version cannot read is ignored (logged), so a
    stale or damaged file falls back to the hand-set order instead of failing queries."""
    try:
        return LearnedRanker.load(path)
    except (ValueError, KeyError, TypeError) as exc:
        _log.warning("ignoring learned ranker %s: %s", path, exc)
        return None


@dataclass(frozen=True)
class TrainingExample:
    features: FileFeatures
    gold: frozenset[str]  # gold paths (the repository is the one ranked)


def fit_ranker(
    examples: Sequence[TrainingExample], *, min_questions: int = MIN_QUESTIONS, meta: dict[str, Any] | None = None
) -> LearnedRanker | None:
    """A ranker from the examples whose gold file is among the candidates, or None with too few.

    Pointwise logistic regression (class-balanced, L2, C = 1): with tens to a few hundred questions
    per repository a linear model generalizes where trees would memorize."""
    from sklearn.linear_model import LogisticRegression

    usable = [e for e in examples if any(path in e.gold for _, path in e.features.files)]
    if len(usable) < min_questions:
        return None
    x = np.vstack([e.features.matrix for e in usable])
    y = np.concatenate([[float(path in e.gold) for _, path in e.features.files] for e in usable])
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    info = {"questions": len(usable), "questions_offered": len(examples), "rows": int(x.shape[0]),
            **(meta or {})}
    return LearnedRanker(mean=mean.tolist(), scale=scale.tolist(), coef=model.coef_[0].tolist(),
                         intercept=float(model.intercept_[0]), meta=info)


def train_ranker(
    retriever: Any, questions: Sequence[tuple[str, Sequence[str]]], *, repo: str, config: Any,
    meta: dict[str, Any] | None = None, min_questions: int = MIN_QUESTIONS,
) -> LearnedRanker | None:
    """Fit a ranker for ``repo`` on ``questions`` ((query, gold paths), older than anything it will be
    scored on): each asked of ``retriever`` with the hand-set order and no ranker."""
    from dataclasses import replace

    cfg = replace(config, learned_ranker=False, max_per_file=1)
    examples = []
    for query, gold in questions:
        result = retriever.retrieve(query, repos=[repo], top_k=10, config=cfg, collect_file_features=True)
        examples.append(TrainingExample(result.file_features, frozenset(gold)))
    return fit_ranker(examples, min_questions=min_questions, meta={"repo": repo, **(meta or {})})
