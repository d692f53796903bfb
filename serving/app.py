"""FastAPI app: queries, health, repos, traces, metrics, the operator's admin routes and agent runs.

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
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from codex_core.configs import ConfigStore
from codex_core.home import CodexHome
from codex_core.sandbox.stats import RunTotals
from codex_core.settings import Settings
from serving import routes_admin, routes_agent, routes_query, routes_views
from serving.auth import TenantStore
from serving.canary import ArmSignals, CanaryRouter, CanaryStore
from serving.deps import Services
from serving.engine import VERSION, QueryEngine
from serving.gpu import GovernedAnswerer, GpuGovernor
from serving.killswitch import KillSwitch
from serving.logs import AccessLog
from serving.metrics import ServingMetrics
from serving.quotas import QUEUES, Admission, QuotaConfig, load_quota_config
from serving.shared_state import SharedLimiter, SharedState, StateStoreUnavailable

log = logging.getLogger("codex.serving")
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
    their own. ``state_dir`` (tenants, canary; the sqlite shared state when no database is configured)
    defaults to ``CODEX_HOME/serving``. Quotas and the kill-switch live in the shared serving state
    (``serving/shared_state.py``), so replicas of this app enforce them together."""

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
        shared = SharedState.for_serving(settings, directory)  # connects on first use: start-up never waits for it
        admission = Admission(quotas or load_quota_config(settings.quotas_config), limiter=SharedLimiter(shared))
        app.state.agent_runs = agent_runs = routes_agent.AgentRuns.for_home(engine.home, env)
        metrics = ServingMetrics(governor, admission.depth, QUEUES, agent_runs=RunTotals(agent_runs.store))
        canary_store = CanaryStore(directory, ConfigStore(engine.home.configs_dir),
                                   promote_callback or _champion_callback(engine.home, settings))

        def publish_signals(arm: str, signals: ArmSignals) -> None:
            metrics.canary_p95.labels(arm).set(signals.p95_s or 0.0)
            metrics.canary_error_rate.labels(arm).set(signals.error_rate)
            metrics.canary_abstention_rate.labels(arm).set(signals.abstention_rate)

        holder["services"] = app.state.services = Services(
            engine=engine,
            tenants=TenantStore(directory / "tenants.json"),
            kill_switch=KillSwitch(shared, legacy_dir=directory),
            canary_store=canary_store,
            canary=CanaryRouter(canary_store, on_signals=publish_signals),
            admission=admission,
            governor=governor,
            metrics=metrics,
            shared_state=shared,
        )
        yield
        holder["services"].canary.flush()
        await admission.close()  # this replica's in-flight slots are freed now, not when their leases expire
        shared.close()
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

    @app.exception_handler(StateStoreUnavailable)
    async def shared_state_unavailable(request: Request, exc: StateStoreUnavailable) -> JSONResponse:
        # Fail closed: without the shared state no replica can tell how much of a quota is left, or
        # whether the kill-switch is on. The message names the store with its password hidden.
        log.error("%s", exc)
        request.state.log.setdefault("error", "shared_state_unavailable")
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

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
            run_id=fields.get("run_id"),
        )
        return response

    app.include_router(routes_query.router)
    app.include_router(routes_views.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_agent.router)
    return app
