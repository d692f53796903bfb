"""``POST /v1/query`` and ``POST /v1/batch/query``: kill-switch, quota, queue, canary arm, engine.

``/v1/query`` with ``"stream": true`` answers with server-sent events: ``token`` (``{"text"}``, the
model's text as it is written), ``restart`` (``{"reason"}``: the text so far is void, another attempt
follows), then ``final`` (the same JSON the non-streaming response is; its ``answer`` is the checked
text to show) — or ``error`` (``{"detail"}``) if the request fails after the stream has started.
Admission is the same as without streaming; a refusal, an unknown repository or a failure before the
first event is the same HTTP error, not a stream. The queue slot is held until the stream ends, and a
client that goes away stops the model's generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event

from codex_core.answer import Answer
from codex_core.llm import AnswerDelta, AnswerRestart
from serving.canary import CHALLENGER, ArmChoice
from serving.deps import Caller, Services, Svc, Who
from serving.engine import StreamCallback, UnknownRepo
from serving.quotas import Throttled
from serving.schemas import BatchItem, BatchRequest, QueryRequest, QueryResponse

router = APIRouter(tags=["queries"])
log = logging.getLogger("codex.serving")
KEEPALIVE_S = 15.0  # an idle stream gets an SSE comment this often, so proxies do not cut it


class StreamClosed(Exception):
    """The client of a streamed answer went away: stop generating."""


def answer_one(svc: Services, item: QueryRequest | BatchItem, account: str, who: Caller,
               started: float | None = None, on_event: StreamCallback | None = None) -> Answer:
    """One query through the canary and the engine; a failing challenger is re-served by the champion.

    ``router_latency_seconds`` observes from ``started`` (the request's arrival for /v1/query, so
    queue waits count) or from the start of this item (batch). ``on_event``: stream the answer
    (``QueryEngine.query``).
    """
    arrived = started if started is not None else time.perf_counter()
    streamed = False

    def forward(event: AnswerDelta | AnswerRestart) -> None:
        nonlocal streamed
        streamed = True
        if on_event is not None:
            on_event(event)

    choice = svc.canary.choose(account, item.query)
    decision = svc.governor.decision()
    extra: dict[str, Any] = {
        "canary": choice.to_trace(),
        "governor": decision.to_dict() if decision.demote else None,
    }

    def run(arm: ArmChoice) -> tuple[Answer, float]:
        started = time.perf_counter()
        result = svc.engine.query(
            item.query, repo=item.repo, top_k=item.top_k, tenant=account, config=arm.retrieval,
            allowed_repos=who.allowed_repos(), trace_extra=extra, on_event=forward if on_event else None,
        )
        return result, time.perf_counter() - started

    started = time.perf_counter()
    try:
        result, latency = run(choice)
    except (UnknownRepo, StreamClosed):
        raise
    except Exception as exc:
        svc.canary.record(choice, ok=False, latency_s=time.perf_counter() - started, abstained=False)
        if choice.arm is not None:
            svc.metrics.canary_requests.labels(choice.arm, "error").inc()
        if choice.arm != CHALLENGER:
            raise
        champion = svc.canary.champion_of(choice)
        extra["canary"] = {
            **champion.to_trace(), "fell_back_from": CHALLENGER,
            "challenger_error": f"{type(exc).__name__}: {exc}"[:500],
        }
        choice = champion
        if streamed:
            forward(AnswerRestart("the challenger configuration failed; the champion answers"))
        result, latency = run(champion)
    svc.canary.record(choice, ok=True, latency_s=latency, abstained=result.abstained)
    if choice.arm is not None:
        svc.metrics.canary_requests.labels(choice.arm, "abstained" if result.abstained else "ok").inc()
    result = result.model_copy(update={"arm": extra["canary"]["arm"]})
    svc.metrics.observe_answer(
        svc.engine.trace(result.trace_id), result.route, result.model, time.perf_counter() - arrived
    )
    return result

async def gate(svc: Services, request: Request, account: str, queue: str, query: str | None) -> None:
    """Kill-switch first (fast 503), identity already checked; fills the access-log fields. The switch is
    read from the shared state on every request (in a thread: it may be a database round trip)."""
    request.state.log.update(tenant=account, queue=queue, query=query)
    state = await run_in_threadpool(svc.kill_switch.state)
    if state.on:
        request.state.log.update(admit=False, throttle="kill_switch")
        raise HTTPException(503, state.refusal(), headers={"Retry-After": "30"})

def throttled(svc: Services, request: Request, queue: str, exc: Throttled) -> JSONResponse:
    svc.metrics.throttle.labels(queue, exc.reason).inc()
    request.state.log.update(admit=False, throttle=exc.reason)
    return JSONResponse(
        {"detail": f"{exc.detail}; retry in {exc.retry_after}s", "reason": exc.reason,
         "retry_after_s": exc.retry_after},
        status_code=429, headers={"Retry-After": str(exc.retry_after)},
    )

_STREAMED = {
    "description": "The answer (JSON), or with `\"stream\": true` server-sent events: `token`* (`restart`), "
                   "then `final` (this JSON) or `error`",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.post("/v1/query", response_model=QueryResponse, responses={200: _STREAMED, 429: {}, 503: {}})
async def query(body: QueryRequest, request: Request, who: Who, svc: Svc):
    if not body.query.strip():
        raise HTTPException(status_code=422, detail="query is blank")
    arrived = time.perf_counter()
    account, queue = who.account(body.tenant), body.mode
    await gate(svc, request, account, queue, body.query)
    if body.stream:
        return await stream_query(svc, request, body, who, account, queue, arrived)
    try:
        ticket = await svc.admission.admit_async(account, queue)
        svc.metrics.admit.labels(queue).inc()
        request.state.log["admit"] = True
        result = await svc.admission.run(
            ticket, lambda: run_in_threadpool(answer_one, svc, body, account, who, arrived)
        )
    except Throttled as exc:
        return throttled(svc, request, queue, exc)
    except UnknownRepo as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    request.state.log.update(
        trace_id=result.trace_id, route=result.route, model=result.model,
        confidence=result.confidence, arm=result.arm, commits_behind=result.commits_behind,
    )
    return result

_END = object()
_PING = object()
_TASKS: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks


async def stream_query(svc: Services, request: Request, body: QueryRequest, who: Caller, account: str, queue: str,
                       arrived: float) -> Response:
    """``/v1/query`` as server-sent events; admission exactly as :func:`query` does it."""
    try:
        ticket = await svc.admission.admit_async(account, queue)
    except Throttled as exc:
        return throttled(svc, request, queue, exc)
    svc.metrics.admit.labels(queue).inc()
    request.state.log["admit"] = True
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Any] = asyncio.Queue()
    closed = threading.Event()
    got_slot = loop.create_future()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(events.put_nowait, item)

    def emit(event: Any) -> None:
        if closed.is_set():
            raise StreamClosed
        put(event)

    def produce() -> None:  # in a worker thread, while the ticket holds a slot of the queue
        try:
            emit(answer_one(svc, body, account, who, arrived, on_event=emit))
        except StreamClosed:
            pass
        except Exception as exc:
            put(exc)
        finally:
            put(_END)

    async def work() -> None:
        got_slot.set_result(True)
        await run_in_threadpool(produce)

    runner = asyncio.create_task(svc.admission.run(ticket, work))
    _TASKS.add(runner)
    runner.add_done_callback(_TASKS.discard)
    await asyncio.wait([runner, got_slot], return_when=asyncio.FIRST_COMPLETED)
    if not got_slot.done():
        try:
            runner.result()
        except Throttled as exc:
            return throttled(svc, request, queue, exc)
    # The first event decides between an HTTP error (nothing was streamed yet) and a stream.
    first = await events.get()
    if isinstance(first, UnknownRepo):
        raise HTTPException(status_code=404, detail=str(first)) from first
    if isinstance(first, Exception):
        raise first  # the app's JSON 500, as without streaming
    return EventSourceResponse(_events(svc, request, first, events, closed), headers={"Cache-Control": "no-cache"})


async def _events(svc: Services, request: Request, first: Any, events: asyncio.Queue[Any],
                  closed: threading.Event) -> AsyncIterator[bytes]:
    item = first
    try:
        while item is not _END:
            if item is _PING:
                yield KEEPALIVE_COMMENT
            elif isinstance(item, Exception):
                log.error("streamed query failed after the stream started", exc_info=item)
                svc.metrics.http_errors.labels("500").inc()
                request.state.log["error"] = type(item).__name__
                detail = {"detail": f"internal error ({type(item).__name__}); see the serving log"}
                yield format_sse_event(event="error", data_str=json.dumps(detail))
                return
            else:
                yield _encode(item)
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    item = await events.get()
            except TimeoutError:
                item = _PING
    finally:
        closed.set()  # the producer stops at its next event (the client left, or the stream is over)


def _encode(event: AnswerDelta | AnswerRestart | Answer) -> bytes:
    if isinstance(event, AnswerDelta):
        return format_sse_event(event="token", data_str=json.dumps({"text": event.text}))
    if isinstance(event, AnswerRestart):
        return format_sse_event(event="restart", data_str=json.dumps({"reason": event.reason}))
    return format_sse_event(event="final", data_str=event.model_dump_json())


@router.post("/v1/batch/query", responses={429: {}, 503: {}})
async def batch_query(body: BatchRequest, request: Request, who: Who, svc: Svc) -> dict:
    """Several queries in the ``batch`` queue; costs one token per query. Per-item errors are inline."""
    account = who.account(body.tenant)
    await gate(svc, request, account, "batch", f"[batch of {len(body.queries)}] {body.queries[0].query}")

    def run_all() -> list[dict[str, Any]]:
        out = []
        for item in body.queries:
            try:
                out.append(answer_one(svc, item, account, who).model_dump())
            except UnknownRepo as exc:
                out.append({"error": {"status": 404, "detail": str(exc)}})
            except Exception as exc:  # one bad item must not fail its neighbours
                svc.metrics.http_errors.labels("500").inc()
                out.append({"error": {"status": 500, "detail": f"internal error ({type(exc).__name__})"}})
        return out

    try:
        ticket = await svc.admission.admit_async(account, "batch", cost=len(body.queries))
        svc.metrics.admit.labels("batch").inc()
        request.state.log["admit"] = True
        results = await svc.admission.run(ticket, lambda: run_in_threadpool(run_all))
    except Throttled as exc:
        return throttled(svc, request, "batch", exc)
    request.state.log["trace_id"] = ",".join(r.get("trace_id", "-") for r in results)[:400]
    return {"results": results}
