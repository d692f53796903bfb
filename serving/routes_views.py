"""Read-only views: ``/v1/health`` (everything, and why degraded), ``/v1/health/live`` and
``/v1/health/ready`` (the probes), ``/v1/repos``, ``/v1/trace/{id}``, ``/metrics``.

- live: the process answers HTTP. Cheap; never reads the index, the shared state or an LLM, so a
  slow database or model server never gets a healthy replica restarted.
- ready: 200 once an index is published and the shared serving state answers, else 503 with the
  reasons; a balancer sends traffic only to ready replicas. The kill-switch does not make a replica
  unready: refusing with its 503 at once is what it is for.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serving.auth import auth_mode
from serving.deps import MaybeWho, Svc, Who
from serving.engine import VERSION
from serving.killswitch import KillSwitchState
from serving.shared_state import StateStoreUnavailable

router = APIRouter(tags=["views"])


@router.get("/v1/health/live")
async def live(svc: Svc) -> dict:
    return {"status": "alive", "version": VERSION, "uptime_s": round(time.time() - svc.engine.started_at, 1)}


@router.get("/v1/health/ready", responses={503: {"description": "not ready: `reasons` says why"}})
async def ready(svc: Svc) -> JSONResponse:
    reasons: list[str] = []
    try:
        published = len((await run_in_threadpool(svc.engine.reader.refresh)).corpora)
    except Exception as exc:  # a Qdrant server that does not answer, an unreadable pointer
        published = 0
        reasons.append(f"the published index cannot be read ({type(exc).__name__}: {exc})")
    else:
        if published == 0:
            reasons.append("no published index: run feriactl ingest PATH (or wait for the first ingest run)")
    try:
        await run_in_threadpool(svc.shared_state.ping)
    except StateStoreUnavailable as exc:
        reasons.append(str(exc))
    body = {"status": "ready" if not reasons else "not_ready", "reasons": reasons,
            "published_repos": published, "shared_state": svc.shared_state.backend}
    return JSONResponse(body, status_code=503 if reasons else 200)


@router.get("/v1/health")
async def health(request: Request, who: MaybeWho, svc: Svc) -> dict:
    mode = auth_mode(svc.tenants, request.app.state.settings)
    visible = who is not None
    result = await run_in_threadpool(svc.engine.health, who.allowed_repos() if who else None)
    if not visible:
        result["index"], result["freshness"] = {}, {}
        result["index_hidden"] = "send an API key to see the repositories you may query"
    kill: KillSwitchState | None = None
    try:
        kill = await run_in_threadpool(svc.kill_switch.state)
    except StateStoreUnavailable as exc:  # queries are refused (503) until it is back
        result["status"] = "degraded"
        result["reasons"].append(str(exc))
    if kill is not None and kill.on:
        result["status"] = "degraded"
        result["reasons"].append(f"kill-switch on: {kill.reason}")
    tenants = len(svc.tenants.tenants())
    if mode == "required" and tenants == 0:
        result["reasons"].append("auth is required but no tenant exists: feriactl tenants add NAME --role admin")
    result["auth"] = {
        "mode": mode, "tenants": tenants,
        "note": "open: no tenants.json, every caller is the local admin" if mode == "open" else
        "required: send Authorization: Bearer <key> or X-API-Key",
    }
    result["kill_switch"] = kill.to_dict() if kill is not None else None
    result["gpu"] = svc.governor.health()
    result["canary"] = svc.canary.health()
    result["queues"] = svc.admission.snapshot()
    return result

@router.get("/v1/repos")
async def repos(who: Who, svc: Svc) -> dict:
    return {"repos": await run_in_threadpool(svc.engine.repos, who.allowed_repos())}

@router.get("/v1/trace/{trace_id}")
async def trace(trace_id: str, who: Who, svc: Svc) -> dict:
    found = svc.engine.trace(trace_id)
    # Another tenant's trace is reported as missing, not forbidden: its existence is not ours to leak.
    if found is not None and who.mode == "required" and not who.tenant.can_read_operations:
        if found.get("tenant") != who.tenant.name:
            found = None
    if found is None:
        raise HTTPException(
            status_code=404, detail=f"no trace {trace_id!r} (traces are kept for the last 1000 queries)"
        )
    return found

@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Svc) -> Response:
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
