"""Recovery benchmark: how long a run waits after its worker is killed mid-step.

    DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB .venv/bin/python -m bench.recovery

The real path: a `manage.py worker` cluster (2 worker processes, the
production doorbell) and a `manage.py sweeper` (its default 1 s interval)
on a fresh PostgreSQL database (`bosun_bench_recovery`). Each run is one
4-second step (the `wait` tool, standing in for a slow vendor or model
call) and an end. For each run the bench waits until a worker has claimed
it, lets the step run for a random 0.3-3.5 s, SIGKILLs that worker, and
times kill -> the run claimed by another worker (its `lease_owner`
changes, read from the database); then it waits for the run to succeed.

Three cases are measured in the same run:

* **killed**: `manage.py worker` with the defaults (`BOSUN_LEASE_S` 8 s,
  a heartbeat every 2 s while the step runs); the worker is SIGKILLed. Its
  sentinel sees it die and ends its leases at once.
* **frozen**: the same cluster, the worker SIGSTOPped (no sentinel sees
  that): it stops beating, its lease runs out, the sweeper rings. It is
  SIGCONTed once the run was taken over (whatever it writes then is fenced
  out).
* **baseline**: the earlier way, django-q2's plain `qcluster` with the
  earlier default lease of 90 s, which covered a whole step: the run of a
  killed worker waited out the lease.

The last line is the machine-readable RESULT line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._engine_db import open_database  # noqa: E402
from bench.engine import (  # noqa: E402
    configure_env,
    say,
    setup_django,
    spawn_manage,
    stop_cluster,
)

STEP_S = 4.0
SLUG = "bench-recovery"


def workflow_spec() -> dict:
    return {
        "name": "Bench: one slow step",
        "slug": SLUG,
        "entry_step": "slow",
        "steps": [
            {
                "key": "slow",
                "kind": "tool",
                "config": {"tool": "wait", "args": {"seconds": STEP_S}},
                "timeout_s": 30,
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done"}},
        ],
    }


def _owner(run_id: int) -> tuple[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT status, lease_owner FROM runs_run WHERE id = %s", [run_id])
        status, owner = cursor.fetchone()
    return status, owner


def _until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s:.0f} s")
        time.sleep(0.01)


def _kill_and_time(run_id: int, lease_s: float, sig: int, rng: random.Random) -> float:
    """Kill (or freeze) the run's worker mid-step; seconds until another
    worker has the run."""
    _, victim = _until(
        lambda: (s := _owner(run_id))[0] == "running" and s[1] and s,
        60,
        f"run {run_id} not claimed",
    )
    time.sleep(rng.uniform(0.3, STEP_S - 0.5))
    pid = int(victim.split(":")[1])
    os.kill(pid, sig)
    killed = time.monotonic()
    _until(
        lambda: (s := _owner(run_id))[1] not in ("", victim) or s[0] != "running",
        lease_s + 60,
        f"run {run_id} not taken over",
    )
    waited = time.monotonic() - killed
    if sig == signal.SIGSTOP:
        os.kill(pid, signal.SIGCONT)  # it thaws: whatever it writes now is fenced out
    status = _until(
        lambda: (s := _owner(run_id)[0]) in ("succeeded", "failed") and s,
        STEP_S + 60,
        f"run {run_id} not finished",
    )
    if status != "succeeded":
        raise RuntimeError(f"run {run_id} ended {status}")
    return waited


def measure(
    version,
    *,
    label: str,
    command: str,
    sig: int,
    lease_s: float,
    runs: int,
    rng: random.Random,
    log_dir: str,
) -> list[float]:
    """Kill (or freeze) the worker of each of `runs` runs mid-step; the
    seconds from each kill to the run's claim by another worker."""
    from django.conf import settings

    from runs.engine import start_run

    settings.BOSUN_DOORBELL = "runs.tasks.ring"  # start_run rings the queue, as in production
    env = {
        **os.environ,
        "BOSUN_DOORBELL": "runs.tasks.ring",
        "BOSUN_LEASE_S": str(lease_s),
        "BOSUN_WORKERS": "2",
    }
    waits: list[float] = []
    with open(os.path.join(log_dir, f"{label}.log"), "w+") as log:
        cluster, sweeper = (
            spawn_manage(command, env=env, log=log),
            spawn_manage("sweeper", env=env, log=log),
        )
        try:
            for n in range(runs):
                run_id = start_run(workflow=version.workflow, input={"n": n, "label": label}).run.pk
                waits.append(_kill_and_time(run_id, lease_s, sig, rng))
                say(f"  {label}: run {n + 1}/{runs} taken over {waits[-1]:.2f} s after the kill")
        except BaseException:
            log.flush()
            log.seek(0)
            say("log (tail):\n" + "".join(log.readlines()[-30:]))
            raise
        finally:
            stop_cluster(cluster)
            stop_cluster(sweeper)
    return waits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="killed runs with heartbeats")
    parser.add_argument("--baseline-runs", type=int, default=3, help="killed runs, 90 s lease")
    parser.add_argument(
        "--log-dir",
        default=None,
        help="keep the cluster and sweeper logs here (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    # A TERM (a timeout, a supervisor) unwinds like Ctrl-C, so the clusters
    # the bench started are stopped and its database dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="bosun-bench-recovery-")
    os.makedirs(log_dir, exist_ok=True)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("bench/recovery.py needs a PostgreSQL DATABASE_URL")
    db = open_database(url, os.environ.get("BOSUN_BENCH_DB", "bosun_bench_recovery"))
    os.chdir(ROOT)
    say(f"{db.create()}: migrating ...")
    rng = random.Random(20261206)
    try:
        configure_env(db.env())
        os.environ["LOG_LEVEL"] = "INFO"
        setup_django()
        from django.core.management import call_command

        from demo.samples import install_workflow

        call_command("migrate", verbosity=0, interactive=False)
        version = install_workflow(workflow_spec())
        # (label, command, signal, lease, runs)
        cases = [
            ("killed", "worker", signal.SIGKILL, 8.0, args.runs),
            ("frozen", "worker", signal.SIGSTOP, 8.0, args.runs),
            ("baseline", "qcluster", signal.SIGKILL, 90.0, args.baseline_runs),
        ]
        killed, frozen, baseline = (
            measure(
                version,
                label=label,
                command=command,
                sig=sig,
                lease_s=lease_s,
                runs=runs,
                rng=rng,
                log_dir=log_dir,
            )
            for label, command, sig, lease_s, runs in cases
        )
    finally:
        from django.db import connections

        connections.close_all()
        with contextlib.suppress(Exception):
            db.drop()
    say("")
    rows = [
        ("worker killed (SIGKILL), manage.py worker, lease 8 s", killed),
        ("worker frozen (SIGSTOP), manage.py worker, lease 8 s", frozen),
        ("baseline: worker killed, plain qcluster, lease 90 s", baseline),
    ]
    for name, waits in rows:
        say(
            f"kill -> taken over, {name}: median {statistics.median(waits):.2f} s,"
            f" max {max(waits):.2f} s over {len(waits)} runs"
        )
    say(f"logs: {log_dir}")
    ratio = statistics.median(baseline) / statistics.median(killed)
    say(f"baseline / killed: {ratio:.0f}x")
    say(
        f"RESULT killed_median_s={statistics.median(killed):.2f} killed_max_s={max(killed):.2f}"
        f" frozen_median_s={statistics.median(frozen):.2f}"
        f" baseline_median_s={statistics.median(baseline):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
