"""The database-specific half of the engine benchmark (bench/engine.py).

`open_database(url)` picks the database from DATABASE_URL: a PostgreSQL URL
gives `PostgresBench` (its own database on that server), nothing or a
sqlite:// URL gives `SqliteBench` (a fresh file in a temporary directory,
opened with the app's own SQLite settings). Each knows how to create and
remove its database, describe it, measure the raw floor, and log the
statements a worker runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

PG_SCHEMES = ("postgres", "postgresql", "pgsql")
# What the floor does per step, besides the step-row INSERT (both floors
# write the same columns: lease renewed 60 s ahead, three counters bumped).
PG_FLOOR_UPDATE = (
    "UPDATE runs_run SET current_step = %s, seq = seq + 1, steps_executed = steps_executed + 1,"
    " tool_calls = tool_calls + 1, lease_expires_at = clock_timestamp() + interval '60 seconds'"
    " WHERE id = %s"
)
SQLITE_FLOOR_UPDATE = (
    "UPDATE runs_run SET current_step = ?, seq = seq + 1, steps_executed = steps_executed + 1,"
    " tool_calls = tool_calls + 1,"
    " lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+60 seconds')"
    " WHERE id = ?"
)
# The PRAGMAs that decide a SQLite commit's cost; the floor copies the
# values the app's own connection ends up with (config/settings.py).
SQLITE_PRAGMAS = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# --- PostgreSQL -------------------------------------------------------------


def bench_urls(url: str, bench_db: str) -> tuple[str, str, str]:
    """(admin conninfo, bench DATABASE_URL, bench conninfo) from a PostgreSQL
    DATABASE_URL; exits with a message for any other URL."""
    parts = urlsplit(url)
    if parts.scheme not in PG_SCHEMES:
        raise SystemExit(
            "this benchmark needs a PostgreSQL DATABASE_URL here: "
            "postgresql://USER:PASSWORD@HOST:PORT/DB, whose role may CREATE DATABASE "
            f"(got {'nothing' if not url else repr(parts.scheme + '://...')})."
            '\n  e.g. DATABASE_URL="$(scripts/postgres-start)"'
        )
    admin_db = unquote(parts.path.lstrip("/")) or "postgres"
    if admin_db == bench_db:
        admin_db = "postgres"
    admin = urlunsplit(("postgresql", parts.netloc, "/" + admin_db, parts.query, ""))
    bench_url = urlunsplit((parts.scheme, parts.netloc, "/" + bench_db, parts.query, ""))
    conninfo = urlunsplit(("postgresql", parts.netloc, "/" + bench_db, parts.query, ""))
    return admin, bench_url, conninfo


def recreate_database(admin: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(admin, autocommit=True) as pg:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            pg.execute(drop.format(sql.Identifier(name)))
            if not drop_only:
                pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise SystemExit(
            f"bench: cannot {'drop' if drop_only else 'create'} database {name!r}"
            f" through DATABASE_URL's server (the role needs CREATEDB): {exc}"
        ) from None


def backend_cpu_s(pid: int | None) -> float | None:
    """CPU seconds used so far by a local PostgreSQL backend (None if not local)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pid(connection) -> int | None:
    """The server process serving this Django connection, when it runs on this
    machine; None on SQLite, whose work runs inside the calling process."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    return pid if backend_cpu_s(pid) is not None else None


def floor_row_shape(holder: str = "%s") -> tuple[str, dict]:
    """The INSERT of a step row with the columns the engine writes
    (`runs.engine.store.STEP_RUN_COLUMNS`), and the model's defaults for them."""
    from runs.engine.store import STEP_RUN_COLUMNS
    from runs.models import StepRun

    fields = {field.column: field for field in StepRun._meta.concrete_fields}
    defaults = {column: fields[column].get_default() for column in STEP_RUN_COLUMNS}
    defaults.update(attempt=1, kind="tool", status="succeeded", edge="next", worker="floor")
    holders = ", ".join([holder] * len(STEP_RUN_COLUMNS))
    insert = f"INSERT INTO runs_steprun ({', '.join(STEP_RUN_COLUMNS)}) VALUES ({holders})"
    return insert, defaults


def _step_row(defaults: dict, run_id: int, seq: int) -> dict[str, Any]:
    row = dict(defaults, run_id=run_id, seq=seq, step_key=f"echo{seq}")
    row["input"] = row["output"] = {"value": seq}
    row["started_at"] = row["finished_at"] = datetime.now(UTC)
    row["duration_ms"] = 0.01
    return row


