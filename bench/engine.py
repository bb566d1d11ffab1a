"""Engine benchmark: durable steps per second and 10-step latency on PostgreSQL.

    DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB .venv/bin/python -m bench.engine

What it measures (see bench/README.md):

* engine: 200 runs x 10 trivial steps (9 `echo` tool steps chained by
  `next` edges, then an `end` step; every step leaves a StepRun row) through
  `runs.engine.advance_run`, the function the queue task calls, with the
  lease, the fencing and the full step records on. One worker process
  advances all 200 runs; then two worker processes split another 200.
* floor: the same 2000 steps as raw psycopg on one connection, no Django:
  per step one transaction of one step-row INSERT and one run-row UPDATE on
  the real tables.
* latency: a real `manage.py qcluster` (the production doorbell and the ORM
  broker), `start_run` to terminal status, median of 20, after a warm-up.

The script creates its own database (`bosun_bench`, or BOSUN_BENCH_DB) on
the server named by DATABASE_URL, migrates it, and drops it at the end
(--keep leaves it). It refuses to run without a PostgreSQL DATABASE_URL. The
last line it prints is the machine-readable RESULT line. Exit status: 1 when
a run did not end as expected, 2 with --check-targets when a target is
missed, 0 otherwise.
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
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/engine.py`
    sys.path.insert(0, str(ROOT))

RUNS = 200
ECHO_STEPS = 9  # + 1 end step = 10 steps, 10 StepRun rows per run
STEPS = ECHO_STEPS + 1
LATENCY_SAMPLES = 20
LATENCY_WARMUP = 4  # one per queue worker process at least
SLUG = "bench-echo-10"
TERMINAL = ("succeeded", "failed", "stopped", "cancelled")
TARGETS = {"ratio": 0.35, "two_worker_speedup": 1.6, "run10_latency_ms": 120.0}
PG_SCHEMES = ("postgres", "postgresql", "pgsql")
# A round counts when processes other than the bench's used less than this
# many CPUs meanwhile (the 2-worker figure needs the machine's CPUs).
QUIET_CPUS = 0.25


def noop(run_id: int) -> None:
    """The doorbell of the throughput phases: runs are advanced by the bench."""


def workflow_spec() -> dict:
    steps = [
        {
            "key": f"echo{i}",
            "kind": "tool",
            "config": {"tool": "echo", "args": {"value": i}},
            "edges": {"next": f"echo{i + 1}" if i < ECHO_STEPS else "done"},
        }
        for i in range(1, ECHO_STEPS + 1)
    ]
    steps.append({"key": "done", "kind": "end", "config": {"outcome": "done"}})
    return {
        "name": "Bench: 9 echo steps and an end",
        "slug": SLUG,
        "entry_step": "echo1",
        "steps": steps,
    }


# --- database ---------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def bench_urls(url: str, bench_db: str) -> tuple[str, str, str]:
    """(admin conninfo, bench DATABASE_URL, bench conninfo) from DATABASE_URL."""
    parts = urlsplit(url)
    if parts.scheme not in PG_SCHEMES:
        raise SystemExit(
            "bench/engine.py measures the engine on PostgreSQL: set DATABASE_URL to a "
            "postgresql://USER:PASSWORD@HOST:PORT/DB URL whose role may CREATE DATABASE "
            f"(got {'nothing' if not url else repr(parts.scheme + '://...')})."
            '\n  e.g. DATABASE_URL="$(scripts/postgres-start)" .venv/bin/python -m bench.engine'
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
            f"bench/engine.py: cannot {'drop' if drop_only else 'create'} database {name!r}"
            f" through DATABASE_URL's server (the role needs CREATEDB): {exc}"
        ) from None


def configure_env(bench_url: str) -> None:
    """Environment read by config.settings; spawned workers inherit it."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DEBUG"] = "1"
    os.environ["DATABASE_URL"] = bench_url
    os.environ["BOSUN_DOORBELL"] = "bench.engine.noop"
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def setup_django() -> None:
    import django

    django.setup()


