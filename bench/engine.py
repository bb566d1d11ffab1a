"""Engine benchmark: durable steps per second and 10-step latency, on SQLite or PostgreSQL.

    .venv/bin/python -m bench.engine                                  # SQLite
    DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB .venv/bin/python -m bench.engine

What it measures (see bench/README.md):

* engine: 200 runs x 10 trivial steps (9 `echo` tool steps chained by
  `next` edges, then an `end` step; every step leaves a StepRun row) through
  `runs.engine.advance_run`, the function the queue task calls, with the
  lease, the fencing and the full step records on. One worker process
  advances all 200 runs; then two worker processes split another 200.
* floor: the same 2000 steps written by the database's plain driver on one
  connection, no Django (psycopg; on SQLite Python's sqlite3 with the app's
  PRAGMAs): per step one transaction of one step-row INSERT and one run-row
  UPDATE on the real tables; and the same on two connections from two
  processes at once (what two clients get from the machine with no engine).
  On PostgreSQL also the one-statement floor: one prepared statement a step
  in autocommit (INSERT and UPDATE in one CTE), the leanest client, on one
  and two connections.
* one worker on one CPU (PostgreSQL, a local server): the first worker and
  its session kept on CPU 0, what a step costs a worker that shares its
  CPU; the CPUs over that cost are the ceiling two workers are read
  against. And two workers on one CPU each: worker 0 and its session kept
  on CPU 0, worker 1 and its session on CPU 1, against the one worker on
  one CPU (two workers with the same CPU a worker as one). While two
  workers run, their sessions' waits are sampled from pg_stat_activity.
* --steps branch: the same with branch steps in place of the echo tool
  steps (one condition evaluated, no tool gate): a step with a good deal
  less Python, to read the figures against.
* latency: a real `manage.py worker` (the production doorbell and the ORM
  broker), `start_run` to terminal status, median of 20, after a warm-up.

With a PostgreSQL DATABASE_URL the script creates its own database
(`bosun_bench`, or BOSUN_BENCH_DB) on that server; without DATABASE_URL, or
with a sqlite:// one, a fresh SQLite file in a temporary directory, opened
with the app's embedded SQLite settings. It migrates it and removes it at the
end (--keep leaves it). The last line it prints is the machine-readable
RESULT line. Exit status: 1 when a run did not end as expected, 2 with
--check-targets when a target is missed (the targets are PostgreSQL's; SQLite
has none), 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/engine.py`
    sys.path.insert(0, str(ROOT))

# bench/console.py and bench/economics.py take the PostgreSQL helpers from here.
from bench._engine_db import (  # noqa: E402, F401
    PG_SCHEMES,
    BenchDatabase,
    PostgresBench,
    backend_cpu_s,
    backend_pid,
    bench_urls,
    open_database,
    pin,
    recreate_database,
)

RUNS = 200
ECHO_STEPS = 9  # + 1 end step = 10 steps, 10 StepRun rows per run
STEPS = ECHO_STEPS + 1
LATENCY_SAMPLES = 20
LATENCY_WARMUP = 4  # one per queue worker process at least
SLUG = "bench-echo-10"
TERMINAL = ("succeeded", "failed", "stopped", "cancelled")
# PostgreSQL's targets. SQLite has a single writer, so two workers cannot
# double its throughput: its figures are printed without targets.
#
# Two workers are held to 1.6 times one where each has a CPU of its own
# with its session, against one worker kept the same way (paired_speedup):
# that is what a second worker adds when it brings its resources. Two
# workers against one worker free to use both CPUs (two_worker_speedup) is
# printed, not held to a target: on a machine whose database shares the
# workers' CPUs, one worker already keeps both busy in turn, so the ratio
# rises as the worker gets slower (with BOSUN_PG_PREPARE=0 the engine runs
# at half the speed and that ratio "passes").
TARGETS = {"ratio": 0.6, "paired_speedup": 1.6, "run10_latency_ms": 60.0}
# A round counts when processes other than the bench's used less than this
# many CPUs meanwhile (the 2-worker figure needs the machine's CPUs).
QUIET_CPUS = 0.25


def noop(run_id: int) -> None:
    """The doorbell of the throughput phases: runs are advanced by the bench."""


# The bench's nine steps before the end (--steps): `echo` tool steps, which
# go through the tool gate (role, guards, budgets, limits, breakers, taint),
# or `branch` steps, which evaluate one condition and touch nothing else.
STEP_KINDS = ("tool", "branch")


def _step(kind: str, i: int) -> dict:
    if kind == "tool":
        return {"kind": "tool", "config": {"tool": "echo", "args": {"value": i}}}
    when = {"path": "run.id", "op": ">", "value": 0}
    return {
        "kind": "branch",
        "config": {"rules": [{"when": when, "edge": "next"}], "default": "next"},
    }


def workflow_spec(kind: str = "tool") -> dict:
    steps = [
        {
            "key": f"echo{i}",
            **_step(kind, i),
            "edges": {"next": f"echo{i + 1}" if i < ECHO_STEPS else "done"},
        }
        for i in range(1, ECHO_STEPS + 1)
    ]
    steps.append({"key": "done", "kind": "end", "config": {"outcome": "done"}})
    return {
        "name": f"Bench: 9 {kind} steps and an end",
        "slug": SLUG if kind == "tool" else f"{SLUG}-{kind}",
        "entry_step": "echo1",
        "steps": steps,
    }


# --- database ---------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def configure_env(database: dict[str, str | None]) -> None:
    """Environment read by config.settings; spawned workers and the worker cluster
    inherit it. `database` sets (or, for None, removes) the variables that
    choose the database."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # As in production: with DEBUG on, every statement would also be logged
    # (on SQLite at the price of one more statement to quote its parameters).
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-engine-not-a-secret")
    for name, value in database.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.environ["BOSUN_DOORBELL"] = "bench.engine.noop"
    os.environ["BOSUN_DEMO"] = "1"  # the sample workflows
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def setup_django() -> None:
    import django

    django.setup()


