"""Console benchmark: the pages at 100,000 runs and 1,000,000 step runs (or
--runs), and how soon a run goes on after an approval decision.

    DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB .venv/bin/python -m bench.console
    ... -m bench.console --runs 1000000     # a million runs, ten million step runs

What it does (see bench/README.md):

* load: three workflows of three published versions each; 100,000 runs
  spread over the last 30 days (status, outcome, cost, latency, cache hits
  and dedup duplicates in a realistic mix; about 3 % waiting on a pending
  approval, 4 % dead-lettered, queued and running runs only among the last
  hour's) and about ten step runs a run, written with COPY through psycopg
  a chunk of runs at a time, then VACUUM ANALYZE.
* roll-up: the dashboard's daily roll-up of every day over (runs.rollup),
  as its schedule does it.
* pages: Django's test Client over HTTPS, logged in as an operator, in this
  process (no HTTP server, no test instrumentation of templates, DEBUG
  off): the review queue, the runs list with and without filters (and a
  deep keyset page), a run timeline, the dead-letter queue and the
  dashboard (24 hours, 7 and 30 days). Each page is requested 3 times to
  warm up, then 30 times; p50/p95 of the 30, and the SQL queries of one
  request (CaptureQueriesContext). Then the roll-up is deleted and the
  dashboard timed again: the baseline, every request aggregating the
  runs. The bench database gets the planner setting of an SSD server,
  random_page_cost = 1.1 (--default-planner keeps PostgreSQL's 4).
* decision -> next step: a real `manage.py worker` drives N runs of an
  approval workflow until they wait; each approval is decided
  (`decide_approval`) and the time from its commit to the `started_at` of
  the run's next step (recorded by the worker) is measured.

The script creates its own database (`bosun_console_bench`, or
BOSUN_BENCH_DB) on the server named by DATABASE_URL and drops it at the end
(--keep leaves it, --reuse loads nothing when it holds the data already).
The last line printed is the RESULT line; with --check-targets the exit
status is 2 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/console.py`
    sys.path.insert(0, str(ROOT))

from bench.engine import PG_SCHEMES, bench_urls, recreate_database, say, stop_cluster  # noqa: E402

RUNS = 100_000
LOAD_CHUNK = 20_000  # runs written per COPY round
DAYS = 30
SAMPLES = 30
WARMUP = 3
DECISIONS = 40
DECISION_WARMUP = 4
TARGETS = {"page_p95_ms": 200.0, "decision_to_next_step_p95_ms": 500.0}
DECIDE_SLUG = "bench-decide"

# The happy path of each workflow: (step key, kind). A run walks a prefix of
# it (where it failed, waits or was cancelled) or all of it.
PATHS = {
    slug: [tuple(step.split(":")) for step in steps.split()]
    for slug, steps in {
        "bench-leads": "normalize:tool dedup:dedup enrich:tool score:llm route:branch draft:llm"
        " review:approval send:tool record:tool sent:end",
        "bench-support": "ticket:tool classify:llm lookup:tool decide:branch reply:llm check:llm"
        " review:approval post:tool answered:end",
        "bench-refunds": "invoice:tool history:tool classify:llm draft:llm policy:branch"
        " review:approval refund:tool notify:tool log:tool audit:tool ledger:tool refunded:end",
    }.items()
}
STATUS_MIX = [  # (status, share); queued and running only in the last hour (ACTIVE_FOR)
    ("succeeded", 0.86),
    ("failed", 0.04),
    ("waiting", 0.03),
    ("running", 0.02),
    ("queued", 0.02),
    ("stopped", 0.01),
    ("cancelled", 0.02),
]
ACTIVE = ("queued", "running")  # only in the last ACTIVE_FOR
ACTIVE_FOR = timedelta(hours=1)
ERROR_TYPES = ["timeout", "http_5xx", "schema_miss", "refused:not_in_role", "rate_limited"]


# --- workflows ------------------------------------------------------------------


def workflow_spec(slug: str, revision: int) -> dict:
    """A publishable workflow with the keys of PATHS[slug]; `revision`
    changes a tool argument so each install is a new version."""
    path = PATHS[slug]
    steps = []
    for index, (key, kind) in enumerate(path):
        following = path[index + 1][0] if index + 1 < len(path) else None
        if kind == "end":
            steps.append({"key": key, "kind": "end", "config": {"outcome": key, "success": True}})
        elif kind == "approval":
            config = {
                "draft": "Draft for {{ input.company }}",
                "title": "Review {{ input.company }}",
            }
            steps.append(
                {
                    "key": key,
                    "kind": "approval",
                    "config": config,
                    "edges": {"approved": following, "rejected": following},
                }
            )
        else:  # every other step is an echo tool in the definition
            args = {"value": key, "revision": revision}
            steps.append(
                {
                    "key": key,
                    "kind": "tool",
                    "config": {"tool": "echo", "args": args},
                    "edges": {"next": following},
                }
            )
    return {"name": slug, "slug": slug, "entry_step": path[0][0], "steps": steps}


def decide_spec() -> dict:
    return {
        "name": "Bench: approve then go on",
        "slug": DECIDE_SLUG,
        "entry_step": "approve",
        "steps": [
            {
                "key": "approve",
                "kind": "approval",
                "config": {"draft": "Draft {{ input.n }}", "title": "Bench {{ input.n }}"},
                "edges": {"approved": "after", "rejected": "after"},
            },
            {
                "key": "after",
                "kind": "tool",
                "config": {"tool": "echo", "args": {"value": "{{ input.n }}"}},
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
        ],
    }


def install_versions() -> list:
    """Three versions of each bench workflow: [(workflow, [v1, v2, v3])]."""
    from demo.samples import install_workflow

    installed = []
    for slug in PATHS:
        versions = [install_workflow(workflow_spec(slug, revision)) for revision in (1, 2, 3)]
        installed.append((versions[0].workflow, versions))
    return installed


# --- data -------------------------------------------------------------------------


def copy_rows(cursor, model, fields: list[str], rows) -> int:
    """COPY `rows` (tuples in the order of `fields`, attnames) into the
    model's table; every other column gets the model's default, and a NOT
    NULL column without one stops the bench with its name."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    rest = [f for f in model._meta.concrete_fields if f.attname not in fields and not f.primary_key]
    tail = []
    for field in rest:
        value = field.get_default()
        if value is None and not field.null:
            raise SystemExit(f"bench/console.py: no value for {model.__name__}.{field.name}")
        tail.append(json.dumps(value) if isinstance(value, dict | list) else value)
    tail = tuple(tail)
    columns = ", ".join([by_attname[name].column for name in fields] + [f.column for f in rest])
    count = 0
    with cursor.copy(f"COPY {model._meta.db_table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row + tail)
            count += 1
    return count


RUN_FIELDS = [
    "id", "workflow_id", "version_id", "status", "wait_reason", "input", "current_step", "seq",
    "attempt", "fence", "outcome", "success", "error", "stop_reason", "role_version_id",
    "dead_lettered_at", "steps_executed", "llm_calls", "tool_calls", "tokens_in", "tokens_out",
    "cost_usd", "created_at", "started_at", "finished_at", "trace_id", "machine_ms",
    "decisions", "wait_ms", "dead_step", "dead_error_type",
]  # fmt: skip
STEP_FIELDS = [
    "run_id", "seq", "attempt", "step_key", "kind", "status", "edge", "input", "output",
    "error", "error_type", "started_at", "finished_at", "duration_ms", "provider",
    "model_requested", "model_answered", "tokens_in", "tokens_out", "cost_usd", "cache_hit",
    "cost_saved_usd", "worker",
]  # fmt: skip
APPROVAL_FIELDS = [
    "run_id", "seq", "step_key", "title", "draft", "status", "decision_reason",
    "decided_by_label", "decided_at", "created_at", "edit_diff",
]  # fmt: skip


class Generator:
    """Deterministic synthetic runs; step and approval rows are collected
    while the run rows are produced."""

    def __init__(self, installed: list, first_id: int, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.installed = installed
        self.first_id = first_id
        self.steps: list[tuple] = []
        self.approvals: list[tuple] = []
        self.now = datetime.now(UTC)
        self.finished_ids: list[tuple[int, Decimal]] = []

    def runs(self, count: int):
        start = self.now - timedelta(days=DAYS) + timedelta(minutes=5)
        span = (self.now - start).total_seconds() - 600
        times = sorted(self.random.uniform(0, span) for _ in range(count))
        statuses = [s for s, _ in STATUS_MIX]
        weights = [w for _, w in STATUS_MIX]
        for index, offset in enumerate(times):
            created = start + timedelta(seconds=offset)
            status = self.random.choices(statuses, weights)[0]
            if status in ACTIVE and created < self.now - ACTIVE_FOR:
                # A run is not queued or running for days: the sweeper
                # recovers a lost one within seconds. Older ones have ended.
                status = "succeeded"
            workflow, versions = self.installed[index % len(self.installed)]
            version = versions[min(2, int(offset / span * 3))]
            yield self.run(self.first_id + index, workflow, version, status, created)

    def run(self, run_id: int, workflow, version, status: str, created: datetime) -> tuple:
        rnd = self.random
        path = PATHS[workflow.slug]
        # About a third of the runs are routed to a person (and every run
        # waiting for one); the others skip the approval step.
        if status != "waiting" and rnd.random() > 0.35:
            path = [step for step in path if step[1] != "approval"]
        approval_at = next((i for i, (_, kind) in enumerate(path) if kind == "approval"), None)
        duplicate = workflow.slug == "bench-leads" and rnd.random() < 0.06 and self.finished_ids
        reach = self.reach(status, path, approval_at, bool(duplicate))
        clock = created + timedelta(milliseconds=rnd.uniform(20, 400))
        started = clock if reach or status != "queued" else None
        cost = Decimal(0)
        totals = {"llm": 0, "tool": 0, "tokens_in": 0, "tokens_out": 0}
        first_step = len(self.steps)
        seq = 0
        for seq, (key, kind) in enumerate(path[:reach], start=1):
            attempt = 1
            if kind in ("tool", "llm") and rnd.random() < 0.17:  # a retried attempt
                clock = self.failed_step(run_id, seq, 1, (key, kind), clock, "timeout")
                attempt = 2
            clock, spent = self.step(run_id, seq, attempt, key, kind, clock, totals, duplicate)
            cost += spent
        error, error_type, dead, seq_now, attempt = "", "", None, seq + 1, 1
        current = path[reach][0] if reach < len(path) else path[-1][0]
        if status == "failed":
            error_type = rnd.choice(ERROR_TYPES)
            seq_now, attempt = reach + 1, 3
            for attempt_no in (1, 2, 3):
                clock = self.failed_step(
                    run_id, seq_now, attempt_no, path[reach], clock, error_type
                )
            error = f"{current}: retries exhausted: {error_type} from the vendor"
            dead = clock
        decisions, wait_ms = 0, 0.0
        if approval_at is not None and (status == "waiting" or reach > approval_at):
            self.approval(run_id, approval_at + 1, created, clock, pending=status == "waiting")
            if status != "waiting":
                decisions, wait_ms = 1, (clock - created).total_seconds() * 1000
        # The run's own machine time: its step attempts' durations.
        machine_ms = sum(row[13] for row in self.steps[first_step:])
        finished = clock if status in ("succeeded", "failed", "stopped", "cancelled") else None
        if status == "succeeded" and not duplicate:
            latency = rnd.lognormvariate(math.log(8), 0.9)  # seconds, median 8 s
            finished = max(clock, created + timedelta(seconds=latency))
        success = None
        outcome = ""
        if status == "succeeded":
            outcome = "duplicate" if duplicate else path[-1][0]
            success = not duplicate and rnd.random() < 0.8
            self.finished_ids.append((run_id, cost))
        return (
            run_id, workflow.pk, version.pk, status, "approval" if status == "waiting" else "",
            json.dumps({"company": f"Company {run_id}", "email": f"lead{run_id}@example.com"}),
            current, seq_now, attempt, 1, outcome, success, error,
            "budget" if status == "stopped" else "", None, dead, reach, totals["llm"],
            totals["tool"], totals["tokens_in"], totals["tokens_out"], cost, created, started,
            finished, f"{run_id:032x}", machine_ms, decisions, wait_ms,
            current if status == "failed" else "", error_type,
        )  # fmt: skip

    def reach(self, status: str, path: list, approval_at: int | None, duplicate: bool) -> int:
        """How many steps of `path` a run with `status` has behind it."""
        if status == "succeeded":
            return 2 if duplicate else len(path)  # a duplicate ends after the dedup gate
        if status == "waiting":
            return approval_at
        if status in ("failed", "stopped", "cancelled", "running"):
            return self.random.randrange(1, len(path))
        return 0  # queued: nothing ran yet

    def step(
        self, run_id, seq, attempt, key, kind, clock, totals, duplicate
    ) -> tuple[datetime, Decimal]:
        rnd = self.random
        duration = rnd.uniform(1, 40) if kind != "llm" else rnd.uniform(300, 4000)
        cost, saved, hit = Decimal(0), Decimal(0), False
        tokens_in = tokens_out = 0
        model = ""
        output: dict = {"ok": True, "step": key}
        edge = "next"
        if kind == "llm":
            hit = rnd.random() < 0.15
            model = "claude-haiku-4-5"
            tokens_in, tokens_out = rnd.randint(400, 3000), rnd.randint(50, 600)
            price = Decimal(tokens_in + 5 * tokens_out) / Decimal(1_000_000)
            cost, saved = (Decimal(0), price) if hit else (price, Decimal(0))
            if not hit:
                totals["llm"] += 1
            totals["tokens_in"] += tokens_in
            totals["tokens_out"] += tokens_out
            output = {"subject": f"Hello {run_id}", "body": "A short reply " * 8}
        elif kind == "tool":
            totals["tool"] += 1
        elif kind == "dedup" and duplicate:
            first, _ = rnd.choice(self.finished_ids[-5000:])
            output, edge = {"duplicate": True, "first_run": first}, "duplicate"
        elif kind == "approval":
            edge = "approved"
        elif kind == "end":
            edge = ""
        ended = clock + timedelta(milliseconds=duration)
        self.steps.append(
            (
                run_id, seq, attempt, key, kind, "succeeded", edge, json.dumps({"company": run_id}),
                json.dumps(output), "", "", clock, ended, duration, "scripted" if model else "",
                model, model, tokens_in, tokens_out, cost, hit, saved, "bench",
            )
        )  # fmt: skip
        return ended + timedelta(milliseconds=rnd.uniform(1, 30)), cost

    def failed_step(self, run_id, seq, attempt, step, clock, error_type) -> datetime:
        key, kind = step
        ended = clock + timedelta(milliseconds=self.random.uniform(5, 2000))
        self.steps.append(
            (
                run_id, seq, attempt, key, kind, "failed", "", json.dumps({"company": run_id}),
                None, f"{error_type} from the vendor", error_type, clock, ended, 5.0, "", "", "",
                0, 0, Decimal(0), False, Decimal(0), "bench",
            )
        )  # fmt: skip
        return ended + timedelta(seconds=self.random.uniform(1, 30))

    def approval(self, run_id, seq, created, clock, *, pending: bool) -> None:
        decided = None if pending else clock
        self.approvals.append(
            (
                run_id, seq, "review", f"Review company {run_id}",
                json.dumps({"subject": f"Hello {run_id}", "body": "Draft text " * 10}),
                "pending" if pending else "approved", "" if pending else "fine",
                "" if pending else "rita", decided, created, "",
            )
        )  # fmt: skip


def load(conninfo: str, installed: list, runs: int) -> dict[str, int]:
    """Write the runs, step runs and approval requests; returns row counts.
    Written a chunk of runs at a time (with their steps and approvals), in
    one transaction: a million runs' ten million step rows never sit in
    memory at once."""
    import psycopg

    from approvals.models import ApprovalRequest
    from runs.models import Run, StepRun

    role_versions = {wf.pk: wf.role.versions.order_by("-number").first().pk for wf, _ in installed}
    counts = {"runs": 0, "step runs": 0, "approvals": 0}
    with psycopg.connect(conninfo) as pg, pg.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM runs_run")
        generator = Generator(installed, cursor.fetchone()[0] + 1)
        rows = []

        def flush() -> None:
            counts["runs"] += copy_rows(cursor, Run, RUN_FIELDS, rows)
            counts["step runs"] += copy_rows(cursor, StepRun, STEP_FIELDS, generator.steps)
            counts["approvals"] += copy_rows(
                cursor, ApprovalRequest, APPROVAL_FIELDS, generator.approvals
            )
            rows.clear()
            generator.steps.clear()
            generator.approvals.clear()

        for row in generator.runs(runs):
            row = list(row)
            row[RUN_FIELDS.index("role_version_id")] = role_versions[row[1]]
            rows.append(tuple(row))
            if len(rows) == LOAD_CHUNK:
                flush()
        flush()
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('runs_run', 'id'), (SELECT max(id) FROM runs_run))"
        )
        pg.commit()
    vacuum(conninfo)
    return counts


