"""``POST /v1/query`` and ``POST /v1/batch/query``: kill-switch, quota, queue, canary arm, engine."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from codex_core.answer import Answer
from serving.canary import CHALLENGER, ArmChoice
from serving.deps import Caller, Services, Svc, Who
from serving.engine import UnknownRepo
from serving.quotas import Throttled
from serving.schemas import BatchItem, BatchRequest, QueryRequest, QueryResponse

router = APIRouter(tags=["queries"])


def answer_one(svc: Services, item: QueryRequest | BatchItem, account: str, who: Caller,
               started: float | None = None) -> Answer:
    """One query through the canary and the engine; a failing challenger is re-served by the champion.

    ``router_latency_seconds`` observes from ``started`` (the request's arrival for /v1/query, so
    queue waits count) or from the start of this item (batch).
    """
    arrived = started if started is not None else time.perf_counter()
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
            allowed_repos=who.allowed_repos(), trace_extra=extra,
        )
        return result, time.perf_counter() - started

    started = time.perf_counter()
    try:
        result, latency = run(choice)
    except UnknownRepo:
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
        result, latency = run(champion)
    svc.canary.record(choice, ok=True, latency_s=latency, abstained=result.abstained)
    if choice.arm is not None:
        svc.metrics.canary_requests.labels(choice.arm, "abstained" if result.abstained else "ok").inc()
    result = result.model_copy(update={"arm": extra["canary"]["arm"]})
    svc.metrics.observe_answer(
        svc.engine.trace(result.trace_id), result.route, result.model, time.perf_counter() - arrived
    )
    return result

def gate(svc: Services, request: Request, account: str, queue: str, query: str | None) -> None:
    """Kill-switch first (fast 503), identity already checked; fills the access-log fields."""
    request.state.log.update(tenant=account, queue=queue, query=query)
    state = svc.kill_switch.state()
    if state.on:
        request.state.log.update(admit=False, throttle="kill_switch")
        raise HTTPException(
            503, f"queries are stopped by the kill-switch: {state.reason} (since {state.set_at}"
                 f"{', by ' + state.set_by if state.set_by else ''}); an admin turns it off with "
                 "`feriactl kill-switch off` or POST /v1/admin/kill-switch {\"on\": false}",
            headers={"Retry-After": "30"},
        )

def throttled(svc: Services, request: Request, queue: str, exc: Throttled) -> JSONResponse:
    svc.metrics.throttle.labels(queue, exc.reason).inc()
    request.state.log.update(admit=False, throttle=exc.reason)
    return JSONResponse(
        {"detail": f"{exc.detail}; retry in {exc.retry_after}s", "reason": exc.reason,
         "retry_after_s": exc.retry_after},
        status_code=429, headers={"Retry-After": str(exc.retry_after)},
    )

@router.post("/v1/query", response_model=QueryResponse, responses={429: {}, 503: {}})
async def query(body: QueryRequest, request: Request, who: Who, svc: Svc):
    if not body.query.strip():
        raise HTTPException(status_code=422, detail="query is blank")
    arrived = time.perf_counter()
    account, queue = who.account(body.tenant), body.mode
    gate(svc, request, account, queue, body.query)
    try:
        ticket = svc.admission.admit(account, queue)
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

@router.post("/v1/batch/query", responses={429: {}, 503: {}})
async def batch_query(body: BatchRequest, request: Request, who: Who, svc: Svc) -> dict:
    """Several queries in the ``batch`` queue; costs one token per query. Per-item errors are inline."""
    account = who.account(body.tenant)
    gate(svc, request, account, "batch", f"[batch of {len(body.queries)}] {body.queries[0].query}")

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
        ticket = svc.admission.admit(account, "batch", cost=len(body.queries))
        svc.metrics.admit.labels("batch").inc()
        request.state.log["admit"] = True
        results = await svc.admission.run(ticket, lambda: run_in_threadpool(run_all))
    except Throttled as exc:
        return throttled(svc, request, "batch", exc)
    request.state.log["trace_id"] = ",".join(r.get("trace_id", "-") for r in results)[:400]
    return {"results": results}
