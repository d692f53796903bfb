"""FastAPI app: `/v1/query`, `/v1/health`, `/v1/repos`, `/v1/trace/{id}`; OpenAPI at `/docs`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from codex_core.home import CodexHome
from serving.engine import VERSION, QueryEngine, UnknownRepo

REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class QueryRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=4000, description="A where / how / why question about the code")
    repo: str | None = Field(None, pattern=REPO_PATTERN, description="Restrict to one repository")
    top_k: int = Field(5, ge=1, le=50)
    tenant: str | None = Field(None, max_length=64)


class Citation(BaseModel):
    repo: str
    path: str
    line_start: int
    line_end: int
    symbol: str | None
    score: float
    snippet: str
    cited_in_answer: bool


class QueryResponse(BaseModel):
    answer: str
    citations: list[Citation]
    confidence: float
    confidence_kind: str
    abstained: bool
    model: str
    route: str
    index_commit: str | None
    index_commits: dict[str, str]
    latency_ms: float
    trace_id: str


def create_app(engine_factory: Callable[[], QueryEngine] | None = None) -> FastAPI:
    """``engine_factory`` defaults to an engine over CODEX_HOME; tests pass their own."""

    state: dict[str, QueryEngine] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        factory = engine_factory or (lambda: QueryEngine(CodexHome.from_env()))
        engine = await run_in_threadpool(factory)
        await run_in_threadpool(engine.refresh, True)
        # Load the embedding model now, not on the first user's query.
        await run_in_threadpool(engine.embedder.embed, ["warm up"])
        state["engine"] = engine
        yield
        engine.close()

    app = FastAPI(title="Precision Codex", version=VERSION, lifespan=lifespan)

    def engine() -> QueryEngine:
        return state["engine"]

    @app.post("/v1/query", response_model=QueryResponse)
    async def query(request: QueryRequest) -> dict:
        if not request.query.strip():
            raise HTTPException(status_code=422, detail="query is blank")
        try:
            return await run_in_threadpool(
                engine().query, request.query, repo=request.repo, top_k=request.top_k, tenant=request.tenant
            )
        except UnknownRepo as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    @app.get("/v1/health")
    async def health() -> dict:
        return await run_in_threadpool(engine().health)

    @app.get("/v1/repos")
    async def repos() -> dict:
        return {"repos": await run_in_threadpool(engine().repos)}

    @app.get("/v1/trace/{trace_id}")
    async def trace(trace_id: str) -> dict:
        found = engine().trace(trace_id)
        if found is None:
            raise HTTPException(
                status_code=404, detail=f"no trace {trace_id!r} (traces are kept for the last 1000 queries)"
            )
        return found

    return app