def vacuum(conninfo: str) -> None:
    """VACUUM ANALYZE, as autovacuum would after a bulk load: fresh planner
    statistics, and the visibility map that index-only scans rely on. A
    transaction running elsewhere on the server can keep the new rows from
    counting as visible to all: then it is tried again, a few times."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as pg:
        for _ in range(10):
            pg.execute(
                "VACUUM ANALYZE runs_run, runs_runinput, runs_steprun, approvals_approvalrequest"
            )
            pages, visible = pg.execute(
                "SELECT relpages, relallvisible FROM pg_class WHERE relname = 'runs_run'"
            ).fetchone()
            if visible >= 0.95 * pages:
                break
            time.sleep(3)
    say(f"runs_run: {visible} of {pages} pages all-visible after VACUUM")


# --- pages --------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (as percentile_cont)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def page_list(installed: list, runs: int) -> list[tuple[str, str, str]]:
    """(group, name, url) of every page timed."""
    from approvals.models import ApprovalRequest
    from runs.models import Run

    workflow, versions = installed[0]
    timeline_run = (
        ApprovalRequest.objects.filter(status="approved").order_by("-id").values("run_id").first()
    )
    deep = Run.objects.order_by("id").values_list("id", flat=True)[runs // 2]
    day = (datetime.now(UTC) - timedelta(days=12)).date().isoformat()
    return [
        ("review", "review queue", "/console/review/"),
        ("list", "runs list", "/console/runs/"),
        ("list", "runs, status failed", "/console/runs/?status=failed"),
        ("list", "runs, cancelled", "/console/runs/?status=cancelled"),
        ("list", "runs, workflow + version", f"/console/runs/?version={versions[1].pk}"),
        (
            "list",
            "runs, workflow + status + day",
            f"/console/runs/?workflow={workflow.slug}&status=succeeded&since={day}&until={day}",
        ),
        ("list", "runs, outcome + no success", "/console/runs/?outcome=sent&success=no"),
        ("list", "runs, dead only", "/console/runs/?dead=on"),
        ("list", "runs, deep keyset page", f"/console/runs/?before={deep}"),
        ("list", "runs list (htmx partial)", "/console/runs/?status=waiting&hx=1"),
        ("timeline", "run timeline", f"/console/runs/{timeline_run['run_id']}/"),
        ("search", "search, an email", f"/console/search/?q=lead{deep}%40example.com"),
        ("search", "search, field=value", f"/console/search/?field=company%3DCompany+{deep}"),
        ("dead", "dead letters", "/console/dead-letters/"),
        ("dashboard", "dashboard, 24 hours", "/console/dashboard/?period=24h"),
        ("dashboard", "dashboard, 7 days", "/console/dashboard/?period=7d"),
        ("dashboard", "dashboard, 30 days", "/console/dashboard/?period=30d"),
    ]


def time_pages(installed: list, runs: int, *, only: str = "", suffix: str = "") -> dict:
    """Time every page (or those of the group `only`, their names and group
    suffixed with `suffix`)."""
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = User.objects.get_or_create(username="bench-operator")
    user.groups.add(Group.objects.get(name="operator"))
    client = Client()
    client.force_login(user)
    results = {}
    say(f"\nmachine load average before the pages: {_load()} ({os.cpu_count()} CPUs)")
    say(f"{'page':34} {'status':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>7}")
    for group, name, url in page_list(installed, runs):
        if only and group != only:
            continue
        group, name = group + suffix, name + suffix
        # secure: the settings redirect plain HTTP to HTTPS when DEBUG is off
        headers = {"secure": True}
        if url.endswith("hx=1"):
            headers["HTTP_HX_REQUEST"] = "true"
        for _ in range(WARMUP):
            response = client.get(url, **headers)
        times = []
        for _ in range(SAMPLES):
            t0 = time.perf_counter()
            response = client.get(url, **headers)
            times.append((time.perf_counter() - t0) * 1000)
        with CaptureQueriesContext(connection) as queries:
            client.get(url, **headers)
        results[name] = {
            "group": group,
            "status": response.status_code,
            "p50": percentile(times, 0.5),
            "p95": percentile(times, 0.95),
            "max": max(times),
            "queries": len(queries),
        }
        r = results[name]
        say(
            f"{name:34} {r['status']:>6} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['max']:>8.1f}"
            f" {r['queries']:>7}"
        )
    say(f"machine load average after the pages: {_load()}")
    return results


def roll_up() -> None:
    """The dashboard's daily roll-up of every day over, as its schedule (or
    `manage.py rollup`) does it."""
    from runs.rollup import roll_up_all

    t0 = time.perf_counter()
    passes = roll_up_all()
    days = sum(len(done.rolled) for done in passes)
    say(
        f"roll-up: {days} days in {len(passes)} passes, {time.perf_counter() - t0:.1f} s"
        f" (watermark {passes[-1].finished_before:%H:%M:%S})"
    )


def empty_rollup() -> None:
    """Delete the roll-up: the dashboard then aggregates the runs table
    itself, as it did before the roll-up (the baseline)."""
    from runs.models import (
        DailyRollup,
        DailyRollupDedup,
        DailyRollupWaiting,
        RollupDay,
        RollupWatermark,
    )

    for model in (DailyRollupWaiting, DailyRollupDedup, DailyRollup, RollupDay, RollupWatermark):
        model.objects.all().delete()


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# --- decision -> next step ------------------------------------------------------------------


def wait_for(check, timeout_s: float, what: str):
    deadline = time.perf_counter() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.002)


def decisions(count: int) -> tuple[list[float], list[float]]:
    """Start `count` + warm-up runs of the approval workflow through a real
    worker cluster, wait until they all wait for review, then decide them one by
    one. Returns (decision commit -> the approval step's record,
    decision commit -> the next step's started_at) in ms."""
    from demo.samples import install_workflow
    from runs.engine import decide_approval, start_run

    version = install_workflow(decide_spec())
    with tempfile.TemporaryFile("w+", prefix="bosun-bench-worker-") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return _decide_all(version, count, proc, start_run, decide_approval)
        except BaseException:
            log.flush()
            log.seek(0)
            say("worker log (tail):\n" + "".join(log.readlines()[-30:]))
            raise
        finally:
            stop_cluster(proc)


def _decide_all(version, count, proc, start_run, decide_approval):
    from django.conf import settings

    from approvals.models import ApprovalRequest
    from runs.models import StepRun

    total = count + DECISION_WARMUP
    run_ids = [
        start_run(workflow=version.workflow, version=version, input={"n": n}).run.pk
        for n in range(total)
    ]
    pending = ApprovalRequest.objects.filter(run_id__in=run_ids, status="pending")
    wait_for(lambda: pending.count() == total, 120, f"{total} runs waiting for review")
    poll_s = float(settings.Q_CLUSTER.get("poll", 0.2))
    jitter = random.Random(3)
    to_record, to_next = [], []
    for index, approval in enumerate(pending.order_by("id")):
        time.sleep(jitter.uniform(0, 2 * poll_s))
        decide_approval(approval_id=approval.pk, approve=True, actor_label="bench")
        committed = time.time()  # decide_approval returns after its commit
        rows = StepRun.objects.filter(run_id=approval.run_id, status="succeeded")
        after = wait_for(
            lambda rows=rows: rows.filter(step_key="after").values("started_at").first(),
            30,
            f"the step after approval {approval.pk}",
        )
        if proc.poll() is not None:
            raise RuntimeError("the worker cluster exited")
        record = rows.filter(step_key="approve").values("started_at").first()
        if index >= DECISION_WARMUP:
            to_record.append((record["started_at"].timestamp() - committed) * 1000)
            to_next.append((after["started_at"].timestamp() - committed) * 1000)
    return to_record, to_next


# --- main ----------------------------------------------------------------------------------


def tune(conninfo: str, bench_db: str, cost: str) -> None:
    """The planner's cost of a random page read set for SSD storage (1.1;
    PostgreSQL's default 4 assumes spinning disks), as a production server
    on SSDs is configured. With the default the planner reads a whole
    period's runs by a sequential scan of the wide run rows rather than the
    narrow covering index, about 2-4 times slower here."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo, autocommit=True) as pg:
        pg.execute(
            sql.SQL("ALTER DATABASE {} SET random_page_cost = 1.1").format(sql.Identifier(bench_db))
        )
    say("planner: random_page_cost = 1.1 (SSD) on the bench database")


def configure_env(bench_url: str) -> None:
    """Environment read by config.settings (production-like: DEBUG off);
    the worker cluster inherits it."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-console-not-a-secret")
    os.environ["ALLOWED_HOSTS"] = "testserver,localhost"
    os.environ["DATABASE_URL"] = bench_url
    os.environ["BOSUN_DOORBELL"] = "runs.tasks.ring"
    os.environ["BOSUN_DEMO"] = "1"  # the sample workflows
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def prepare(args, admin: str, bench_db: str, conninfo: str) -> list:
    """Migrate, and load the data unless --reuse finds it there."""
    import django
    from django.core.management import call_command

    django.setup()
    from runs.models import Run, Workflow

    call_command("migrate", verbosity=0, interactive=False)
    if args.reuse and Run.objects.count() >= args.runs:
        say(f"reusing {Run.objects.count():,} runs already in {bench_db!r}")
        vacuum(conninfo)
        return [
            (wf, list(wf.versions.order_by("number")))
            for wf in Workflow.objects.filter(slug__in=PATHS).order_by("slug")
        ]
    installed = install_versions()
    t0 = time.perf_counter()
    counts = load(conninfo, installed, args.runs)
    say(
        f"loaded {', '.join(f'{n:,} {what}' for what, n in counts.items())}"
        f" in {time.perf_counter() - t0:.1f} s (COPY, then VACUUM ANALYZE)"
    )
    return installed


