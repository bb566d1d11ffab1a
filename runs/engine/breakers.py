"""Circuit breakers held in the database, one per provider model and per
tool limit key, checked at the point of effect: right before a model call
(`llm:<provider>:<model>`) and before a tool call's limits (its limit keys,
e.g. `vendor:enrichco`).

States (`policies.Breaker`), moved only by conditional UPDATEs or under the
row's lock, so every worker and machine sees one state:

- **closed**: calls go through. A call that fails for an outage (5xx,
  overloaded, a timeout, no connection: the error's `outage`, see
  `outage_of`) counts; `failures` consecutive ones within `window_s` open
  the breaker. A call the other side answered (even a 4xx) resets the count.
- **open**: no call is made. A run whose call finds it open waits
  (`wait_reason` `breaker:<key>`) holding no worker and spending no attempt.
- **half-open**: after the cool-down one call at a time is let through as
  the probe. The probe slot is claimed with one conditional UPDATE and
  expires (`probe_expires_at`), so a prober that died blocks nobody for
  long. The probe's success closes the breaker; its failure opens it again
  with the cool-down doubled (up to `max_cooldown_s`), and the probing run
  waits again rather than spending an attempt.

Waiting costs nothing: the sweeper (`nominate_probers`) makes one waiting
run due when a cool-down ends, and a close makes every waiting run due,
`BOSUN_BREAKER_RESUME_PER_S` a second, so they do not stampede (the rate
limits apply to them as to any call). Their own timers are only a safety
net. Transitions are written to the audit log (actor `system`) and as
events on the current trace span.

A failure counted is the final classification of one call: the model
provider's SDK retries are off (the engine retries), and a tool's error is
what its `run()` raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.module_loading import import_string

from policies.audit import record as audit_record
from policies.models import AuditEntry, Breaker
from runs.engine import tracing
from runs.engine.doorbell import ring
from runs.engine.errors import BreakerOpen, StepTimeout, breaker_wait_reason
from runs.engine.store import REDELIVER_AFTER_S, RUN, json_param, later_sql, now_sql
from runs.models import Run, RunStatus

log = logging.getLogger("bosun.engine")

BREAKER = "policies_breaker"
# Errors kept on the breaker for the console, newest first.
LAST_ERRORS = 5
# How long the sweeper gives a run it made due to probe before it picks another.
NOMINATION_S = 10.0
_THRESHOLDS = "failures_to_open, window_s, cooldown_s, max_cooldown_s, probe_timeout_s"
# Due for a probe: the cool-down is over, or the last probe's holder ran out of time.
_DUE = (
    "enabled AND ((state = 'open' AND open_until <= {now})"
    " OR (state = 'half_open' AND probe_expires_at < {now}))"
)


@dataclass(frozen=True)
class Thresholds:
    failures: int
    window_s: float
    cooldown_s: float
    max_cooldown_s: float
    probe_timeout_s: float

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Thresholds:
        """From the five threshold columns (empty: the setting)."""
        failures, window, cooldown, max_cooldown, probe = row
        cooldown = cooldown or settings.BOSUN_BREAKER_COOLDOWN_S
        return cls(
            failures=failures or settings.BOSUN_BREAKER_FAILURES,
            window_s=window or settings.BOSUN_BREAKER_WINDOW_S,
            cooldown_s=cooldown,
            max_cooldown_s=max(max_cooldown or settings.BOSUN_BREAKER_MAX_COOLDOWN_S, cooldown),
            probe_timeout_s=probe or settings.BOSUN_BREAKER_PROBE_TIMEOUT_S,
        )

    def cooldown(self, trips: int) -> float:
        """The cool-down after the breaker opened `trips` times since it closed."""
        return float(min(self.max_cooldown_s, self.cooldown_s * 2 ** max(trips - 1, 0)))


def llm_key(provider: str, model: str) -> str:
    return f"llm:{provider}:{model}"[:100]


def outage_of(exc: BaseException) -> bool | None:
    """What a failed call says about the other side. True: it is down or
    unreachable (counts towards opening); False: it answered (a 4xx, a
    rate limit), so it is up; None: nothing (the call may not have been
    made, or our own code failed)."""
    flag = getattr(exc, "outage", None)
    if flag is not None:
        return bool(flag)
    if isinstance(exc, StepTimeout | TimeoutError | ConnectionError):
        return True
    return None


@dataclass
class Guard:
    """One call's pass through its breakers: record how the call went with
    `call()`, or give the pass back with `abandon()` when no call is made."""

    keys: tuple[str, ...]
    holder: str
    probing: tuple[str, ...] = ()  # keys whose probe this call holds
    counting: tuple[str, ...] = ()  # closed keys with failures to reset on success
    done: bool = False

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around the call itself. A failed probe raises `BreakerOpen` in
        place of the call's error: the run waits instead of spending an attempt."""
        try:
            yield
        except BaseException as exc:
            verdict = outage_of(exc)
            if verdict is None:
                self.abandon()
            elif verdict:
                self.failed(exc)
            else:
                self.succeeded()
            raise
        self.succeeded()

    def succeeded(self) -> None:
        if self.done:
            return
        self.done = True
        for key in self.probing:
            _close(key, self.holder)
        for key in self.counting:
            _reset_count(key)

    def failed(self, exc: BaseException) -> None:
        if self.done:
            return
        self.done = True
        reopened: BreakerOpen | None = None
        for key in self.keys:
            wait = _count_failure(key, f"{type(exc).__name__}: {exc}", holder=self.holder)
            if wait is not None and key in self.probing and reopened is None:
                reopened = BreakerOpen(key, wait, why="open")
        if reopened is not None:
            raise reopened from exc

    def abandon(self) -> None:
        if self.done:
            return
        self.done = True
        for key in self.probing:
            _release_probe(key, self.holder)