# --- worker processes -------------------------------------------------------


def machine_busy_s() -> float | None:
    """Non-idle CPU seconds of the whole machine so far (Linux), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _worker_main(pipe, index: int) -> None:
    """A worker process: set up Django once, then advance the runs it is sent."""
    try:
        setup_django()
        from django.db import connection

        from runs.engine import advance_run

        # None on SQLite (no server) or when the server is on another machine.
        backend = backend_pid(connection)
        pipe.send(("ready", os.getpid()))
        while True:
            message = pipe.recv()
            if message[0] == "stop":
                break
            if message[0] == "pin":
                pipe.send(("pinned", pin(message[1], backend)))
                continue
            run_ids = message[1]
            profile = message[0] == "profile"
            if profile:
                import cProfile
                import io
                import pstats

                profiler = cProfile.Profile()
                profiler.enable()
            server0 = backend_cpu_s(backend)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            outcomes = Counter(advance_run(run_id).value for run_id in run_ids)
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            server = None if server0 is None else backend_cpu_s(backend) - server0
            flush_table_stats(connection)
            report = ""
            if profile:
                profiler.disable()
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out)
                stats.sort_stats("tottime").print_stats(25)
                stats.sort_stats("cumulative").print_stats(35)
                report = out.getvalue()
            pipe.send(
                ("done", dict(outcomes), {"wall": elapsed, "cpu": cpu, "server": server}, report)
            )
        connection.close()
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
        raise


class Workers:
    """Worker processes (spawned: each sets up Django and its own connection)."""

    def __init__(self, count: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for index in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, index), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            self._expect(pipe, "ready")

    @staticmethod
    def _expect(pipe, kind: str):
        message = pipe.recv()
        if message[0] == "error":
            raise RuntimeError(f"worker process failed:\n{message[1]}")
        assert message[0] == kind, message
        return message

    def advance(self, batches: list[list[int]], *, profile: bool = False):
        """Hand one batch to each of the first len(batches) workers at once;
        returns (wall seconds, outcomes, [per-worker times], [profile reports])."""
        t0 = time.perf_counter()
        for pipe, batch in zip(self.pipes, batches, strict=False):
            pipe.send(("profile" if profile else "advance", batch))
        outcomes: Counter = Counter()
        times, reports = [], []
        for pipe in self.pipes[: len(batches)]:
            _, counts, spent, report = self._expect(pipe, "done")
            outcomes.update(counts)
            times.append(spent)
            reports.append(report)
        return time.perf_counter() - t0, outcomes, times, reports

    def pin(self, *cpus: set[int] | None) -> str | None:
        """Keep worker i and its session on cpus[i] (None: anywhere); why
        not, when one cannot be kept."""
        refused = None
        for pipe, kept in zip(self.pipes, cpus, strict=False):
            pipe.send(("pin", kept))
            refused = refused or self._expect(pipe, "pinned")[1]
        return refused

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- phases -----------------------------------------------------------------


def start_runs(version, count: int, tag: str) -> list[int]:
    from runs.engine import start_run

    return [
        start_run(workflow=version.workflow, version=version, input={"n": n, "batch": tag}).run.pk
        for n in range(count)
    ]


def among(run_ids: list[int]) -> str:
    """`IN (%s, …)` for the ids (SQLite has no `= ANY(array)`)."""
    return f"IN ({', '.join(['%s'] * len(run_ids))})"


def count_steps(run_ids: list[int]) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM runs_steprun WHERE run_id {among(run_ids)}", run_ids)
        return cursor.fetchone()[0]


def check_runs(run_ids: list[int]) -> list[str]:
    """Every run succeeded, was claimed once, released its lease, and has
    exactly STEPS step records, all succeeded, seq 1..STEPS."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.id, r.status, r.steps_executed, r.seq, r.fence, r.lease_owner,"
            " count(s.id), count(s.id) FILTER (WHERE s.status = 'succeeded'),"
            " coalesce(min(s.seq), 0), coalesce(max(s.seq), 0)"
            " FROM runs_run r LEFT JOIN runs_steprun s ON s.run_id = r.id"
            f" WHERE r.id {among(run_ids)} GROUP BY r.id ORDER BY r.id",
            run_ids,
        )
        rows = cursor.fetchall()
    problems = []
    if len(rows) != len(run_ids):
        problems.append(f"{len(run_ids) - len(rows)} run(s) missing")
    for rid, status, executed, seq, fence, owner, n, ok, lo, hi in rows:
        expected = ("succeeded", STEPS, STEPS + 1, 1, "", STEPS, STEPS, 1, STEPS)
        got = (status, executed, seq, fence, owner, n, ok, lo, hi)
        if got != expected:
            problems.append(
                f"run {rid}: status={status} steps_executed={executed} seq={seq} fence={fence}"
                f" lease_owner={owner!r} step_runs={n} succeeded={ok} seq_range={lo}..{hi}"
            )
    return problems


