"""A Dagster deployment on PostgreSQL as it runs in production, in real processes.

A code server (``dagster api grpc`` for ``codex_assets.definitions``), the webserver and the daemon
share one PostgreSQL database through the instance config that ``feriactl`` writes from the settings
(``CODEX_DAGSTER_PG_URL``). Runs are submitted through the webserver's GraphQL API — what the UI's
"Materialize" button does — so they enter the ``QueuedRunCoordinator``'s queue, and only the daemon
launches them (in subprocesses of the code server, with the ``DefaultRunLauncher``).

The test process reads the same instance (``instance``) to watch runs and events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from codex_cli import dagster_services
from codex_cli.common import ensure_instance_dir
from codex_cli.processes import start_service, stop_services
from codex_core.home import CodexHome
from codex_core.settings import Settings
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = dagster_services.BIN
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
IN_PROGRESS = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}


def wait_for(what: str, condition: Callable[[], object], timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Deployment:
    root: Path
    pg_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    grpc_port: int = 0
    web_port: int = 0
    _instance: dg.DagsterInstance | None = None

    @property
    def home(self) -> CodexHome:
        return CodexHome(self.root / "home")

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CODEX_HOME": str(self.home.root),
            "DAGSTER_HOME": str(self.home.dagster_home),
            "CODEX_DAGSTER_PG_URL": self.pg_url,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }

    # ------------------------------------------------------------------ processes

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        ensure_instance_dir(self.home, Settings.from_env(self.env))  # what every feriactl command does
        self.grpc_port, self.web_port = free_port(), free_port()
        workspace = dagster_services.write_grpc_workspace(self.root / "workspace.yaml", self.grpc_port)
        self._spawn("code_server", dagster_services.code_server_command(self.grpc_port))
        wait_for("the code server to listen", self._code_server_listens, timeout=90)
        self._spawn("webserver", dagster_services.webserver_command(workspace, "127.0.0.1", self.web_port))
        self.start_daemon()
        wait_for("the webserver", self._webserver_ready, timeout=90)

    def start_daemon(self) -> None:
        self._spawn("daemon", dagster_services.daemon_command(self.root / "workspace.yaml"))

    def kill_daemon(self) -> None:
        """SIGKILL the daemon process alone, as an OOM kill or a crash would: no clean shutdown."""
        proc = self.procs.pop("daemon")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        stop_services(list(self.procs.values()), grace=5)
        if self._instance is not None:
            self._instance.dispose()

    def _spawn(self, name: str, cmd: list[str]) -> None:
        self.procs[name] = start_service(cmd, self.logs / f"{name}.log", self.env)

    def _code_server_listens(self) -> bool:
        self._check_alive("code_server")
        return dagster_services.listening("127.0.0.1", self.grpc_port)

    def _webserver_ready(self) -> bool:
        import httpx

        self._check_alive("webserver")
        try:
            return httpx.get(f"http://127.0.0.1:{self.web_port}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{(self.logs / f'{name}.log').read_text()}")

    # ------------------------------------------------------------------ runs

    @property
    def instance(self) -> dg.DagsterInstance:
        """The deployment's instance, read from the DAGSTER_HOME it shares with the processes."""
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home.dagster_home))
        return self._instance

    def submit_ingest(self, repo: str) -> str:
        """Queue an ``ingest`` run of ``repo`` through the webserver (GraphQL, as the UI does); its run id."""
        tags = {"dagster/partition": repo, "codex/repo": repo}
        return dagster_services.submit_job("127.0.0.1", self.web_port, "ingest", tags)

    def status(self, run_id: str) -> dg.DagsterRunStatus:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None, run_id
        return run.status

    def wait_finished(self, run_ids: Iterable[str], timeout: float) -> dict[str, dg.DagsterRunStatus]:
        ids = list(run_ids)

        def finished():
            statuses = {r: self.status(r) for r in ids}
            return statuses if all(s in FINISHED for s in statuses.values()) else None

        return wait_for(f"runs {ids} to finish", finished, timeout=timeout, interval=0.5)

    def events(self, run_id: str, event_type: dg.DagsterEventType) -> list[dg.EventLogEntry]:
        return [e for e in self.instance.all_logs(run_id, of_type=event_type)]

    def interval(self, run_id: str) -> tuple[float, float]:
        record = self.instance.get_run_record_by_id(run_id)
        assert record is not None and record.start_time and record.end_time, run_id
        return record.start_time, record.end_time