def admit(keys: tuple[str, ...], *, holder: str, hold_s: float) -> Guard:
    """Let a call through its breakers, or raise `BreakerOpen`.

    One SELECT when every breaker is closed (none, without keys or with
    breakers off). A breaker due for a probe is probed by this call if its
    conditional UPDATE wins the slot; `hold_s` (the call's own time limit)
    bounds the probe's hold, with the breaker's probe timeout above it.
    """
    if not keys or not settings.BOSUN_BREAKERS:
        return Guard((), holder)
    marks = ", ".join(["%s"] * len(keys))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT key, state, failures, open_until, probe_expires_at, {_THRESHOLDS},"
            f" {now_sql()} FROM {BREAKER} WHERE enabled AND key IN ({marks}) ORDER BY key",
            list(keys),
        )
        rows = cursor.fetchall()
    probing: list[str] = []
    counting: list[str] = []
    try:
        for key, state, failures, open_until, probe_until, *limits, now in rows:
            if state == "closed":
                if failures:
                    counting.append(key)
                continue
            spare = Thresholds.of(tuple(limits)).max_cooldown_s  # the safety net's margin
            now = _as_datetime(now)
            if state == "open" and _as_datetime(open_until) > now:
                _waits(key, "open", _seconds(open_until, now) + spare)
            if state == "half_open" and _as_datetime(probe_until) >= now:
                _waits(key, "probing", _seconds(probe_until, now) + spare)
            limit = Thresholds.of(tuple(limits)).probe_timeout_s
            if not _claim_probe(key, holder, min(hold_s, limit)):
                _waits(key, "probing", spare)
            probing.append(key)
    except BreakerOpen:
        for key in probing:
            _release_probe(key, holder)
        raise
    return Guard(tuple(keys), holder, tuple(probing), tuple(counting))


def _waits(key: str, why: str, wait_s: float) -> None:
    tracing.breaker_event("breaker.wait", key, state=why)
    raise BreakerOpen(key, wait_s, why=why)


