"""Experiment benchmark: an eval set of 200 cases through real worker processes.

    .venv/bin/python -m bench.experiments                          # SQLite
    DATABASE_URL=postgresql://USER:PASS@HOST:PORT/DB .venv/bin/python -m bench.experiments

The sample `lead-qualification` workflow (normalise, knowledge check, dedup,
a paid enrichment read, a scored route, a drafted email reviewed by a
person, the send, a knowledge write) on the offline scripted provider:

1. `--recorded` live runs (100) are started and run by the cluster until
   each waits for its review: their enrichment calls are recorded (paid).
2. An eval set of `--cases` (200) cases: one per recorded run (its input,
   the run as `tools_from`), the rest new leads with no recording.
3. An experiment of the set against the current version, executed by a
   `manage.py worker` cluster (`--workers` processes, the production
   doorbell and ORM broker) and a `manage.py sweeper`; timed from the start
   of the experiment until every case is scored.

It prints the wall time, and what the experiment paid against what it
would have paid live: the model spend it incurred (scripted: estimates at
the requested model's prices), plus what its stubbed calls (the sends, the
enrichments with no recording) and its replayed reads (the enrichments
answered from a recording) would have cost. No vendor is called in step 3:
the fake vendor's call count is printed before and after.

The database is the bench's own (`bosun_bench_experiments` on the
PostgreSQL server of DATABASE_URL, or a SQLite file in a temporary
directory), migrated and dropped at the end. The last line is the
machine-readable RESULT line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from decimal import Decimal
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

SLUG = "lead-qualification"
TITLES = ["VP Operations", "Head of Sales", "Engineer", "Director of Growth", "Owner"]


def lead(n: int) -> dict:
    """A lead whose attributes vary with n (so the scores and routes vary)."""
    return {
        "company": f"Company {n}",
        "email": f"person{n}@company{n}.example",
        "website": f"https://company{n}.example",
        "title": TITLES[n % len(TITLES)],
        "first_name": f"P{n}",
    }


def _wait(check, timeout_s: float, what: str, every_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)


def run(args: argparse.Namespace, log) -> dict:
    from django.conf import settings
    from django.db.models import Count, Sum

    from demo.models import VendorCall
    from demo.samples import install_samples
    from evals.experiments import experiment_report, refresh_experiment, start_experiment
    from evals.models import EvalCase, EvalSet
    from runs.engine import start_run
    from runs.models import Run, ToolCallRecord, Workflow

    settings.BOSUN_DOORBELL = "runs.tasks.ring"  # start_run rings the queue, as in production
    env = {**os.environ, "BOSUN_DOORBELL": "runs.tasks.ring", "BOSUN_WORKERS": str(args.workers)}
    install_samples()
    workflow = Workflow.objects.get(slug=SLUG)
    version = workflow.current_version
    cluster, sweeper = (
        spawn_manage("worker", env=env, log=log),
        spawn_manage("sweeper", env=env, log=log),
    )
    try:
        say(f"recording {args.recorded} live runs ...")
        recorded = [
            start_run(workflow=workflow, input=lead(n)).run.pk for n in range(args.recorded)
        ]
        active = Run.objects.filter(pk__in=recorded, status__in=("queued", "running"))
        _wait(lambda: not active.exists(), args.timeout, "the live runs to settle")
        live_calls = VendorCall.objects.count()
        eval_set = EvalSet.objects.create(workflow=workflow, name="bench")
        sources = dict(Run.objects.filter(pk__in=recorded).values_list("pk", "input"))
        cases = [
            EvalCase(
                eval_set=eval_set,
                name=f"case {n}",
                input=sources[run_id] if n < len(recorded) else lead(10_000 + n),
                source_run_id=run_id if n < len(recorded) else None,
                expectations=[
                    {
                        "check": "condition",
                        "when": {"path": "status", "op": "==", "value": "succeeded"},
                    }
                ],
            )
            for n, run_id in enumerate(recorded + [None] * (args.cases - len(recorded)))
        ][: args.cases]
        EvalCase.objects.bulk_create(cases)
        say(f"experiment: {len(cases)} cases through {args.workers} worker process(es) ...")
        t0 = time.perf_counter()
        experiment = start_experiment(eval_set=eval_set, versions=[version], actor="bench")
        dispatched = time.perf_counter() - t0

        def done():
            return refresh_experiment(experiment_id=experiment.pk).status == "done"

        _wait(done, args.timeout, "the experiment to finish", every_s=0.2)
        wall = time.perf_counter() - t0
    finally:
        stop_cluster(cluster)
        stop_cluster(sweeper)
    [arm] = experiment_report(experiment=experiment).arms
    runs = Run.objects.filter(mode="experiment")
    ledger = ToolCallRecord.objects.filter(run__in=runs)
    by_status = {
        status: (count, would or Decimal(0))
        for status, count, would in ledger.values("status")
        .annotate(n=Count("id"), w=Sum("would_cost_usd"))
        .values_list("status", "n", "w")
    }
    return {
        "cases": len(cases),
        "passed": arm.passed,
        "failed": arm.failed,
        "errors": arm.errors,
        "wall_s": wall,
        "dispatch_s": dispatched,
        "paid": arm.cost_usd,
        "would": arm.would_cost_usd,
        "live": arm.live_cost_usd,
        "by_status": by_status,
        "vendor_calls_live": live_calls,
        "vendor_calls_after": VendorCall.objects.count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--recorded", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args(argv)
    args.recorded = min(args.recorded, args.cases)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    db = open_database(
        os.environ.get("DATABASE_URL", ""),
        os.environ.get("BOSUN_BENCH_DB", "bosun_bench_experiments"),
    )
    os.chdir(ROOT)
    say(f"{db.create()}: migrating ...")
    log_path = Path(tempfile.mkdtemp(prefix="bosun-bench-experiments-")) / "cluster.log"
    try:
        configure_env(db.env())
        setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        with open(log_path, "w+") as log:
            try:
                result = run(args, log)
            except BaseException:
                log.flush()
                log.seek(0)
                say("cluster log (tail):\n" + "".join(log.readlines()[-30:]))
                raise
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with contextlib.suppress(Exception):
                db.drop()
    stubbed = result["by_status"].get("stubbed", (0, Decimal(0)))
    replayed = result["by_status"].get("replayed", (0, Decimal(0)))
    say("")
    say(
        f"cases: {result['cases']} ({result['passed']} passed, {result['failed']} failed, {result['errors']} did not finish)"
    )
    say(
        f"wall time: {result['wall_s']:.1f} s ({result['cases'] / result['wall_s']:.1f} cases/s; starting them took {result['dispatch_s']:.1f} s)"
    )
    say(f"cost incurred (model spend):                  ${result['paid']:.4f}")
    say(f"  stubbed calls ({stubbed[0]}) would have cost:        ${stubbed[1]:.4f}")
    say(f"  reads answered from recordings ({replayed[0]}) cost live: ${replayed[1]:.4f}")
    say(f"cost it would have incurred live:             ${result['live']:.4f}")
    say(
        f"vendor calls: {result['vendor_calls_live']} while recording, {result['vendor_calls_after']} after the experiment"
    )
    say(
        f"RESULT cases={result['cases']} wall_s={result['wall_s']:.2f} paid_usd={result['paid']:.6f}"
        f" live_usd={result['live']:.6f} stubbed={stubbed[0]} replayed={replayed[0]}"
        f" vendor_calls_during={result['vendor_calls_after'] - result['vendor_calls_live']}"
    )
    ok = result["errors"] == 0 and result["vendor_calls_after"] == result["vendor_calls_live"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