def _floor_part(floor, run_ids: list[int], start, out) -> None:
    start.wait()
    out.put(floor(run_ids, STEPS))


def floor_in_two(floor, run_ids: list[int]) -> tuple[float, list[dict]]:
    """A floor on two connections from two processes at once, each writing
    half of the runs: what two clients get from this machine and this
    database with no engine at all."""
    context = mp.get_context("fork")
    start, out = context.Barrier(3), context.Queue()
    parts = [
        context.Process(target=_floor_part, args=(floor, half, start, out))
        for half in (run_ids[0::2], run_ids[1::2])
    ]
    for part in parts:
        part.start()
    start.wait()
    t0 = time.perf_counter()
    times = [out.get(), out.get()]
    wall = time.perf_counter() - t0
    for part in parts:
        part.join()
    return wall, times


def measure(name: str, run_ids: list[int], workers: Workers, db: BenchDatabase) -> dict:
    """One phase: "floor" (the plain driver), "floor2" (the plain driver on two
    connections at once), "one" or "two" (engine worker processes).

    Returns steps/s, the per-process times, advance_run outcomes and the
    CPUs' worth of time that processes other than the bench used meanwhile.
    """
    busy0 = machine_busy_s()
    wal0 = wal_lsn(db)
    upd0 = run_updates(db)
    waits: Counter = Counter()
    floors = {"floor": db.floor, "floor2": db.floor}
    if isinstance(db, PostgresBench):
        floors.update(lean=db.floor_one_statement, lean2=db.floor_one_statement)
    if name in ("floor", "lean"):
        times = [floors[name](run_ids, STEPS)]
        wall, outcomes = times[0]["wall"], Counter()
    elif name in ("floor2", "lean2"):
        wall, times = floor_in_two(floors[name], run_ids)
        outcomes = Counter()
    elif name == "two":
        with sampling_waits(db, waits):
            wall, outcomes, times, _ = workers.advance([run_ids[0::2], run_ids[1::2]])
    elif name == "paired":  # two workers, each on a CPU of its own with its session
        wall, outcomes, times, _ = workers.advance([run_ids[0::2], run_ids[1::2]])
    else:  # "one", or "shared": one worker on one CPU with its session
        wall, outcomes, times, _ = workers.advance([run_ids])
    busy1 = machine_busy_s()
    wal1 = wal_lsn(db)
    upd1 = run_updates(db)
    others = float("nan")
    if busy0 is not None and busy1 is not None:
        ours = sum(t["cpu"] + (t["server"] or 0.0) for t in times)
        others = max(0.0, (busy1 - busy0 - ours) / wall)
    return {
        "rate": count_steps(run_ids) / wall,
        "times": times,
        "outcomes": dict(outcomes),
        "others": others,
        # Write-ahead log written a step (PostgreSQL), all sessions included.
        "wal": (wal1 - wal0) / (len(run_ids) * STEPS) if wal0 is not None else None,
        # Share of the run-row updates PostgreSQL wrote as HOT (no index touched).
        "hot": hot_share(upd0, upd1),
        # What the workers' sessions were doing when looked at ("two").
        "waits": dict(waits),
    }


@contextlib.contextmanager
def sampling_waits(db: BenchDatabase, seen: Counter):
    """Look at the bench database's busy sessions every 10 ms while the block
    runs, from a connection of its own, and count what each was doing:
    running ("CPU") or waiting, by wait type (LWLock, Lock, IO, ...).
    PostgreSQL only."""
    if not isinstance(db, PostgresBench):
        yield
        return
    import threading

    import psycopg

    done = threading.Event()

    def look() -> None:
        with psycopg.connect(db.conninfo, autocommit=True) as pg:
            while not done.is_set():
                for (kind,) in pg.execute(
                    "SELECT coalesce(wait_event_type, 'CPU') FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state = 'active'"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ):
                    seen[kind] += 1
                done.wait(0.01)

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def flush_table_stats(connection) -> None:
    """Have this session's table statistics published now (PostgreSQL 15+
    publishes them at most once a second otherwise): `execute` returns after
    the server went idle, which is when it publishes."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")


def run_updates(db: BenchDatabase) -> tuple[int, int] | None:
    """(updates, HOT updates) of the run table so far (PostgreSQL)."""
    if db.vendor != "postgresql":
        return None
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'runs_run'"
        )
        return cursor.fetchone()


def hot_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[0] == before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def wal_lsn(db: BenchDatabase) -> int | None:
    """The server's WAL position in bytes (PostgreSQL; None on SQLite)."""
    if db.vendor != "postgresql":
        return None
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def write_spec() -> dict:
    """One write (crm.upsert, which goes through the tool-call ledger) and an
    end: to count what a write step costs the engine."""
    return {
        "name": "Bench: one write and an end",
        "slug": f"{SLUG}-write",
        "entry_step": "write",
        "steps": [
            {
                "key": "write",
                "kind": "tool",
                "config": {
                    "tool": "crm.upsert",
                    "args": {"object_type": "lead", "external_id": "lead-{{ input.n }}"},
                },
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done"}},
        ],
    }


def engine_statements(statements: list[str]) -> list[str]:
    """The engine's own statements: without those a tool sends itself
    (crm.upsert's reads and writes of its records)."""
    return [sql for sql in statements if "runs_crmrecord" not in sql]


def statements_per_run(version, db: BenchDatabase) -> list[str]:
    """The SQL statements one warm worker runs for one 10-step run."""
    from django.db import connection

    from runs.engine import advance_run

    warm, counted = start_runs(version, 2, "statements")
    advance_run(warm)
    with db.statement_log(connection) as seen:
        advance_run(counted)
    return seen


def quiet(r: dict) -> bool:
    return math.isnan(r["others"]) or r["others"] < QUIET_CPUS


def kind_of(sql: str) -> str:
    sql = sql.lstrip()
    if "fence = fence + 1" in sql:
        return "claim"
    if "bosun_open_tool_call" in sql or "INSERT INTO runs_toolcallrecord" in sql:
        return "ledger open"
    if sql.startswith("UPDATE runs_toolcallrecord"):
        return "ledger close"
    if "INSERT INTO runs_steprun" in sql:
        # PostgreSQL: one CTE statement; SQLite: an INSERT after the run UPDATE.
        return "checkpoint (run update + step row)" if sql.startswith("WITH") else "step-row insert"
    if sql.startswith("UPDATE runs_run"):
        return "run update"
    if "policies_killswitch" in sql:
        return "kill-switch check"
    if sql.upper().startswith("BEGIN"):
        return " ".join(sql.split()[:2]).lower()
    return sql.split()[0].lower()


def wait_terminal(run_id: int, timeout_s: float) -> str:
    from django.db import connection

    deadline = time.perf_counter() + timeout_s
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT status FROM runs_run WHERE id = %s", [run_id])
            status = cursor.fetchone()[0]
            if status in TERMINAL:
                return status
            if time.perf_counter() > deadline:
                raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f} s")
            time.sleep(0.002)


