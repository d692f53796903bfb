"""``feriactl up --profile scale``: the scale-out deployment of docs/scaling.md on one machine.

Started, in this order, each in its own session (a process group stopped as a whole):

1. PostgreSQL, its cluster under ``CODEX_HOME/postgres/data`` (initialized on first use, a generated
   password in ``CODEX_HOME/postgres/password``, 0600), listening on 127.0.0.1; databases ``dagster``
   and ``mlflow`` created when missing;
2. the MLflow server on the ``mlflow`` database (artifacts under ``CODEX_HOME/mlflow/artifacts``);
3. N query replicas (``feriactl serve``) on consecutive ports and the round-robin front
   (``codex_cli.front_proxy``) on ``--port``: one URL;
4. the Dagster code server, then the webserver and the daemon, on the ``dagster`` database
   (``codex_cli.dagster_services``); runs queue in the ``QueuedRunCoordinator`` of the project's
   ``dagster.yaml`` and start as processes of the code server.

Every process gets ``CODEX_DAGSTER_PG_URL`` (the ``dagster`` database) and ``MLFLOW_TRACKING_URI`` (the
MLflow server) in its environment, never on its command line: the replicas share whatever the settings
derive from them, and every run writes to the same tracking server. The replicas read the index runs
publish under ``CODEX_HOME``; none of them writes it. There is no freshness worker: as in the deployment,
``git_head_sensor`` queues a run when a HEAD moves. Ctrl-C or SIGTERM stops the services, then PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from codex_cli import dagster_services
from codex_cli.common import CliError, ensure_instance_dir
from codex_cli.instance import instance_config
from codex_cli.local_postgres import LocalPostgres, PostgresError
from codex_cli.processes import (
    interrupt,
    service_commands,
    service_env,
    shut_down,
    start_service,
    wait_until_ready,
)
from codex_core.home import CodexHome
from codex_core.settings import Settings

DAGSTER_DB, MLFLOW_DB = "dagster", "mlflow"
FOREIGN_SETTINGS = ("CODEX_DAGSTER_PG_URL", "MLFLOW_TRACKING_URI")
READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ScalePorts:
    front: int
    replica_base: int
    replicas: int
    dagster: int
    mlflow: int
    postgres: int

    @property
    def replica_ports(self) -> list[int]:
        return [self.replica_base + i for i in range(self.replicas)]

    def named(self) -> dict[str, int]:
        ports = {"--port (the front)": self.front, "--dagster-port": self.dagster, "--mlflow-port": self.mlflow,
                 "--pg-port": self.postgres}
        ports.update({f"replica {i + 1} (--replica-port + {i})": p for i, p in enumerate(self.replica_ports)})
        return ports


def check_ports(host: str, ports: ScalePorts) -> None:
    """Every port distinct and free, or a CliError naming the option to change."""
    named = ports.named()
    seen: dict[int, str] = {}
    for name, port in named.items():
        if not 0 < port < 65536:
            raise CliError(f"{name}: {port} is not a TCP port")
        if port in seen:
            raise CliError(f"{name} and {seen[port]} are both port {port}: give each service its own")
        seen[port] = name
    for name, port in named.items():
        with socket.socket() as sock:
            try:
                sock.bind((host if name != "--pg-port" else "127.0.0.1", port))
            except OSError as exc:
                raise CliError(f"{name}: port {port} is not free on {host} ({exc.strerror}); pick another") from None


def postgres_password(home: CodexHome, cluster_exists: bool) -> str:
    """The cluster's password, generated with the cluster and kept beside it (0600)."""
    path = home.postgres_dir / "password"
    if path.exists():
        return path.read_text().strip()
    if cluster_exists:
        raise CliError(f"the PostgreSQL cluster in {home.postgres_dir / 'data'} was initialized with the password "
                       f"kept in {path}, which is missing. Restore that file, or remove {home.postgres_dir} to start "
                       "over (its Dagster runs and MLflow experiments are lost).")
    home.postgres_dir.mkdir(parents=True, exist_ok=True)
    home.postgres_dir.chmod(0o755)  # as root, the server user must pass through it to its data directory
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def run_scale_profile(home: CodexHome, *, host: str, ports: ScalePorts) -> int:
    present = [name for name in FOREIGN_SETTINGS if os.environ.get(name, "").strip()]
    if present:
        raise CliError(f"{' and '.join(present)} set: the scale profile starts its own PostgreSQL and MLflow server "
                       "and points every service at them. Unset it, or use `feriactl up` without --profile "
                       "to run on the configured stores.")
    check_ports(host, ports)
    signal.signal(signal.SIGTERM, interrupt)  # `kill` of this process stops everything like Ctrl-C
    logs = home.root / "logs"
    data_dir = home.postgres_dir / "data"
    postgres = LocalPostgres(data_dir, logs / "postgres.log", ports.postgres,
                             password=postgres_password(home, (data_dir / "PG_VERSION").exists()))
    procs: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    try:
        try:
            if not postgres.initialized:
                print(f"initializing a PostgreSQL cluster in {data_dir} ...", flush=True)
                postgres.init()
            postgres.start()
            for database in (DAGSTER_DB, MLFLOW_DB):
                postgres.create_database(database)
        except PostgresError as exc:
            raise CliError(str(exc)) from None
        mlflow_url = f"http://{host}:{ports.mlflow}"
        env = service_env(home, Settings.from_env({}))
        env.pop("MLFLOW_BACKEND_STORE_URI", None)  # only the MLflow server opens its database
        env.update({"CODEX_DAGSTER_PG_URL": postgres.url(DAGSTER_DB), "MLFLOW_TRACKING_URI": mlflow_url})
        settings = Settings.from_env(env)
        ensure_instance_dir(home, settings)

        # The MLflow server exactly as `feriactl up` starts it for a database store (its URL in the
        # environment, not on the command line); it is the tracking server, not a client of one.
        on_mlflow_db = Settings.from_env({"MLFLOW_TRACKING_URI": postgres.url(MLFLOW_DB)})
        mlflow_cmd = service_commands(home, host, 0, 0, ports.mlflow, worker=False, settings=on_mlflow_db)["mlflow"]
        mlflow_env = service_env(home, on_mlflow_db)
        mlflow_env.pop("MLFLOW_TRACKING_URI", None)
        procs["mlflow"] = start_service(mlflow_cmd, logs / "mlflow.log", mlflow_env)
        feriactl = str(Path(sys.executable).parent / "feriactl")
        replica_urls = []
        for i, port in enumerate(ports.replica_ports, start=1):
            procs[f"replica-{i}"] = start_service([feriactl, "serve", "--host", host, "--port", str(port)],
                                                  logs / f"api-{i}.log", env)
            replica_urls.append(f"http://{host}:{port}")
        front = [sys.executable, "-m", "codex_cli.front_proxy", "--host", host, "--port", str(ports.front)]
        for url in replica_urls:
            front += ["--upstream", url]
        procs["front"] = start_service(front, logs / "front.log", env)

        grpc_port = _free_port()
        workspace = dagster_services.write_grpc_workspace(home.dagster_home / "workspace.scale.yaml", grpc_port)
        procs["dagster-code-server"] = start_service(dagster_services.code_server_command(grpc_port),
                                                     logs / "dagster-code-server.log", env)
        _wait_listening(procs, "dagster-code-server", grpc_port, logs)
        procs["dagster-webserver"] = start_service(dagster_services.webserver_command(workspace, host, ports.dagster),
                                                   logs / "dagster-webserver.log", env)
        procs["dagster-daemon"] = start_service(dagster_services.daemon_command(workspace),
                                                logs / "dagster-daemon.log", env)

        health = {"mlflow": f"{mlflow_url}/health", "dagster-webserver": f"http://{host}:{ports.dagster}/server_info"}
        health.update({f"replica-{i}": f"{url}/v1/health" for i, url in enumerate(replica_urls, start=1)})
        health["front"] = f"http://{host}:{ports.front}/v1/health"
        ready = wait_until_ready(health, procs, timeout=READY_TIMEOUT_S)
        for name, ok in ready.items():
            if not ok:
                print(f"{name} did not come up; see {logs / (name + '.log')}", file=sys.stderr)
        _print_urls(home, host, ports, replica_urls, postgres, settings, time.monotonic() - started)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; see {logs}", file=sys.stderr)
                    return 1
            if postgres.proc is not None and postgres.proc.poll() is not None:
                print(f"PostgreSQL exited with code {postgres.proc.returncode}; see {postgres.log_path}",
                      file=sys.stderr)
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        # Also when Ctrl-C or a TERM arrives while starting. The services go first: they hold connections
        # to PostgreSQL.
        shut_down(procs)
        if postgres.proc is not None:
            postgres.stop()
            print("stopped every service and PostgreSQL", flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(procs: dict[str, subprocess.Popen], name: str, port: int, logs: Path,
                    timeout: float = READY_TIMEOUT_S) -> None:
    """The webserver and the daemon start once the code server listens (they would log errors until then)."""
    deadline = time.monotonic() + timeout
    while not dagster_services.listening("127.0.0.1", port):
        if procs[name].poll() is not None:
            raise CliError(f"the Dagster code server exited with code {procs[name].returncode}; "
                           f"see {logs / (name + '.log')}")
        if time.monotonic() > deadline:
            raise CliError(f"the Dagster code server did not listen within {timeout:.0f} s; "
                           f"see {logs / (name + '.log')}")
        time.sleep(0.5)


def _print_urls(home: CodexHome, host: str, ports: ScalePorts, replica_urls: list[str], postgres: LocalPostgres,
                settings: Settings, took_s: float) -> None:
    logs = home.root / "logs"
    queue = instance_config(settings).get("run_queue", {})
    per_repo = next((str(limit.get("limit")) for limit in queue.get("tag_concurrency_limits", [])
                     if limit.get("key") == "codex/repo"), "no limit")
    front = f"http://{host}:{ports.front}"
    lines = [
        f"Query endpoint  {front}/v1/query   docs {front}/docs   "
        f"(round robin over {len(replica_urls)} replica(s); log: {logs / 'front.log'})",
        *(f"  replica {i}     {url}   (log: {logs / f'api-{i}.log'})" for i, url in enumerate(replica_urls, start=1)),
        f"Dagster UI      http://{host}:{ports.dagster}   (storage: PostgreSQL; run queue: "
        f"{queue.get('max_concurrent_runs', 'unlimited')} at once, {per_repo} per repository; "
        f"logs: {logs / 'dagster-*.log'})",
        f"MLflow UI       http://{host}:{ports.mlflow}   (backend store: PostgreSQL; log: {logs / 'mlflow.log'})",
        f"PostgreSQL      {postgres.display_url('{' + DAGSTER_DB + ',' + MLFLOW_DB + '}')}   "
        f"(data: {postgres.data_dir}; password: {home.postgres_dir / 'password'}; log: {postgres.log_path})",
        "From another shell, feriactl reaches this stack with:",
        f"  export CODEX_HOME={home.root} MLFLOW_TRACKING_URI=http://{host}:{ports.mlflow}",
        f"  export CODEX_DAGSTER_PG_URL=\"postgresql+psycopg2://{postgres.user}:"
        f"$(cat {home.postgres_dir / 'password'})@127.0.0.1:{ports.postgres}/{DAGSTER_DB}\"",
        f"Up in {took_s:.0f} s. Ctrl-C stops everything, PostgreSQL included.",
    ]
    print("\n".join(lines), flush=True)
