"""Dagster as it is deployed: a code server, the webserver and the daemon sharing one instance.

``feriactl up`` (default profile) runs ``dagster dev``, which starts all three for one user. The scale
profile and the scale-out tests start them one by one, as deploy/compose.yaml and the Helm chart do:
the code server (``dagster api grpc`` for ``codex_assets.definitions``) loads the code once, the
webserver and the daemon reach it over gRPC, and runs start as subprocesses of the code server
(``DefaultRunLauncher``). Runs queue in the instance's ``QueuedRunCoordinator`` (the project's
``dagster.yaml``: a run limit and one run per repository) and only the daemon launches them.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from codex_cli.processes import PROJECT_ROOT

LOCATION = "codex_assets.definitions"
BIN = Path(sys.executable).parent


def write_grpc_workspace(path: Path, grpc_port: int, host: str = "127.0.0.1") -> Path:
    """The workspace file that points the webserver and the daemon at the code server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by feriactl: the webserver and the daemon load the code location from this code server.\n"
        f"load_from:\n  - grpc_server:\n      host: {host}\n      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n"
    )
    return path


def code_server_command(grpc_port: int, host: str = "127.0.0.1") -> list[str]:
    return [str(BIN / "dagster"), "api", "grpc", "-m", LOCATION, "-d", str(PROJECT_ROOT), "-h", host,
            "-p", str(grpc_port), "--location-name", LOCATION]


def webserver_command(workspace: Path, host: str, port: int) -> list[str]:
    return [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]


def daemon_command(workspace: Path) -> list[str]:
    return [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]


def listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def submit_job(host: str, port: int, job: str, tags: dict[str, str], *, attempts: int = 50) -> str:
    """Queue a run of ``job`` through the webserver (GraphQL, what the UI's Materialize does); its run id.
    Retried while the webserver is still loading the code location."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient(host, port_number=port, timeout=60)
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return client.submit_job_execution(job, tags=tags)
        except DagsterGraphQLClientError as exc:
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"could not submit a {job} run ({tags}) to the webserver on {host}:{port}: {last}")
