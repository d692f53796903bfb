"""The query engine behind `/v1/query` and `feriactl query`: retrieve, verify, answer, trace.

Reads only what ingestion published: the current index version of each repository, its code
graph, and each repository's git objects (to verify citations). Never imports Dagster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from codex_core.answer import Answer, AnswerUsage
from codex_core.calibration import Calibrator, CalibratorStore
from codex_core.cost import CostMeter, EnergyReading, LocalModelServers
from codex_core.embedding import Embedder, SentenceTransformerEmbedder
from codex_core.fsio import ReloadingFile
from codex_core.home import CodexHome
from codex_core.llm import AnswerDelta, Answerer, AnswerRestart, ContextChunk, GenerationResult
from codex_core.query_style import question_style
from codex_core.querylog import QUERY_LOG_FILE, QueryLog, ServedQuery, now_iso
from codex_core.reader import PublishedReader, open_index, reranker_from_settings
from codex_core.retrieval import Candidate, RetrievalConfig, RetrievalResult, heuristic_confidence
from codex_core.semantic_cache import CacheHit, CacheScope, SemanticCache, reuse_refusal
from codex_core.settings import Settings
from codex_core.vector_store import VectorIndex
from serving.freshness import DEFAULT_TTL_S, FreshnessTracker
from serving.gpu import NvmlReader

logger = logging.getLogger(__name__)

VERSION = "0.1.0"
DEFAULT_ABSTAIN_BELOW = 0.35


class UnknownRepo(LookupError):
    pass


StreamCallback = Callable[[AnswerDelta | AnswerRestart], None]


@dataclass(frozen=True)
class Retrieved:
    """Retrieval alone (no generation, no trace): the verified candidates, the repositories searched
    and the commit each was indexed at, all from one published view."""

    result: RetrievalResult
    repos: list[str]
    commits: dict[str, str]


@dataclass(frozen=True)
class CachedAnswer:
    """What the semantic cache keeps of an answered query: the answer, and the shape the query log needs."""

    answer: Answer
    top_score: float
    language: str | None


@dataclass(frozen=True)
class CacheProbe:
    """The semantic cache consulted for one request (``skip``: why it was not)."""

    scope: CacheScope | None = None
    vector: np.ndarray | None = None
    hit: CacheHit[CachedAnswer] | None = None
    nearest: float | None = None
    skip: str | None = None
    lookup_ms: float = 0.0


def citation_fields(candidate: Candidate) -> dict[str, Any]:
    """A verified candidate as a citation (``codex_core.answer.Citation`` without ``cited_in_answer``)."""
    p = candidate.payload
    return {
        "repo": candidate.repo, "path": p["path"], "line_start": p["start_line"], "line_end": p["end_line"],
        "symbol": p.get("symbol"), "score": round(candidate.score, 6), "snippet": p["text"],
    }


def _llm_env(settings: Settings) -> dict[str, str]:
    """The environment the LLM configuration reads: ``OLLAMA_HOST`` as the settings say, plus the API
    key variables that ``configs/models.toml`` names per model (``api_key_env``: names chosen there)."""
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_HOST"}
    return {**env, "OLLAMA_HOST": settings.ollama_host} if settings.ollama_host else env


class QueryEngine:
    def __init__(
        self,
        home: CodexHome,
        *,
        index: VectorIndex | None = None,
        embedder: Embedder | None = None,
        answerer: Answerer | None = None,
        abstain_below: float = DEFAULT_ABSTAIN_BELOW,
        refresh_every_s: float = 1.0,
        freshness_ttl_s: float = DEFAULT_TTL_S,
        settings: Settings | None = None,
        gpu_energy: Callable[[], EnergyReading] | None = None,
    ):
        """``gpu_energy``: what a request's energy is read from (default: NVML; without a GPU, the
        CPU-time estimate of :mod:`codex_core.cost`)."""
        settings = settings or Settings.from_env()
        self.home = home
        # The model ingestion embedded with (CODEX_EMBEDDING_MODEL_*): queries must live in the same space.
        self.embedder = embedder or SentenceTransformerEmbedder(
            settings.embedding_model_path, model_id=settings.embedding_model_id, device=settings.embedding_device
        )
        self.answerer = answerer or Answerer.from_config(settings.models_config, env=_llm_env(settings))
        self.abstain_below = abstain_below
        self.started_at = time.time()
        self.reader = PublishedReader(
            home, index or open_index(home, settings), self.embedder, reranker=reranker_from_settings(settings),
            refresh_every_s=refresh_every_s,
        )
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._calibrators: dict[str, ReloadingFile[Calibrator | None]] = {}  # repo -> current.json, parsed
        self.query_log = QueryLog(home.serving_state_dir / QUERY_LOG_FILE)  # shapes only, for drift reports
        self.freshness = FreshnessTracker(self.reader.worktree_of, ttl_s=freshness_ttl_s)
        threshold = settings.semantic_cache_threshold  # CODEX_SEMANTIC_CACHE (codex_core/semantic_cache.py)
        self.semantic_cache: SemanticCache[CachedAnswer] | None = None if threshold is None else SemanticCache(
            threshold, max_entries=settings.semantic_cache_size, max_age_s=settings.semantic_cache_max_age_s
        )
        local_urls = [s.base_url for s in self.answerer.config.models.values() if s.backend == "openai"]
        self.cost = CostMeter(watts_per_core=settings.cpu_watts_per_core,
                              gpu_energy=gpu_energy or NvmlReader().read_energy,
                              model_server_pids=LocalModelServers(home.llm_dir, local_urls))

    def refresh(self, force: bool = False) -> None:
        self.reader.refresh(force)

    def calibrator_for(self, repo: str) -> Calibrator | None:
        """The newest published calibrator of ``repo`` (reloaded when `calibration` publishes a new one)."""
        cached = self._calibrators.get(repo)
        if cached is None:
            store = CalibratorStore(self.home.calibration_dir(repo))
            cached = ReloadingFile(store.pointer, lambda _pointer: self._load_calibrator(repo, store), None)
            cached = self._calibrators.setdefault(repo, cached)
        return cached.get()

    @staticmethod
    def _load_calibrator(repo: str, store: CalibratorStore) -> Calibrator | None:
        try:
            current = store.current()
            return current.load() if current else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # An unreadable or outdated calibrator must not take answering down: fall back to the
            # heuristic confidence (confidence_kind says so) until the next calibration publishes.
            logger.warning(
                "calibrator of %s is not usable (%s); using the heuristic confidence until "
                "`feriactl eval run --repo %s` publishes a new one", repo, exc, repo,
            )
            return None

    def confidence(self, repo: str | None, features: dict[str, float], query: str) -> tuple[float, float, str]:
        """(confidence, abstention threshold, kind): calibrated when a calibrator is published."""
        calibrator = self.calibrator_for(repo) if repo else None
        if calibrator is None:
            return heuristic_confidence(features), self.abstain_below, "heuristic"
        probability = calibrator.predict_one(features, query)
        return probability, float(calibrator.tau), "calibrated"

    def repos(self, allowed_repos: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        """Published repositories (only ``allowed_repos`` when given: a tenant never learns of others)."""
        view = self.reader.refresh()
        return {
            name: {"commit": c.commit, "version": c.version, "chunks": len(c.ids),
                   "commits_behind": self.freshness.of(name, c.commit)["commits_behind"]}
            for name, c in sorted(view.corpora.items())
            if allowed_repos is None or name in allowed_repos
        }

    # ------------------------------------------------------------ queries

    def retrieve(self, query: str, *, repo: str | None = None, top_k: int = 5, config: RetrievalConfig | None = None,
                 allowed_repos: Collection[str] | None = None) -> Retrieved:
        """The verified citations of ``query`` over ``repo`` (or every repository ``allowed_repos``
        admits; None = all), without generating an answer: ``query`` builds on it, and so does the
        MCP ``search_code`` tool.

        A ``repo`` outside ``allowed_repos`` is reported exactly like an unknown one, so a tenant
        cannot probe for other tenants' repositories.
        """
        query = query.encode("utf-8", "replace").decode("utf-8")  # JSON may carry lone surrogates
        corpora = self.reader.refresh().corpora
        repos = self._searched(corpora, repo, allowed_repos)
        result = self.reader.retriever.retrieve(query, repos=repos, top_k=top_k, config=config)
        leaked = [c for c in result.candidates if c.repo not in repos]
        if leaked:  # defence in depth: the store filter already restricts to ``repos``
            result.candidates = [c for c in result.candidates if c.repo in repos]
        return Retrieved(result, repos, {r: corpora[r].commit for r in repos})

    def query(self, query: str, *, repo: str | None = None, top_k: int = 5, tenant: str | None = None,
              config: RetrievalConfig | None = None, allowed_repos: Collection[str] | None = None,
              trace_extra: dict[str, Any] | None = None, on_event: StreamCallback | None = None) -> Answer:
        """Answer ``query`` over ``repo`` (or every repository ``allowed_repos`` admits; None = all;
        an unknown or hidden ``repo`` raises :class:`UnknownRepo`, see :meth:`retrieve`).
        ``trace_extra`` is stored with the trace (serving puts the canary arm and the GPU governor's
        decision there). ``on_event``: the answer is streamed — it receives the model's text as it is
        written (and ``AnswerRestart`` when an attempt is abandoned) before this returns the same
        ``Answer``; an abstention or extractive answer sends it nothing. An exception it raises stops
        the model's generation and propagates. A question close enough to one answered recently in the
        same scope gets that verified answer from the semantic cache (``CODEX_SEMANTIC_CACHE``; nothing
        is streamed) with its own trace id, latency and trace (``cache.of_trace``).
        """
        started = time.perf_counter()
        meter = self.cost.start()  # this thread, to the end: thread CPU time is read here
        # In-process callers (CLI argv is surrogate-escaped) may pass text that is not valid UTF-8.
        query = query.encode("utf-8", "replace").decode("utf-8")
        probe = self._cache_probe(query, repo=repo, top_k=top_k, tenant=tenant, config=config,
                                  allowed_repos=allowed_repos, trace_extra=trace_extra)
        if probe is not None and probe.hit is not None:  # a verified answer to a question this close: no model call
            return self._serve_cached(query, probe, started, meter, tenant=tenant, top_k=top_k, trace_extra=trace_extra)
        retrieved = self.retrieve(query, repo=repo, top_k=top_k, config=config, allowed_repos=allowed_repos)
        result, repos = retrieved.result, retrieved.repos
        retrieval_ms = round((time.perf_counter() - started) * 1000, 2)
        top_repo = result.candidates[0].repo if result.candidates else (repos[0] if repos else None)
        confidence, threshold, confidence_kind = self.confidence(top_repo, result.features, query)
        contexts = [
            ContextChunk(
                repo=c.repo, path=c.payload["path"], start_line=c.payload["start_line"],
                end_line=c.payload["end_line"], symbol=c.payload.get("symbol"), text=c.payload["text"], score=c.score,
            )
            for c in result.candidates
        ]
        abstained = not contexts or confidence < threshold
        if abstained:
            generation = None
            answer = _abstention_text(confidence, threshold, contexts)
            model, route, cited = "none", "abstain", []
        else:
            generation = self._generate(query, contexts, confidence, on_event)
            answer, model, route, cited = generation.answer, generation.model, generation.route, generation.cited_refs
        trace_id = uuid.uuid4().hex
        citations = [{**citation_fields(c), "cited_in_answer": c.ref in cited} for c in result.candidates]
        index_commits = retrieved.commits
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        cost = meter.finish().trace(generation.usage if generation is not None else None)
        response = Answer(**{
            "answer": answer,
            "citations": citations,
            "confidence": round(confidence, 4),
            "confidence_kind": confidence_kind,
            "abstained": abstained,
            "model": model,
            "route": route,
            "index_commit": index_commits.get(top_repo) if top_repo else None,
            "index_commits": index_commits,
            **self._freshness_fields(index_commits, top_repo),
            "latency_ms": latency_ms,
            "trace_id": trace_id,
            "usage": AnswerUsage.model_validate(cost),
        })
        cache = self._cache_store(probe, retrieved, response, generation, trace_extra)
        self._remember(trace_id, {
            "trace_id": trace_id,
            "query": query,
            "tenant": tenant,
            "repos": repos,
            "top_k": top_k,
            "timings_ms": {**result.timings_ms, "retrieval_ms": retrieval_ms, "total_ms": latency_ms},
            "features": result.features,
            "ranked_by": result.ranked_by,  # "hand-set" or "learned:<ranker id>": which file order answered
            "confidence": confidence,
            "abstain_below": threshold,
            "confidence_kind": confidence_kind,
            "abstained": abstained,
            "index_freshness": response.model_dump()["index_freshness"],
            "candidates": [c.to_trace() for c in result.considered[:100]],
            "generation": None if generation is None else {
                "model": generation.model, "route": generation.route, "fallbacks": generation.fallbacks,
                "cited_refs": generation.cited_refs, "prompt_tokens": generation.prompt_tokens,
                "extractive": generation.extractive, "planned_route": generation.planned_route,
                "difficulty": generation.difficulty, "rejected_refs": generation.rejected_refs,
                "escalated": generation.escalated, "verification": generation.verification,
                "prompt_style": generation.prompt_style, "consistency": generation.consistency,
            },
            "cost": cost,  # tokens and calls of the walk, wall and CPU seconds, energy (codex_core.cost)
            "cache": cache,  # the semantic cache: None when off, else miss (stored or why not) or skip
            **(trace_extra or {}),
        })
        top_payload = result.candidates[0].payload if result.candidates else {}
        self.query_log.append(ServedQuery(
            ts=now_iso(), repo=top_repo, query_length=len(query.split()), language=top_payload.get("language"),
            top_score=float(result.features.get("top_score", 0.0)), confidence=float(confidence),
            abstained=abstained, latency_ms=latency_ms, query_style=question_style(query),
        ))
        return response

    def _generate(self, query: str, contexts: list[ContextChunk], confidence: float,
                  on_event: StreamCallback | None) -> GenerationResult:
        if on_event is None:
            return self.answerer.answer(query, contexts, confidence=confidence)
        with contextlib.closing(self.answerer.answer_stream(query, contexts, confidence=confidence)) as stream:
            for event in stream:
                if isinstance(event, GenerationResult):
                    return event
                on_event(event)
        raise RuntimeError("the answer stream ended without a result")

    @staticmethod
    def _searched(corpora: Mapping[str, Any], repo: str | None, allowed_repos: Collection[str] | None) -> list[str]:
        """The repositories a request searches. A ``repo`` outside ``allowed_repos`` is reported exactly like
        an unknown one, so a tenant cannot probe for other tenants' repositories."""
        visible = sorted(r for r in corpora if allowed_repos is None or r in allowed_repos)
        if repo is not None and repo not in visible:
            raise UnknownRepo(
                f"repository {repo!r} has no published index; known: {visible or 'none'} "
                f"(ingest it with: feriactl ingest PATH --name {repo})"
            )
        return [repo] if repo else visible

    # ------------------------------------------------------------ semantic cache

    def _cache_probe(self, query: str, *, repo: str | None, top_k: int, tenant: str | None,
                     config: RetrievalConfig | None, allowed_repos: Collection[str] | None,
                     trace_extra: dict[str, Any] | None) -> CacheProbe | None:
        """Look ``query`` up in the semantic cache (None when it is off). The query is embedded through the
        reader's query-vector cache, so a miss's retrieval reuses the vector: no second model call. The
        scope holds the retrieval config's value and the canary arm serving put in ``trace_extra``: one
        arm's answer never serves the other."""
        cache = self.semantic_cache
        if cache is None:
            return None
        started = time.perf_counter()
        corpora = self.reader.refresh().corpora
        cache.retain_published({r: (c.commit, c.version) for r, c in corpora.items()})  # a new commit evicts
        repos = self._searched(corpora, repo, allowed_repos)
        retrieval = config or RetrievalConfig()
        if not repos:
            return CacheProbe(skip="no repository to search")
        if not retrieval.dense:
            return CacheProbe(skip="the configuration has no dense retrieval: the query is not embedded")
        arm = ((trace_extra or {}).get("canary") or {}).get("arm")
        scope = CacheScope.of(tenant=tenant, indexes={r: (corpora[r].commit, corpora[r].version) for r in repos},
                              top_k=top_k, config=(retrieval, arm))
        vector = self.reader.retriever.embed_query(query)
        hit, nearest = cache.nearest(scope, vector)
        return CacheProbe(scope, vector, hit, nearest, lookup_ms=round((time.perf_counter() - started) * 1000, 2))

    def _serve_cached(self, query: str, probe: CacheProbe, started: float, meter: Any, *, tenant: str | None,
                      top_k: int, trace_extra: dict[str, Any] | None) -> Answer:
        """The cached answer as this request's own: a fresh trace id, its own latency, usage and freshness;
        the trace names the request that computed it (``cache.of_trace``)."""
        assert probe.hit is not None and probe.scope is not None
        hit = probe.hit
        original = hit.value.answer
        trace_id = uuid.uuid4().hex
        top_repo = original.citations[0].repo if original.citations else None
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        cost = meter.finish().trace(None)
        response = Answer.model_validate({
            **original.model_dump(),
            **self._freshness_fields(original.index_commits, top_repo),
            "latency_ms": latency_ms,
            "trace_id": trace_id,
            "usage": AnswerUsage.model_validate(cost),
        })
        self._remember(trace_id, {
            "trace_id": trace_id,
            "query": query,
            "tenant": tenant,
            "repos": [r for r, _, _ in probe.scope.indexes],
            "top_k": top_k,
            "timings_ms": {"cache_ms": probe.lookup_ms, "total_ms": latency_ms},
            "confidence": original.confidence,
            "confidence_kind": original.confidence_kind,
            "abstained": False,
            "index_freshness": response.model_dump()["index_freshness"],
            "generation": None,  # no model was asked: the answer is the one of_trace generated
            "cost": cost,
            "cache": {"hit": True, "result": "hit", "of_trace": hit.ref, "similarity": round(hit.similarity, 4),
                      "age_s": round(hit.age_s, 1)},
            **(trace_extra or {}),
        })
        self.query_log.append(ServedQuery(
            ts=now_iso(), repo=top_repo, query_length=len(query.split()), language=hit.value.language,
            top_score=hit.value.top_score, confidence=float(original.confidence), abstained=False,
            latency_ms=latency_ms, query_style=question_style(query),
        ))
        return response

    def _cache_store(self, probe: CacheProbe | None, retrieved: Retrieved, response: Answer,
                     generation: GenerationResult | None, trace_extra: dict[str, Any] | None) -> dict[str, Any] | None:
        """Keep ``response`` for later questions close to this one when it is worth re-serving
        (:func:`codex_core.semantic_cache.reuse_refusal`); returns what happened, for the trace."""
        cache = self.semantic_cache
        if probe is None or cache is None:
            return None
        if probe.scope is None or probe.vector is None:
            return {"hit": False, "result": "skip", "reason": probe.skip}
        refusal = reuse_refusal(
            abstained=response.abstained, generation=generation,
            cited=any(c.cited_in_answer for c in response.citations),
            demoted=bool((trace_extra or {}).get("governor")),
        )
        if refusal is None and retrieved.commits != {r: commit for r, commit, _ in probe.scope.indexes}:
            refusal = "a new commit was published during the request"
        if refusal is None:
            top = retrieved.result.candidates[0].payload if retrieved.result.candidates else {}
            kept = CachedAnswer(response.model_copy(deep=True),
                                float(retrieved.result.features.get("top_score", 0.0)), top.get("language"))
            if not cache.store(probe.scope, probe.vector, kept, ref=response.trace_id):
                refusal = "a new index was published during the request"
        nearest = None if probe.nearest is None else round(probe.nearest, 4)
        return {"hit": False, "result": "miss", "nearest": nearest, "stored": refusal is None, "not_stored": refusal}

    def _freshness_fields(self, index_commits: dict[str, str], top_repo: str | None) -> dict[str, Any]:
        """The answer's ``commits_behind`` (of its top repository) and ``index_freshness`` (of each)."""
        freshness = {r: self.freshness.of(r, commit) for r, commit in index_commits.items()}
        return {
            "commits_behind": freshness[top_repo]["commits_behind"] if top_repo in freshness else None,
            "index_freshness": {r: {"commit": f["commit"], "commits_behind": f["commits_behind"]}
                                for r, f in freshness.items()},
        }

    def _remember(self, trace_id: str, trace: dict[str, Any], keep: int = 1000) -> None:
        with self._lock:
            self._traces[trace_id] = trace
            while len(self._traces) > keep:
                self._traces.popitem(last=False)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        return self._traces.get(trace_id)

    def health(self, allowed_repos: Collection[str] | None = None) -> dict[str, Any]:
        view = self.reader.refresh()
        llm = self.answerer.health()
        visible = {
            name: c for name, c in sorted(view.corpora.items()) if allowed_repos is None or name in allowed_repos
        }
        index = {name: c.commit for name, c in visible.items()}
        freshness = {name: self.freshness.of(name, c.commit) for name, c in visible.items()}
        reasons = []
        if not index:
            reasons.append("no published index: run feriactl ingest PATH")
        if not llm.get("reachable"):
            reasons.append("no LLM reachable: answers are extractive (cited snippets)")
        return {
            "status": "ok" if not reasons else "degraded",
            "reasons": reasons,
            "uptime_s": round(time.time() - self.started_at, 1),
            "version": VERSION,
            "index": index,
            "freshness": freshness,
            "llm": llm,
        }

    def close(self) -> None:
        self.reader.close()


def _abstention_text(confidence: float, threshold: float, contexts: list[ContextChunk]) -> str:
    if not contexts:
        return "I don't know: nothing relevant was found in the indexed code."
    guesses = ", ".join(f"[{c.ref}]" for c in contexts[:3])
    return (
        f"I'm not confident enough to answer (confidence {confidence:.2f} < {threshold:.2f}). "
        f"Best guesses: {guesses}"
    )
