"""``feriactl mcp``: the MCP server for coding agents (``serving.mcp_server``), over stdio or HTTP.

stdio (the default) is what an agent spawns: stdout carries the protocol and nothing else, every log
line goes to stderr. ``--transport http`` serves streamable HTTP at ``http://HOST:PORT/mcp``; it
asks for the API's keys once tenants exist, and without tenants it would answer anyone who can reach
it, so an address other than loopback needs ``--allow-unauthenticated-network`` then.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from codex_cli.common import CliError
from codex_cli.common import home as _home

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_mcp(args: argparse.Namespace) -> int:
    # One query embedding at a time, as `feriactl serve` does (idle OpenMP spinners slow the search).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    home = _home()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from codex_core.settings import Settings
    from serving.auth import TenantStore, auth_mode
    from serving.mcp_server import build_server

    settings = Settings.from_env()
    if args.transport == "stdio":
        build_server(home=home, settings=settings).run("stdio")
        return 0

    tenants = TenantStore(home.serving_state_dir / "tenants.json")
    mode = auth_mode(tenants, settings)
    if mode == "open" and not is_loopback(args.host) and not args.allow_unauthenticated_network:
        raise CliError(
            f"refusing to serve MCP on {args.host} without authentication (no tenants exist, so anyone who "
            "can reach the port could query every repository): create a tenant (feriactl tenants add NAME "
            "--role user) so callers need its key, bind to 127.0.0.1, or pass --allow-unauthenticated-network "
            "if this network is trusted"
        )
    where = "API key required (Authorization: Bearer)" if mode == "required" else "no authentication"
    print(f"MCP endpoint  http://{args.host}:{args.port}/mcp  ({where})", file=sys.stderr, flush=True)
    build_server(home=home, tenants=tenants, settings=settings).run("streamable-http", host=args.host, port=args.port)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp", help="MCP server for coding agents: search_code, ask, get_span, repo_status "
                                   "(stdio, or streamable HTTP on loopback)")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                   help="stdio (spawned by the agent; the default) or streamable HTTP at /mcp")
    p.add_argument("--host", default="127.0.0.1", help="HTTP only (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP only (default {DEFAULT_PORT})")
    p.add_argument("--allow-unauthenticated-network", action="store_true",
                   help="HTTP only: serve on a non-loopback address although no tenants exist (no API keys)")
    p.set_defaults(func=cmd_mcp)
