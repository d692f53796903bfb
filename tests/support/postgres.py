"""A real PostgreSQL server in a temporary directory, for the tests that scale out to it.

``initdb`` + ``pg_ctl`` (``server_bin_dir``); as root they run as the ``postgres`` user (PostgreSQL refuses
root). The cluster listens on 127.0.0.1 only, on a free port, with trust authentication: any password
is accepted, so tests can put one in a URL and check it never leaks. ``fsync`` is off — it is a
throwaway cluster, and durability across an OS crash is not what is tested.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "codex"
PASSWORD = "pg-s3cret-never-printed"  # trust auth ignores it; tests grep for it in every file and log


def server_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on the PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if server_bin_dir() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) are neither on PATH nor in /usr/lib/postgresql/*/bin: "
                "install PostgreSQL (Debian: apt-get install postgresql) to run the scale-out tests")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the PostgreSQL server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (needed to start PostgreSQL as 'postgres')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` as a user writes it (driver named, password included)."""
        return f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL (with the password)."""
        import psycopg2

        conn = psycopg2.connect(self.dsn("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(self.dsn(database))
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def _as_server_user(cmd: list[str]) -> list[str]:
        cmd = [str(server_bin_dir() / cmd[0]), *cmd[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    @classmethod
    def start(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="codex-pg-"))
        root.chmod(0o755)  # the server user must reach its data directory
        server = cls(root, free_port())
        server.data_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(server.data_dir, "postgres", "postgres")
            server.log_path.touch()
            shutil.chown(server.log_path, "postgres", "postgres")
        server._run(["initdb", "-D", str(server.data_dir), "-A", "trust", "-U", USER, "--no-sync",
                     "--encoding", "UTF8", "--locale", "C"])
        options = f"-p {server.port} -k {server.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        server._run(["pg_ctl", "-D", str(server.data_dir), "-o", options, "-l", str(server.log_path), "-w",
                     "start"])
        return server

    def stop(self) -> None:
        try:
            self._run(["pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(self._as_server_user(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")
