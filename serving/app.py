"""FastAPI app: queries, health, repos, traces, metrics, and the operator's admin routes.

Request path of ``POST /v1/query``: authenticate (API key -> tenant) -> kill-switch -> tenant
quota (token bucket, in-flight caps) -> bounded server queue -> canary arm -> engine (retrieval
restricted to the tenant's repositories) -> metrics + one JSON log line. OpenAPI at ``/docs``;
docs/operations.md is the runbook.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from codex_core.answer import Answer
from codex_core.configs import ConfigStore
from codex_core.home import REPO_NAME_RE, CodexHome
from codex_core.settings import Settings
from serving.auth import LOCAL, LOCAL_TENANT, ROLES, Tenant, TenantError, TenantStore, auth_mode, key_from_headers
from serving.canary import CHALLENGER, ArmChoice, ArmSignals, CanaryError, CanaryRouter, CanaryStore
from serving.engine import VERSION, QueryEngine, UnknownRepo
from serving.gpu import GovernedAnswerer, GpuGovernor
from serving.killswitch import KillSwitch
from serving.logs import AccessLog
from serving.metrics import ServingMetrics
from serving.quotas import QUEUES, Admission, QuotaConfig, Throttled, load_quota_config

log = logging.getLogger("codex.serving")
REPO_PATTERN = REPO_NAME_RE.pattern
MAX_BATCH = 32


class QueryRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=4000, description="A where / how / why question about the code")
    repo: str | None = Field(None, pattern=REPO_PATTERN, description="Restrict to one repository")
    top_k: int = Field(5, ge=1, le=50)
    tenant: str | None = Field(
        None, max_length=64, description="Open (no tenants) mode only: who to account the request to"
    )
    mode: Literal["fast", "batch"] = Field("fast", description="Queue: fast (interactive) or batch")


class BatchItem(BaseModel):
    query: str = Field(..., min_length=1, max_length=4000)
    repo: str | None = Field(None, pattern=REPO_PATTERN)
    top_k: int = Field(5, ge=1, le=50)


class BatchRequest(BaseModel):
    queries: list[BatchItem] = Field(..., min_length=1, max_length=MAX_BATCH)
    tenant: str | None = Field(None, max_length=64)


QueryResponse = Answer  # the API's response model is the engine's answer


class KillSwitchRequest(BaseModel):
    on: bool
    reason: str = Field("", max_length=500)


class CanaryStartRequest(BaseModel):
    config_id: str = Field(..., pattern=r"^[0-9a-f]{12}$")
    traffic: float = Field(10, gt=0, le=50)


class CanaryEndRequest(BaseModel):
    reason: str = Field("", max_length=500)


class TenantCreateRequest(BaseModel):
    name: str = Field(..., pattern=REPO_PATTERN)
    role: Literal["admin", "analyst", "user"] = "user"
    repos: list[str] = Field(default_factory=lambda: ["*"])


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


# ------------------------------------------------------------ identity (module level: FastAPI resolves
# annotations from module globals)


def _services(request: Request) -> Services:
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
    svc = _services(request)
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


MAX_BODY_BYTES = 1024 * 1024  # a query is at most 4,000 characters; a batch of them fits easily


def _champion_callback(home: CodexHome, settings: Settings) -> Callable[[str, dict[str, Any]], None]:
    """A promoted canary's config becomes the MLflow ``champion`` (the registry is opened only then)."""

    def promote(config_id: str, canary: dict[str, Any]) -> None:
        from codex_core.champion import ChampionService

        ChampionService.for_home(home, settings).promote_config(config_id)

    return promote


