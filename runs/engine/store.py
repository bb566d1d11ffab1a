"""The durable hot path: claiming a run and checkpointing a step.

Written as raw SQL on purpose: this is the one place where every statement
counts (see the engine benchmark). Each step costs one round trip on
PostgreSQL (a CTE updates the run, fenced, and inserts the step row only if
the update matched) and one IMMEDIATE transaction of two statements on
SQLite. Times come from the database clock, never the worker's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from runs.engine.errors import LeaseLost

RUN = "runs_run"
STEP_RUN = "runs_steprun"
LEDGER = "runs_toolcallrecord"
# A runnable run whose doorbell may have been lost is rung again by the
# sweeper after this long.
REDELIVER_AFTER_S = 30.0


@cache
def _pg() -> bool:
    """The database is PostgreSQL (else SQLite); fixed for a process's life."""
    return connection.vendor == "postgresql"


def now_sql() -> str:
    if _pg():
        return "clock_timestamp()"
    return "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')"


def later_sql() -> str:
    """SQL for `now + %s seconds`; takes one float parameter."""
    if _pg():
        return "(clock_timestamp() + make_interval(secs => %s))"
    return "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', printf('%%+.3f seconds', %s))"


def json_param() -> str:
    return "%s::jsonb" if _pg() else "%s"


# json.dumps with any argument builds a new encoder at every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def dump(value: Any) -> str | None:
    return None if value is None else _encode(value)


@dataclass
class RunState:
    """What a worker holds while it owns a run."""

    run_id: int
    fence: int
    workflow_id: int
    version_id: int
    current_step: str
    seq: int
    attempt: int
    attempts_before: int
    replay_of: int | None
    role_version_id: int | None
    policy_version_id: int | None
    tainted: bool
    steps_executed: int
    llm_calls: int
    tool_calls: int
    cost_usd: Decimal  # model plus vendor spend
    wall_from: Any  # the wall-time budget counts from here (Run.wall_from)
    input: dict[str, Any]
    trace_id: str = ""  # hex; "" while tracing has never been on for the run
    # Untrusted content the run read looked like an injection (signals were
    # recorded): even a destination the policy trusts needs a person then.
    suspicious: bool = False
    # Vendor credits spent so far, per vendor (the policy caps each).
    credits: dict[str, int] = field(default_factory=dict)
    # The kill switches as of the last claim or checkpoint, which is the
    # moment the next step starts (no round trip lies between): a global or
    # this workflow's switch, and the tools switched off.
    switched_off: bool = False
    tools_off: frozenset[str] = frozenset()
    # A ledger row this worker's call left open after the vendor answered
    # (record id, result): the next checkpoint closes it as succeeded in its
    # own statement, fenced like the rest of it.
    closing: tuple[int, Any] | None = None
    # The run's mode (runs.models.RunMode) and, for a sandbox run, the
    # recorded run its reads are answered from.
    mode: str = "live"
    tools_from: int | None = None
    # The workflow's slug, which its kill switch names (read at the claim).
    workflow_slug: str = ""
    # Takeovers in a row in this step, this claim included (Run.takeovers).
    takeovers: int = 0

    def see_switches(self, engaged: str | None) -> None:
        """Take the switches `_switches_sql` read: "scope:target" entries
        joined by commas (None or "" when none is engaged)."""
        entries = [e.partition(":") for e in (engaged or "").split(",") if e]
        self.switched_off = any(scope != "tool" for scope, _, _ in entries)
        self.tools_off = frozenset(target for scope, _, target in entries if scope == "tool")


_CLAIMABLE = (
    "(status = 'queued'"
    " OR (status = 'waiting' AND not_before IS NOT NULL AND not_before <= {now})"
    " OR (status = 'running' AND lease_expires_at < {now}))"
)


def _switches_sql(slug: str) -> str:
    """A scalar subquery: the engaged switches that concern the run (global,
    its workflow's, any tool's) as "scope:target" joined by commas.
    `slug` is SQL for the run's workflow's slug: the claim reads it from the
    workflow, a checkpoint takes it as a parameter (a workflow keeps its
    slug, migration runs 0030), so a step's statement reads one table less."""
    joined = (
        "string_agg(scope || ':' || target, ',')"
        if _pg()
        else "group_concat(scope || ':' || target, ',')"
    )
    return (
        f"(SELECT {joined} FROM policies_killswitch WHERE engaged AND (scope IN ('global', 'tool')"
        f" OR (scope = 'workflow' AND target = {slug})))"
    )


