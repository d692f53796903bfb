"""`feriactl up` never orphans a service: a Ctrl-C or TERM while the services are still starting
stops every one of them (real child processes; only the commands are stand-ins for the services)."""

from __future__ import annotations

import os
import signal
import sys
import time

from codex_cli import processes
from codex_core.home import CodexHome


def test_an_interrupt_during_startup_stops_every_started_service(tmp_path, monkeypatch) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    monkeypatch.setattr(processes, "service_commands", lambda *a, **k: {"api": sleeper, "mlflow": sleeper})
    started = []

    def interrupted_while_waiting(urls, procs, timeout=180):
        started.extend(procs.values())
        raise KeyboardInterrupt  # what the TERM handler raises while the UIs are still starting

    monkeypatch.setattr(processes, "wait_until_ready", interrupted_while_waiting)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        code = processes.run_services(CodexHome(tmp_path), host="127.0.0.1", api_port=1, dagster_port=2,
                                      mlflow_port=3)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert code == 0 and len(started) == 2
    deadline = time.monotonic() + 15
    while any(p.poll() is None for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.poll() is not None for p in started), "a service outlived feriactl up"
    for proc in started:  # and nothing of its process group either
        try:
            os.killpg(proc.pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive


def test_feriactl_up_serves_the_mlflow_ui_of_the_store_the_clients_write(tmp_path) -> None:
    """sqlite under CODEX_HOME by default; the MLFLOW_TRACKING_URI database (handed over in the environment,
    so a password stays off the command line); no MLflow process when it names a server run elsewhere."""
    from codex_cli.processes import service_commands, service_env
    from codex_core.settings import Settings

    home = CodexHome(tmp_path)
    default = Settings.from_env({})
    assert "mlflow" in service_commands(home, "127.0.0.1", 1, 2, 3, settings=default)
    assert service_env(home, default)["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{home.mlflow_db}"
    database = Settings.from_env({"MLFLOW_TRACKING_URI": "postgresql+psycopg2://codex:pw-5e1f@db/mlflow"})
    assert service_env(home, database)["MLFLOW_BACKEND_STORE_URI"] == database.mlflow_uri
    assert "pw-5e1f" not in " ".join(service_commands(home, "127.0.0.1", 1, 2, 3, settings=database)["mlflow"])
    server = Settings.from_env({"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"})
    assert "mlflow" not in service_commands(home, "127.0.0.1", 1, 2, 3, settings=server)