def create_app(
    engine_factory: Callable[[], QueryEngine] | None = None,
    *,
    state_dir: Path | None = None,
    quotas: QuotaConfig | None = None,
    governor: GpuGovernor | None = None,
    access_log: AccessLog | None = None,
    env: Mapping[str, str] = os.environ,
    promote_callback: Callable[[str, dict[str, Any]], None] | None = None,
) -> FastAPI:
    """``engine_factory`` defaults to an engine over CODEX_HOME with a GPU-governed Answerer; tests pass
    their own. ``state_dir`` (tenants, kill-switch, canary) defaults to ``CODEX_HOME/serving``."""

    settings = Settings.from_env(env)
    governor = governor or GpuGovernor()
    access_log = access_log or AccessLog()
    holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        factory = engine_factory or (
            lambda: QueryEngine(CodexHome(settings.home_path), settings=settings,
                                answerer=GovernedAnswerer.governed(governor, env=env))
        )
        engine = await run_in_threadpool(factory)
        await run_in_threadpool(engine.refresh, True)
        # Load the embedding model now, not on the first user's query.
        await run_in_threadpool(engine.embedder.embed, ["warm up"])
        directory = state_dir or engine.home.serving_state_dir
        admission = Admission(quotas or load_quota_config(settings.quotas_config))
        metrics = ServingMetrics(governor, admission.depth, QUEUES)
        canary_store = CanaryStore(directory, ConfigStore(engine.home.configs_dir),
                                   promote_callback or _champion_callback(engine.home, settings))

        def publish_signals(arm: str, signals: ArmSignals) -> None:
            metrics.canary_p95.labels(arm).set(signals.p95_s or 0.0)
            metrics.canary_error_rate.labels(arm).set(signals.error_rate)
            metrics.canary_abstention_rate.labels(arm).set(signals.abstention_rate)

        holder["services"] = app.state.services = Services(
            engine=engine,
            tenants=TenantStore(directory / "tenants.json"),
            kill_switch=KillSwitch(directory),
            canary_store=canary_store,
            canary=CanaryRouter(canary_store, on_signals=publish_signals),
            admission=admission,
            governor=governor,
            metrics=metrics,
        )
        yield
        holder["services"].canary.flush()
        engine.close()

    app = FastAPI(title="Precision Codex", version=VERSION, lifespan=lifespan)
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the rejected input: a 10 MiB query would come back whole, and NaN
        # or a lone surrogate cannot even be rendered (a 500). Say where and what, never the value.
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()[:20]]
        return JSONResponse({"detail": errors}, status_code=422)

    def services() -> Services:
        return holder["services"]

    # ------------------------------------------------------------ identity

    def require(who: Caller, need: str, what: str) -> None:
        ok = who.tenant.is_admin if need == "admin" else who.tenant.can_read_operations
        if not ok:
            roles = "admin" if need == "admin" else "admin or analyst"
            raise HTTPException(
                403, f"tenant {who.tenant.name!r} has role {who.tenant.role!r}; {what} needs role {roles}"
            )

    # ------------------------------------------------------------ access log + 5xx accounting

    @app.middleware("http")
    async def access_logging(request: Request, call_next):
        request.state.log = {}
        started = time.perf_counter()
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            declared = MAX_BODY_BYTES + 1
        try:
            if declared > MAX_BODY_BYTES:
                response = JSONResponse(
                    {"detail": f"request body of {declared} bytes exceeds the {MAX_BODY_BYTES}-byte limit"}, 413
                )
            else:
                response = await call_next(request)
        except Exception as exc:  # anything unhandled: a JSON 500, the traceback in the serving log
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            request.state.log.setdefault("error", f"{type(exc).__name__}")
            response = JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the serving log"}, 500)
        fields: dict[str, Any] = request.state.log
        svc = holder.get("services")
        if svc is not None and response.status_code >= 500:
            svc.metrics.http_errors.labels(str(response.status_code)).inc()
        lat_ms = round((time.perf_counter() - started) * 1000, 2)
        # Lets a client tell server time from network/client queueing (feriactl simulate records both).
        response.headers["Server-Timing"] = f"app;dur={lat_ms}"
        access_log.emit(
            method=request.method, path=request.url.path, status=response.status_code, lat_ms=lat_ms,
            trace_id=fields.get("trace_id"), tenant=fields.get("tenant"), route=fields.get("route"),
            model=fields.get("model"), confidence=fields.get("confidence"), admit=fields.get("admit"),
            throttle=fields.get("throttle"), queue=fields.get("queue"), arm=fields.get("arm"),
            commits_behind=fields.get("commits_behind"), query=fields.get("query"), error=fields.get("error"),
        )
        return response

    # ------------------------------------------------------------ queries

    def answer_one(item: QueryRequest | BatchItem, account: str, who: Caller, started: float | None = None
                   ) -> Answer:
        """One query through the canary and the engine; a failing challenger is re-served by the champion.

        ``router_latency_seconds`` observes from ``started`` (the request's arrival for /v1/query, so
        queue waits count) or from the start of this item (batch).
        """
        arrived = started if started is not None else time.perf_counter()
        svc = services()
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

    def gate(request: Request, who: Caller, account: str, queue: str, query: str | None) -> None:
        """Kill-switch first (fast 503), identity already checked; fills the access-log fields."""
        svc = services()
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

    def throttled(request: Request, queue: str, exc: Throttled) -> JSONResponse:
        svc = services()
        svc.metrics.throttle.labels(queue, exc.reason).inc()
        request.state.log.update(admit=False, throttle=exc.reason)
        return JSONResponse(
            {"detail": f"{exc.detail}; retry in {exc.retry_after}s", "reason": exc.reason,
             "retry_after_s": exc.retry_after},
            status_code=429, headers={"Retry-After": str(exc.retry_after)},
        )

    @app.post("/v1/query", response_model=QueryResponse, responses={429: {}, 503: {}})
    async def query(body: QueryRequest, request: Request, who: Who):
        if not body.query.strip():
            raise HTTPException(status_code=422, detail="query is blank")
        arrived = time.perf_counter()
        svc = services()
        account, queue = who.account(body.tenant), body.mode
        gate(request, who, account, queue, body.query)
        try:
            ticket = svc.admission.admit(account, queue)
            svc.metrics.admit.labels(queue).inc()
            request.state.log["admit"] = True
            result = await svc.admission.run(ticket, lambda: run_in_threadpool(answer_one, body, account, who, arrived))
        except Throttled as exc:
            return throttled(request, queue, exc)
        except UnknownRepo as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        request.state.log.update(
            trace_id=result.trace_id, route=result.route, model=result.model,
            confidence=result.confidence, arm=result.arm, commits_behind=result.commits_behind,
        )
        return result

    @app.post("/v1/batch/query", responses={429: {}, 503: {}})
    async def batch_query(body: BatchRequest, request: Request, who: Who) -> dict:
        """Several queries in the ``batch`` queue; costs one token per query. Per-item errors are inline."""
        svc = services()
        account = who.account(body.tenant)
        gate(request, who, account, "batch", f"[batch of {len(body.queries)}] {body.queries[0].query}")

        def run_all() -> list[dict[str, Any]]:
            out = []
            for item in body.queries:
                try:
                    out.append(answer_one(item, account, who).model_dump())
                except UnknownRepo as exc:
                    out.append({"error": {"status": 404, "detail": str(exc)}})
                except Exception as exc:  # one bad item must not fail its neighbours
                    services().metrics.http_errors.labels("500").inc()
                    out.append({"error": {"status": 500, "detail": f"internal error ({type(exc).__name__})"}})
            return out

        try:
            ticket = svc.admission.admit(account, "batch", cost=len(body.queries))
            svc.metrics.admit.labels("batch").inc()
            request.state.log["admit"] = True
            results = await svc.admission.run(ticket, lambda: run_in_threadpool(run_all))
        except Throttled as exc:
            return throttled(request, "batch", exc)
        request.state.log["trace_id"] = ",".join(r.get("trace_id", "-") for r in results)[:400]
        return {"results": results}

    # ------------------------------------------------------------ read-only views

    @app.get("/v1/health")
    async def health(who: MaybeWho) -> dict:
        svc = services()
        mode = auth_mode(svc.tenants, settings)
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

    @app.get("/v1/repos")
    async def repos(who: Who) -> dict:
        return {"repos": await run_in_threadpool(services().engine.repos, who.allowed_repos())}

    @app.get("/v1/trace/{trace_id}")
    async def trace(trace_id: str, who: Who) -> dict:
        found = services().engine.trace(trace_id)
        # Another tenant's trace is reported as missing, not forbidden: its existence is not ours to leak.
        if found is not None and who.mode == "required" and not who.tenant.can_read_operations:
            if found.get("tenant") != who.tenant.name:
                found = None
        if found is None:
            raise HTTPException(
                status_code=404, detail=f"no trace {trace_id!r} (traces are kept for the last 1000 queries)"
            )
        return found

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(services().metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------ admin

    @app.get("/v1/admin/kill-switch")
    async def kill_switch_state(who: Who) -> dict:
        require(who, "analyst", "reading the kill-switch")
        return services().kill_switch.state().to_dict()

    @app.post("/v1/admin/kill-switch")
    async def kill_switch_set(body: KillSwitchRequest, request: Request, who: Who) -> dict:
        require(who, "admin", "the kill-switch")
        request.state.log["tenant"] = who.tenant.name
        return services().kill_switch.set(body.on, body.reason, set_by=f"api:{who.tenant.name}").to_dict()

    @app.get("/v1/admin/canary")
    async def canary_status(who: Who) -> dict:
        require(who, "analyst", "canary status")
        services().canary.flush()
        return services().canary_store.status()

    @app.post("/v1/admin/canary/start")
    async def canary_start(body: CanaryStartRequest, who: Who) -> dict:
        require(who, "admin", "canary control")
        try:
            services().canary_store.start(body.config_id, body.traffic)
        except CanaryError as exc:
            raise HTTPException(409, str(exc)) from exc
        return services().canary_store.status()

    @app.post("/v1/admin/canary/{action}")
    async def canary_end(action: Literal["promote", "rollback"], who: Who,
                         body: CanaryEndRequest | None = None) -> dict:
        require(who, "admin", "canary control")
        svc = services()
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

    @app.get("/v1/admin/tenants")
    async def tenants_list(who: Who) -> dict:
        require(who, "analyst", "listing tenants")
        return {"tenants": services().tenants.listing(), "roles": list(ROLES)}

    @app.post("/v1/admin/tenants", status_code=201)
    async def tenants_add(body: TenantCreateRequest, who: Who) -> dict:
        require(who, "admin", "creating tenants")
        try:
            key = services().tenants.add(body.name, body.role, body.repos)
        except TenantError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"tenant": body.name, "role": body.role, "repos": body.repos, "api_key": key,
                "note": "the key is shown once; only its salted hash is stored"}

    @app.delete("/v1/admin/tenants/{name}")
    async def tenants_remove(name: str, who: Who) -> dict:
        require(who, "admin", "removing tenants")
        try:
            services().tenants.remove(name)
        except TenantError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"removed": name}

    return app
