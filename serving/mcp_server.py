"""The MCP server behind ``feriactl mcp``: the verified, calibrated retrieval as tools for coding agents.

Built on the official ``mcp`` SDK (``MCPServer``), over stdio or streamable HTTP. Four tools:

- ``search_code``: retrieval only, no generation: verified citations (repo, path, lines, symbol,
  score, the snippet with secrets masked) and the confidence the retrieval earns;
- ``ask``: exactly what ``POST /v1/query`` answers (``codex_core.answer.Answer``), with the
  champion config;
- ``get_span``: lines of an indexed file at the indexed commit, read from git objects and masked
  as the index was, after every indexed chunk they overlap hash-checks against them;
- ``repo_status``: the published repositories, their commit, chunk count, how far behind HEAD,
  calibrated or heuristic confidence, and why answers are degraded (no LLM: extractive).

A failure the caller can fix (unknown repository or file, lines out of range, kill-switch on) is a
tool error (``isError``) that says what to do next; anything else is logged to stderr with its
traceback, the caller only learns that the tool failed, and the server keeps serving.

Who sees what: over stdio the server is a process of the user who started it and acts as the local
admin, like ``feriactl query``. Over HTTP it asks for the API's keys (``Authorization: Bearer
pcx_...``) as soon as tenants exist, and a key sees only its tenant's repositories; without tenants
it is unauthenticated, so ``feriactl mcp`` binds it to loopback unless told otherwise.

Not taken from the API: quotas and the canary split (one serving process owns a canary's signals,
so this one always answers with the champion config), and the GPU governor.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from codex_core.answer import Answer, CodeSpan
from codex_core.configs import ConfigStore
from codex_core.home import CodexHome
from codex_core.models import span_text
from codex_core.retrieval import GitVerificationSource, RetrievalConfig, verify_citation
from codex_core.settings import Settings
from serving.auth import LOCAL_TENANT, TenantStore, auth_mode
from serving.canary import CanaryError, CanaryStore
from serving.engine import VERSION, QueryEngine, UnknownRepo, citation_fields
from serving.killswitch import KillSwitch
from serving.schemas import REPO_PATTERN
from serving.shared_state import StateStoreUnavailable

log = logging.getLogger("codex.serving.mcp")

SERVER_NAME = "precision-codex"
MAX_SPAN_LINES = 400  # one get_span call; an agent pages through a longer file
INSTRUCTIONS = (
    "Questions about the indexed repositories' code. Every line span returned was re-read from git at the "
    "indexed commit and hash-checked; secrets are masked. Use search_code to find where something is, ask "
    "for a cited answer with a calibrated confidence (abstained=true means: not confident, treat the "
    "citations as guesses), get_span to read exact lines of an indexed file, repo_status to see what is "
    "indexed and how fresh it is."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Query = Annotated[str, Field(min_length=1, max_length=4000, description="A where / how / why question about the code")]
RepoFilter = Annotated[str | None, Field(pattern=REPO_PATTERN, description="Restrict to one repository (repo_status "
                                                                          "lists them); all when omitted")]
TopK = Annotated[int, Field(ge=1, le=50, description="How many citations at most")]


class SearchResult(BaseModel):
    citations: list[CodeSpan] = Field(description="verified against git at the indexed commit, best first")
    confidence: float = Field(description="probability that the best citations answer the query")
    confidence_kind: str = Field(description="calibrated (the repository's calibrator) or heuristic")
    low_confidence: bool = Field(description="ask would abstain at this confidence")
    index_commits: dict[str, str] = Field(description="repository -> commit its published index holds")


class SpanChunk(BaseModel):
    line_start: int
    line_end: int
    symbol: str | None


class Span(BaseModel):
    repo: str
    path: str
    commit: str = Field(description="the indexed commit the lines were read at")
    line_start: int
    line_end: int
    file_lines: int = Field(description="lines in the file at that commit")
    text: str = Field(description="the lines, joined by newlines, secrets masked as in the index")
    verified_chunks: list[SpanChunk] = Field(
        description="indexed chunks overlapping the span; each hashed to the same content as these lines"
    )


class RepoState(BaseModel):
    repo: str
    commit: str = Field(description="the commit the published index holds")
    version: str = Field(description="published index version")
    chunks: int
    head: str | None = Field(description="the repository's HEAD, when its work tree is readable")
    commits_behind: int | None = Field(description="commits HEAD is ahead of the index; None when unknown")
    confidence_kind: Literal["calibrated", "heuristic"]


class Status(BaseModel):
    status: Literal["ok", "degraded"]
    reasons: list[str] = Field(description="why degraded, e.g. no LLM reachable: answers are extractive")
    repos: list[RepoState]


class CodexTools:
    """What the tools do, as plain methods over one engine (the MCP shells add the caller's access)."""

    def __init__(self, engine: QueryEngine, kill_switch: KillSwitch | None = None):
        self.engine = engine
        home = engine.home
        # The API's kill-switch (shared serving state); default: the sqlite one under CODEX_HOME/serving.
        self.kill_switch = kill_switch or KillSwitch(home.serving_state_dir)
        self._canary = CanaryStore(home.serving_state_dir, ConfigStore(home.configs_dir))
        self._configs: dict[str, RetrievalConfig] = {}
        self._lines = GitVerificationSource(engine.reader.worktree_of)

    def champion(self) -> RetrievalConfig | None:
        """The retrieval config serving answers with (None: the built-in default)."""
        config_id = self._canary.champion(self._canary.read())
        if config_id is None:
            return None
        if config_id not in self._configs:
            self._configs[config_id] = self._canary.load_config(config_id).retrieval
        return self._configs[config_id]

    def _admit(self) -> None:
        try:
            state = self.kill_switch.state()
        except StateStoreUnavailable as exc:  # fail closed, as the API does (503)
            raise ToolError(str(exc)) from exc
        if state.on:
            raise ToolError(state.refusal())

    def search_code(self, query: str, repo: str | None, top_k: int,
                    allowed_repos: Collection[str] | None) -> SearchResult:
        self._admit()
        retrieved = self.engine.retrieve(query, repo=repo, top_k=top_k, config=self.champion(),
                                         allowed_repos=allowed_repos)
        result = retrieved.result
        top_repo = result.candidates[0].repo if result.candidates else None
        confidence, threshold, kind = self.engine.confidence(top_repo, result.features, query)
        return SearchResult(
            citations=[CodeSpan(**citation_fields(c)) for c in result.candidates],
            confidence=round(confidence, 4), confidence_kind=kind,
            low_confidence=not result.candidates or confidence < threshold, index_commits=retrieved.commits,
        )

    def ask(self, question: str, repo: str | None, top_k: int, tenant: str,
            allowed_repos: Collection[str] | None) -> Answer:
        self._admit()
        return self.engine.query(question, repo=repo, top_k=top_k, tenant=tenant, config=self.champion(),
                                 allowed_repos=allowed_repos, trace_extra={"via": "mcp"})

    def get_span(self, repo: str, path: str, line_start: int, line_end: int,
                 allowed_repos: Collection[str] | None) -> Span:
        corpora = self.engine.reader.refresh().corpora
        visible = sorted(r for r in corpora if allowed_repos is None or r in allowed_repos)
        if repo not in visible:
            raise ToolError(f"repository {repo!r} has no published index; known: {visible or 'none'} "
                            f"(ingest it with: feriactl ingest PATH --name {repo})")
        if line_end < line_start:
            raise ToolError(f"line_end {line_end} is before line_start {line_start}")
        if line_end - line_start + 1 > MAX_SPAN_LINES:
            raise ToolError(f"lines {line_start}-{line_end} are {line_end - line_start + 1} lines; ask for at most "
                            f"{MAX_SPAN_LINES} at a time (e.g. {line_start}-{line_start + MAX_SPAN_LINES - 1})")
        corpus = corpora[repo]
        chunks = _indexed_chunks(corpus.payloads, corpus.by_path, path)
        if not chunks:
            close = difflib.get_close_matches(path, corpus.file_paths, n=3)
            raise ToolError(
                f"{path!r} is not an indexed file of {repo!r} at {corpus.commit[:12]} (not tracked, or skipped at "
                f"ingestion: binary, generated, vendored, too large)" + (f"; did you mean {close}?" if close else "")
            )
        lines = self._lines.file_lines(repo, corpus.commit, path)
        if lines is None:
            raise ToolError(f"{path} could not be read from git at {corpus.commit[:12]}: is the work tree of "
                            f"{repo!r} still where it was ingested from? (feriactl status)")
        total = len(lines) - 1 if lines and lines[-1] == "" else len(lines)  # a final newline ends the last line
        if line_end > total:
            raise ToolError(f"lines {line_start}-{line_end} are out of range: {path} has {total} lines at "
                            f"{corpus.commit[:12]}; ask within 1-{total}")
        overlapping = [c for c in chunks if c["start_line"] <= line_end and c["end_line"] >= line_start]
        for chunk in overlapping:
            why = verify_citation(chunk, self._lines, repo)
            if why is not None:
                raise ToolError(f"{path}:{chunk['start_line']}-{chunk['end_line']} failed verification ({why}); the "
                                f"index of {repo!r} no longer matches git: re-ingest it (feriactl ingest)")
        return Span(
            repo=repo, path=path, commit=corpus.commit, line_start=line_start, line_end=line_end, file_lines=total,
            text=span_text(lines, line_start, line_end),
            verified_chunks=[SpanChunk(line_start=c["start_line"], line_end=c["end_line"], symbol=c.get("symbol"))
                             for c in overlapping],
        )

    def repo_status(self, repo: str | None, allowed_repos: Collection[str] | None) -> Status:
        repos = self.engine.repos(allowed_repos)
        if repo is not None and repo not in repos:
            raise ToolError(f"repository {repo!r} has no published index; known: {sorted(repos) or 'none'} "
                            f"(ingest it with: feriactl ingest PATH --name {repo})")
        health = self.engine.health(allowed_repos)
        states = [
            RepoState(repo=name, commit=info["commit"], version=info["version"], chunks=info["chunks"],
                      head=self.engine.freshness.of(name, info["commit"])["head"],
                      commits_behind=info["commits_behind"],
                      confidence_kind="calibrated" if self.engine.calibrator_for(name) else "heuristic")
            for name, info in repos.items() if repo is None or name == repo
        ]
        return Status(status=health["status"], reasons=health["reasons"], repos=states)


def _indexed_chunks(payloads: list[dict], by_path: dict[str, list[int]], path: str) -> list[dict]:
    """Every indexed chunk of ``path`` as a citeable payload: its own chunks, and the locations where
    dedup kept another file's identical copy (same content hash, so they verify the same way)."""
    own = [payloads[i] for i in by_path.get(path, [])]
    copies = [
        {**p, "path": d["path"], "start_line": d["start_line"], "end_line": d["end_line"], "symbol": d.get("symbol")}
        for p in payloads for d in p.get("duplicates") or () if d["path"] == path
    ]
    return sorted(own + copies, key=lambda c: c["start_line"])


class TenantKeys:
    """The API's keys as MCP bearer tokens (the SDK's ``TokenVerifier`` protocol): a key of
    ``tenants.json`` is a token whose client id is its tenant."""

    def __init__(self, store: TenantStore):
        self.store = store

    async def verify_token(self, token: str) -> AccessToken | None:
        tenant = self.store.authenticate(token)
        return None if tenant is None else AccessToken(token=token, client_id=tenant.name, scopes=[])


class WarmEngine:
    """The engine, loaded in a thread when the server starts: ``initialize`` answers at once and the
    first tool call waits for the embedding model, not the client's connect timeout."""

    def __init__(self, factory: Callable[[], QueryEngine]):
        self._factory = factory
        self._ready = threading.Event()
        self._engine: QueryEngine | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        threading.Thread(target=self._load, name="mcp-engine", daemon=True).start()

    def _load(self) -> None:
        try:
            engine = self._factory()
            engine.refresh(True)
            engine.embedder.embed(["warm up"])
            self._engine = engine
        except Exception as exc:  # told to every tool call, which is where a user sees it
            log.exception("the query engine did not start")
            self._error = exc
        finally:
            self._ready.set()

    def get(self) -> QueryEngine:
        self._ready.wait()
        if self._engine is None:
            raise ToolError(f"the query engine did not start ({type(self._error).__name__}: {self._error}); "
                            "see the server's stderr, fix it and restart feriactl mcp")
        return self._engine

    def close(self) -> None:
        if self._ready.is_set() and self._engine is not None:
            self._engine.close()


def build_server(
    engine_factory: Callable[[], QueryEngine] | None = None,
    *,
    home: CodexHome | None = None,
    tenants: TenantStore | None = None,
    settings: Settings | None = None,
) -> MCPServer:
    """The MCP server over CODEX_HOME's published indexes.

    ``tenants`` is for the HTTP transport: when the auth mode is ``required`` (tenants.json exists or
    CODEX_AUTH=required) every request needs a tenant's key and sees its repositories only; in open
    mode a tool call refuses once tenants appear (restart to require keys). None (stdio): the local admin.
    """
    settings = settings or Settings.from_env()
    home = home or CodexHome(settings.home_path)
    warm = WarmEngine(engine_factory or (lambda: QueryEngine(home, settings=settings)))
    required = tenants is not None and auth_mode(tenants, settings) == "required"
    holder: dict[str, CodexTools] = {}
    lock = threading.Lock()

    def tools() -> CodexTools:
        with lock:
            if "tools" not in holder:
                holder["tools"] = CodexTools(warm.get(), KillSwitch.for_serving(settings, home.serving_state_dir))
            return holder["tools"]

    def caller() -> tuple[str, set[str] | None]:
        """(tenant, repositories it may see; None = all)."""
        if tenants is None:
            return LOCAL_TENANT, None
        if not required:
            if auth_mode(tenants, settings) == "required":
                raise ToolError("tenants were created after this MCP server started without authentication: "
                                "restart feriactl mcp so that it asks for API keys")
            return LOCAL_TENANT, None
        token = get_access_token()
        tenant = tenants.tenants().get(token.client_id) if token is not None else None
        if tenant is None:
            raise ToolError("no valid API key: send 'Authorization: Bearer <key>' (feriactl tenants add NAME)")
        return tenant.name, None if tenant.all_repos else set(tenant.repos)

    def known_repo(call: Callable[[], object]):
        try:
            return call()
        except UnknownRepo as exc:
            raise ToolError(str(exc)) from exc
        except CanaryError as exc:  # the champion config named by the registry is missing
            raise ToolError(f"the champion config cannot be loaded: {exc}") from exc

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[None]:
        warm.start()
        try:
            yield
        finally:
            warm.close()

    auth_kwargs = {}
    if required:
        from mcp.server.auth.settings import AuthSettings

        # Bearer keys only: no OAuth server here, so no metadata routes (issuer_url is required by the model).
        auth_kwargs = {"auth": AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None),
                       "token_verifier": TenantKeys(tenants)}
    server = MCPServer(SERVER_NAME, title="Precision Codex", version=VERSION, instructions=INSTRUCTIONS,
                       lifespan=lifespan, log_level="WARNING", **auth_kwargs)

    @server.tool(annotations=READ_ONLY)
    def search_code(query: Query, repo: RepoFilter = None, top_k: TopK = 5) -> SearchResult:
        """Find where something is implemented: verified line-span citations (repo, path, line_start, line_end,
        symbol, score, snippet) best first, with a confidence; retrieval only, no generated answer."""
        _, allowed = caller()
        return known_repo(lambda: tools().search_code(query, repo, top_k, allowed))

    @server.tool(annotations=READ_ONLY)
    def ask(question: Query, repo: RepoFilter = None, top_k: TopK = 5) -> Answer:
        """Answer a question about the code with cited line spans, a confidence (confidence_kind: calibrated or
        heuristic) and abstention: abstained=true means not confident enough, the citations are only guesses.
        model "extractive" means no LLM was reachable and the answer is the cited snippets."""
        tenant, allowed = caller()
        return known_repo(lambda: tools().ask(question, repo, top_k, tenant, allowed))

    @server.tool(annotations=READ_ONLY)
    def get_span(
        repo: Annotated[str, Field(pattern=REPO_PATTERN, description="Repository name (repo_status lists them)")],
        path: Annotated[str, Field(min_length=1, max_length=1000, description="File path inside the repository")],
        line_start: Annotated[int, Field(ge=1, description="First line, 1-based")],
        line_end: Annotated[int, Field(ge=1, description=f"Last line, inclusive; at most {MAX_SPAN_LINES} lines")],
    ) -> Span:
        """Exact lines of an indexed file at the indexed commit, read from git and checked against the index
        (secrets masked as indexed)."""
        _, allowed = caller()
        return tools().get_span(repo, path, line_start, line_end, allowed)

    @server.tool(annotations=READ_ONLY)
    def repo_status(repo: RepoFilter = None) -> Status:
        """Indexed repositories: published commit, chunk count, commits behind HEAD, calibrated or heuristic
        confidence; status degraded with reasons (e.g. no LLM reachable: answers are extractive)."""
        _, allowed = caller()
        return tools().repo_status(repo, allowed)

    return server
