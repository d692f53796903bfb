"""Long-running services for `make run` / `feriactl up`: the query endpoint, the Dagster and MLflow
UIs and the freshness worker.

`dagster dev` started with `&` from a shell script ignores SIGTERM, so it is started from here in
its own session with default signal handlers, and the whole process group is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from codex_core.home import CodexHome
from codex_core.settings import Settings
from codex_core.tracking import is_tracking_server

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def start_service(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """``cmd`` in its own session (a process group to stop as a whole), its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        restore_signals=True,
    )


def stop_services(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """TERM every service's process group at once, then KILL what is still there after ``grace``."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def mlflow_backend_store(home: CodexHome, settings: Settings) -> str | None:
    """The store the MLflow UI serves: the database the clients write (``MLFLOW_TRACKING_URI`` or the sqlite
    under CODEX_HOME), or None when ``MLFLOW_TRACKING_URI`` is a tracking server that runs elsewhere."""
    uri = settings.mlflow_uri
    if uri and is_tracking_server(uri):
        return None
    return uri or f"sqlite:///{home.mlflow_db}"


def service_env(home: CodexHome, settings: Settings) -> dict[str, str]:
    env = {
        **os.environ,
        "CODEX_HOME": str(home.root),
        "DAGSTER_HOME": str(home.dagster_home),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    store = mlflow_backend_store(home, settings)
    if store:  # `mlflow server` reads it: a database password stays off the command line (ps)
        env["MLFLOW_BACKEND_STORE_URI"] = store
    return env


def service_commands(home: CodexHome, host: str, api_port: int, dagster_port: int, mlflow_port: int,
                     worker: bool = True, settings: Settings | None = None) -> dict[str, list[str]]:
    settings = settings or Settings.from_env()
    bin_dir = Path(sys.executable).parent
    commands = {}
    if mlflow_backend_store(home, settings):
        home.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        commands["mlflow"] = [
            str(bin_dir / "mlflow"), "server",  # --backend-store-uri: MLFLOW_BACKEND_STORE_URI (service_env)
            "--default-artifact-root", (home.mlflow_db.parent / "artifacts").as_uri(),
            "--host", host, "--port", str(mlflow_port), "--workers", "1",
        ]
    commands["api"] = [str(bin_dir / "feriactl"), "serve", "--host", host, "--port", str(api_port)]
    commands["dagster"] = [
        str(bin_dir / "dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "-h", host, "-p", str(dagster_port),
    ]
    if worker:
        commands["worker"] = [str(bin_dir / "feriactl"), "worker"]
    return commands


def wait_until_ready(urls: dict[str, str], procs: dict[str, subprocess.Popen], timeout: float = 180) -> dict[str, bool]:
    import httpx

    ready = dict.fromkeys(urls, False)
    deadline = time.monotonic() + timeout
    while not all(ready.values()) and time.monotonic() < deadline:
        for name, url in urls.items():
            if ready[name] or procs[name].poll() is not None:
                continue
            try:
                ready[name] = httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    return ready


def interrupt(signum, frame) -> None:
    """SIGTERM handler: stop like Ctrl-C."""
    raise KeyboardInterrupt


def run_services(
    home: CodexHome, *, host: str, api_port: int, dagster_port: int, mlflow_port: int, worker: bool = True
) -> int:
    signal.signal(signal.SIGTERM, interrupt)  # `kill` of this process stops the services like Ctrl-C
    settings = Settings.from_env()
    env = service_env(home, settings)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in service_commands(home, host, api_port, dagster_port, mlflow_port, worker,
                                          settings=settings).items():
            procs[name] = start_service(cmd, home.root / "logs" / f"{name}.log", env)
        return _serve_until_interrupted(home, procs, host, api_port, dagster_port, mlflow_port,
                                        external_mlflow=settings.mlflow_uri if "mlflow" not in procs else None)
    except KeyboardInterrupt:
        return 0
    finally:
        # Also when Ctrl-C or a TERM arrives while the services are still starting: nothing is orphaned.
        shut_down(procs)


def shut_down(procs: dict[str, subprocess.Popen]) -> None:
    """Stop ``procs`` (process groups); a second Ctrl-C (or a TERM) must not abort the shutdown half-way."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_services(list(procs.values()))


def _serve_until_interrupted(
    home: CodexHome, procs: dict[str, subprocess.Popen], host: str, api_port: int, dagster_port: int,
    mlflow_port: int, external_mlflow: str | None = None,
) -> int:
    logs = home.root / "logs"
    health = {
        "api": f"http://{host}:{api_port}/v1/health",
        "dagster": f"http://{host}:{dagster_port}/server_info",
        "mlflow": f"http://{host}:{mlflow_port}/health",
    }
    ready = wait_until_ready({name: url for name, url in health.items() if name in procs}, procs)
    for name, ok in ready.items():
        if not ok:
            print(f"{name} did not come up; see {logs / (name + '.log')}", file=sys.stderr)
    api = f"http://{host}:{api_port}"
    print(f"Query endpoint  {api}/v1/query   docs {api}/docs   (log: {logs / 'api.log'})")
    print(f"Dagster UI      http://{host}:{dagster_port}   (log: {logs / 'dagster.log'})")
    if external_mlflow:
        print(f"MLflow UI       {external_mlflow}   (the tracking server of MLFLOW_TRACKING_URI)")
    else:
        print(f"MLflow UI       http://{host}:{mlflow_port}   (log: {logs / 'mlflow.log'})")
    if "worker" in procs:
        print(f"Freshness       local repositories re-indexed within seconds of a commit (log: {logs / 'worker.log'})")
    print("Ctrl-C stops everything.", flush=True)
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; see {home.root / 'logs'}", file=sys.stderr)
                return 1
        time.sleep(1)
