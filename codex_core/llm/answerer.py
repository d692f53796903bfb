"""Answer a question from retrieved snippets: route, prompt, walk the model chain, enforce citations.

Walk for one request (route chosen by :mod:`codex_core.llm.router`):
- each model of the route's chain is tried in order; a model is skipped without a network call
  when its server's circuit is open or the server already failed earlier in this request;
- a transport failure, an HTTP error, a timeout or an empty answer moves on to the next model;
- an answer that cites no retrieved snippet (and does not say "I don't know") is retried once on
  the same model with a stricter reminder; if the retry fails the same way, the extractive answer
  is returned;
- draft -> verify -> expert: an answer that passed the citation check is verified
  (:mod:`codex_core.llm.verify`: no bare "I don't know" on good evidence, every claim cited and
  supported by the cited lines); one that fails escalates to the next model of the chain, and when
  retrieval confidence is below τ (``[verify] escalate_below``) the draft model is skipped;
- when no model answers, or the last one fails verification too, the extractive answer (the
  evidence itself, labelled ``extractive``) is returned — never a bare "I don't know" on good
  evidence.
Every hop is recorded in ``GenerationResult.fallbacks``, and every model call (failed ones, retries,
escalations and the model judge's included) in ``GenerationResult.usage``: each goes through
``Answerer._call`` or ``Answerer._call_stream``. Only model, route and latency are logged
at INFO; prompts and answers never are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path
from typing import Any

from codex_core.llm.backends import Backend, BackendError, ChatReply, CircuitBreaker, make_backend
from codex_core.llm.citations import CitationCheck, check_citations
from codex_core.llm.config import LLMConfig, ModelSpec, load_config
from codex_core.llm.consistency import consensus
from codex_core.llm.extractive import extractive_answer
from codex_core.llm.prompt import Prompt, approx_tokens, build_prompt, messages_tokens
from codex_core.llm.router import RouteDecision, decide
from codex_core.llm.types import EXTRACTIVE, AnswerDelta, AnswerRestart, ContextChunk, GenerationResult, Usage
from codex_core.llm.verify import VERDICT_SCHEMA, Verdict, attribute_citations, model_judgement, verify_answer
from codex_core.schema import load_schema, validate

log = logging.getLogger(__name__)
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)


class Answerer:
    def __init__(self, config: LLMConfig, *, backends: Mapping[str, Backend] | None = None) -> None:
        """``backends``: optional ready-made backends keyed by ``ModelSpec.backend_id``."""
        self.config = config
        self._backends: dict[str, Backend] = dict(backends or {})
        self._breakers: dict[str, CircuitBreaker] = {}
        for spec in config.models.values():
            if spec.backend_id not in self._backends:
                self._backends[spec.backend_id] = make_backend(
                    spec.backend, spec.base_url, connect_timeout=config.connect_timeout,
                    api_key=config.api_key(spec),
                )
            self._breakers.setdefault(
                spec.backend_id, CircuitBreaker(config.failure_threshold, config.cooldown_seconds)
            )

    @classmethod
    def from_config(cls, path: Path | None = None, *, env: Mapping[str, str] = os.environ) -> Answerer:
        """Read ``configs/models.toml`` (or ``path``, or ``$CODEX_MODELS_CONFIG``); ``OLLAMA_HOST`` wins
        over the file's default Ollama URL."""
        return cls(load_config(path, env=env))

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()

    def breaker(self, backend_id: str) -> CircuitBreaker:
        return self._breakers[backend_id]

    # ------------------------------------------------------------------ answering

    def route(self, query: str, contexts: list[ContextChunk]) -> RouteDecision:
        return decide(query, contexts, small_below=self.config.small_below, large_from=self.config.large_from)

    def answer(self, query: str, contexts: list[ContextChunk], *, confidence: float | None = None
               ) -> GenerationResult:
        """``confidence``: the retrieval's (calibrated) confidence, which decides whether a bare
        abstention is acceptable and whether the draft model is worth asking."""
        for event in self._walk(query, contexts, confidence, self._attempt_whole):
            if isinstance(event, GenerationResult):
                return event
        raise AssertionError("the chain walk always ends with a result")

    def _call(self, spec: ModelSpec, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
              usage: Usage, sample: int = 0) -> ChatReply:
        """One model call, counted in ``usage`` whatever its outcome. Every call of a walk goes through
        here or :meth:`_call_stream`, so the request's usage misses none. ``sample``: the index of a
        self-consistency sample, added to the model's seed so that samples differ and stay reproducible."""
        reply = None
        try:
            reply = self._backends[spec.backend_id].chat(
                spec.name, messages, max_tokens=max_tokens, temperature=temperature,
                context_window=spec.context_window, timeout=spec.timeout,
                seed=None if spec.seed is None else spec.seed + sample,
            )
            return reply
        finally:
            _count(usage, spec, messages, reply, "")

    def _call_stream(self, spec: ModelSpec, messages: list[dict[str, str]], *, max_tokens: int,
                     temperature: float, usage: Usage) -> Iterator[str | ChatReply]:
        """:meth:`_call` streamed (the backend's ``chat_stream``); closing it closes the server's stream."""
        reply, pieces = None, []
        try:
            stream = self._backends[spec.backend_id].chat_stream(
                spec.name, messages, max_tokens=max_tokens, temperature=temperature,
                context_window=spec.context_window, timeout=spec.timeout, seed=spec.seed,
            )
            with contextlib.closing(stream):
                for piece in stream:
                    if isinstance(piece, ChatReply):
                        reply = piece
                    else:
                        pieces.append(piece)
                    yield piece
        finally:
            _count(usage, spec, messages, reply, "".join(pieces))

    def _verify(self, spec: ModelSpec, check: CitationCheck, contexts: list[ContextChunk],
                confidence: float | None, usage: Usage) -> Verdict | None:
        """The verdict on an answer that passed the citation check; None when verification is off."""
        if self.config.verify_method == "off":
            return None
        verdict = verify_answer(check, contexts, confidence=confidence, escalate_below=self.config.escalate_below)
        if self.config.verify_method != "model":
            return verdict
        schema = load_schema(VERDICT_SCHEMA)

        def ask(messages: list[dict[str, str]]) -> str:
            try:
                return self._call(spec, messages, max_tokens=200, temperature=0.0, usage=usage).content
            except BackendError as exc:
                return f"(no verdict: {exc})"

        return model_judgement(verdict, contexts, ask, lambda data: validate(data, schema))

    def _attempt(
        self, spec: ModelSpec, prompt: Prompt, breaker: CircuitBreaker,
        failed_backends: dict[str, str], hop: Any, usage: Usage, temperature: float | None = None, sample: int = 0,
    ) -> tuple[ChatReply | None, CitationCheck | None]:
        call_started = time.perf_counter()
        try:
            reply = self._call(spec, prompt.messages, max_tokens=prompt.max_tokens,
                               temperature=spec.temperature if temperature is None else temperature, usage=usage,
                               sample=sample)
        except BackendError as exc:
            _failed(spec, exc, breaker, failed_backends, hop, call_started)
            return None, None
        breaker.record_success()
        # Reasoning models may inline their scratchpad; only the final answer is checked and shown.
        reply = replace(reply, content=_THINK.sub("", reply.content).strip())
        if not reply.content:
            hop(f"{spec.name} returned an empty answer (finish_reason={reply.finish_reason})")
            return None, None
        log.debug(
            "llm reply model=%s latency_ms=%.0f prompt_tokens=%s completion_tokens=%s",
            spec.name, (time.perf_counter() - call_started) * 1000, reply.prompt_tokens, reply.completion_tokens,
        )
        return reply, _checked(reply.content, prompt)

    def _generated(
        self, spec: ModelSpec, decision: RouteDecision, reply: ChatReply, check: CitationCheck, prompt: Prompt,
        fallbacks: list[dict[str, Any]], rejected: list[str], started: float,
    ) -> GenerationResult:
        """The result for a model's answer that passed the citation check."""
        log.info(
            "llm answer model=%s route=%s difficulty=%.2f latency_ms=%.0f fallbacks=%d",
            spec.name, decision.route, decision.difficulty, (time.perf_counter() - started) * 1000, len(fallbacks),
        )
        return GenerationResult(
            answer=check.text,
            model=spec.name,
            route=decision.route,
            cited_refs=check.cited,
            fallbacks=fallbacks,
            # The server's own count when it reports one; else the prompt builder's estimate.
            prompt_tokens=reply.prompt_tokens if reply.prompt_tokens else prompt.prompt_tokens,
            extractive=False,
            planned_route=decision.route,
            difficulty=decision.difficulty,
            rejected_refs=rejected,
            abstained=check.abstained and not check.cited,
        )

    def _extractive(
        self, contexts: list[ContextChunk], decision: RouteDecision, fallbacks: list[dict[str, Any]],
        rejected: list[str], started: float,
    ) -> GenerationResult:
        text, refs = extractive_answer(contexts, self.config.extractive_snippets)
        log.info(
            "llm answer model=extractive route=%s difficulty=%.2f latency_ms=%.0f fallbacks=%d",
            decision.route, decision.difficulty, (time.perf_counter() - started) * 1000, len(fallbacks),
        )
        return GenerationResult(
            answer=text,
            model=EXTRACTIVE,
            route=EXTRACTIVE,
            cited_refs=refs,
            fallbacks=fallbacks,
            prompt_tokens=0,
            extractive=True,
            planned_route=decision.route,
            difficulty=decision.difficulty,
            rejected_refs=rejected,
            abstained=not contexts,
        )

    # ------------------------------------------------------------------ streaming

    def answer_stream(
        self, query: str, contexts: list[ContextChunk], *, confidence: float | None = None,
    ) -> Iterator[AnswerDelta | AnswerRestart | GenerationResult]:
        """:meth:`answer` as a stream: the text as the model writes it (``AnswerDelta``), then exactly
        one ``GenerationResult`` — the same walk, skips, retry, citation check and verification as
        :meth:`answer` (it is the same walk).

        The result's ``answer`` is the text to show: the check may drop or narrow refs the streamed
        text had. When an attempt that already streamed text is abandoned (cut off, cited nothing
        retrieved and retried, or failed verification and escalated), an ``AnswerRestart`` says the
        text so far is void. An extractive answer streams no text. Closing the iterator closes the
        model server's stream.
        """
        yield from self._walk(query, contexts, confidence, self._attempt_stream)

    def _walk(
        self, query: str, contexts: list[ContextChunk], confidence: float | None, attempt: Any,
    ) -> Iterator[AnswerDelta | AnswerRestart | GenerationResult]:
        """:meth:`_chain_walk`, its result carrying the usage of every model call the walk made."""
        usage = Usage()
        with contextlib.closing(self._chain_walk(query, contexts, confidence, attempt, usage)) as walk:
            for event in walk:
                if isinstance(event, GenerationResult):
                    event.usage = usage
                yield event

    def _chain_walk(
        self, query: str, contexts: list[ContextChunk], confidence: float | None, attempt: Any, usage: Usage,
    ) -> Iterator[AnswerDelta | AnswerRestart | GenerationResult]:
        """The one chain walk of :meth:`answer` and :meth:`answer_stream` (see the module docstring):
        ``attempt`` is :meth:`_attempt_whole` or :meth:`_attempt_stream`; every model call is counted
        in ``usage`` (:meth:`_call`)."""
        started = time.perf_counter()
        decision = self.route(query, contexts)
        fallbacks: list[dict[str, Any]] = []
        if not contexts:
            yield self._extractive(contexts, decision, fallbacks, [], started)
            return
        chain = self.config.chain(decision.route)
        failed_backends: dict[str, str] = {}
        prompts: dict[tuple[int, bool, str, int | None], Prompt] = {}
        rejected: list[str] = []

        def prompt_for(spec: ModelSpec, strict: bool) -> Prompt:
            style = self.config.prompt_style(spec)
            snippets = self.config.max_snippets(spec)
            key = (spec.context_window, strict, style, snippets)
            if key not in prompts:
                prompts[key] = build_prompt(
                    query, contexts, context_window=spec.context_window,
                    context_fraction=self.config.context_fraction, strict=strict, profile=style,
                    max_snippets=snippets,
                    max_snippet_lines=self.config.compact_snippet_lines if style == "compact" else None,
                )
            return prompts[key]

        escalated = False
        consistency_done = False  # self-consistency samples the first model that is asked, once
        for position, spec in enumerate(chain):
            next_name = chain[position + 1].name if position + 1 < len(chain) else EXTRACTIVE
            hop = _hop_recorder(fallbacks, spec.name, next_name)
            breaker = self._breakers[spec.backend_id]
            if (position == 0 and len(chain) > 1 and confidence is not None and self.config.verify_method != "off"
                    and confidence < self.config.escalate_below):
                hop(f"draft skipped: retrieval confidence {confidence:.2f} < τ {self.config.escalate_below:.2f}")
                escalated = True
                continue
            if spec.backend_id in failed_backends:
                hop(f"skipped: {failed_backends[spec.backend_id]} (earlier in this request)")
                continue
            if not breaker.allow():
                hop(
                    f"skipped: circuit open for {spec.backend_id} after {breaker.last_error or 'failures'}; "
                    f"next probe in {breaker.retry_in():.0f}s"
                )
                continue
            if not prompt_for(spec, strict=False).included:
                breaker.release_probe()
                hop(f"context window of {spec.context_window} tokens leaves no room for any snippet")
                continue
            # A compact prompt asks for prose and the citations are attributed: a stricter reminder to
            # copy refs would ask a small model for what it cannot do, so it has no second attempt.
            for strict in (False,) if self.config.prompt_style(spec) == "compact" else (False, True):
                prompt = prompt_for(spec, strict=strict)
                sampled: dict[str, Any] | None = None
                if self.config.consistency_samples > 1 and not strict and not consistency_done:
                    consistency_done = True
                    reply, check, sampled = self._attempt_sampled(spec, prompt, breaker, failed_backends, hop, usage)
                    shown = False
                    if sampled is not None and sampled["agreement"] < self.config.consistency_min_agreement:
                        hop(f"samples disagree: agreement {sampled['agreement']:.2f} < "
                            f"{self.config.consistency_min_agreement:.2f} over {sampled['samples']} samples")
                        escalated = True
                        break
                    if reply is not None and attempt == self._attempt_stream:
                        yield AnswerDelta(reply.content)
                        shown = True
                else:
                    reply, check, shown = yield from attempt(spec, prompt, breaker, failed_backends, hop, usage)
                if reply is None or check is None:
                    if shown:
                        yield AnswerRestart(fallbacks[-1]["reason"])
                    break
                rejected.extend(r for r in check.rejected if r not in rejected)
                if check.acceptable:
                    verdict = self._verify(spec, check, contexts, confidence, usage)
                    if verdict is None or verdict.ok:
                        result = self._generated(spec, decision, reply, check, prompt, fallbacks, rejected, started)
                        result.escalated = escalated
                        result.verification = verdict.to_dict() if verdict is not None else None
                        result.prompt_style = "compact" if prompt.numbered else "standard"
                        result.consistency = sampled
                        yield result
                        return
                    hop("verification failed: " + "; ".join(verdict.reasons[:3]))
                    escalated = True
                    if shown:
                        yield AnswerRestart(fallbacks[-1]["reason"])
                    break
                if prompt.numbered:
                    reason = _uncited_reason(check) + ": no sentence names code that a shown snippet holds"
                    if self.config.uncited == "extractive":
                        # [verify] uncited = "extractive": the snippets the draft was shown, labelled,
                        # instead of another model shown the same ones.
                        fallbacks.append({"from": spec.name, "to": EXTRACTIVE, "reason": reason})
                        if shown:
                            yield AnswerRestart(reason)
                        yield self._extractive(contexts, decision, fallbacks, rejected, started)
                        return
                    hop(reason)
                    escalated = True
                    if shown:
                        yield AnswerRestart(fallbacks[-1]["reason"])
                    break
                if strict:
                    fallbacks.append({
                        "from": spec.name, "to": EXTRACTIVE,
                        "reason": _uncited_reason(check) + " again after the stricter retry",
                    })
                    yield self._extractive(contexts, decision, fallbacks, rejected, started)
                    return
                reason = _uncited_reason(check) + "; retrying once with a stricter reminder"
                fallbacks.append({"from": spec.name, "to": spec.name, "reason": reason})
                if shown:
                    yield AnswerRestart(reason)
        yield self._extractive(contexts, decision, fallbacks, rejected, started)

    def _attempt_sampled(
        self, spec: ModelSpec, prompt: Prompt, breaker: CircuitBreaker, failed_backends: dict[str, str], hop: Any,
        usage: Usage,
    ) -> tuple[ChatReply | None, CitationCheck | None, dict[str, Any] | None]:
        """Self-consistency (:mod:`codex_core.llm.consistency`): ``[consistency] samples`` whole replies,
        the first at the model's temperature, the rest at ``[consistency] temperature``; the reply most
        samples agree with, and ``{samples, agreement, votes}`` (a failed sample agrees with none)."""
        n = self.config.consistency_samples
        answered: list[tuple[ChatReply, CitationCheck]] = []
        for index in range(n):
            reply, check = self._attempt(spec, prompt, breaker, failed_backends, hop, usage,
                                         None if index == 0 else self.config.consistency_temperature, sample=index)
            if reply is None or check is None:
                if spec.backend_id in failed_backends:
                    break  # the server is down: no more samples
                continue
            answered.append((reply, check))
        if not answered:
            return None, None, None
        vote = consensus([check for _, check in answered], samples=n)
        reply, check = answered[vote.chosen]
        return reply, check, {**vote.to_dict(n), "answered": len(answered)}

    def _attempt_whole(
        self, spec: ModelSpec, prompt: Prompt, breaker: CircuitBreaker, failed_backends: dict[str, str], hop: Any,
        usage: Usage,
    ) -> Generator[AnswerDelta, None, tuple[ChatReply | None, CitationCheck | None, bool]]:
        """:meth:`_attempt` in the shape of :meth:`_attempt_stream`: no text until the whole reply."""
        yield from ()
        reply, check = self._attempt(spec, prompt, breaker, failed_backends, hop, usage)
        return reply, check, False

    def _attempt_stream(
        self, spec: ModelSpec, prompt: Prompt, breaker: CircuitBreaker, failed_backends: dict[str, str], hop: Any,
        usage: Usage,
    ) -> Generator[AnswerDelta, None, tuple[ChatReply | None, CitationCheck | None, bool]]:
        """One streamed model call: yields its visible text; returns (reply, check, text was shown)."""
        call_started = time.perf_counter()
        visible = _VisibleText()
        reply: ChatReply | None = None
        try:
            stream = self._call_stream(spec, prompt.messages, max_tokens=prompt.max_tokens,
                                       temperature=spec.temperature, usage=usage)
            with contextlib.closing(stream):
                for piece in stream:
                    if isinstance(piece, ChatReply):
                        reply = piece
                    elif text := visible.add(piece):
                        yield AnswerDelta(text)
        except BackendError as exc:
            _failed(spec, exc, breaker, failed_backends, hop, call_started, streamed=True)
            return None, None, visible.shown
        breaker.record_success()
        content = _THINK.sub("", reply.content).strip() if reply is not None else ""
        if reply is None or not content:
            reason = reply.finish_reason if reply is not None else "no final reply"
            hop(f"{spec.name} returned an empty answer (finish_reason={reason})")
            return None, None, visible.shown
        reply = replace(reply, content=content)
        log.debug(
            "llm reply model=%s latency_ms=%.0f prompt_tokens=%s completion_tokens=%s streamed=True",
            spec.name, (time.perf_counter() - call_started) * 1000, reply.prompt_tokens, reply.completion_tokens,
        )
        return reply, _checked(reply.content, prompt), visible.shown

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """Probe every backend in parallel; the whole call returns within ``health_timeout`` seconds."""
        deadline = self.config.health_timeout
        probe_timeout = max(0.05, deadline - 0.1)
        by_backend: dict[str, list[ModelSpec]] = {}
        for spec in self.config.models.values():
            by_backend.setdefault(spec.backend_id, []).append(spec)
        backends: dict[str, dict[str, Any]] = {}
        answering: list[str] = []
        if not by_backend:
            return {"reachable": False, "models": [], "backends": {}}
        pool = ThreadPoolExecutor(max_workers=min(8, len(by_backend)), thread_name_prefix="llm-health")
        futures = {bid: pool.submit(self._backends[bid].list_models, probe_timeout) for bid in by_backend}
        end = time.monotonic() + deadline
        try:
            for backend_id, future in futures.items():
                specs = by_backend[backend_id]
                entry: dict[str, Any] = {
                    "kind": specs[0].backend,
                    "base_url": specs[0].base_url,
                    "reachable": False,
                    "reason": None,
                    "circuit": self._breakers[backend_id].state,
                    "models": [],
                    "missing": [],
                }
                try:
                    served = future.result(timeout=max(0.0, end - time.monotonic()))
                except FutureTimeout:
                    entry["reason"] = f"no answer within the {deadline:g}s health budget"
                except BackendError as exc:
                    entry["reason"] = str(exc)
                except Exception as exc:  # a probe must never break the health endpoint
                    entry["reason"] = f"{type(exc).__name__}: {exc}"
                else:
                    entry["reachable"] = True
                    for spec in specs:
                        if _serves(spec, served):
                            entry["models"].append(spec.name)
                            answering.append(spec.name)
                        else:
                            entry["missing"].append(spec.name)
                    if entry["missing"] and specs[0].backend == "ollama":
                        entry["reason"] = "not pulled: " + ", ".join(entry["missing"]) + " (ollama pull NAME)"
                backends[backend_id] = entry
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return {"reachable": any(b["reachable"] for b in backends.values()), "models": answering, "backends": backends}