_SLUG_OF_RUN = f"(SELECT slug FROM runs_workflow WHERE id = {RUN}.workflow_id)"


# Claims kept in Run.lease_history.
LEASE_HISTORY = 20


# A claim of a running run is a takeover: its lease ran out (or was ended)
# while its holder was inside the step at `seq` (or between two steps). The
# count goes on while the takeovers stay at one seq, and starts again when
# a step committed since; a run its worker released counts none. The
# right-hand sides read the row as it was before the claim.
_TAKEOVERS = (
    "takeovers = CASE WHEN status <> 'running' THEN 0"
    " WHEN takeover_seq = seq THEN takeovers + 1 ELSE 1 END,"
    " takeover_seq = seq"
)


def _history_sql() -> str:
    """Run.lease_history with this claim appended (worker: one parameter),
    the oldest entry dropped beyond LEASE_HISTORY. `fence + 1` reads the old
    row: it is the fence this claim sets."""
    if _pg():
        return (
            f"(CASE WHEN jsonb_array_length(lease_history) >= {LEASE_HISTORY}"
            " THEN lease_history - 0 ELSE lease_history END)"
            " || jsonb_build_array(jsonb_build_object("
            "'worker', %s::text, 'fence', fence + 1, 'at', clock_timestamp()))"
        )
    return (
        f"json_insert(CASE WHEN json_array_length(lease_history) >= {LEASE_HISTORY}"
        " THEN json_remove(lease_history, '$[0]') ELSE lease_history END, '$[#]',"
        f" json_object('worker', %s, 'fence', fence + 1, 'at', {now_sql()}))"
    )


