"""The MCP server (issue #16), driven by the official ``mcp`` SDK's own client.

``feriactl mcp`` runs as a real subprocess over stdio, once for the module (it loads the embedding
model once), against a private copy of the serving corpus (``demo`` and ``billing``) plus ``vault``,
a one-file repository holding a planted GitHub token. No LLM is reachable (OLLAMA_HOST points at a
closed port), so ``ask`` answers extractively, as the product does then. A second server serves
streamable HTTP with one tenant, whose key sees only ``billing``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Tool

from codex_cli.main import main as feriactl_main
from codex_core.secrets import REDACTED_PREFIX
from serving.auth import TenantStore
from serving.killswitch import KillSwitch
from tests.conftest import GIT_ENV, commit_all, git
from tests.serving.conftest import copy_home, ingest_into
from tests.support.llm import closed_port

FERIACTL = str(Path(sys.executable).parent / "feriactl")
TOOLS = {"search_code", "ask", "get_span", "repo_status"}
TOKEN = "ghp_" + "R8nX2mQ4vL7kP9sT3wY6zB1cD5fG0hJ4aE2u"  # assembled: this file must not look like a leak
VAULT_SETTINGS = f'''"""Deployment settings of the release bot."""

RELEASE_BRANCH = "main"
GITHUB_TOKEN = "{TOKEN}"


def release_headers() -> dict[str, str]:
    """HTTP headers the release bot sends to the GitHub API."""
    return {{"Authorization": f"token {{GITHUB_TOKEN}}"}}
'''

# (label, tool, arguments), called in this order on one session: the errors come before calls that
# must still succeed, so a bad call that took the server down would show.
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("search", "search_code", {"query": "shopping cart total of item price times quantity", "repo": "demo"}),
    ("search_unknown_repo", "search_code", {"query": "cart total", "repo": "nope"}),
    ("search_bad_top_k", "search_code", {"query": "cart total", "top_k": 0}),
    ("ask", "ask", {"question": "how are failed connection attempts retried with exponential backoff?",
                    "repo": "demo"}),
    ("span", "get_span", {"repo": "demo", "path": "app/config_parser.py", "line_start": 8, "line_end": 22}),
    ("span_out_of_range", "get_span", {"repo": "demo", "path": "app/config_parser.py", "line_start": 20,
                                       "line_end": 90}),
    ("span_too_long", "get_span", {"repo": "demo", "path": "app/config_parser.py", "line_start": 1,
                                   "line_end": 5000}),
    ("span_unknown_path", "get_span", {"repo": "demo", "path": "app/config_parsers.py", "line_start": 1,
                                       "line_end": 2}),
    ("span_skipped_file", "get_span", {"repo": "demo", "path": "big.txt", "line_start": 1, "line_end": 2}),
    ("span_unknown_repo", "get_span", {"repo": "nope", "path": "a.py", "line_start": 1, "line_end": 2}),
    ("span_secret", "get_span", {"repo": "vault", "path": "deploy/settings.py", "line_start": 1, "line_end": 9}),
    ("search_secret", "search_code", {"query": "github token of the release bot", "repo": "vault"}),
    ("ask_secret", "ask", {"question": "which token does the release bot send to GitHub?", "repo": "vault"}),
    ("status", "repo_status", {}),
    ("status_one", "repo_status", {"repo": "billing"}),
]
KILLED_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("killed_search", "search_code", {"query": "cart total"}),
    ("killed_ask", "ask", {"question": "where is the cart total computed?"}),
    ("killed_span", "get_span", {"repo": "demo", "path": "web/cart.js", "line_start": 1, "line_end": 3}),
]


@dataclass
class Conversation:
    home: Path
    repos: dict[str, Path]
    tools: list[Tool] = field(default_factory=list)
    results: dict[str, CallToolResult] = field(default_factory=dict)
    transport_errors: list[Exception] = field(default_factory=list)
    stderr: str = ""
    seconds: float = 0.0

    def ok(self, label: str) -> dict[str, Any]:
        result = self.results[label]
        assert not result.is_error, f"{label}: {_text(result)}"
        return result.structured_content

    def error(self, label: str) -> str:
        result = self.results[label]
        assert result.is_error, f"{label} was expected to fail: {result.structured_content}"
        return _text(result)


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def server_env(home: Path) -> dict[str, str]:
    return {"CODEX_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}"}


def build_vault_repo(root: Path) -> Path:
    repo = root / "vault"
    (repo / "deploy").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "deploy" / "settings.py").write_text(VAULT_SETTINGS)
    commit_all(repo, "Release bot settings")
    return repo


async def _converse(conversation: Conversation, errlog) -> None:
    async def on_message(message) -> None:
        if isinstance(message, Exception):  # a stdout line that was not JSON-RPC, among others
            conversation.transport_errors.append(message)

    params = StdioServerParameters(command=FERIACTL, args=["mcp"], env=server_env(conversation.home))
    async with stdio_client(params, errlog=errlog) as (read, write), \
            ClientSession(read, write, message_handler=on_message) as session:
        await session.initialize()
        conversation.tools = (await session.list_tools()).tools
        for label, tool, arguments in CALLS:
            conversation.results[label] = await session.call_tool(tool, arguments, read_timeout_seconds=120)
        # The operator stops queries: the running server obeys on its next call, reads still work.
        KillSwitch(conversation.home / "serving").set(True, "index migration", set_by="ops")
        for label, tool, arguments in KILLED_CALLS:
            conversation.results[label] = await session.call_tool(tool, arguments, read_timeout_seconds=120)


@pytest.fixture(scope="module")
def conversation(corpus, tmp_path_factory) -> Conversation:
    root = tmp_path_factory.mktemp("mcp-stdio")
    home, repos = copy_home(corpus, root)
    repos["vault"] = build_vault_repo(root)
    ingest_into(home, "vault", repos["vault"])
    held = Conversation(home, repos)
    started = time.perf_counter()
    with open(root / "stderr.log", "w+") as errlog:
        anyio.run(_converse, held, errlog)
        errlog.seek(0)
        held.stderr = errlog.read()
    held.seconds = time.perf_counter() - started
    return held


def at_commit(repo: Path, commit: str, path: str) -> list[str]:
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True, capture_output=True,
                          text=True, env=GIT_ENV).stdout.splitlines()


def test_the_client_lists_the_four_tools_with_their_input_schemas(conversation) -> None:
    tools = {tool.name: tool for tool in conversation.tools}
    assert set(tools) == TOOLS
    assert tools["search_code"].input_schema["required"] == ["query"]
    assert tools["ask"].input_schema["required"] == ["question"]
    assert tools["get_span"].input_schema["required"] == ["repo", "path", "line_start", "line_end"]
    assert tools["search_code"].input_schema["properties"]["top_k"]["maximum"] == 50
    assert "abstained" in tools["ask"].output_schema["properties"]
    assert all(tool.annotations.read_only_hint for tool in tools.values())
    assert conversation.transport_errors == [], "stdout carried something other than the protocol"
    assert conversation.seconds < 60, conversation.stderr[-2000:]


def test_search_code_cites_the_implementing_file_with_verified_lines(conversation) -> None:
    found = conversation.ok("search")
    best = found["citations"][0]
    assert (best["repo"], best["path"]) == ("demo", "web/cart.js")
    lines = at_commit(conversation.repos["demo"], found["index_commits"]["demo"], best["path"])
    assert best["snippet"] == "\n".join(lines[best["line_start"] - 1 : best["line_end"]])
    assert "item.price * item.quantity" in best["snippet"]
    assert found["confidence_kind"] == "heuristic" and 0.0 <= found["confidence"] <= 1.0


def test_ask_returns_the_query_answer_with_citations_and_confidence(conversation) -> None:
    answer = conversation.ok("ask")
    # No LLM is reachable: the answer is the cited snippets (extractive), never made-up text.
    assert answer["model"] == "extractive" and not answer["abstained"]
    assert answer["citations"][0]["path"] in ("app/retry.py", "app/retry_copy.py")
    assert "retry_with_backoff" in answer["answer"]
    assert answer["confidence_kind"] == "heuristic" and 0.0 < answer["confidence"] <= 1.0
    assert answer["index_commit"] == answer["index_commits"]["demo"]
    assert set(answer) >= {"answer", "citations", "confidence", "abstained", "model", "route", "trace_id"}


def test_get_span_returns_exactly_the_files_lines_at_the_indexed_commit(conversation) -> None:
    span = conversation.ok("span")
    expected = at_commit(conversation.repos["demo"], span["commit"], "app/config_parser.py")
    assert span["text"] == "\n".join(expected[7:22])
    assert span["file_lines"] == len(expected)
    # Small methods are merged into their class's chunk: the span lies within it, and it was hash-checked.
    assert [c["symbol"] for c in span["verified_chunks"]] == ["ConfigParser"]
    assert span["verified_chunks"][0]["line_start"] <= 8 and span["verified_chunks"][0]["line_end"] >= 22


def test_bad_calls_are_tool_errors_that_say_what_to_do(conversation) -> None:
    lines = len(at_commit(conversation.repos["demo"], conversation.ok("span")["commit"], "app/config_parser.py"))
    assert f"has {lines} lines" in conversation.error("span_out_of_range")
    assert f"ask within 1-{lines}" in conversation.error("span_out_of_range")
    assert "at most 400" in conversation.error("span_too_long")
    assert "did you mean ['app/config_parser.py'" in conversation.error("span_unknown_path")
    # Files ingestion skipped (here: too large) cannot be read through get_span either.
    assert "'big.txt' is not an indexed file" in conversation.error("span_skipped_file")
    assert "repository 'nope' has no published index" in conversation.error("span_unknown_repo")
    assert "repository 'nope' has no published index" in conversation.error("search_unknown_repo")
    assert "top_k" in conversation.error("search_bad_top_k")
    assert "Traceback" not in conversation.stderr  # anticipated errors, none of them crashed a tool
    conversation.ok("status")  # and the server answered after all of them


def test_the_kill_switch_stops_queries_but_not_reading_spans(conversation) -> None:
    for label in ("killed_search", "killed_ask"):
        message = conversation.error(label)
        assert "queries are stopped by the kill-switch: index migration" in message
        assert "feriactl kill-switch off" in message
    assert conversation.ok("killed_span")["text"].startswith("export class ShoppingCart {")


def test_repo_status_lists_every_indexed_repository_with_its_commit(conversation) -> None:
    status = conversation.ok("status")
    by_name = {r["repo"]: r for r in status["repos"]}
    assert set(by_name) == {"demo", "billing", "vault"}
    for name, repo in conversation.repos.items():
        head = git(repo, "rev-parse", "HEAD")
        assert by_name[name]["commit"] == head and by_name[name]["head"] == head
        assert by_name[name]["commits_behind"] == 0 and by_name[name]["chunks"] > 0
    assert status["status"] == "degraded"
    assert any("no LLM reachable" in reason for reason in status["reasons"])
    assert [r["repo"] for r in conversation.ok("status_one")["repos"]] == ["billing"]


def test_no_tool_output_carries_the_planted_secret(conversation) -> None:
    span = conversation.ok("span_secret")
    assert f'GITHUB_TOKEN = "{REDACTED_PREFIX}' in span["text"]
    assert conversation.ok("search_secret")["citations"], "the secret-bearing file must be cited to mean anything"
    for label in ("span_secret", "search_secret", "ask_secret"):
        result = conversation.results[label]
        assert TOKEN not in _text(result) and TOKEN not in json.dumps(result.structured_content)
    assert TOKEN not in conversation.stderr


# ---------------------------------------------------------------- streamable HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(corpus, tmp_path) -> Iterator[tuple[str, str]]:
    """``feriactl mcp --transport http`` on a free loopback port, with one tenant that may see billing only:
    (endpoint URL, that tenant's key)."""
    home, _ = copy_home(corpus, tmp_path)
    key = TenantStore(home / "serving" / "tenants.json").add("acme", "user", ["billing"])
    port = free_port()
    env = {**os.environ, **server_env(home)}
    with open(tmp_path / "stderr.log", "w") as errlog:
        process = subprocess.Popen([FERIACTL, "mcp", "--transport", "http", "--port", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.log").read_text()
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp", key
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_http_transport_asks_for_a_tenant_key_and_shows_only_its_repositories(http_server) -> None:
    url, key = http_server
    unauthenticated = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                 headers={"accept": "application/json, text/event-stream"})
    assert unauthenticated.status_code == 401

    async def converse() -> tuple[list[str], dict[str, Any], str]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as client, \
                streamable_http_client(url, http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            names = [tool.name for tool in (await session.list_tools()).tools]
            status = await session.call_tool("repo_status", {})
            hidden = await session.call_tool("get_span", {"repo": "demo", "path": "web/cart.js", "line_start": 1,
                                                          "line_end": 3})
            assert hidden.is_error
            return names, status.structured_content, _text(hidden)

    names, status, hidden = anyio.run(converse)
    assert set(names) == TOOLS
    assert [r["repo"] for r in status["repos"]] == ["billing"]
    assert "repository 'demo' has no published index; known: ['billing']" in hidden


def test_http_refuses_other_interfaces_without_tenants_unless_told(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    assert feriactl_main(["mcp", "--transport", "http", "--host", "0.0.0.0"]) == 2
    message = capsys.readouterr().err
    assert "refusing to serve MCP on 0.0.0.0 without authentication" in message
    assert "--allow-unauthenticated-network" in message and "feriactl tenants add" in message