def summary(pages: dict, to_record: list[float], to_next: list[float]) -> dict:
    def worst(group: str) -> float | None:
        values = [r["p95"] for r in pages.values() if r["group"] == group and r["status"] == 200]
        return max(values) if values else None

    return {
        "review_queue_p95_ms": worst("review"),
        "runs_list_p95_ms": worst("list"),
        "dashboard_p95_ms": worst("dashboard"),
        "dashboard_no_rollup_p95_ms": worst("dashboard, no roll-up"),
        "timeline_p95_ms": worst("timeline"),
        "deadletters_p95_ms": worst("dead"),
        "max_queries": max(r["queries"] for r in pages.values()),
        "decision_to_next_step_p95_ms": percentile(to_next, 0.95) if to_next else None,
    }


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--reuse", action="store_true", help="use the data a kept bench database holds"
    )
    parser.add_argument(
        "--default-planner",
        action="store_true",
        help="keep PostgreSQL's default random_page_cost (4) instead of the SSD value 1.1",
    )
    parser.add_argument(
        "--runs", type=int, default=RUNS, help=f"runs loaded (default {RUNS:,}), over 30 days"
    )
    parser.add_argument("--decisions", type=int, default=DECISIONS, help="decisions timed")
    parser.add_argument("--check-targets", action="store_true", help="exit 2 on a missed target")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    url = os.environ.get("DATABASE_URL", "")
    if url.split(":", 1)[0] not in PG_SCHEMES:
        raise SystemExit(
            "bench/console.py measures on PostgreSQL: set DATABASE_URL to a"
            " postgresql://USER:PASSWORD@HOST:PORT/DB URL whose role may CREATE DATABASE."
            '\n  e.g. DATABASE_URL="$(scripts/postgres-start)" .venv/bin/python -m bench.console'
        )
    bench_db = os.environ.get("BOSUN_BENCH_DB", "bosun_console_bench")
    admin, bench_url, conninfo = bench_urls(url, bench_db)
    os.chdir(ROOT)
    if not args.reuse:
        say(f"bench database {bench_db!r}: recreating ...")
        recreate_database(admin, bench_db)
    tune(conninfo, bench_db, "4" if args.default_planner else "1.1")
    configure_env(bench_url)
    try:
        installed = prepare(args, admin, bench_db, conninfo)
        roll_up()
        pages = time_pages(installed, args.runs)
        say("\nthe dashboard again, its roll-up deleted: every request aggregates the runs")
        empty_rollup()
        pages |= time_pages(installed, args.runs, only="dashboard", suffix=", no roll-up")
        say(f"\ndecision -> next step: manage.py worker, {args.decisions} decisions ...")
        to_record, to_next = decisions(args.decisions)
        say(
            f"decision commit -> the approval step's record: p50 {percentile(to_record, 0.5):.1f}"
            f" ms, p95 {percentile(to_record, 0.95):.1f} ms"
        )
        say(
            f"decision commit -> the next step started: p50 {percentile(to_next, 0.5):.1f} ms,"
            f" p95 {percentile(to_next, 0.95):.1f} ms, max {max(to_next):.1f} ms"
        )
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            recreate_database(admin, bench_db, drop_only=True)
    return report(args, pages, to_record, to_next)