def claim(run_id: int, *, worker: str, lease_s: float, trace_id: str = "") -> RunState | None:
    """Take the run if nobody holds it: one conditional UPDATE.

    Bumping `fence` is what makes a stale worker harmless: its later writes
    carry the old fence and match no row. `trace_id` is stored if the run
    has none yet (the same statement, so tracing costs no round trip); the
    run's trace id, old or new, comes back in the state.
    """
    now = now_sql()
    sql = (
        f"UPDATE {RUN} SET status = 'running', wait_reason = '', fence = fence + 1,"
        f" lease_owner = %s, lease_expires_at = {later_sql()}, ring_at = {later_sql()},"
        f" not_before = NULL, started_at = COALESCE(started_at, {now}),"
        f" wall_from = COALESCE(wall_from, {now}),"
        " trace_id = CASE WHEN trace_id = '' THEN %s ELSE trace_id END,"
        f" lease_history = {_history_sql()}, {_TAKEOVERS}"
        f" WHERE id = %s AND {_CLAIMABLE.format(now=now)}"
        " RETURNING fence, workflow_id, version_id, current_step, seq, attempt, attempts_before,"
        " replay_of_id, role_version_id, policy_version_id, tainted, steps_executed, llm_calls,"
        " tool_calls, cost_usd, wall_from, input, trace_id, taint_signals <> '', credits,"
        f" {_switches_sql(_SLUG_OF_RUN)}, takeovers, mode, tools_from_id, {_SLUG_OF_RUN}"
    )
    params: list[Any] = [worker, lease_s, lease_s, trace_id, worker, run_id]
    if _pg():
        row = _prepared_row(sql, params)
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    if row is None:
        return None
    row, (takeovers, mode, tools_from, slug) = row[:-4], row[-4:]
    *head, tainted, steps, llm_calls, tool_calls, cost, wall_from, raw_input, trace, odd = row[:-2]
    raw_input, credits = _loads(raw_input), _loads(row[-2]) or {}
    if isinstance(wall_from, str):  # SQLite
        wall_from = datetime.fromisoformat(wall_from)
    if wall_from is not None and wall_from.tzinfo is None:
        wall_from = wall_from.replace(tzinfo=UTC)
    state = RunState(  # type: ignore[call-arg]  # mypy cannot count a starred row
        run_id,
        *head,
        bool(tainted),
        steps,
        llm_calls,
        tool_calls,
        Decimal(str(cost)),
        wall_from,
        raw_input,
        trace,
        bool(odd),
        {vendor: int(spent) for vendor, spent in credits.items()},
    )
    state.see_switches(row[-1])
    state.mode, state.tools_from, state.workflow_slug = mode, tools_from, slug
    state.takeovers = takeovers
    return state


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def load_outputs(run_id: int) -> list[tuple[str, Any, list[str]]]:
    """(step key, output, output-check flags) of every succeeded step, in order."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT step_key, output, flags FROM {STEP_RUN}"
            " WHERE run_id = %s AND status = 'succeeded' ORDER BY seq",
            [run_id],
        )
        rows = cursor.fetchall()
    return [(key, _loads(out), _loads(flags) or []) for key, out, flags in rows]


class Update:
    """The SET clause of a fenced run update, built column by column."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def set(self, column: str, sql: str = "%s", *params: Any) -> Update:
        self.parts.append(f"{column} = {sql}")
        self.params.extend(params)
        return self

    def value(self, column: str, value: Any) -> Update:
        return self.set(column, "%s", value)

    def add(self, column: str, amount: Any) -> Update:
        if amount:
            self.set(column, f"{column} + %s", amount)
        return self

    def add_credits(self, vendor: str, credits: int) -> Update:
        """Add to the run's credits of `vendor` (the JSON object `credits`),
        in the same statement as the rest of the checkpoint."""
        if not credits:
            return self
        if _pg():
            return self.set(
                "credits",
                "jsonb_set(credits, ARRAY[%s::text],"
                " to_jsonb(COALESCE((credits ->> %s::text)::bigint, 0) + %s::bigint))",
                vendor,
                vendor,
                credits,
            )
        # The vendor's name is quoted in the path; settings allow only
        # [a-z0-9_-] in it, so it cannot close the quotes.
        return self.set(
            "credits",
            "json_set(credits, '$.\"' || %s || '\"',"
            " COALESCE(json_extract(credits, '$.\"' || %s || '\"'), 0) + %s)",
            vendor,
            vendor,
            credits,
        )

    def at_now(self, column: str) -> Update:
        return self.set(column, now_sql())

    def after(self, column: str, seconds: float) -> Update:
        return self.set(column, later_sql(), seconds)

    def release(self) -> Update:
        """Give up the lease (the run waits, finishes, or goes back to the queue)."""
        return self.value("lease_owner", "").set("lease_expires_at", "NULL")


STEP_RUN_COLUMNS = (
    "run_id", "seq", "attempt", "step_key", "kind", "status", "edge", "input", "output",
    "error", "error_type", "retryable", "retry_delay_s", "started_at", "finished_at", "duration_ms",
    "provider", "model_requested", "model_answered", "tokens_in", "tokens_out",
    "cache_read_tokens", "cache_write_tokens", "cost_usd", "model_usd", "vendor", "credits",
    "vendor_usd", "cache_hit", "cost_saved_usd", "vendor_saved_usd", "credits_saved", "worker",
    "flags",
)  # fmt: skip
_JSON_COLUMNS = {"input", "output", "flags"}
_RECORD_DEFAULTS: dict[str, Any] = {
    "status": "", "edge": "", "input": None, "output": None, "error": "", "error_type": "",
    "retryable": None, "retry_delay_s": None, "provider": "", "model_requested": "", "model_answered": "",
    "tokens_in": 0, "tokens_out": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
    "cost_usd": Decimal(0), "model_usd": Decimal(0), "vendor": "", "credits": 0,
    "vendor_usd": Decimal(0), "cache_hit": False, "cost_saved_usd": Decimal(0),
    "vendor_saved_usd": Decimal(0), "credits_saved": 0, "flags": [],
}  # fmt: skip