def _claim_probe(key: str, holder: str, hold_s: float) -> bool:
    """Take the probe slot: one conditional UPDATE, so of concurrent
    callers exactly one wins (PostgreSQL re-checks the WHERE on the row a
    concurrent winner committed; SQLite serializes writers)."""
    now = now_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BREAKER} SET state = 'half_open', since = {now}, probe_holder = %s,"
            f" probe_expires_at = {later_sql()}, nominated_until = NULL"
            f" WHERE key = %s AND {_DUE.format(now=now)} RETURNING trips",
            [holder[:160], hold_s, key],
        )
        row = cursor.fetchone()
        if row is None:
            return False
        _transition("breaker.probing", key, {"probe_s": hold_s, "trips": row[0]})
    return True


def _close(key: str, holder: str) -> None:
    """The probe succeeded: close the breaker, then let the waiting runs go."""
    now = now_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BREAKER} SET state = 'closed', since = {now}, failures = 0,"
            " first_failure_at = NULL, open_until = NULL, trips = 0, probe_holder = '',"
            " probe_expires_at = NULL, nominated_until = NULL"
            " WHERE key = %s AND state = 'half_open' AND probe_holder = %s RETURNING trips",
            [key, holder[:160]],
        )
        if cursor.fetchone() is None:
            return  # the probe ran out of time and another caller holds it now
        _transition("breaker.closed", key, {})
    # After the close committed, in a statement of its own: a run that parks
    # from now on finds the breaker closed in `wake_if_closed`; one that
    # parked before is seen by this update.
    resume_waiting(key)


def close_now(*, key: str, actor: str, reason: str) -> bool:
    """A person closes the breaker (the vendor says it is back): calls go
    through again and the waiting runs resume, paced. Audited with `actor`.
    False when it was closed already."""
    now = now_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BREAKER} SET state = 'closed', since = {now}, failures = 0,"
            " first_failure_at = NULL, open_until = NULL, trips = 0, probe_holder = '',"
            " probe_expires_at = NULL, nominated_until = NULL"
            " WHERE key = %s AND state <> 'closed'",
            [key],
        )
        if cursor.rowcount != 1:
            return False
        audit_record(
            action="breaker.closed",
            actor=actor,
            target_type="policies.breaker",
            target_id=key,
            data={"by_hand": True, "reason": reason},
        )
    resume_waiting(key)
    return True


def waiting_counts() -> dict[str, int]:
    """Runs waiting on each breaker, by key (for the console)."""
    by_reason = dict(
        Run.objects.filter(status=RunStatus.WAITING, wait_reason__startswith="breaker:")
        .values_list("wait_reason")
        .annotate(count=Count("id"))
        .values_list("wait_reason", "count")
    )
    keys = Breaker.objects.values_list("key", flat=True)
    return {key: by_reason.get(breaker_wait_reason(key), 0) for key in keys}


def _reset_count(key: str) -> None:
    """A call went through: consecutive failures start again from 0."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BREAKER} SET failures = 0, first_failure_at = NULL"
            " WHERE key = %s AND state = 'closed' AND failures > 0",
            [key],
        )


def _release_probe(key: str, holder: str) -> None:
    """The probe made no call (a limit, a switch, a bug): give the slot back
    at once, still due, so the next caller probes."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BREAKER} SET state = 'open', probe_holder = '', probe_expires_at = NULL,"
            " nominated_until = NULL WHERE key = %s AND state = 'half_open' AND probe_holder = %s",
            [key, holder[:160]],
        )


