"""``feriactl up --profile scale`` as a user runs it: one real ``feriactl`` process on a CODEX_HOME with one
ingested repository, starting its own PostgreSQL, the Dagster code server, webserver and daemon, an MLflow
server, two query replicas and the front over them; stopped with SIGTERM.

It skips, saying why, only where PostgreSQL's server binaries are absent. CODEX_HOME is not under pytest's
``tmp_path``: as root PostgreSQL runs as ``postgres``, which cannot enter pytest's 0700 directories (the
profile says so and stops; ``test_an_unreachable_codex_home_is_refused_with_the_way_out`` checks that).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from codex_cli.dagster_services import BIN
from codex_cli.front_proxy import COOLDOWN_S
from codex_cli.local_postgres import LocalPostgres
from tests.conftest import commit_all, git
from tests.support.ingest import ingest
from tests.support.postgres import free_port, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")

REPO = "calc"
QUESTION = "how are values multiplied by a factor?"
READY_LINE = "Ctrl-C stops everything"
STARTUP_TIMEOUT_S = 240


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = free_port()
        if base + count >= 65536:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports")


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line or environment holds ``text`` (not this one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            state = next((line for line in (entry / "status").read_text().splitlines()
                          if line.startswith("State:")), "")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if "zombie" in state:
            continue
        if text in cmdline or text in environ:
            found.append((int(entry.name), cmdline.strip()))
    return found


def small_repo(root: Path) -> Path:
    repo = root / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text(
        'def scale_values(values, factor):\n    """Multiply every value by factor."""\n'
        "    return [v * factor for v in values]\n\n\n"
        'def total(values):\n    """Sum of the values, zero when empty."""\n    return sum(values)\n'
    )
    (repo / "notes.md").write_text("# Notes\n\nThe calculator keeps no state between calls.\n")
    commit_all(repo, "calc: first version")
    return repo


@dataclass
class Stack:
    root: Path
    proc: subprocess.Popen
    ports: dict[str, int]
    output: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def postgres(self) -> LocalPostgres:
        password = (self.home / "postgres" / "password").read_text().strip()
        return LocalPostgres(self.home / "postgres" / "data", self.home / "logs" / "postgres.log",
                             self.ports["pg"], password=password)


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="codex-up-scale-"))
    root.chmod(0o755)  # see the module docstring
    try:
        ingest(root / "home", small_repo(root), name=REPO)
        base = consecutive_free_ports(3)  # the front, then the two replicas
        ports = {"front": base, "replica-1": base + 1, "replica-2": base + 2, "dagster": free_port(),
                 "mlflow": free_port(), "pg": free_port()}
        env = {k: v for k, v in os.environ.items() if k not in ("CODEX_DAGSTER_PG_URL", "MLFLOW_TRACKING_URI")}
        env.update({"CODEX_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONUNBUFFERED": "1"})
        cmd = [str(BIN / "feriactl"), "up", "--profile", "scale", "--replicas", "2", "--port", str(ports["front"]),
               "--dagster-port", str(ports["dagster"]), "--mlflow-port", str(ports["mlflow"]),
               "--pg-port", str(ports["pg"])]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        running = Stack(root, proc, ports)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            while not any(READY_LINE in line for line in running.output):
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                if line is None:
                    raise AssertionError(f"feriactl up exited with {proc.wait()}:\n{running.text}")
                running.output.append(line)
        except queue.Empty:
            raise AssertionError(f"not up within {STARTUP_TIMEOUT_S} s:\n{running.text}") from None
        threading.Thread(target=lambda: [running.output.append(x) for x in iter(lines.get, None)],
                         daemon=True).start()
        yield running
    finally:
        if "proc" in locals() and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid, _ in processes_mentioning(str(root)):  # a failed test must not leave a server behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def citations(response: httpx.Response) -> list[tuple[str, int, int]]:
    assert response.status_code == 200, response.text
    return [(c["path"], c["line_start"], c["line_end"]) for c in response.json()["citations"]]


def test_every_replica_and_the_front_answer_with_the_same_citations(stack: Stack) -> None:
    for name in ("front", "replica-1", "replica-2", "dagster", "mlflow"):
        assert stack.url(name) in stack.text, f"the {name} URL is not printed:\n{stack.text}"
    body = {"query": QUESTION, "repo": REPO}
    direct = [citations(httpx.post(f"{stack.url(r)}/v1/query", json=body, timeout=60))
              for r in ("replica-1", "replica-2")]
    assert direct[0] == direct[1]
    assert direct[0][0][0] == "calc.py" and direct[0][0][1] == 1  # the function that multiplies, from line 1

    # Round robin: consecutive requests to the one URL reach both replicas. A replica that refused a
    # connection while the stack was starting (the readiness probes go through the front) is skipped
    # for the front's cooldown, so keep asking for a little longer than that.
    answered_by = set()
    deadline = time.monotonic() + 3 * COOLDOWN_S
    while len(answered_by) < 2 and time.monotonic() < deadline:
        response = httpx.post(f"{stack.url('front')}/v1/query", json=body, timeout=60)
        assert citations(response) == direct[0]
        answered_by.add(response.headers["x-codex-replica"])
        time.sleep(0.2)
    assert answered_by == {stack.url("replica-1"), stack.url("replica-2")}

    # The answer also streams through the front (server-sent events, the final event last).
    with httpx.stream("POST", f"{stack.url('front')}/v1/query", json={**body, "stream": True}, timeout=60) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        events = [line for line in sse.iter_lines() if line.startswith("event:")]
    assert events[-1] == "event: final"


def test_dagster_and_mlflow_run_on_the_profiles_postgresql(stack: Stack) -> None:
    assert httpx.get(f"{stack.url('dagster')}/server_info", timeout=10).status_code == 200
    daemons = httpx.post(f"{stack.url('dagster')}/graphql", timeout=30, json={"query": (
        "{ instance { runQueuingSupported daemonHealth { allDaemonStatuses { daemonType healthy } } } }")}).json()
    instance = daemons["data"]["instance"]
    assert instance["runQueuingSupported"] is True  # the QueuedRunCoordinator: the daemon launches runs
    running = {d["daemonType"] for d in instance["daemonHealth"]["allDaemonStatuses"] if d["healthy"]}
    assert {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= running

    created = httpx.post(f"{stack.url('mlflow')}/api/2.0/mlflow/experiments/create", json={"name": "up-scale"},
                         timeout=30)
    assert created.status_code == 200, created.text
    postgres = stack.postgres  # what the UIs show is in the profile's PostgreSQL, not in sqlite files
    assert postgres.query("mlflow", "SELECT name FROM experiments WHERE name = 'up-scale'") == [("up-scale",)]
    assert postgres.query("dagster", "SELECT count(*) FROM daemon_heartbeats")[0][0] >= 1
    assert not list((stack.home / "dagster").rglob("*.db"))

    # Every replica gets both stores in its environment (shared state follows them); no password is printed.
    password = (stack.home / "postgres" / "password").read_text().strip()
    replicas = [pid for pid, cmd in processes_mentioning(str(stack.home)) if " serve " in cmd]
    assert len(replicas) == 2
    for pid in replicas:
        items = Path(f"/proc/{pid}/environ").read_text().split("\0")
        environ = dict(item.split("=", 1) for item in items if "=" in item)
        assert environ["CODEX_DAGSTER_PG_URL"] == postgres.url("dagster")
        assert environ["MLFLOW_TRACKING_URI"] == stack.url("mlflow")
    assert password not in stack.text
    for log in (stack.home / "logs").iterdir():
        assert password not in log.read_text(errors="replace"), log


def test_sigterm_stops_every_process_and_postgresql(stack: Stack) -> None:
    assert processes_mentioning(str(stack.home)), "nothing was running"
    os.kill(stack.proc.pid, signal.SIGTERM)
    assert stack.proc.wait(timeout=90) == 0
    left = processes_mentioning(str(stack.home))
    assert not left, f"left running: {left}"
    assert not (stack.home / "postgres" / "data" / "postmaster.pid").exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", stack.ports["pg"])) != 0, "PostgreSQL still listens"
    for name in ("front", "replica-1", "replica-2", "dagster", "mlflow"):
        with pytest.raises(httpx.ConnectError):
            httpx.get(stack.url(name), timeout=5)


def test_an_unreachable_codex_home_or_a_taken_port_is_refused_with_the_way_out(tmp_path: Path) -> None:
    """pytest's tmp_path is 0700: as root, the ``postgres`` user cannot reach a cluster in it. As another
    user only the port check applies."""
    env = {k: v for k, v in os.environ.items() if k not in ("CODEX_DAGSTER_PG_URL", "MLFLOW_TRACKING_URI")}
    env["CODEX_HOME"] = str(tmp_path / "home")
    ports = {"--port": consecutive_free_ports(3), "--dagster-port": free_port(), "--pg-port": free_port()}
    flags = [x for flag, p in ports.items() for x in (flag, str(p))]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([str(BIN / "feriactl"), "up", "--profile", "scale", *flags, "--mlflow-port", str(port)],
                              env=env, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2
    assert f"--mlflow-port: port {port} is not free" in busy.stderr

    with_url = subprocess.run([str(BIN / "feriactl"), "up", "--profile", "scale"], capture_output=True, text=True,
                              env={**env, "CODEX_DAGSTER_PG_URL": "postgresql+psycopg2://u:p@db/x"}, timeout=60)
    assert with_url.returncode == 2 and "CODEX_DAGSTER_PG_URL set" in with_url.stderr
    default_profile = subprocess.run([str(BIN / "feriactl"), "up", "--replicas", "3"], capture_output=True,
                                     text=True, env=env, timeout=60)
    assert default_profile.returncode == 2 and "--replicas: only with --profile scale" in default_profile.stderr

    if os.geteuid() != 0:
        return
    tmp_path.chmod(0o700)
    refused = subprocess.run([str(BIN / "feriactl"), "up", "--profile", "scale", *flags, "--mlflow-port",
                              str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cannot enter" in refused.stderr and "chmod o+x" in refused.stderr
    assert not processes_mentioning(str(tmp_path))


def test_the_front_skips_a_replica_that_refuses_connections() -> None:
    """The front alone, over a replica that listens and a port where nothing does."""
    from starlette.testclient import TestClient

    from codex_cli.front_proxy import create_app

    with _echo_server() as live:
        dead = f"http://127.0.0.1:{free_port()}"
        with TestClient(create_app([dead, live])) as client:
            for _ in range(3):
                response = client.post("/v1/query?x=1", json={"q": 1})
                assert response.status_code == 200 and response.headers["x-codex-replica"] == live
                assert response.json() == {"path": "/v1/query", "query": "x=1", "body": {"q": 1}}
        with TestClient(create_app([dead])) as client:
            response = client.get("/v1/health")
            assert response.status_code == 502 and dead in response.json()["detail"]


class _echo_server:
    """A real HTTP server on loopback answering every request with what it received."""

    def __enter__(self) -> str:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Echo(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"] or 0))
                path, _, query = self.path.partition("?")
                data = json.dumps({"path": path, "query": query, "body": json.loads(body)}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