@cache
def _insert_parts(pg: bool) -> tuple[str, str]:
    """The StepRun column list and value placeholders (fixed per vendor).

    On PostgreSQL each placeholder is cast to its column's type: the values
    are bound on the server (see `_prepared_cursor`), and a parameter in a
    SELECT list would otherwise be taken for text."""
    if not pg:
        return ", ".join(STEP_RUN_COLUMNS), ", ".join(["%s"] * (len(STEP_RUN_COLUMNS) - 1))
    from runs.models import StepRun

    fields = {f.column: f for f in StepRun._meta.concrete_fields}
    holders = ", ".join(f"%s::{fields[c].db_type(connection)}" for c in STEP_RUN_COLUMNS[1:])
    return ", ".join(STEP_RUN_COLUMNS), holders


def step_record(**fields: Any) -> dict[str, Any]:
    """A StepRun row for `checkpoint`: the given fields over the defaults."""
    record = {**_RECORD_DEFAULTS, **fields}
    missing = set(STEP_RUN_COLUMNS[1:]) - set(record)
    if missing:
        raise TypeError(f"step record lacks {sorted(missing)}")
    return record


def checkpoint(state: RunState, update: Update, step_run: dict[str, Any] | None) -> None:
    """Commit the step's record and the run's advance together, or neither,
    with the ledger row a call of the step left open (`state.closing`),
    and read the kill switches in the same round trip (`state.switched_off`,
    `state.tools_off`): the next step starts from what they were then.

    Raises LeaseLost when the run's fence moved on (another worker took it
    over, or it was cancelled): nothing of this step is written.
    """
    if step_run is not None:
        # The run keeps its machine time (the dashboard's, runs.metrics).
        update.add("machine_ms", step_run.get("duration_ms"))
    where = " WHERE id = %s AND fence = %s AND status = 'running'"
    set_sql = ", ".join(update.parts)
    run_params = [*update.params, state.run_id, state.fence]
    switches = _switches_sql("%s")
    closing = state.closing
    pg = _pg()
    if pg:
        # One round trip: the step row and the ledger close happen only if
        # the fenced update matched.
        ledger_cte, ledger_params = "", []
        if closing is not None:
            ledger_cte = (
                f", led AS (UPDATE {LEDGER} SET status = 'succeeded', result = %s::jsonb,"
                " error = '', finished_at = clock_timestamp()"
                " WHERE id = %s AND EXISTS (SELECT 1 FROM upd))"
            )
            ledger_params = [dump(closing[1]), closing[0]]
        head = f"WITH upd AS (UPDATE {RUN} SET {set_sql}{where} RETURNING id){ledger_cte}"
        if step_run is None:
            row = _prepared_row(
                f"{head} SELECT {switches} FROM upd",
                [*run_params, *ledger_params, state.workflow_slug],
            )
        else:
            insert_cols, holders = _insert_parts(pg)
            row = _prepared_row(
                f"{head} INSERT INTO {STEP_RUN} ({insert_cols})"
                f" SELECT upd.id, {holders} FROM upd RETURNING {switches}",
                [*run_params, *ledger_params, *_step_values(step_run), state.workflow_slug],
            )
    else:
        statements = [
            (
                f"UPDATE {RUN} SET {set_sql}{where} RETURNING {switches}",
                [*run_params, state.workflow_slug],
            )
        ]
        if step_run is not None:
            insert_cols, holders = _insert_parts(pg)
            statements.append(
                (
                    f"INSERT INTO {STEP_RUN} ({insert_cols}) VALUES (%s, {holders})",
                    [state.run_id, *_step_values(step_run)],
                )
            )
        if closing is not None:
            statements.append(
                (
                    f"UPDATE {LEDGER} SET status = 'succeeded', result = %s, error = '',"
                    f" finished_at = {now_sql()} WHERE id = %s",
                    [dump(closing[1]), closing[0]],
                )
            )
        row = _sqlite_immediate(statements)
    if row is None:
        raise LeaseLost(state.run_id)
    state.closing = None
    state.see_switches(row[0])


@cache
def _prepared_cursor_class() -> type:
    """A psycopg cursor that binds values on the server and prepares each
    statement on its first execution (psycopg keeps a connection's prepared
    statements, the most recently used first): the engine's per-step
    statements are planned once per connection instead of at every step,
    which was the larger part of the server's work for a short step.
    Django's own cursors bind on the client and prepare nothing."""
    import psycopg

    class PreparedCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, prepare=True)

    return PreparedCursor