class _VisibleText:
    """Streamed text minus reasoning blocks (``<think>...</think>``), handed out as increments.

    What may be the start of a ``<think>`` tag is held back until it is known not to be one, so no
    scratchpad text ever reaches the client; leading blanks are dropped as :meth:`Answerer.answer`
    strips them.
    """

    _TAG = "<think>"

    def __init__(self) -> None:
        self.raw = ""
        self.sent = ""

    @property
    def shown(self) -> bool:
        return bool(self.sent)

    def add(self, piece: str) -> str:
        self.raw += piece
        visible = _THINK.sub("", self.raw)
        cut = visible.rfind("<")
        if cut != -1 and self._TAG.startswith(visible[cut:].lower()):
            visible = visible[:cut]
        visible = visible.lstrip()
        if len(visible) <= len(self.sent) or not visible.startswith(self.sent):
            return ""
        new, self.sent = visible[len(self.sent):], visible
        return new


def _serves(spec: ModelSpec, served: list[str]) -> bool:
    if spec.backend == "openai":
        # llama-server lists the file it loaded and answers to any model name; vLLM lists its names.
        return True
    names = set(served)
    return spec.name in names or (":" not in spec.name and f"{spec.name}:latest" in names)


def _count(usage: Usage, spec: ModelSpec, messages: list[dict[str, str]], reply: ChatReply | None,
           partial: str) -> None:
    """One model call into ``usage``: the server's counts when it reported them, else estimates (the
    prompt builder's for the prompt, the same characters-per-token rule for the text, scratchpad
    included: the model generated it). A call that ended without a reply counts the text that
    arrived, and no tokens when none did: what the server spent on it is unknown."""
    if reply is None:
        usage.add(spec.name, prompt_tokens=messages_tokens(messages) if partial else 0,
                  completion_tokens=approx_tokens(partial), estimated=True, failed=True)
        return
    # A reported prompt count of 0 is a server that did not count (a prompt is never empty).
    estimated = not reply.prompt_tokens or reply.completion_tokens is None
    usage.add(
        spec.name,
        prompt_tokens=reply.prompt_tokens or messages_tokens(messages),
        completion_tokens=reply.completion_tokens if reply.completion_tokens is not None
        else approx_tokens(reply.content),
        estimated=estimated, failed=False,
    )