# --- worker processes -------------------------------------------------------


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

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        if backend_cpu_s(backend) is None:
            backend = None  # the server is not on this machine
        pipe.send(("ready", os.getpid()))
        while True:
            message = pipe.recv()
            if message[0] == "stop":
                break
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


def count_steps(run_ids: list[int]) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs_steprun WHERE run_id = ANY(%s)", [run_ids])
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
            " WHERE r.id = ANY(%s) GROUP BY r.id ORDER BY r.id",
            [run_ids],
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


FLOOR_UPDATE = (
    "UPDATE runs_run SET current_step = %s, seq = seq + 1, steps_executed = steps_executed + 1,"
    " tool_calls = tool_calls + 1, lease_expires_at = clock_timestamp() + interval '60 seconds'"
    " WHERE id = %s"
)


def floor_row_shape() -> tuple[str, dict]:
    """The INSERT of a step row with the columns the engine writes
    (`runs.engine.store.STEP_RUN_COLUMNS`), and the model's defaults for them."""
    from runs.engine.store import STEP_RUN_COLUMNS
    from runs.models import StepRun

    fields = {field.column: field for field in StepRun._meta.concrete_fields}
    defaults = {column: fields[column].get_default() for column in STEP_RUN_COLUMNS}
    defaults.update(attempt=1, kind="tool", status="succeeded", edge="next", worker="floor")
    holders = ", ".join(["%s"] * len(STEP_RUN_COLUMNS))
    insert = f"INSERT INTO runs_steprun ({', '.join(STEP_RUN_COLUMNS)}) VALUES ({holders})"
    return insert, defaults


def floor(conninfo: str, run_ids: list[int]) -> dict[str, float | None]:
    """Raw psycopg, one connection: per step BEGIN; INSERT step; UPDATE run; COMMIT.
    Returns wall, client CPU and server backend CPU seconds."""
    import psycopg
    from psycopg.types.json import Jsonb

    insert, defaults = floor_row_shape()
    with psycopg.connect(conninfo) as pg:
        cursor = pg.cursor()
        backend = pg.info.backend_pid
        server0 = backend_cpu_s(backend)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for run_id in run_ids:
            for seq in range(1, STEPS + 1):
                row = dict(defaults, run_id=run_id, seq=seq, step_key=f"echo{seq}")
                row["input"] = row["output"] = Jsonb({"value": seq})
                row["started_at"] = row["finished_at"] = datetime.now(UTC)
                row["duration_ms"] = 0.01
                cursor.execute(insert, list(row.values()))
                cursor.execute(FLOOR_UPDATE, (f"echo{seq + 1}", run_id))
                pg.commit()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        server = None if server0 is None else backend_cpu_s(backend) - server0
    return {"wall": wall, "cpu": cpu, "server": server}


def measure(name: str, run_ids: list[int], workers: Workers, conninfo: str) -> dict:
    """One phase: "floor" (raw psycopg), "one" or "two" (engine worker processes).

    Returns steps/s, the per-process times, advance_run outcomes and the
    CPUs' worth of time that processes other than the bench used meanwhile.
    """
    busy0 = machine_busy_s()
    if name == "floor":
        times = [floor(conninfo, run_ids)]
        wall, outcomes = times[0]["wall"], Counter()
    else:
        batches = [run_ids] if name == "one" else [run_ids[0::2], run_ids[1::2]]
        wall, outcomes, times, _ = workers.advance(batches)
    busy1 = machine_busy_s()
    others = float("nan")
    if busy0 is not None and busy1 is not None:
        ours = sum(t["cpu"] + (t["server"] or 0.0) for t in times)
        others = max(0.0, (busy1 - busy0 - ours) / wall)
    return {
        "rate": count_steps(run_ids) / wall,
        "times": times,
        "outcomes": dict(outcomes),
        "others": others,
    }


def statements_per_run(version) -> list[str]:
    """The SQL statements one warm worker sends for one 10-step run."""
    from django.db import connection

    from runs.engine import advance_run

    warm, counted = start_runs(version, 2, "statements")
    advance_run(warm)
    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        advance_run(counted)
    return seen