def report(args, pages: dict, to_record: list[float], to_next: list[float]) -> int:
    """The verdict and the RESULT line; the exit status."""
    figures = summary(pages, to_record, to_next)
    broken = [name for name, r in pages.items() if r["status"] != 200 and r["group"] != "review"]
    if broken:
        say(f"FAILED: these pages did not answer 200: {', '.join(broken)}")
    if figures["review_queue_p95_ms"] is None:
        say("NOTE: the review queue page did not answer 200; its figure is n/a")
    missed = []
    for name, value in figures.items():
        if name == "dashboard_no_rollup_p95_ms":
            continue  # the baseline, not a page as served
        if name.endswith("p95_ms") and value is not None:
            target = TARGETS[
                "decision_to_next_step_p95_ms" if name[:8] == "decision" else "page_p95_ms"
            ]
            if value > target:
                missed.append(name)
    say(
        f"targets: pages p95 <= 200 ms, decision -> next step p95 <= 500 ms; missed: {missed or 'none'}"
    )
    shown = ("review_queue_p95_ms", "runs_list_p95_ms", "dashboard_p95_ms",
             "dashboard_no_rollup_p95_ms", "max_queries", "decision_to_next_step_p95_ms")  # fmt: skip
    say("RESULT " + " ".join(f"{name}={_fmt(figures[name])}" for name in shown))
    if broken:
        return 1
    return 2 if args.check_targets and missed else 0


if __name__ == "__main__":
    sys.exit(main())