def _failed(spec: ModelSpec, exc: BackendError, breaker: CircuitBreaker, failed_backends: dict[str, str], hop: Any,
            call_started: float, *, streamed: bool = False) -> None:
    """A model call that raised: the breaker learns whether the server is down, and the hop says why."""
    if exc.transport:
        breaker.record_failure(str(exc))
        failed_backends[spec.backend_id] = str(exc)
    elif exc.responded:
        breaker.record_success()  # the server is up; this model failed
    else:
        breaker.release_probe()
    log.info(
        "llm hop model=%s backend=%s latency_ms=%.0f transport=%s streamed=%s",
        spec.name, spec.backend_id, (time.perf_counter() - call_started) * 1000, exc.transport, streamed,
    )
    hop(str(exc))


def _checked(content: str, prompt: Prompt) -> CitationCheck:
    """The citation check of a reply; a compact prompt's reply is cited by attribution first
    (``[n]`` snippet numbers expanded, uncited claims given the shown snippet that holds them)."""
    if prompt.numbered:
        content, _ = attribute_citations(prompt.expand_numbers(content), prompt.included)
    return check_citations(content, prompt.included)


def _uncited_reason(check: CitationCheck) -> str:
    if check.rejected:
        return "answer cited only refs that were not retrieved (" + ", ".join(check.rejected[:5]) + ")"
    return "answer cited no retrieved snippet"


def _hop_recorder(fallbacks: list[dict[str, Any]], from_name: str, to_name: str) -> Any:
    def hop(reason: str) -> None:
        fallbacks.append({"from": from_name, "to": to_name, "reason": reason})

    return hop