def _prepared_row(sql: str, params: list[Any]) -> Any:
    """Run a statement of the hot path as a prepared statement (PostgreSQL);
    its first row, or None.

    The cursor is kept with the connection and used again at every step:
    a new cursor per statement (Django's wrapper, psycopg's cursor, its
    adapters and transformer) was about a tenth of a step's Python calls,
    and of the code a step walks through, which a database session sharing
    the worker's CPU pays for too (see the engine benchmark). Errors are
    Django's, as through any Django cursor."""
    db = connections[DEFAULT_DB_ALIAS]
    if not settings.BOSUN_PG_PREPARE or db.queries_logged or db.execute_wrappers:
        # Django's log shows a statement's values only as Django binds them;
        # execute wrappers (instrumentation, tests) see every statement.
        with _prepared_cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    # As Django's cursor() does: once after the queue's connection check
    # between tasks (CONN_HEALTH_CHECKS), make sure the server is still
    # there, and connect again if not.
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    held = db.__dict__.get("_bosun_cursor")
    if held is None or held.connection is not raw or held.closed:
        _prepare_on_request(raw)
        # psycopg's own cursor: Django's connections make client-binding
        # cursors, which send every statement as new text.
        held = db.__dict__["_bosun_cursor"] = _prepared_cursor_class()(raw)
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        return held.execute(sql, params).fetchone()


def _prepared_cursor() -> Any:
    """A prepared-statement cursor wrapped like any Django cursor (the
    connection's execute wrappers, its error classes)."""
    db = connections[DEFAULT_DB_ALIAS]
    if not settings.BOSUN_PG_PREPARE or db.queries_logged:
        # Django's log shows a statement's values only as Django binds them.
        return db.cursor()
    db.ensure_connection()
    _prepare_on_request(db.connection)
    return db.make_cursor(_prepared_cursor_class()(db.connection))


def _prepare_on_request(raw: Any) -> None:
    """Let the psycopg connection prepare what is asked for (`prepare=True`)
    and nothing on its own; Django's default is to prepare nothing."""
    if raw.prepare_threshold is None:
        raw.prepare_threshold = 2**31


def _sqlite_immediate(statements: list[tuple[str, list[Any]]]) -> Any:
    """Run the statements in one IMMEDIATE transaction on the sqlite3
    connection itself; returns the first statement's first row, and writes
    nothing when that is None (the fenced update matched no row).

    The driver is used directly because Django's transaction and cursor
    wrappers cost more per step than SQLite's own work (switching
    autocommit around the block, rewriting each statement's placeholders);
    the statements are the same. Inside an atomic block (a test, a caller's
    transaction) the block's transaction holds them instead.
    """
    db = connections[DEFAULT_DB_ALIAS]  # not through the proxy at every use
    db.ensure_connection()
    if db.in_atomic_block or db.queries_logged:  # keep Django's transaction, or its log
        with transaction.atomic(), db.cursor() as cursor:
            row = None
            for index, (sql, params) in enumerate(statements):
                cursor.execute(sql, params)
                if index == 0:
                    row = cursor.fetchone()
                    if row is None:
                        return None
            return row
    raw = db.connection
    if len(statements) == 1:  # one statement is its own transaction
        sql, params = statements[0]
        with db.wrap_database_errors:
            return raw.execute(_qmark(sql), params).fetchone()
    with db.wrap_database_errors:
        raw.execute("BEGIN IMMEDIATE")
        try:
            row = None
            for index, (sql, params) in enumerate(statements):
                cursor = raw.execute(_qmark(sql), params)
                if index == 0:
                    row = cursor.fetchone()
                    if row is None:
                        break
            raw.execute("COMMIT" if row is not None else "ROLLBACK")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
    return row


_FORMAT_PARAM = re.compile(r"(?<!%)%s")


@lru_cache(maxsize=512)
def _qmark(sql: str) -> str:
    """A statement written for Django's cursor (`%s`, `%%`) as sqlite3 takes it."""
    return _FORMAT_PARAM.sub("?", sql).replace("%%", "%")


def _step_values(step_run: dict[str, Any]) -> list[Any]:
    return [
        dump(step_run.get(c)) if c in _JSON_COLUMNS else step_run[c] for c in STEP_RUN_COLUMNS[1:]
    ]
