"""What every route depends on: the serving services, the caller (API key -> tenant), roles.

FastAPI resolves these with ``Depends``; the security schemes (HTTPBearer, APIKeyHeader) make the
OpenAPI document show how to authenticate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import LOCAL, LOCAL_TENANT, Tenant, TenantStore, auth_mode, key_from_headers
from serving.canary import CanaryRouter, CanaryStore
from serving.engine import QueryEngine
from serving.gpu import GpuGovernor
from serving.killswitch import KillSwitch
from serving.metrics import ServingMetrics
from serving.quotas import Admission
from serving.shared_state import SharedState


@dataclass(frozen=True)
class Caller:
    tenant: Tenant
    authenticated: bool
    mode: str  # "open" | "required"

    def account(self, body_tenant: str | None) -> str:
        """Whose quota a request uses: the key's tenant; in open mode the body's ``tenant`` or ``local``."""
        if self.mode == "open":
            return body_tenant or LOCAL_TENANT
        return self.tenant.name

    def allowed_repos(self) -> set[str] | None:
        return None if self.tenant.all_repos else set(self.tenant.repos)


@dataclass
class Services:
    engine: QueryEngine
    tenants: TenantStore
    kill_switch: KillSwitch
    canary_store: CanaryStore
    canary: CanaryRouter
    admission: Admission
    governor: GpuGovernor
    metrics: ServingMetrics
    shared_state: SharedState  # quotas, leases and kill-switch of every replica (serving/shared_state.py)


def get_services(request: Request) -> Services:
    """The services the app's lifespan built (engine, tenants, canary, quotas, shared state, metrics)."""
    return request.app.state.services


# FastAPI's security helpers: the OpenAPI document (and /docs' "Authorize" button) shows both schemes.
# auto_error=False: in open mode (local single user) no key is needed, and a missing key gets the
# product's own 401 message below.
_BEARER = HTTPBearer(auto_error=False, description="an API key from `feriactl tenants add NAME`")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, as a header")


# async: FastAPI would run a plain def dependency in the thread pool the queries need.
async def caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
    x_api_key: Annotated[str | None, Depends(_API_KEY)] = None,
) -> Caller:
    svc = get_services(request)
    mode = auth_mode(svc.tenants, request.app.state.settings)
    if mode == "open":
        return Caller(LOCAL, False, mode)
    authorization = f"{bearer.scheme} {bearer.credentials}" if bearer else None
    key = key_from_headers(authorization, x_api_key)
    if key is None:
        raise HTTPException(
            401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                 "(an admin creates keys with: feriactl tenants add NAME --role user)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = svc.tenants.authenticate(key)
    if tenant is None:
        raise HTTPException(401, "invalid API key (ask an admin for a new one: feriactl tenants add-key NAME)",
                            headers={"WWW-Authenticate": "Bearer"})
    return Caller(tenant, True, mode)


async def optional_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
    x_api_key: Annotated[str | None, Depends(_API_KEY)] = None,
) -> Caller | None:
    try:
        return await caller(request, bearer, x_api_key)
    except HTTPException:
        return None


Who = Annotated[Caller, Depends(caller)]
MaybeWho = Annotated[Caller | None, Depends(optional_caller)]
Svc = Annotated[Services, Depends(get_services)]


def require(who: Caller, need: str, what: str) -> None:
    ok = who.tenant.is_admin if need == "admin" else who.tenant.can_read_operations
    if not ok:
        roles = "admin" if need == "admin" else "admin or analyst"
        raise HTTPException(
            403, f"tenant {who.tenant.name!r} has role {who.tenant.role!r}; {what} needs role {roles}"
        )