def pin(cpus: set[int] | None, backend: int | None) -> str | None:
    """Keep this process and its database session on `cpus` (None: every
    CPU again); why not, when it cannot (a server on another machine, or
    run by a user this one may not move)."""
    every = set(range(os.cpu_count() or 1))
    if backend is None:
        return "the database session is not a process of this machine"
    try:
        os.sched_setaffinity(0, cpus or every)
        os.sched_setaffinity(backend, cpus or every)
    except OSError as error:
        os.sched_setaffinity(0, every)
        return f"cannot move the database session: {error.strerror}"
    return None


@contextlib.contextmanager
def _kept(cpus: set[int] | None, backend: int) -> Iterator[None]:
    """Keep this process and a local session on `cpus` for the block."""
    if cpus is None:
        yield
        return
    refused = pin(cpus, backend)
    if refused:
        raise RuntimeError(refused)
    try:
        yield
    finally:
        pin(None, backend)


class PostgresBench:
    """A database of its own on DATABASE_URL's server, dropped at the end."""

    vendor = "postgresql"

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.admin, self.url, self.conninfo = bench_urls(url, name)

    def create(self) -> str:
        recreate_database(self.admin, self.name)
        return f"bench {self.location()}"

    def env(self) -> dict[str, str | None]:
        return {"DATABASE_URL": self.url}

    def location(self) -> str:
        return f"database {self.name!r} on DATABASE_URL's server"

    def describe(self, connection) -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version(), current_setting('fsync'),"
                           " current_setting('synchronous_commit')")  # fmt: skip
            version, fsync, sync_commit = cursor.fetchone()
        return f"{version.split(' on ')[0]} (fsync={fsync}, synchronous_commit={sync_commit})"

    def floor(self, run_ids: list[int], steps: int) -> dict[str, float | None]:
        """Raw psycopg, one connection: per step BEGIN; INSERT step; UPDATE run;
        COMMIT. Returns wall, client CPU and server backend CPU seconds."""
        insert, _ = floor_row_shape()

        def step(pg, cursor, row: list[Any], run_id: int, seq: int) -> None:
            cursor.execute(insert, row)
            cursor.execute(PG_FLOOR_UPDATE, (f"echo{seq + 1}", run_id))
            pg.commit()

        return self._floor_loop(run_ids, steps, step, autocommit=False)

    def floor_one_statement(
        self,
        run_ids: list[int],
        steps: int,
        *,
        work: Callable[[int], Any] | None = None,
        cpus: set[int] | None = None,
    ) -> dict[str, float | None]:
        """Raw psycopg, one connection, the leanest client a team would
        write: per step one prepared statement in autocommit, the step row's
        INSERT and the run's UPDATE in one CTE (one round trip, like the
        engine's checkpoint). Returns wall, client CPU and server CPU seconds.
        `work(k)`, if given, runs before the k-th step's statement; `cpus`
        keeps this process and the session on them while it runs."""
        insert, _ = floor_row_shape()
        statement = f"WITH step AS ({insert} RETURNING 1) {PG_FLOOR_UPDATE}"
        count = iter(range(len(run_ids) * steps))

        def step(pg, cursor, row: list[Any], run_id: int, seq: int) -> None:
            if work is not None:
                work(next(count))
            cursor.execute(statement, [*row, f"echo{seq + 1}", run_id], prepare=True)

        return self._floor_loop(run_ids, steps, step, autocommit=True, cpus=cpus)

    def _floor_loop(
        self,
        run_ids: list[int],
        steps: int,
        step: Callable[..., None],
        *,
        autocommit: bool,
        cpus: set[int] | None = None,
    ) -> dict[str, float | None]:
        """Write every run's step rows through `step`, timed (with this
        process and its session kept on `cpus`, if given)."""
        import psycopg
        from psycopg.types.json import Jsonb

        _, defaults = floor_row_shape()
        with (
            psycopg.connect(self.conninfo, autocommit=autocommit) as pg,
            _kept(cpus, pg.info.backend_pid),
        ):
            cursor = pg.cursor()
            backend = pg.info.backend_pid
            server0 = backend_cpu_s(backend)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for run_id in run_ids:
                for seq in range(1, steps + 1):
                    row = _step_row(defaults, run_id, seq)
                    row["input"] = row["output"] = Jsonb(row["input"])
                    step(pg, cursor, list(row.values()), run_id, seq)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            server = None if server0 is None else backend_cpu_s(backend) - server0
            cursor.execute("SELECT pg_stat_force_next_flush()")  # see flush_table_stats
            if not autocommit:
                pg.commit()
        return {"wall": wall, "cpu": cpu, "server": server}

    @contextlib.contextmanager
    def statement_log(self, connection) -> Iterator[list[str]]:
        """The statements the connection sends to the server (transaction
        control excluded: a normal step needs none on PostgreSQL)."""
        seen: list[str] = []

        def spy(execute, sql, params, many, context):
            seen.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(spy):
            yield seen

    def drop(self) -> None:
        recreate_database(self.admin, self.name, drop_only=True)


