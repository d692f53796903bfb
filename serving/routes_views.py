"""Read-only views: ``/v1/health`` (liveness and why degraded), ``/v1/repos``, ``/v1/trace/{id}``,
``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from serving.auth import auth_mode
from serving.deps import MaybeWho, Svc, Who

router = APIRouter(tags=["views"])


@router.get("/v1/health")
async def health(request: Request, who: MaybeWho, svc: Svc) -> dict:
    mode = auth_mode(svc.tenants, request.app.state.settings)
    visible = who is not None
    result = await run_in_threadpool(svc.engine.health, who.allowed_repos() if who else None)
    if not visible:
        result["index"], result["freshness"] = {}, {}
        result["index_hidden"] = "send an API key to see the repositories you may query"
    kill = svc.kill_switch.state()
    if kill.on:
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
    result["kill_switch"] = kill.to_dict()
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