def _count_failure(key: str, error: str, *, holder: str) -> float | None:
    """Count one outage failure for `key` under the row's lock. Returns the
    cool-down when this failure opened the breaker (or re-opened it: a
    failed probe), else None."""
    from lib.screening import redact

    pg = connection.vendor == "postgresql"
    # The row exists from a breaker's first failure on (a unique key: two
    # first failures insert one row).
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {BREAKER} (key, enabled, state, failures, trips, probe_holder,"
            f" last_errors, opened_count) VALUES (%s, %s, 'closed', 0, 0, '', {json_param()}, 0)"
            " ON CONFLICT (key) DO NOTHING",
            [key, True, "[]"],
        )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT enabled, state, failures, first_failure_at, trips, probe_holder,"
            f" last_errors, {_THRESHOLDS}, {now_sql()} FROM {BREAKER} WHERE key = %s"
            f"{' FOR UPDATE' if pg else ''}",
            [key],
        )
        enabled, state, failures, first_at, trips, prober, errors, *limits, now = cursor.fetchone()
        now = _as_datetime(now)
        limit = Thresholds.of(tuple(limits))
        entry = {"at": now.isoformat(timespec="seconds"), "error": redact(error)[:300]}
        errors = [entry, *(_loads(errors) or [])][:LAST_ERRORS]
        sets = [f"last_errors = {json_param()}"]
        params: list[Any] = [json.dumps(errors)]
        opened: float | None = None
        action = ""
        if state == "half_open" and prober == holder[:160]:
            opened, action = limit.cooldown(trips + 1), "breaker.reopened"
        elif state == "closed":
            fresh = not failures or first_at is None
            if fresh or (now - _as_datetime(first_at)).total_seconds() > limit.window_s:
                failures = 1
                sets.append(f"first_failure_at = {now_sql()}")
            else:
                failures += 1
            sets.append("failures = %s")
            params.append(failures)
            if enabled and failures >= limit.failures:
                opened, action = limit.cooldown(1), "breaker.opened"
                trips = 0
        if opened is not None:
            sets += [
                "state = 'open'",
                f"since = {now_sql()}",
                f"open_until = {later_sql()}",
                "trips = %s",
                "probe_holder = ''",
                "probe_expires_at = NULL",
                "nominated_until = NULL",
                "opened_count = opened_count + 1",
            ]
            params += [opened, trips + 1]
        cursor.execute(f"UPDATE {BREAKER} SET {', '.join(sets)} WHERE key = %s", [*params, key])
        if action:
            data = {"failures": failures, "cooldown_s": opened, "error": entry["error"]}
            _transition(action, key, data)
    return opened


def _transition(action: str, key: str, data: dict[str, Any]) -> None:
    """Record a state change (inside its transaction): audit log and trace."""
    log.warning("%s %s %s", action, key, data)
    audit_record(
        action=action, actor="system", target_type="policies.breaker", target_id=key, data=data
    )
    tracing.breaker_event(action, key, **data)