def quiet(r: dict) -> bool:
    return math.isnan(r["others"]) or r["others"] < QUIET_CPUS


def kind_of(sql: str) -> str:
    if "fence = fence + 1" in sql:
        return "claim"
    if "INSERT INTO runs_steprun" in sql:
        return "checkpoint (run update + step row)"
    if sql.startswith("UPDATE runs_run"):
        return "run-only update"
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
    """start_run -> terminal through a real qcluster.

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
    with tempfile.TemporaryFile("w+", prefix="bosun-bench-qcluster-") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
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
                    raise RuntimeError("qcluster exited")
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
            say("qcluster log (tail):\n" + "".join(log.readlines()[-30:]))
            raise
        finally:
            stop_cluster(proc)
    return times, split, problems


# --- main -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--check-targets", action="store_true", help="exit 2 when a target is missed"
    )
    args = parser.parse_args(argv)

    bench_db = os.environ.get("BOSUN_BENCH_DB", "bosun_bench")
    admin, bench_url, conninfo = bench_urls(os.environ.get("DATABASE_URL", ""), bench_db)
    os.chdir(ROOT)
    t_start = time.perf_counter()
    say(f"bench database {bench_db!r}: recreating and migrating ...")
    recreate_database(admin, bench_db)
    workers = None
    try:
        configure_env(bench_url)
        setup_django()
        from django.core.management import call_command
        from django.db import connection

        from runs.samples import install_workflow

        call_command("migrate", verbosity=0, interactive=False)
        version = install_workflow(workflow_spec())
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            server = cursor.fetchone()[0].split(" on ")[0]
        say(
            f"server: {server}; client: Python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPU(s) shared by the server and the workers"
        )
        say(
            f"workflow: {ECHO_STEPS} echo tool steps + 1 end step = {STEPS} steps a run, "
            f"each checkpointed with its StepRun row; {RUNS} runs a measurement"
        )

        statements = statements_per_run(version)
        say(
            f"SQL statements for one {STEPS}-step run by a warm worker: {len(statements)}"
            f" ({len(statements) / STEPS:.1f} a step):"
            f" {', '.join(f'{n} {kind}' for kind, n in Counter(map(kind_of, statements)).items())}"
        )

        workers = Workers(2)
        warm = start_runs(version, 2, "warm-up")
        workers.advance([[warm[0]], [warm[1]]])  # imports, caches, connections

        failures: list[str] = []
        rounds = []
        say("")
        say(
            f"{'round':>5}  {'floor':>7}  {'engine 1w':>9}  {'engine 2w':>9}  {'ratio':>5}"
            f"  {'2w/1w':>5}  {'other load':>11}"
        )
        say(
            f"{'':>5}  {'steps/s':>7}  {'steps/s':>9}  {'steps/s':>9}  {'':>5}  {'':>5}"
            f"  {'CPUs':>11}"
        )
        number = 0
        while number < args.max_rounds and sum(quiet(r) for r in rounds) < args.rounds:
            number += 1
            ids = {
                name: start_runs(version, RUNS, f"{name}-{number}")
                for name in ("floor", "one", "two")
            }
            r: dict = {}
            # Alternate the order between rounds, so a drift in machine load
            # does not favour one side of a comparison.
            order = ["floor", "one", "two"] if number % 2 else ["two", "one", "floor"]
            for name in order:
                r[name] = measure(name, ids[name], workers, conninfo)
            failures += check_runs(ids["one"]) + check_runs(ids["two"])
            for name in ("one", "two"):
                if r[name]["outcomes"] != {"finished": RUNS}:
                    failures.append(f"advance_run outcomes {r[name]['outcomes']}")
            r["ratio"] = r["one"]["rate"] / r["floor"]["rate"]
            r["speedup"] = r["two"]["rate"] / r["one"]["rate"]
            r["others"] = max(r[name]["others"] for name in order)
            rounds.append(r)
            say(
                f"{number:>5}  {r['floor']['rate']:>7.0f}  {r['one']['rate']:>9.0f}"
                f"  {r['two']['rate']:>9.0f}  {r['ratio']:>5.2f}  {r['speedup']:>5.2f}"
                f"  {r['others']:>11.2f}{'' if quiet(r) else '  (busy: not counted)'}"
            )

        if args.profile:
            ids = start_runs(version, RUNS, "profile")
            _, _, _, reports = workers.advance([ids], profile=True)
            failures += check_runs(ids)
            say("\ncProfile of one worker advancing 200 runs (overhead inflates the totals):")
            say(reports[0])
        workers.close()
        workers = None

        say(
            f"\nlatency: manage.py qcluster, start_run -> terminal, {LATENCY_WARMUP} warm-up"
            f" runs then {LATENCY_SAMPLES} measured ..."
        )
        times, split, latency_problems = latency(version, LATENCY_SAMPLES)
        failures += latency_problems
    finally:
        if workers is not None:
            workers.close()
        from django.db import connections

        connections.close_all()
        if not args.keep:
            recreate_database(admin, bench_db, drop_only=True)

    counted = [r for r in rounds if quiet(r)]
    if len(counted) < args.rounds:
        counted = rounds
    all_rounds, rounds = rounds, counted

    def med(key: str) -> float:
        return statistics.median(r[key]["rate"] for r in rounds)

    engine, floor_rate, two = med("one"), med("floor"), med("two")
    ratio = engine / floor_rate  # of the medians, so the RESULT line is self-consistent
    speedup = two / engine
    run10 = statistics.median(times)

    def per_step(key: str, field: str) -> str:
        values = [r[key]["times"][0][field] for r in rounds]
        if any(v is None for v in values):
            return "    n/a"
        return f"{statistics.median(values) * 1000 / (RUNS * STEPS):7.3f}"

    say("")
    say(
        f"medians of {len(rounds)} of {len(all_rounds)} round(s) of {RUNS} runs x {STEPS} steps"
        f" (a round counts when other processes used under {QUIET_CPUS} CPU meanwhile)"
    )
    if rounds is all_rounds and not all(quiet(r) for r in rounds):
        say(
            f"WARNING: fewer than {args.rounds} quiet rounds in {len(all_rounds)}: other"
            f" processes were using the {os.cpu_count()} CPUs, and the figures, the two-worker"
            " speed-up above all, understate the engine; run again on a quiet machine"
        )
    say(f"{'':44} {'steps/s':>8}  {'wall ms':>7}  {'client CPU':>10}  {'server CPU':>10}  (a step)")
    say(
        f"{'floor  raw psycopg, BEGIN/INSERT/UPDATE/COMMIT':44} {floor_rate:8.0f}"
        f"  {1000 / floor_rate:7.3f}  {per_step('floor', 'cpu'):>10}"
        f"  {per_step('floor', 'server'):>10}"
    )
    say(
        f"{'engine advance_run, 1 worker process':44} {engine:8.0f}  {1000 / engine:7.3f}"
        f"  {per_step('one', 'cpu'):>10}  {per_step('one', 'server'):>10}"
    )
    say(f"{'engine advance_run, 2 worker processes':44} {two:8.0f}  {1000 / two:7.3f}")
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
    figures = {"ratio": ratio, "two_worker_speedup": speedup, "run10_latency_ms": run10}
    missed = []
    for name, target in TARGETS.items():
        ok = figures[name] <= target if name.endswith("_ms") else figures[name] >= target
        if not ok:
            missed.append(name)
        say(
            f"target {name} {'<=' if name.endswith('_ms') else '>='} {target}:"
            f" {figures[name]:.2f} {'ok' if ok else 'MISSED'}"
        )
    checked = len(all_rounds) * 2 * RUNS + LATENCY_SAMPLES + (RUNS if args.profile else 0)
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
        f"RESULT engine_steps_per_s={engine:.0f} floor_steps_per_s={floor_rate:.0f}"
        f" ratio={ratio:.2f} two_worker_speedup={speedup:.2f} run10_latency_ms={run10:.1f}"
    )
    if failures:
        return 1
    if args.check_targets and missed:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
