"""A real PostgreSQL server in a temporary directory, for the tests that scale out to it.

The server is ``feriactl up --profile scale``'s own (``codex_cli.local_postgres.LocalPostgres``): as root
it runs as the ``postgres`` user (PostgreSQL refuses root), on 127.0.0.1 only, on a free port. Here it
uses trust authentication: any password is accepted, so tests can put one in a URL and check it never
leaks. ``fsync`` is off — it is a throwaway cluster, and durability across an OS crash is not what is
tested.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from codex_cli.local_postgres import LocalPostgres, unavailable_reason

__all__ = ["PASSWORD", "USER", "PostgresServer", "free_port", "unavailable_reason"]

USER = "codex"
PASSWORD = "pg-s3cret-never-printed"  # trust auth ignores it; tests grep for it in every file and log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    root: Path
    server: LocalPostgres

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` as a user writes it (driver named, password included)."""
        return f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL (with the password)."""
        if not self.server.create_database(name):
            raise AssertionError(f"database {name} exists already")
        return self.url(name)

    def query(self, database: str, sql: str) -> list[tuple]:
        return self.server.query(database, sql)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="codex-pg-"))
        root.chmod(0o755)  # the server user must reach its data directory
        server = LocalPostgres(root / "data", root / "server.log", free_port(), user=USER, fsync=False)
        server.init(no_sync=True)
        server.start()
        return cls(root, server)

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