def resume_waiting(key: str) -> int:
    """Make the runs waiting on `key` due, the oldest run first,
    `BOSUN_BREAKER_RESUME_PER_S` a second (the sweeper rings each when it
    falls due); the first is rung now. Returns how many."""
    reason = breaker_wait_reason(key)
    spacing = 1.0 / settings.BOSUN_BREAKER_RESUME_PER_S
    if connection.vendor == "postgresql":
        due = "clock_timestamp() + make_interval(secs => (w.n - 1) * %s)"
    else:
        due = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', printf('%%+.3f seconds', (w.n - 1) * %s))"
    # Re-checked on each row: a run claimed meanwhile is left alone.
    sql = (
        f"WITH w AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM {RUN}"
        " WHERE status = 'waiting' AND wait_reason = %s)"
        f" UPDATE {RUN} SET not_before = {due}, ring_at = {due} FROM w"
        f" WHERE {RUN}.id = w.id AND {RUN}.status = 'waiting' AND {RUN}.wait_reason = %s"
        f" RETURNING {RUN}.id"  # (SQLite returns no column of the FROM table)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [reason, spacing, spacing, reason])
        rows = cursor.fetchall()
        if rows:
            ring(min(row[0] for row in rows))
    if rows:
        log.info("breaker %s closed: %d waiting run(s) resume", key, len(rows))
    return len(rows)


def wake_if_closed(run_id: int, reason: str) -> None:
    """After a run parked on a breaker: if the breaker closed while the run
    was parking, the close's wake-up missed it; make it due now."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key FROM {BREAKER} WHERE enabled AND state <> 'closed'")
        held = {breaker_wait_reason(row[0]) for row in cursor.fetchall()}
    if reason in held:
        return
    _make_due(run_id, reason)


def _make_due(run_id: int, reason: str) -> bool:
    now = now_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN} SET not_before = {now}, ring_at = {later_sql()}"
            " WHERE id = %s AND status = 'waiting' AND wait_reason = %s",
            [REDELIVER_AFTER_S, run_id, reason],
        )
        if cursor.rowcount != 1:
            return False
        ring(run_id)
    return True


def nominate_probers() -> list[int]:
    """For each breaker due for a probe, make the oldest run waiting on it
    due (one run, not all): it claims the probe when it calls. The breaker
    remembers the nomination for NOMINATION_S, so concurrent sweepers and
    the next sweeps pick no second one meanwhile. Called by the sweep."""
    if not settings.BOSUN_BREAKERS:
        return []
    now = now_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT key FROM {BREAKER} WHERE {_DUE.format(now=now)}"
            f" AND (nominated_until IS NULL OR nominated_until < {now})",
            [],  # (with parameters, "%%" in the SQL is read as "%")
        )
        keys = [row[0] for row in cursor.fetchall()]
    nominated = []
    for key in keys:
        run_id = _nominate(key)
        if run_id is not None:
            nominated.append(run_id)
    return nominated


class _Taken(Exception):
    """Another sweeper nominated a prober first (rolls the pick back)."""


def _nominate(key: str) -> int | None:
    reason = breaker_wait_reason(key)
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    now = now_sql()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {RUN} SET not_before = {now}, ring_at = {later_sql()}"
                f" WHERE id = (SELECT id FROM {RUN} WHERE status = 'waiting' AND wait_reason = %s"
                f" ORDER BY id LIMIT 1{lock}) AND status = 'waiting' RETURNING id",
                [REDELIVER_AFTER_S, reason],
            )
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(
                f"UPDATE {BREAKER} SET nominated_until = {later_sql()} WHERE key = %s"
                f" AND {_DUE.format(now=now)} AND (nominated_until IS NULL OR nominated_until < {now})",
                [NOMINATION_S, key],
            )
            if cursor.rowcount != 1:
                raise _Taken
            ring(row[0])
    except _Taken:
        return None
    return int(row[0])


def _seconds(until: datetime | str, now: datetime) -> float:
    return max((_as_datetime(until) - now).total_seconds(), 0.0)


def _as_datetime(value: datetime | str) -> datetime:
    """A database time as an aware UTC datetime (SQLite returns text)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def alert_long_outages() -> list[str]:
    """Report, once per outage, each breaker still not closed
    `BOSUN_BREAKER_ALERT_S` after its failures began: audited as
    `breaker.alerted` under the breaker row's lock (so concurrent sweepers
    report it once), then handed to `BOSUN_BREAKER_NOTIFIER` after the
    commit (a mail server or chat that is down fails nothing). The keys
    reported. Called by the sweep."""
    if not settings.BOSUN_BREAKERS:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT key FROM {BREAKER} WHERE enabled AND state <> 'closed'"
            f" AND first_failure_at <= {later_sql()}",  # later by a negative time: earlier
            [-settings.BOSUN_BREAKER_ALERT_S],
        )
        keys = [row[0] for row in cursor.fetchall()]
    reported = []
    for key in keys:
        with transaction.atomic():
            breaker = Breaker.objects.select_for_update().get(key=key)
            began = breaker.first_failure_at
            if breaker.state == "closed" or began is None:
                continue
            told = AuditEntry.objects.filter(
                action="breaker.alerted",
                target_type="policies.breaker",
                target_id=key,
                at__gte=began,
            )
            if told.exists():
                continue
            waiting = Run.objects.filter(
                status=RunStatus.WAITING, wait_reason=breaker_wait_reason(key)
            ).count()
            data = {"since": began.isoformat(), "state": breaker.state, "waiting": waiting}
            _transition("breaker.alerted", key, data)
            transaction.on_commit(partial(_notify, key, data))
        reported.append(key)
    return reported


