"""Serving state that every replica must agree on: token buckets, in-flight leases, the kill-switch.

Where it lives (``SharedState.for_serving``): ``CODEX_SERVING_STATE_URL`` when set; else the database of
``CODEX_DAGSTER_PG_URL`` (own tables, all named ``codex_serving_*``); else sqlite at
``CODEX_HOME/serving/shared_state.sqlite``, which replicas on one host share through CODEX_HOME (WAL
mode needs one host's shared memory: on a network file system use PostgreSQL).

- **Token buckets** (``codex_serving_buckets``, one row per ``tenant:queue``): an admission locks all
  of its tenant's rows (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on sqlite),
  refills, takes and writes back in one transaction, so N replicas hand out a burst of B exactly B
  times, not N x B.
- **In-flight leases** (``codex_serving_leases``): an admitted request holds a row until it finishes.
  Its replica renews its live rows every ``lease_s / 3``; a killed replica stops renewing, so its
  slots count against the tenant for at most ``lease_s`` (30 s) more instead of forever.
- **Kill-switch** (``codex_serving_kill_switch``, one row): read on every request, never cached.

Time is the database's clock (PostgreSQL's ``clock_timestamp()``, sqlite's ``julianday('now')``), so
replicas with skewed clocks still agree on refills and expiries. What stays per process, on purpose:
the server queues (``concurrency``, ``max_waiting``): they are one replica's capacity.

A store that cannot be reached raises :class:`StateStoreUnavailable` (the API answers 503 and
``/v1/health/ready`` says not ready) — admission fails closed rather than letting every replica hand
out its own quota. SQL goes through SQLAlchemy Core: it parses the URL, pools connections and hides
the password when the URL is shown.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from serving.quotas import QueueLimits, Ticket, over_quota, queue_inflight_full, tenant_inflight_full

if TYPE_CHECKING:
    from codex_core.settings import Settings

log = logging.getLogger("codex.serving.shared_state")

SQLITE_FILE = "shared_state.sqlite"
LEASE_S = 30.0  # how long a killed replica's in-flight slots keep counting
PREFIX = "codex_serving_"
T = TypeVar("T")

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {PREFIX}buckets (
        tenant TEXT NOT NULL, queue TEXT NOT NULL,
        tokens DOUBLE PRECISION,                -- NULL: never used, the bucket is full
        stamp DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, queue))""",
    f"""CREATE TABLE IF NOT EXISTS {PREFIX}leases (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, queue TEXT NOT NULL, replica TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS {PREFIX}leases_tenant ON {PREFIX}leases (tenant, expires_at)",
    f"CREATE INDEX IF NOT EXISTS {PREFIX}leases_replica ON {PREFIX}leases (replica)",
    f"""CREATE TABLE IF NOT EXISTS {PREFIX}kill_switch (
        id INTEGER PRIMARY KEY, is_on BOOLEAN NOT NULL, reason TEXT NOT NULL, set_by TEXT NOT NULL,
        set_at TEXT)""",
)


class StateStoreUnavailable(RuntimeError):
    """The shared serving state cannot be read or written; the message names the store (password hidden)."""


@dataclass(frozen=True)
class KillSwitchRow:
    on: bool
    reason: str
    set_by: str
    set_at: str | None


@dataclass(frozen=True)
class Taken:
    """One admission transaction's outcome: a lease id, or why not (``queue_inflight`` | ``tenant_inflight``
    | ``rate``) with the seconds until the bucket holds enough tokens."""

    lease: str | None
    refused: str | None = None
    wait_s: float = 0.0


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).expanduser().resolve() / SQLITE_FILE}"


def resolve_url(settings: Settings, state_dir: Path) -> str:
    """CODEX_SERVING_STATE_URL, else CODEX_DAGSTER_PG_URL's database, else sqlite in ``state_dir``
    (``CODEX_HOME/serving`` for serving and ``feriactl``)."""
    for secret in (settings.serving_state_url, settings.dagster_pg_url):
        if secret is not None:
            return secret.get_secret_value()
    return sqlite_url(state_dir)


class SharedState:
    """The tables above on one database; thread-safe (a small connection pool)."""

    def __init__(self, url: str):
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"the serving state needs PostgreSQL or sqlite, not {self.backend!r} "
                             "(CODEX_SERVING_STATE_URL=postgresql+psycopg2://… or sqlite:////abs/path.sqlite)")
        self.where = parsed.render_as_string(hide_password=True)
        self._ready = False
        self._ready_lock = threading.Lock()
        if self.backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ValueError("the serving state must be a sqlite file that replicas share, not in memory")
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
            event.listen(self._engine, "connect", _sqlite_connect)
            event.listen(self._engine, "begin", _sqlite_begin)
            self._now = "((julianday('now') - 2440587.5) * 86400.0)"
            self._lock_rows, self._least = "", "MIN"
        else:
            # Few connections per replica: with dozens of replicas on one server, pools add up.
            self._engine = create_engine(
                url, pool_size=2, max_overflow=4, pool_timeout=5, pool_recycle=1800, skip_autocommit_rollback=True,
                connect_args={"connect_timeout": 3, "application_name": "codex-serving",
                              "options": "-c statement_timeout=5000 -c lock_timeout=3000"},
            )
            self._now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
            self._lock_rows, self._least = " FOR UPDATE", "LEAST"
        # Single statements (reads, a lease's delete) need no transaction: one round trip each.
        self._single = self._engine.execution_options(isolation_level="AUTOCOMMIT", sqlite_begin=None)
        # The statements of every request, parsed once (building a text() per call costs more than sqlite's work).
        self._lock_sql = text(f"SELECT queue, tokens, stamp, {self._now} FROM {PREFIX}buckets "
                              f"WHERE tenant = :tenant ORDER BY queue{self._lock_rows}")
        self._count_sql = text(f"SELECT queue, COUNT(*) FROM {PREFIX}leases WHERE tenant = :tenant "
                               "AND expires_at > :now GROUP BY queue")
        self._take_sql = text(f"UPDATE {PREFIX}buckets SET tokens = :tokens, stamp = :now "
                              "WHERE tenant = :tenant AND queue = :queue")
        self._lease_sql = text(f"INSERT INTO {PREFIX}leases (id, tenant, queue, replica, expires_at) "
                               "VALUES (:id, :tenant, :queue, :replica, :expires)")
        self._end_lease_sql = text(f"DELETE FROM {PREFIX}leases WHERE id = :id")
        self._kill_switch_sql = text(f"SELECT is_on, reason, set_by, set_at FROM {PREFIX}kill_switch WHERE id = 1")

    @classmethod
    def for_serving(cls, settings: Settings, state_dir: Path) -> SharedState:
        return cls(resolve_url(settings, state_dir))

    def __repr__(self) -> str:
        return f"SharedState({self.where})"

    # ------------------------------------------------------------ plumbing

    def _run(self, what: str, work: Callable[[], T]) -> T:
        """``work()``, retried once on a dropped connection (a database restart); any failure becomes
        :class:`StateStoreUnavailable` naming the store and what was being done."""
        for attempt in (1, 2):
            try:
                self._ensure_schema()
                return work()
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise self._unavailable(what, exc) from exc
            except SQLAlchemyError as exc:
                raise self._unavailable(what, exc) from exc
        raise AssertionError("unreachable")

    def _unavailable(self, what: str, exc: SQLAlchemyError) -> StateStoreUnavailable:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return StateStoreUnavailable(
            f"the shared serving state ({self.where}) failed while {what}: {first_line}; check that "
            "database (CODEX_SERVING_STATE_URL, else CODEX_DAGSTER_PG_URL) — /v1/health/ready reports it"
        )

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            with self._engine.begin() as conn:
                if self.backend == "postgresql":  # replicas starting together must not race on CREATE TABLE
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('codex_serving_schema'))"))
                for statement in _SCHEMA:
                    conn.execute(text(statement))
            self._ready = True

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        """Raise :class:`StateStoreUnavailable` unless the store answers (and its tables exist)."""
        def work() -> None:
            with self._single.connect() as conn:
                conn.execute(text("SELECT 1"))
        self._run("checking readiness", work)

    def close(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------ buckets and leases

    def take(self, tenant: str, queue: str, queues: Collection[str], cost: float, limits: QueueLimits,
             tenant_cap: int, replica: str, lease_s: float) -> Taken:
        """In one transaction holding the tenant's rows: in-flight caps, refill, take ``cost`` tokens and
        write a lease of ``lease_s`` seconds, or change nothing and say why not."""

        def work() -> Taken:
            with self._transaction() as conn:
                rows = self._lock_tenant(conn, tenant)
                if not set(queues) | {queue} <= rows.keys():
                    # First request of this tenant (or a new queue): create its rows. On PostgreSQL a
                    # concurrent creator's uncommitted rows make this INSERT wait for it, and the
                    # second SELECT then locks the committed rows.
                    conn.execute(
                        text(f"INSERT INTO {PREFIX}buckets (tenant, queue) VALUES (:tenant, :queue) "
                             "ON CONFLICT DO NOTHING"),
                        [{"tenant": tenant, "queue": q} for q in sorted(set(queues) | {queue})],
                    )
                    rows = self._lock_tenant(conn, tenant)
                tokens, stamp, now = rows[queue]
                counts = dict(conn.execute(self._count_sql, {"tenant": tenant, "now": now}).all())
                if counts.get(queue, 0) >= limits.max_inflight:
                    return Taken(None, "queue_inflight")
                if sum(counts.values()) >= tenant_cap:
                    return Taken(None, "tenant_inflight")
                available = limits.burst if tokens is None else min(
                    limits.burst, tokens + max(0.0, now - stamp) * limits.rate)
                if available < cost:
                    return Taken(None, "rate", (cost - available) / limits.rate)
                lease = uuid.uuid4().hex
                conn.execute(self._take_sql, {"tokens": available - cost, "now": now, "tenant": tenant, "queue": queue})
                conn.execute(self._lease_sql, {"id": lease, "tenant": tenant, "queue": queue, "replica": replica,
                                               "expires": now + lease_s})
                return Taken(lease)

        return self._run(f"admitting tenant {tenant!r} to {queue}", work)

    def _lock_tenant(self, conn: Connection, tenant: str) -> dict[str, tuple[float | None, float, float]]:
        """queue -> (tokens, stamp, now) of the tenant's rows, locked until the transaction ends (in queue
        order, so two transactions never wait for each other crosswise)."""
        result = conn.execute(self._lock_sql, {"tenant": tenant})
        return {queue: (tokens, float(stamp), float(now)) for queue, tokens, stamp, now in result}

    def give_back(self, lease: str, tenant: str, queue: str, *, refund: float = 0.0, burst: float = 0.0) -> None:
        """End a lease; ``refund`` tokens go back to the bucket (capped at ``burst``)."""

        def work() -> None:
            if not refund:  # one statement: no transaction round trips
                with self._single.connect() as conn:
                    conn.execute(self._end_lease_sql, {"id": lease})
                return
            with self._transaction() as conn:
                conn.execute(self._end_lease_sql, {"id": lease})
                conn.execute(
                    text(f"UPDATE {PREFIX}buckets SET tokens = {self._least}(:burst, COALESCE(tokens, :burst) "
                         "+ :cost) WHERE tenant = :tenant AND queue = :queue"),
                    {"burst": burst, "cost": refund, "tenant": tenant, "queue": queue},
                )

        self._run(f"releasing a slot of tenant {tenant!r}", work)

    def renew(self, leases: Collection[str], lease_s: float) -> None:
        """Push the expiry of live ``leases`` ``lease_s`` seconds ahead; drop leases that expired."""

        def work() -> None:
            with self._transaction() as conn:
                if leases:
                    conn.execute(
                        text(f"UPDATE {PREFIX}leases SET expires_at = {self._now} + :lease_s WHERE id IN :ids")
                        .bindparams(bindparam("ids", expanding=True)),
                        {"lease_s": lease_s, "ids": list(leases)},
                    )
                conn.execute(text(f"DELETE FROM {PREFIX}leases WHERE expires_at < {self._now}"))

        self._run("renewing in-flight leases", work)

    def drop_replica(self, replica: str) -> None:
        """A replica that shuts down frees its slots at once instead of letting them expire."""

        def work() -> None:
            with self._transaction() as conn:
                conn.execute(text(f"DELETE FROM {PREFIX}leases WHERE replica = :replica"), {"replica": replica})

        self._run("freeing a stopping replica's slots", work)

    def in_flight(self, tenant: str) -> dict[str, int]:
        """queue -> unexpired leases of ``tenant`` (every replica's)."""

        def work() -> dict[str, int]:
            with self._single.connect() as conn:
                return dict(conn.execute(
                    text(f"SELECT queue, COUNT(*) FROM {PREFIX}leases WHERE tenant = :tenant "
                         f"AND expires_at > {self._now} GROUP BY queue"), {"tenant": tenant},
                ).all())

        return self._run(f"counting tenant {tenant!r}'s requests", work)

    # ------------------------------------------------------------ kill-switch

    def kill_switch(self) -> KillSwitchRow | None:
        def work() -> KillSwitchRow | None:
            with self._single.connect() as conn:
                row = conn.execute(self._kill_switch_sql).first()
            return None if row is None else KillSwitchRow(bool(row[0]), row[1], row[2], row[3])

        return self._run("reading the kill-switch", work)

    def set_kill_switch(self, row: KillSwitchRow, *, only_if_unset: bool = False) -> None:
        """Write the kill-switch (``only_if_unset``: unless one was written already — adopting an old file)."""
        action = "NOTHING" if only_if_unset else (
            "UPDATE SET is_on = excluded.is_on, reason = excluded.reason, set_by = excluded.set_by, "
            "set_at = excluded.set_at")

        def work() -> None:
            with self._transaction() as conn:
                conn.execute(
                    text(f"INSERT INTO {PREFIX}kill_switch (id, is_on, reason, set_by, set_at) "
                         f"VALUES (1, :on, :reason, :set_by, :set_at) ON CONFLICT (id) DO {action}"),
                    {"on": row.on, "reason": row.reason, "set_by": row.set_by, "set_at": row.set_at},
                )

        self._run("writing the kill-switch", work)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by _sqlite_begin, not by the driver; WAL lets readers run beside the
    # writer; synchronous=NORMAL: a power cut may lose the last admissions, never corrupt the file.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock first: two processes never both read a bucket and then write it.
    # Single reads (sqlite_begin=None) run without a transaction.
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode:
        conn.exec_driver_sql(f"BEGIN {mode}")


def new_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SharedLimiter:
    """The tenant layer of :class:`serving.quotas.Admission` on a :class:`SharedState`: every replica's
    admissions count against the same buckets and in-flight caps. Blocking (one transaction per call):
    the admission runs it off the event loop."""

    blocking = True

    def __init__(self, store: SharedState, *, lease_s: float = LEASE_S, replica: str | None = None):
        self.store = store
        self.lease_s = lease_s
        self.replica = replica or new_replica_id()
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def admit(self, tenant: str, queue: str, cost: float, limits: QueueLimits, tenant_cap: int,
              queues: Collection[str], busy_retry_s: float) -> Ticket:
        taken = self.store.take(tenant, queue, queues, cost, limits, tenant_cap, self.replica, self.lease_s)
        if taken.refused == "queue_inflight":
            raise queue_inflight_full(tenant, queue, limits, busy_retry_s)
        if taken.refused == "tenant_inflight":
            raise tenant_inflight_full(tenant, tenant_cap, busy_retry_s)
        if taken.refused == "rate":
            raise over_quota(tenant, queue, limits, taken.wait_s)
        assert taken.lease is not None
        with self._lock:
            self._live.add(taken.lease)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever, name="codex-lease-renewer", daemon=True)
                self._renewer.start()
        return Ticket(tenant, queue, cost, lease=taken.lease)

    def release(self, ticket: Ticket, limits: QueueLimits, *, refund: bool = False) -> None:
        with self._lock:
            self._live.discard(ticket.lease or "")  # even if the delete fails, the lease now just expires
        try:
            self.store.give_back(ticket.lease or "", ticket.tenant, ticket.queue,
                                 refund=ticket.cost if refund else 0.0, burst=limits.burst)
        except StateStoreUnavailable as exc:
            log.warning("%s; the slot frees itself within %gs", exc, self.lease_s)

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._lock:
                live = list(self._live)
            try:
                self.store.renew(live, self.lease_s)
            except StateStoreUnavailable as exc:
                log.warning("%s; %d in-flight leases of replica %s may expire", exc, len(live), self.replica)

    def close(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        try:
            self.store.drop_replica(self.replica)
        except StateStoreUnavailable as exc:
            log.warning("%s; this replica's slots expire within %gs", exc, self.lease_s)
