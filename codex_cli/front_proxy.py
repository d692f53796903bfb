"""One URL over the serving replicas of ``feriactl up --profile scale``: round robin per request.

Each request goes to the next replica; one that refuses the connection (stopped, restarting) is skipped
for ``COOLDOWN_S`` and the request goes to the next, so a client sees an error only when no replica
accepts. Nothing else is retried: once a replica has the request it answers it. Responses are streamed
byte for byte (server-sent events of ``POST /v1/query`` with ``stream: true`` pass through as they come);
``X-Codex-Replica`` names the replica that answered.

Why a proxy of our own: deploy/compose.yaml puts nginx in front of its replicas, but a laptop has no
nginx; and ``SO_REUSEPORT`` (every replica listening on one port) balances connections, not requests,
so a keep-alive client such as a browser or the load generator would stay on one replica.

    python -m codex_cli.front_proxy --port 8000 --upstream http://127.0.0.1:8001 --upstream http://127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

COOLDOWN_S = 2.0
REPLICA_HEADER = "x-codex-replica"
# RFC 9110 §7.6.1 connection-specific fields, plus what the proxy sets itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade", "host", REPLICA_HEADER})
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class RoundRobin:
    """The order in which to try the replicas for one request: the next one first, the cooling ones last."""

    def __init__(self, upstreams: Sequence[str], cooldown_s: float = COOLDOWN_S):
        if not upstreams:
            raise ValueError("a front needs at least one upstream replica")
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.cooldown_s = cooldown_s
        self._next = itertools.count()
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        with self._lock:
            start = next(self._next) % len(self.upstreams)
            now = time.monotonic()
            rotated = self.upstreams[start:] + self.upstreams[:start]
            up = [u for u in rotated if self._down_until.get(u, 0.0) <= now]
            return up + [u for u in rotated if u not in up]

    def mark_down(self, upstream: str) -> None:
        with self._lock:
            self._down_until[upstream] = time.monotonic() + self.cooldown_s


def create_app(upstreams: Sequence[str], *, cooldown_s: float = COOLDOWN_S) -> Starlette:
    replicas = RoundRobin(upstreams, cooldown_s)
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app):
        # keepalive_expiry under uvicorn's 5 s keep-alive: never reuse a connection a replica is closing.
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=2.0), limits=limits) as client:
            state["client"] = client
            yield

    async def forward(request: Request) -> Response:
        client = state["client"]
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
        if request.client is not None:
            headers.append((b"x-forwarded-for", request.client.host.encode("latin-1")))
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        refused = []
        for upstream in replicas.order():
            outgoing = client.build_request(request.method, upstream + target, headers=headers, content=body)
            try:
                upstream_response = await client.send(outgoing, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # the request never reached it
                replicas.mark_down(upstream)
                refused.append(f"{upstream} ({type(exc).__name__})")
                continue
            response = StreamingResponse(upstream_response.aiter_raw(), status_code=upstream_response.status_code,
                                         background=BackgroundTask(upstream_response.aclose))
            response.raw_headers = [(k, v) for k, v in upstream_response.headers.raw
                                    if k.decode("latin-1").lower() not in HOP_BY_HOP]
            response.raw_headers.append((REPLICA_HEADER.encode(), upstream.encode("latin-1")))
            return response
        return JSONResponse(
            {"detail": f"no serving replica accepted the connection: {', '.join(refused)}; "
                       "see the replicas' logs under CODEX_HOME/logs/"},
            status_code=502)

    return Starlette(routes=[Route("/{path:path}", forward, methods=METHODS)], lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m codex_cli.front_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="a replica's base URL (repeat)")
    args = parser.parse_args(argv)
    # The replicas write the access log (one JSON line per request); a second one here would only repeat it.
    uvicorn.run(create_app(args.upstream), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
