"""The operator's routes: kill-switch, canary start/promote/rollback, tenants (roles checked)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from serving.auth import ROLES, TenantError
from serving.canary import CanaryError
from serving.deps import Svc, Who, require
from serving.schemas import CanaryEndRequest, CanaryStartRequest, KillSwitchRequest, TenantCreateRequest

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/kill-switch")
async def kill_switch_state(who: Who, svc: Svc) -> dict:
    require(who, "analyst", "reading the kill-switch")
    return (await run_in_threadpool(svc.kill_switch.state)).to_dict()

@router.post("/kill-switch")
async def kill_switch_set(body: KillSwitchRequest, request: Request, who: Who, svc: Svc) -> dict:
    require(who, "admin", "the kill-switch")
    request.state.log["tenant"] = who.tenant.name
    # Written to the shared serving state: every replica refuses (or answers) from its next request on.
    state = await run_in_threadpool(svc.kill_switch.set, body.on, body.reason, set_by=f"api:{who.tenant.name}")
    return state.to_dict()

@router.get("/canary")
async def canary_status(who: Who, svc: Svc) -> dict:
    require(who, "analyst", "canary status")
    svc.canary.flush()
    return svc.canary_store.status()

@router.post("/canary/start")
async def canary_start(body: CanaryStartRequest, who: Who, svc: Svc) -> dict:
    require(who, "admin", "canary control")
    try:
        svc.canary_store.start(body.config_id, body.traffic)
    except CanaryError as exc:
        raise HTTPException(409, str(exc)) from exc
    return svc.canary_store.status()

@router.post("/canary/{action}")
async def canary_end(action: Literal["promote", "rollback"], who: Who, svc: Svc,
                     body: CanaryEndRequest | None = None) -> dict:
    require(who, "admin", "canary control")
    svc.canary.flush()
    reason = (body.reason if body else "") or f"{action}d via API by {who.tenant.name}"
    try:
        if action == "promote":
            svc.canary_store.promote(reason)
        else:
            svc.canary_store.rollback(reason)
    except CanaryError as exc:
        raise HTTPException(409, str(exc)) from exc
    return svc.canary_store.status()

@router.get("/tenants")
async def tenants_list(who: Who, svc: Svc) -> dict:
    require(who, "analyst", "listing tenants")
    return {"tenants": svc.tenants.listing(), "roles": list(ROLES)}

@router.post("/tenants", status_code=201)
async def tenants_add(body: TenantCreateRequest, who: Who, svc: Svc) -> dict:
    require(who, "admin", "creating tenants")
    try:
        key = svc.tenants.add(body.name, body.role, body.repos)
    except TenantError as exc:
        raise HTTPException(409, str(exc)) from exc
    return {"tenant": body.name, "role": body.role, "repos": body.repos, "api_key": key,
            "note": "the key is shown once; only its salted hash is stored"}

@router.delete("/tenants/{name}")
async def tenants_remove(name: str, who: Who, svc: Svc) -> dict:
    require(who, "admin", "removing tenants")
    try:
        svc.tenants.remove(name)
    except TenantError as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"removed": name}