def spawn_manage(*args: str, env: dict[str, str], log) -> subprocess.Popen:
    """`manage.py <args>` (a worker cluster, the sweeper) in a session of its
    own, so that stop_cluster can end it and every process it started."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_cluster(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # The cluster's own children live in the session it was started in.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def latency(version, samples: int) -> tuple[list[float], dict[str, list[float]], list[str]]:
    """start_run -> terminal through a real worker cluster.

    Returns the times in ms, their split (queue: created -> claimed;
    execution: claimed -> finished, from the runs' timestamps) and problems.
    Each start waits a random fraction of the queue's poll interval first,
    so the samples do not lock on to the broker's polling rhythm.
    """
    from django.conf import settings

    from runs.engine import start_run

    settings.BOSUN_DOORBELL = "runs.tasks.ring"  # the production doorbell
    env = {k: v for k, v in os.environ.items() if k != "BOSUN_DOORBELL"}
    times: list[float] = []
    split: dict[str, list[float]] = {"queue": [], "execution": []}
    problems: list[str] = []
    poll_s = float(settings.Q_CLUSTER.get("poll", 0.2))
    jitter = random.Random(1)
    with tempfile.TemporaryFile("w+", prefix="bosun-bench-worker-") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            for i in range(LATENCY_WARMUP + samples):
                time.sleep(jitter.uniform(0, 2 * poll_s))
                t0 = time.perf_counter()
                run = start_run(
                    workflow=version.workflow, version=version, input={"n": i, "batch": "latency"}
                ).run
                status = wait_terminal(run.pk, 60.0 if i == 0 else 10.0)
                elapsed_ms = (time.perf_counter() - t0) * 1000
                if proc.poll() is not None:
                    raise RuntimeError("the worker cluster exited")
                if i >= LATENCY_WARMUP:
                    times.append(elapsed_ms)
                    problems.extend(check_runs([run.pk]))
                    run.refresh_from_db(fields=["created_at", "started_at", "finished_at"])
                    if run.started_at and run.finished_at:
                        queued = run.started_at - run.created_at
                        executed = run.finished_at - run.started_at
                        split["queue"].append(queued.total_seconds() * 1000)
                        split["execution"].append(executed.total_seconds() * 1000)
                if status != "succeeded":
                    problems.append(f"run {run.pk} ended {status}")
        except BaseException:
            log.flush()
            log.seek(0)
            say("worker log (tail):\n" + "".join(log.readlines()[-30:]))
            raise
        finally:
            stop_cluster(proc)
    return times, split, problems


# --- main -------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="quiet throughput rounds wanted (fresh runs each); medians are reported",
    )
    parser.add_argument(
        "--max-rounds",
        type=int,
        default=10,
        help="give up waiting for quiet rounds after this many (then all rounds count)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile one worker advancing 200 runs and print the top",
    )
    parser.add_argument(
        "--cache-probe",
        action="store_true",
        help="also measure what sharing a CPU with its session costs a client that computes"
        " and one that walks memory (PostgreSQL, a local server)",
    )
    parser.add_argument(
        "--thin-client",
        action="store_true",
        help="also send the engine's own claim and checkpoint statements from a thin psycopg"
        " loop, on one connection and on two (PostgreSQL)",
    )
    parser.add_argument(
        "--steps",
        choices=STEP_KINDS,
        default="tool",
        help="the kind of the nine steps before the end: echo tool steps through the tool"
        " gate (the default), or branch steps that evaluate one condition",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--check-targets",
        action="store_true",
        help="exit 2 when a target is missed (PostgreSQL; SQLite has no targets)",
    )
    return parser.parse_args(argv)


def describe_setup(version, db: BenchDatabase, steps: str) -> None:
    """Print the database, the machine, the workflow and its statements."""
    from django.db import connection

    say(
        f"database: {db.describe(connection)}; client: Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPU(s) shared by the database and the workers"
    )
    what = "echo tool" if steps == "tool" else steps
    say(
        f"workflow: {ECHO_STEPS} {what} steps + 1 end step = {STEPS} steps a run, "
        f"each checkpointed with its StepRun row; {RUNS} runs a measurement"
    )
    statements = statements_per_run(version, db)
    seen = "as SQLite ran them, BEGIN and COMMIT included" if db.vendor == "sqlite" else "sent"
    say(
        f"SQL statements for one {STEPS}-step run by a warm worker ({seen}): {len(statements)}"
        f" ({len(statements) / STEPS:.1f} a step):"
        f" {', '.join(f'{n} {kind}' for kind, n in Counter(map(kind_of, statements)).items())}"
    )
    from demo.samples import install_workflow
    from runs.models import Run

    write_version = install_workflow(write_spec())
    write = engine_statements(statements_per_run(write_version, db))
    ended = set(Run.objects.filter(version=write_version).values_list("status", flat=True))
    if ended != {"succeeded"}:
        raise RuntimeError(f"the write runs ended {sorted(ended)}")
    say(
        f"SQL statements of the engine for a run of one write step (crm.upsert) and an end"
        f" ({seen}, the tool's own left out): {len(write)}:"
        f" {', '.join(f'{n} {kind}' for kind, n in Counter(map(kind_of, write)).items())}"
    )


# The phases whose workers are kept on fixed CPUs with their sessions: the
# CPUs of worker 0, worker 1.
PINNED: dict[str, tuple[set[int], set[int] | None]] = {
    "shared": ({0}, None),
    "paired": ({0}, {1}),
}
ENGINE_PHASES = ("one", "two", "shared", "paired")


def throughput_rounds(
    args, version, workers: Workers, db: BenchDatabase, failures: list[str]
) -> list[dict]:
    """Rounds of every phase on fresh runs until enough quiet ones.

    The floors and the engine on one and two connections, and on
    PostgreSQL the one-statement floor and two phases with the workers'
    CPUs fixed: "shared", one worker kept on one CPU with its database
    session (what a step costs when a worker does not have a CPU to itself,
    as with two workers on two CPUs), and "paired", two workers each kept
    on a CPU of its own with its session (two workers with the resources
    of one each).
    """
    names = ["floor", "floor2", "one", "two"]
    if isinstance(db, PostgresBench):
        names[1:1] = ["lean"]
        names[3:3] = ["lean2"]
        names += ["shared", "paired"]
    rounds: list[dict] = []
    heads = {
        "floor": "floor",
        "lean": "1-stmt",
        "floor2": "floor 2c",
        "lean2": "1-stmt 2c",
        "one": "engine 1w",
        "two": "engine 2w",
        "shared": "1w 1 CPU",
        "paired": "2w 1 CPU ea",
    }
    say("")
    say(
        f"{'round':>5}  "
        + "  ".join(f"{heads[n]:>9}" for n in names)
        + f"  {'ratio':>5}  {'2w/1w':>5}  {'2c/1c':>5}  {'pairs':>5}  {'other load':>11}"
    )
    say(f"{'':>5}  " + "  ".join(f"{'steps/s':>9}" for _ in names) + f"  {'':>33}{'CPUs':>11}")
    number = 0
    while number < args.max_rounds and sum(quiet(r) for r in rounds) < args.rounds:
        number += 1
        ids = {name: start_runs(version, RUNS, f"{name}-{number}") for name in names}
        r: dict = {}
        # Alternate the order between rounds, so a drift in machine load
        # does not favour one side of a comparison.
        order = list(names) if number % 2 else names[::-1]
        for name in order:
            if name in PINNED:
                refused = workers.pin(*PINNED[name])
                if refused:
                    failures.append(f"the {name} phase cannot run: {refused}")
                    names.remove(name)
                    workers.pin(None, None)
                    continue
                try:
                    r[name] = measure(name, ids[name], workers, db)
                finally:
                    workers.pin(None, None)
            else:
                r[name] = measure(name, ids[name], workers, db)
        engine_phases = [name for name in ENGINE_PHASES if name in r]
        for name in engine_phases:
            failures += check_runs(ids[name])
            if r[name]["outcomes"] != {"finished": RUNS}:
                failures.append(f"advance_run outcomes {r[name]['outcomes']}")
        r["ratio"] = r["one"]["rate"] / r["floor"]["rate"]
        r["speedup"] = r["two"]["rate"] / r["one"]["rate"]
        r["floor_speedup"] = r["floor2"]["rate"] / r["floor"]["rate"]
        if "shared" in r and "paired" in r:
            r["paired_speedup"] = r["paired"]["rate"] / r["shared"]["rate"]
        # Two floor connections at 5,000 to 9,000 steps/s keep the server's
        # WAL writer and the kernel's loopback networking busy, which no
        # process of the bench is charged for: their phases would mark
        # every round busy. Other load shows in the other phases alike.
        r["others"] = max(
            r[name]["others"] for name in names if name in r and name not in ("floor2", "lean2")
        )
        rounds.append(r)
        say(
            f"{number:>5}  "
            + "  ".join(f"{r[n]['rate']:>9.0f}" if n in r else f"{'-':>9}" for n in names)
            + f"  {r['ratio']:>5.2f}  {r['speedup']:>5.2f}  {r['floor_speedup']:>5.2f}"
            + (f"  {r['paired_speedup']:>5.2f}" if "paired_speedup" in r else f"  {'-':>5}")
            + f"  {r['others']:>11.2f}{'' if quiet(r) else '  (busy: not counted)'}"
        )
    return rounds


# The cache probe's work a step: about 0.2 ms of arithmetic on a few
# integers, or of reads scattered over a Python structure of ~60 MB.
PROBE_ADDS = 6000
PROBE_READS = 200
_probe_heap: list[dict] = []


def _compute(k: int) -> int:
    total = 0
    for i in range(PROBE_ADDS):
        total += i * i
    return total


def _walk(k: int) -> int:
    heap, total = _probe_heap, 0
    for j in range(PROBE_READS):
        total += heap[(k * 131_071 + j * 7_919) % len(heap)]["k"]
    return total


def _engine_statements(version) -> tuple[tuple[str, list], tuple[str, list], int]:
    """The claim and an echo step's checkpoint of a real run, as sent (SQL
    and values), and where the checkpoint's values hold the run id (the
    fence and the step's seq follow it)."""
    from django.db import connection

    from runs.engine import advance_run

    run_id = start_runs(version, 1, "thin-capture")[0]
    sent: list[tuple[str, list]] = []

    def spy(execute, sql, params, many, context):
        sent.append((sql, list(params)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        advance_run(run_id)
    claim = next(s for s in sent if "fence = fence + 1" in s[0])
    step = next(s for s in sent if s[0].startswith("WITH upd AS") and "current_step" in s[0])
    values = step[1]
    at = next(i for i in range(len(values) - 2) if values[i : i + 3] == [run_id, 1, 1])
    return claim, step, at


def thin_client(version, db: BenchDatabase) -> None:
    """What the engine's statements cost the database, and how they scale,
    without the engine's Python: its claim and an echo step's checkpoint,
    taken from a real run, sent by a plain loop of prepared psycopg
    statements (a claim, then 10 checkpoints a run; the end step's
    checkpoint is replaced by an echo step's), on one connection and on
    two processes at once."""
    if not isinstance(db, PostgresBench):
        say("\nthin client: PostgreSQL only")
        return
    (claim_sql, claim_values), (step_sql, step_values), at = _engine_statements(version)

    def loop(run_ids: list[int], steps: int) -> dict:
        import psycopg

        with psycopg.connect(db.conninfo, autocommit=True) as pg:
            cursor = pg.cursor()
            backend = pg.info.backend_pid
            server0, cpu0, t0 = backend_cpu_s(backend), time.process_time(), time.perf_counter()
            for run_id in run_ids:
                cursor.execute(claim_sql, [*claim_values[:-1], run_id], prepare=True)
                fence = cursor.fetchone()[0]
                values = list(step_values)
                for seq in range(1, steps + 1):
                    values[at : at + 3] = [run_id, fence, seq]
                    cursor.execute(step_sql, values, prepare=True)
                    cursor.fetchone()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            server = backend_cpu_s(backend)
        return {"wall": wall, "cpu": cpu, "server": None if server is None else server - server0}

    from django.db import connection

    say("\nthin client: the engine's claim and checkpoint from a plain psycopg loop (median of 3)")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for n in range(3):
        for processes in (1, 2):
            ids = start_runs(version, RUNS, f"thin-{processes}-{n}")
            connection.close()  # the forked processes must not share it
            if processes == 1:
                wall = loop(ids, STEPS)["wall"]
            else:
                wall, _ = floor_in_two(loop, ids)
            written = count_steps(ids)
            if written != RUNS * STEPS:  # a statement that matched nothing costs nothing
                say(f"  thin client FAILED: {written} step rows written, not {RUNS * STEPS}")
                return
            rates[processes].append(RUNS * STEPS / wall)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    say(f"  1 connection {one:.0f} steps/s, 2 at once {two:.0f} steps/s: {two / one:.2f}")


def cache_probe(version, db: BenchDatabase) -> None:
    """Why a worker pays for sharing a CPU with its session: the
    one-statement floor with a step's worth of client work added, once
    arithmetic (no memory traffic), once reads scattered over a large
    structure, each on both CPUs and kept on one CPU with its session.
    If sharing costs the session CPU only when the client walks memory,
    the price is the cache the two share, not the switching."""
    if not isinstance(db, PostgresBench):
        say("\ncache probe: PostgreSQL only")
        return
    _probe_heap[:] = [{"k": i, "v": str(i)} for i in range(300_000)]
    say("\ncache probe: the one-statement floor plus client work a step (median of 3)")
    say(
        f"{'client work a step':28} {'CPUs':>12} {'steps/s':>8} {'client CPU':>11} {'server CPU':>11}"
    )
    try:
        for label, work in (("none", None), ("arithmetic", _compute), ("scattered reads", _walk)):
            for cpus, where in ((None, "both"), ({0}, "1, shared")):
                found = []
                for n in range(3):
                    ids = start_runs(version, RUNS, f"probe-{label}-{where}-{n}")
                    found.append(db.floor_one_statement(ids, STEPS, work=work, cpus=cpus))
                steps = RUNS * STEPS
                rate = statistics.median(steps / t["wall"] for t in found)
                client = statistics.median(t["cpu"] for t in found) * 1000 / steps
                server = statistics.median(t["server"] or 0 for t in found) * 1000 / steps
                say(f"{label:28} {where:>12} {rate:8.0f} {client:8.3f} ms {server:8.3f} ms")
    finally:
        _probe_heap.clear()


def run_phases(args: argparse.Namespace, db: BenchDatabase) -> dict:
    """Create and migrate the bench database, measure every phase, remove it."""
    workers = None
    failures: list[str] = []
    say(f"{db.create()}: migrating ...")
    try:
        configure_env(db.env())
        setup_django()
        from django.core.management import call_command

        from demo.samples import install_workflow

        call_command("migrate", verbosity=0, interactive=False)
        version = install_workflow(workflow_spec(args.steps))
        describe_setup(version, db, args.steps)

        workers = Workers(2)
        warm = start_runs(version, 2, "warm-up")
        workers.advance([[warm[0]], [warm[1]]])  # imports, caches, connections
        rounds = throughput_rounds(args, version, workers, db, failures)
        if args.profile:
            ids = start_runs(version, RUNS, "profile")
            _, _, _, reports = workers.advance([ids], profile=True)
            failures += check_runs(ids)
            say("\ncProfile of one worker advancing 200 runs (overhead inflates the totals):")
            say(reports[0])
        workers.close()
        workers = None
        if args.cache_probe:
            cache_probe(version, db)
        if args.thin_client:
            thin_client(version, db)

        say(
            f"\nlatency: manage.py worker, start_run -> terminal, {LATENCY_WARMUP} warm-up"
            f" runs then {LATENCY_SAMPLES} measured ..."
        )
        times, split, latency_problems = latency(version, LATENCY_SAMPLES)
        failures += latency_problems
    finally:
        if workers is not None:
            workers.close()
        from django.db import connections

        connections.close_all()
        if args.keep:
            say(f"kept: {db.location()}")
        else:
            db.drop()
    return {"rounds": rounds, "times": times, "split": split, "failures": failures}


def report_figures(
    args: argparse.Namespace,
    db: BenchDatabase,
    rounds: list[dict],
    all_rounds: list[dict],
    data: dict,
) -> dict:
    """Print the medians and the latency; returns the RESULT figures."""

    def med(key: str) -> float:
        return statistics.median(r[key]["rate"] for r in rounds)

    def per_step(key: str, field: str) -> str:
        # All the phase's processes together (two for floor2 and two).
        values = [[t[field] for t in r[key]["times"]] for r in rounds]
        if any(v is None for found in values for v in found):
            return "    n/a"
        return f"{statistics.median(sum(found) for found in values) * 1000 / (RUNS * STEPS):7.3f}"

    def row(label: str, key: str) -> float:
        """Print a phase's line: steps/s, and wall and CPU time a step."""
        rate = med(key)
        say(
            f"{label:51} {rate:8.0f}  {1000 / rate:7.3f}"
            f"  {per_step(key, 'cpu'):>10}  {per_step(key, 'server'):>10}"
        )
        return rate

    engine, floor_rate, two = med("one"), med("floor"), med("two")
    times, split = data["times"], data["split"]
    say("")
    say(
        f"medians of {len(rounds)} of {len(all_rounds)} round(s) of {RUNS} runs x {STEPS} steps"
        f" (a round counts when other processes used under {QUIET_CPUS} CPU meanwhile,"
        " the phases on two floor connections left out)"
    )
    if rounds is all_rounds and not all(quiet(r) for r in rounds):
        say(
            f"WARNING: fewer than {args.rounds} quiet rounds in {len(all_rounds)}: other"
            f" processes were using the {os.cpu_count()} CPUs, and the figures, the two-worker"
            " speed-up above all, understate the engine; run again on a quiet machine"
        )
    sqlite = db.vendor == "sqlite"
    driver = "sqlite3, BEGIN IMMEDIATE" if sqlite else "raw psycopg, BEGIN"
    floor_name = f"{driver}/INSERT/UPDATE/COMMIT"
    say(f"{'':51} {'steps/s':>8}  {'wall ms':>7}  {'client CPU':>10}  {'server CPU':>10}  (a step)")
    row(f"floor  {floor_name}", "floor")
    row("engine advance_run, 1 worker process", "one")
    floor2 = row("floor on 2 connections at once (2 processes)", "floor2")
    row("engine advance_run, 2 worker processes", "two")
    figures: dict = {}
    if all("lean" in r for r in rounds):
        lean = row("floor  one prepared statement a step, autocommit", "lean")
        lean2 = row("  the same on 2 connections at once", "lean2")
        figures["lean_steps_per_s"] = lean
    say(
        f"two at once / one: floor {floor2 / floor_rate:.2f}"
        + (f", one-statement floor {lean2 / lean:.2f}" if "lean_steps_per_s" in figures else "")
        + f", engine {two / engine:.2f}"
    )
    if all("shared" in r for r in rounds):
        shared = row("engine, 1 worker kept on 1 CPU with its session", "shared")
        # What a step costs a worker that shares its CPU, as each of two
        # workers on two CPUs must (with its session, or the other's): the
        # machine's CPUs divided by it is what any two workers could get.
        cost = statistics.median(
            sum(t["cpu"] + t["server"] for t in r["shared"]["times"]) / (RUNS * STEPS)
            for r in rounds
        )
        ceiling = (os.cpu_count() or 1) / cost
        say(
            f"two workers' ceiling on this machine: {os.cpu_count()} CPUs / {cost * 1000:.3f} ms"
            f" (a step's CPU, worker and session, when they share a CPU) = {ceiling:.0f} steps/s;"
            f" two workers reach {two:.0f} ({two / ceiling:.0%})"
        )
        figures["two_worker_of_ceiling"] = two / ceiling
    if all("paired_speedup" in r for r in rounds):
        paired = row("engine, 2 workers, each kept on 1 CPU with its session", "paired")
        say(
            f"two workers / one with the same CPU a worker (one each, shared with its session):"
            f" {paired / shared:.2f}"
        )
        figures["paired_speedup"] = paired / shared
    waits: Counter = Counter()
    for r in rounds:
        waits.update(r["two"]["waits"])
    if waits:
        looked = sum(waits.values())
        locks = sum(waits[kind] for kind in ("Lock", "LWLock", "BufferPin"))
        detail = ", ".join(f"{kind} {n / looked:.1%}" for kind, n in waits.most_common())
        say(
            f"two workers' sessions, looked at every 10 ms ({looked} looks at a busy one):"
            f" waiting on a lock {locks / looked:.1%} ({detail})"
        )
        figures["two_worker_lock_wait_share"] = locks / looked
    if rounds[0]["one"].get("wal") is not None:
        wal = {key: statistics.median(r[key]["wal"] for r in rounds) for key in ("floor", "one")}
        say(
            f"WAL written a step: floor {wal['floor']:.0f} B, engine {wal['one']:.0f} B"
            f" ({wal['one'] / wal['floor']:.1f}x)"
        )
    hot = [r[key].get("hot") for r in rounds for key in ("floor", "one")]
    if None not in hot:
        shares = {
            key: statistics.median(r[key]["hot"] for r in rounds) for key in ("floor", "one", "two")
        }
        say(
            f"run-row updates written HOT (no index touched): floor {shares['floor']:.0%},"
            f" engine {shares['one']:.0%} (1 worker), {shares['two']:.0%} (2 workers);"
            " the engine's claim and end change the run's status and timers, which are indexed"
        )
    if sqlite:
        say(
            "  server CPU n/a: SQLite works inside each process, so its CPU is in the client"
            " column. SQLite takes one writer at a time (a BEGIN IMMEDIATE waits for the"
            " other's COMMIT), so a second worker cannot double the steps/s."
        )
    run10 = statistics.median(times)
    say(
        f"latency of a {STEPS}-step run through the queue: median {run10:.1f} ms,"
        f" min {min(times):.1f}, max {max(times):.1f}"
        f" (p90 {statistics.quantiles(times, n=10)[-1]:.1f})"
    )
    if split["queue"]:
        say(
            f"  of which: created -> claimed (queue pick-up) median"
            f" {statistics.median(split['queue']):.1f} ms, claimed -> finished (10 steps)"
            f" median {statistics.median(split['execution']):.1f} ms"
        )
    # Of the medians, so the RESULT line is self-consistent.
    return figures | {
        "engine_steps_per_s": engine,
        "floor_steps_per_s": floor_rate,
        "ratio": engine / floor_rate,
        "two_worker_speedup": two / engine,
        "floor_two_speedup": floor2 / floor_rate,
        "run10_latency_ms": run10,
    }


def check_targets(db: BenchDatabase, figures: dict) -> list[str]:
    """Print each target against its figure; returns the missed ones.
    The targets are PostgreSQL's: on SQLite the figures stand alone."""
    if db.vendor != "postgresql":
        say(f"targets: none on SQLite ({', '.join(TARGETS)} are checked on PostgreSQL)")
        return []
    missed = []
    for name, target in TARGETS.items():
        if name not in figures:  # the workers' CPUs could not be fixed (a remote server)
            say(f"target {name}: not measured")
            missed.append(name)
            continue
        ok = figures[name] <= target if name.endswith("_ms") else figures[name] >= target
        if not ok:
            missed.append(name)
        say(
            f"target {name} {'<=' if name.endswith('_ms') else '>='} {target}:"
            f" {figures[name]:.2f} {'ok' if ok else 'MISSED'}"
        )
    return missed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    db = open_database(
        os.environ.get("DATABASE_URL", ""), os.environ.get("BOSUN_BENCH_DB", "bosun_bench")
    )
    os.chdir(ROOT)
    t_start = time.perf_counter()
    data = run_phases(args, db)

    all_rounds = data["rounds"]
    rounds = [r for r in all_rounds if quiet(r)]
    if len(rounds) < args.rounds:
        rounds = all_rounds
    figures = report_figures(args, db, rounds, all_rounds, data)
    missed = check_targets(db, figures)
    failures = data["failures"]
    engine_phases = sum(name in r for r in all_rounds for name in ENGINE_PHASES)
    checked = engine_phases * RUNS + LATENCY_SAMPLES + (RUNS if args.profile else 0)
    if failures:
        say(f"check FAILED: {len(failures)} problem(s); first ones:")
        for problem in failures[:10]:
            say(f"  {problem}")
    else:
        say(
            f"check ok: all {checked} engine runs succeeded, each claimed once, lease released,"
            f" exactly {STEPS} succeeded StepRun rows (seq 1..{STEPS})"
        )
    say(f"total bench time {time.perf_counter() - t_start:.0f} s")
    say(
        f"RESULT db={db.vendor} steps={args.steps} engine_steps_per_s={figures['engine_steps_per_s']:.0f}"
        f" floor_steps_per_s={figures['floor_steps_per_s']:.0f} ratio={figures['ratio']:.2f}"
        f" two_worker_speedup={figures['two_worker_speedup']:.2f}"
        f" floor_two_speedup={figures['floor_two_speedup']:.2f}"
        f" run10_latency_ms={figures['run10_latency_ms']:.1f}"
        + "".join(
            f" {key}={figures[key]:.{0 if key.endswith('_per_s') else 2}f}"
            for key in ("lean_steps_per_s", "two_worker_of_ceiling", "paired_speedup")
            if key in figures
        )
    )
    if failures:
        return 1
    if args.check_targets and missed:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
