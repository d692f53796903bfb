"""A PostgreSQL server of our own on loopback: ``initdb`` once, the server as a child process, a fast stop.

``feriactl up --profile scale`` keeps its cluster under ``CODEX_HOME/postgres/`` with a generated password
(scram-sha-256, kept in a 0600 file beside the data); the scale-out tests start a throwaway cluster with
trust authentication. Either way the server listens on 127.0.0.1 only and has no Unix socket (a socket
path under a deep CODEX_HOME would pass the 107-byte limit, and nothing here needs one).

PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the ``postgres`` user
(``Popen(user=...)``, so the server is our direct child and its pid is the process we started), and
the data directory belongs to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from codex_core.liveness import pid_alive

SERVER_USER_AS_ROOT = "postgres"
INSTALL_HINT = "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql)"


class PostgresError(RuntimeError):
    """The local server cannot be set up or started; the message says why and what to do."""


def server_bin_dir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: on the PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "postgres").exists()), None)


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if server_bin_dir() is None:
        return ("PostgreSQL server binaries (initdb, postgres) are neither on PATH nor in "
                f"/usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER_AS_ROOT)
        except KeyError:
            return (f"running as root and there is no {SERVER_USER_AS_ROOT!r} user to run PostgreSQL as "
                    "(PostgreSQL refuses root): create it, or run as an ordinary user")
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root; None means this process's own user."""
    return pwd.getpwnam(SERVER_USER_AS_ROOT) if os.geteuid() == 0 else None


@dataclass
class LocalPostgres:
    data_dir: Path
    log_path: Path
    port: int
    user: str = "codex"
    password: str | None = None  # None: trust authentication (tests only)
    fsync: bool = True
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ addresses

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` (driver named, password included: pass it on, never print it)."""
        secret = f":{self.password}" if self.password else ""
        return f"postgresql+psycopg2://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def display_url(self, database: str) -> str:
        """The same URL with the password masked: what may be printed or logged."""
        secret = ":***" if self.password else ""
        return f"postgresql+psycopg2://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def _connect(self, database: str):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password or "",
                                dbname=database, connect_timeout=3)

    # ------------------------------------------------------------------ cluster

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self, *, no_sync: bool = False) -> None:
        """``initdb`` a new cluster in ``data_dir`` (which must not hold one), owned by the server user."""
        reason = unavailable_reason()
        if reason:
            raise PostgresError(reason)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        account = _server_user()
        if account is not None:
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        self._check_reachable()
        cmd = [str(server_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--encoding", "UTF8",
               "--locale", "C"]
        if no_sync:
            cmd.append("--no-sync")
        pwfile = None
        if self.password:
            # initdb reads the password from a file; the server user must read it, nobody else, and it goes.
            pwfile = self.data_dir.parent / f".initdb-pw-{os.getpid()}"
            pwfile.touch(mode=0o600)
            pwfile.write_text(self.password + "\n")
            if account is not None:
                os.chown(pwfile, account.pw_uid, account.pw_gid)
            cmd += ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        else:
            cmd += ["-A", "trust"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **self._as_server_user())
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise PostgresError(f"initdb of {self.data_dir} failed ({done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()}")

    def running_pid(self) -> int | None:
        """The pid of a server already running on ``data_dir`` (its ``postmaster.pid``), or None."""
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, timeout: float = 90.0) -> None:
        """Start the server as a child in its own session; return once it accepts connections."""
        reason = unavailable_reason()
        if reason:
            raise PostgresError(reason)
        running = self.running_pid()
        if running is not None:
            raise PostgresError(
                f"a PostgreSQL server (pid {running}) already runs on {self.data_dir}: another "
                "`feriactl up --profile scale` uses this CODEX_HOME, or one was killed before it could stop it. "
                f"Stop that one (kill -INT {running}) and start again.")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                   "-c", f"fsync={'on' if self.fsync else 'off'}"]
        cmd = [str(server_bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *options]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, **self._as_server_user())
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PostgresError(f"PostgreSQL exited with code {self.proc.returncode} while starting "
                                    f"(port {self.port}); the end of {self.log_path}:\n{self._log_tail()}")
            try:
                self._connect("postgres").close()
                return
            except Exception as exc:  # psycopg2.OperationalError: not up yet, or refused
                if "authentication failed" in str(exc):
                    self.stop()
                    raise PostgresError(f"PostgreSQL on {self.data_dir} refused the password for user "
                                        f"{self.user!r}: the cluster was initialized with another one") from None
            if time.monotonic() > deadline:
                self.stop()
                raise PostgresError(f"PostgreSQL did not accept connections within {timeout:.0f} s; "
                                    f"see {self.log_path}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: clients disconnected, a clean checkpoint), immediate after ``timeout``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, sig)  # the backends too: they share the server's process group
                else:
                    os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    # ------------------------------------------------------------------ databases

    def create_database(self, name: str) -> bool:
        """Create ``name`` unless it exists; True when it was created."""
        conn = self._connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone():
                    return False
                cur.execute(f'CREATE DATABASE "{name}"')
                return True
        finally:
            conn.close()

    def query(self, database: str, sql: str) -> list[tuple]:
        conn = self._connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _as_server_user() -> dict:
        account = _server_user()
        if account is None:
            return {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": account.pw_dir, "USER": account.pw_name,
               "LANG": "C.UTF-8"}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "env": env, "cwd": "/"}

    def _check_reachable(self) -> None:
        """As root the server runs as ``postgres``, which must be able to enter every directory above its data."""
        account = _server_user()
        if account is None:
            return
        done = subprocess.run(["test", "-x", str(self.data_dir)], **self._as_server_user())
        if done.returncode == 0:
            return
        blocked = next((p for p in reversed(self.data_dir.parents)
                        if not _searchable_by(p, account)), self.data_dir)
        raise PostgresError(
            f"PostgreSQL runs as user {account.pw_name!r} (PostgreSQL refuses root), and that user cannot enter "
            f"{blocked}, which holds its data directory {self.data_dir}. Let it in (chmod o+x {blocked}) or "
            "set CODEX_HOME to a directory it can reach.")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _searchable_by(path: Path, account: pwd.struct_passwd) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)