def _notify(key: str, data: dict[str, Any]) -> None:
    try:
        import_string(settings.BOSUN_BREAKER_NOTIFIER)(key=key, **data)
    except Exception:  # telling people must not fail the sweep
        log.exception("breaker %s: notifier failed", key)


def dead_letter_outlasted(*, limit: int = 500) -> list[int]:
    """Dead-letter the runs that have waited on an open breaker past their
    wall-time budget (the workflow's patience: its policy's `max_wall_s`,
    counted from `Run.wall_from`, so a retried run gets a fresh allowance).
    An operator must look at those; a shorter outage dead-letters nothing.
    Each gets a failed step record with `error_type` "outage" (retryable:
    retrying it later waits on the breaker again if it is still open), in
    one transaction with a conditional update of the run, so a run that
    resumed meanwhile is left alone. The ids dead-lettered; called by the
    sweep."""
    from policies.services import rules_for
    from runs.engine.definition import load_definition
    from runs.models import StepRun, StepRunStatus

    now = timezone.now()
    waiting = Run.objects.filter(
        status=RunStatus.WAITING, wait_reason__startswith="breaker:", wall_from__isnull=False
    ).only(
        "id", "wall_from", "wait_reason", "role_version_id", "policy_version_id", "version_id",
        "current_step", "seq", "attempt",
    )[:limit]  # fmt: skip
    dead = []
    for run in waiting:
        assert run.wall_from is not None  # filtered above
        patience = rules_for(run.role_version_id, run.policy_version_id).budget.max_wall_s
        waited = (now - run.wall_from).total_seconds()
        if waited < patience:
            continue
        key = run.wait_reason.removeprefix("breaker:")
        error = (
            f"{run.current_step}: outage outlasted the run's wall-time budget"
            f" ({waited:.0f}s of {patience:.0f}s) waiting on breaker {key}"
        )
        with transaction.atomic():
            moved = Run.objects.filter(
                pk=run.pk, status=RunStatus.WAITING, wait_reason=run.wait_reason
            ).update(
                status=RunStatus.FAILED,
                wait_reason="",
                error=error[:4000],
                dead_lettered_at=Now(),
                dead_step=F("current_step"),
                dead_error_type="outage",
                dead_retryable=True,
                finished_at=Now(),
                not_before=None,
                ring_at=None,
            )
            if not moved:
                continue  # it resumed meanwhile
            step = load_definition(run.version_id).steps[run.current_step]
            record, made = StepRun.objects.get_or_create(
                run_id=run.pk,
                seq=run.seq,
                attempt=run.attempt,
                defaults={
                    "step_key": run.current_step,
                    "kind": step.kind.name,
                    "status": StepRunStatus.FAILED,
                    "error": error[:4000],
                    "error_type": "outage",
                    "retryable": True,
                    "started_at": now,
                    "finished_at": now,
                },
            )
            if not made:  # the attempt's record was there: the run names its error
                Run.objects.filter(pk=run.pk).update(
                    dead_error_type=record.error_type, dead_retryable=record.retryable
                )
            audit_record(
                action="run.dead_lettered",
                actor="system",
                target_type="runs.run",
                target_id=run.pk,
                data={"reason": "outage", "breaker": key, "waited_s": round(waited)},
            )
        dead.append(run.pk)
    return dead
