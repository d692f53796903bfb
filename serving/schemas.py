"""Request bodies of the query API (the response is ``codex_core.answer.Answer``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from codex_core.answer import Answer
from codex_core.home import REPO_NAME_RE

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
    stream: bool = Field(
        False, description="Answer with server-sent events: `token`s as the model writes, then `final` (the answer)"
    )


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