# --- SQLite -----------------------------------------------------------------


def app_pragmas() -> dict[str, Any]:
    """SQLITE_PRAGMAS as the app's own (Django) connection has them."""
    from django.db import connection

    values = {}
    with connection.cursor() as cursor:
        for name in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {name}")
            values[name] = cursor.fetchone()[0]
    return values


def _sqlite_value(value: Any) -> Any:
    """A parameter as the engine's writes store it (JSON as compact text,
    datetimes as Django's SQLite adapter writes them, decimals as text)."""
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


class SqliteBench:
    """A fresh SQLite file in a temporary directory, removed at the end.

    The app opens it with its embedded defaults (config/settings.py: WAL,
    synchronous NORMAL, busy timeout, IMMEDIATE transactions): the bench
    only points BOSUN_VAR_DIR at the directory.
    """

    vendor = "sqlite"

    def __init__(self, url: str) -> None:
        self.ignored_url = url
        self.dir = ""
        self.path = ""

    def create(self) -> str:
        self.dir = tempfile.mkdtemp(prefix="bosun-bench-engine-")
        self.path = os.path.join(self.dir, "bosun.sqlite3")  # where settings put it
        note = f" (DATABASE_URL {self.ignored_url!r} not used)" if self.ignored_url else ""
        return f"bench database: a fresh SQLite file {self.path}{note}"

    def env(self) -> dict[str, str | None]:
        return {"DATABASE_URL": None, "BOSUN_VAR_DIR": self.dir}

    def location(self) -> str:
        return self.path

    def describe(self, connection) -> str:
        """The SQLite library and the PRAGMAs the app's connection runs with
        (the floor's connection copies them)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT sqlite_version()")
            version = cursor.fetchone()[0]
        values = app_pragmas()
        mode = connection.settings_dict["OPTIONS"].get("transaction_mode") or "DEFERRED"
        shown = dict(values, synchronous=SYNCHRONOUS.get(values["synchronous"], "?"))
        pragmas = " ".join(f"{k}={v}" for k, v in shown.items())
        return f"SQLite {version} inside each process ({pragmas}, {mode} transactions)"

    def _connect(self) -> sqlite3.Connection:
        """A plain sqlite3 connection with the app's PRAGMAs (read back to be sure)."""
        wanted = app_pragmas()
        db = sqlite3.connect(self.path, isolation_level=None)  # BEGIN/COMMIT are ours
        for name, value in wanted.items():
            db.execute(f"PRAGMA {name} = {value}")
        got = {name: db.execute(f"PRAGMA {name}").fetchone()[0] for name in wanted}
        if got != wanted:
            raise RuntimeError(f"floor connection PRAGMAs {got} differ from the app's {wanted}")
        return db

    def floor(self, run_ids: list[int], steps: int) -> dict[str, float | None]:
        """Python's sqlite3, one connection: per step BEGIN IMMEDIATE; INSERT
        step; UPDATE run; COMMIT. Returns wall and CPU seconds (SQLite's work
        is in this process's CPU; there is no server)."""
        insert, defaults = floor_row_shape("?")
        db = self._connect()
        try:
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for run_id in run_ids:
                for seq in range(1, steps + 1):
                    row = _step_row(defaults, run_id, seq)
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(insert, [_sqlite_value(v) for v in row.values()])
                    db.execute(SQLITE_FLOOR_UPDATE, (f"echo{seq + 1}", run_id))
                    db.execute("COMMIT")
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        finally:
            db.close()
        return {"wall": wall, "cpu": cpu, "server": None}

    @contextlib.contextmanager
    def statement_log(self, connection) -> Iterator[list[str]]:
        """Every statement SQLite runs on the connection, BEGIN and COMMIT
        included (Django's COMMIT does not pass its execute wrappers)."""
        seen: list[str] = []
        connection.ensure_connection()
        raw = connection.connection
        raw.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            raw.set_trace_callback(None)

    def drop(self) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


BenchDatabase = PostgresBench | SqliteBench


def open_database(url: str, pg_name: str) -> BenchDatabase:
    """The bench database DATABASE_URL asks for: PostgreSQL (a database named
    `pg_name` on its server) or, without a URL or with a sqlite:// one, a
    fresh SQLite file (never the app's own var/bosun.sqlite3)."""
    scheme = urlsplit(url).scheme
    if not url or scheme.startswith("sqlite"):
        return SqliteBench(url)
    if scheme not in PG_SCHEMES:
        raise SystemExit(
            f"bench/engine.py runs on SQLite (no DATABASE_URL) or PostgreSQL (a postgresql://"
            f" DATABASE_URL whose role may CREATE DATABASE), not on {scheme + '://'!r}."
        )
    return PostgresBench(url, pg_name)
