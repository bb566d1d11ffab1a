"""Economics benchmark: the lead workload through a straightforward script,
an agent loop and Bosun, on the same vendors, faults and price table.

    DATABASE_URL="$(scripts/postgres-start)" .venv/bin/python -m bench.economics
    .venv/bin/python -m bench.economics --weeks 1 --per-week 200   # a quicker look

The workload is `demo.sample_data.leads.lead_stream`: 500 inbound leads a
week for 4 weeks with the overlap real lead flow has (2,000 records naming
1,176 companies), the same records for all three sides. See bench/README.md.

- script (bench/script_baseline.py), the headline baseline: per record,
  normalise, enrich once, score once (the workflow's `fast` score call and
  rubric), draft once if it qualifies, send after the same simulated
  review; no dedup, no cache, no prompt caching; a crash starts the record
  over. Run a second time with its system prompt marked for prompt caching
  (`script+cache`), to show what caching alone buys; the headline stays the
  plain script.
- agent loop (bench/naive_agent.py): a model picks the next tool each turn
  and is sent the whole conversation every turn (`balanced` model).
- Bosun: runs started with `engine.start_run` and executed by a real
  `manage.py worker` (2 worker processes) and `manage.py sweeper`, with
  real SIGKILLs of worker processes inside paid calls and at random points
  (bench/bosun_side.py); the bench approves the reviews.

Counts are taken at the vendors: `VendorCall` for enrichco and mailco, the
metered model's bill (bench/metered.py) for the model, priced with
`BOSUN_PRICES` and prompt caching as the provider bills it, `BOSUN_TOOL_PRICES` and `BOSUN_CREDIT_PRICES`; Bosun's are
checked against the runs' recorded costs.

The last line is machine-readable:
RESULT enrich_per_company=… usd_total_per_qualified=… baseline_usd_total_per_qualified=…
reduction_total=… reduction_model=… reduction_model_vs_cached_script=… respent_per_crash_usd=…
qualified=… baseline_qualified=…
(baseline = the script). Exit status: 1 when a sanity check fails, 2 with
--check-targets when a target is missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/economics.py`
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

# Parameters, fixed before measuring (see bench/README.md).
ENRICH_CREDITS = 5
FAULT_429_RATE = 0.05
# Kills inside paid calls: per run (Bosun) or record (script, agent loop)
# and paid call, the share chosen; with random kills about one run in 40.
KILL_RATES = {"enrichco": 1 / 80, "llm-score": 1 / 80, "llm-draft": 1 / 80, "mailco": 1 / 80}
RANDOM_KILL_EVERY = 200  # one started run in 200 also loses its worker at a random point
WINDOW = 24  # runs queued or running at most (a bounded batch submission)
WORKERS = 2
BENCH_DB = "bosun_bench_economics"
TIMEOUT_S = 45 * 60


def noop(*args) -> None:
    """Review notifier: the bench is the reviewer (no mail to send)."""


def say(text: str = "") -> None:
    print(text, flush=True)


def configure(tmp: str, db_env: dict[str, str | None], workers: int) -> None:
    """Environment for the bench process and the worker processes it starts."""
    kill_dir = os.path.join(tmp, "kills")
    os.makedirs(kill_dir)
    rates = ",".join(f"{name}={rate}" for name, rate in KILL_RATES.items())
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.economics_settings",
        DEBUG="0",
        SECRET_KEY=os.environ.get("SECRET_KEY", "bench-economics-not-a-secret"),
        BOSUN_DEMO="1",
        BOSUN_ENRICH_CREDITS=str(ENRICH_CREDITS),
        BOSUN_VENDOR_FAULTS=f"enrichco.429={FAULT_429_RATE}",
        BOSUN_VENDOR_RETRY_AFTER_S="0.05",
        BOSUN_VENDOR_KILL=f"dir={kill_dir},{rates}",
        BOSUN_BENCH_METER=os.path.join(tmp, "model-bill.jsonl"),
        BOSUN_REVIEW_NOTIFIER="bench.economics.noop",
        BOSUN_DOORBELL="runs.tasks.ring",
        BOSUN_WORKERS=str(workers),
        LOG_LEVEL="WARNING",
    )
    for name, value in db_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# --- the sides ------------------------------------------------------------------


@dataclass
class Side:
    name: str
    label: str
    seconds: float = 0.0
    enrichments: int = 0  # charged enrichment calls
    faults: int = 0
    credits: int = 0
    vendor_usd: Decimal = Decimal(0)
    sends: int = 0
    qualified: set[str] = field(default_factory=set)
    crashes: int = 0
    respent_tokens: int = 0
    respent_usd: Decimal = Decimal(0)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def vendor_totals() -> dict:
    from django.db.models import Count, Q, Sum

    from demo.models import VendorCall
    from runs.tools.base import priced

    totals: dict = {"credits": 0, "usd": Decimal(0)}
    for vendor in ("enrichco", "mailco"):
        row = VendorCall.objects.filter(vendor=vendor).aggregate(
            calls=Count("id"),
            charged=Count("id", filter=Q(credits__gt=0)),
            credits=Sum("credits", default=0),
            faults=Count("id", filter=Q(response__has_key="fault")),
        )
        totals[vendor] = row
        totals["credits"] += row["credits"]
        totals["usd"] += priced(vendor, row["credits"]).usd
    return totals


def measure(side: Side, work) -> Side:
    before = vendor_totals()
    started = time.perf_counter()
    work(side)
    side.seconds = side.seconds or time.perf_counter() - started
    after = vendor_totals()
    side.enrichments = after["enrichco"]["charged"] - before["enrichco"]["charged"]
    side.faults = after["enrichco"]["faults"] - before["enrichco"]["faults"]
    side.credits = after["credits"] - before["credits"]
    side.vendor_usd = after["usd"] - before["usd"]
    side.sends = after["mailco"]["charged"] - before["mailco"]["charged"]
    return side


def script_side(records, *, mark_system: bool):
    from bench import metered
    from bench.script_baseline import Script
    from policies.rubrics import latest_version
    from runs.llm.base import get_provider

    metered_model = get_provider("metered")
    assert isinstance(metered_model, metered.MeteredProvider)
    script = Script(
        provider=metered.HandWritten(metered_model, mark_system=mark_system),
        rubric=latest_version("icp").snapshot,
        random_crash_every=RANDOM_KILL_EVERY,
    )

    def work(side: Side) -> None:
        metered.SIDE = side.name
        for record in records:
            done = script.process(record.seq, record.input)
            side.crashes += done.crashes
            side.respent_tokens += done.respent.tokens
            side.respent_usd += done.respent.usd
            if done.route == "outreach":
                side.qualified.add(record.company)

    return work


def agent_side(records):
    from django.conf import settings

    from bench import metered
    from bench.naive_agent import NaiveAgent
    from demo.vendors import kill_planned
    from policies.rubrics import latest_version
    from runs.llm.base import get_provider

    metered_model = get_provider("metered")
    assert isinstance(metered_model, metered.MeteredProvider)
    agent = NaiveAgent(
        # Its own client, without prompt caching, as the script's.
        provider=metered.HandWritten(metered_model),
        model=settings.BOSUN_MODEL_TIERS["balanced"],
        rubric=latest_version("icp").snapshot,
        crash_at_score=lambda seq: kill_planned("llm-score", f"record-{seq}"),
    )

    def work(side: Side) -> None:
        metered.SIDE = side.name
        for record in records:
            done = agent.process(record.seq, record.input)
            side.crashes += done.crashes
            side.respent_tokens += done.respent_tokens
            side.respent_usd += done.respent_usd
            if done.route == "outreach":
                side.qualified.add(record.company)

    return work


def bosun_side(records, tmp: str, *, window: int, workers: int):
    from bench.bosun_side import Cluster, drive

    def work(side: Side) -> None:
        from django.conf import settings

        from runs.models import Run, Score

        cluster = Cluster(env=dict(os.environ), log_dir=tmp, worker_count=workers)
        cluster.up()
        try:
            driven = drive(
                records,
                cluster,
                window=window,
                random_kill_every=RANDOM_KILL_EVERY,
                seed=11,
                timeout_s=TIMEOUT_S,
                progress=say,
            )
        finally:
            cluster.stop()
        if driven.unsettled:
            say("worker log (tail):\n" + cluster.log_tail("worker"))
        run_ids = list(driven.company_of)
        outreach = Score.objects.filter(run_id__in=run_ids, route="outreach")
        side.qualified = {driven.company_of[r] for r in outreach.values_list("run_id", flat=True)}
        kill_dir = settings.BOSUN_VENDOR_KILL["dir"]
        hooks = sorted(os.listdir(kill_dir))
        by_point: dict[str, int] = {}
        for marker in hooks:
            point = marker.split("-run-")[0]
            by_point[point] = by_point.get(point, 0) + 1
        side.crashes = len(hooks) + driven.random_kills
        side.seconds = driven.seconds
        statuses = Run.objects.filter(pk__in=run_ids).values_list("status", flat=True)
        side.extra = {
            "runs": len(run_ids),
            "driven": driven,
            "kills_by_point": by_point,
            "random_kills": driven.random_kills,
            "not_succeeded": sum(1 for s in statuses if s != "succeeded"),
            "replaced": cluster.replaced,
            "restarts": cluster.restarts,
        }

    return work


def bosun_recorded(side: Side, bill) -> None:
    """The runs' recorded costs beside the vendors' bills: what was paid and
    not recorded is what the crashes made Bosun pay again."""
    from django.db.models import Max, Sum

    from runs.models import Run, StepRun
    from runs.tools.base import priced

    run_ids = list(side.extra["driven"].company_of)
    runs = Run.objects.filter(pk__in=run_ids)
    recorded = runs.aggregate(
        model=Sum("model_usd", default=0),
        vendor=Sum("vendor_usd", default=0),
        tin=Sum("tokens_in", default=0),
        tout=Sum("tokens_out", default=0),
    )
    credits: dict[str, int] = {}
    for per_vendor in runs.values_list("credits", flat=True):
        for vendor, n in (per_vendor or {}).items():
            credits[vendor] = credits.get(vendor, 0) + n
    steps = StepRun.objects.filter(run_id__in=run_ids, status="succeeded")
    largest = steps.aggregate(
        usd=Max("model_usd"), tokens_in=Max("tokens_in"), tokens_out=Max("tokens_out")
    )
    recorded_vendor = sum((priced(v, n).usd for v, n in credits.items()), Decimal(0))
    respent_model = bill.usd - recorded["model"]
    respent_vendor = side.vendor_usd - recorded_vendor
    side.respent_usd = respent_model + respent_vendor
    side.respent_tokens = bill.tokens - recorded["tin"] - recorded["tout"]
    side.extra.update(
        recorded_model_usd=recorded["model"],
        recorded_vendor_usd=recorded["vendor"],
        recorded_credits=sum(credits.values()),
        respent_model_usd=respent_model,
        respent_vendor_usd=respent_vendor,
        one_step_usd=largest["usd"] or Decimal(0),
        one_step_tokens=(largest["tokens_in"] or 0) + (largest["tokens_out"] or 0),
    )


def run_all(args, tmp: str) -> tuple[list, dict[str, Side], dict]:
    import django

    django.setup()
    from django.core.management import call_command

    from bench.metered import read_bill
    from demo.sample_data.leads import lead_stream
    from demo.samples import install_samples

    call_command("migrate", verbosity=0, interactive=False)
    install_samples()
    records = lead_stream(weeks=args.weeks, per_week=args.per_week)
    sides = {
        "bosun": Side("bosun", "Bosun"),
        "script": Side("script", "script"),
        "script_cached": Side("script_cached", "script+cache"),
        "agent": Side("agent", "agent loop"),
    }
    say(
        f"bosun: {len(records)} records through manage.py worker ({args.workers} workers) + sweeper ..."
    )
    measure(sides["bosun"], bosun_side(records, tmp, window=args.window, workers=args.workers))
    say(f"script: {len(records)} records ...")
    measure(sides["script"], script_side(records, mark_system=False))
    say(f"script, its system prompt marked for prompt caching: {len(records)} records ...")
    measure(sides["script_cached"], script_side(records, mark_system=True))
    say(f"agent loop: {len(records)} records ...")
    measure(sides["agent"], agent_side(records))
    bills = read_bill(os.environ["BOSUN_BENCH_METER"])
    bosun_recorded(sides["bosun"], bills["bosun"])
    return records, sides, bills


def main(argv: list[str] | None = None) -> int:
    from bench._engine_db import open_database
    from demo.sample_data.leads import PER_WEEK, WEEKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weeks", type=int, default=WEEKS, help=f"weeks of leads ({WEEKS})")
    parser.add_argument("--per-week", type=int, default=PER_WEEK, help=f"leads a week ({PER_WEEK})")
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="worker processes of the cluster"
    )
    parser.add_argument("--window", type=int, default=WINDOW, help="runs in flight at most")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--check-targets", action="store_true", help="exit 2 on a missed target")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    tmp = tempfile.mkdtemp(prefix="bosun-economics-")
    db = open_database(
        os.environ.get("DATABASE_URL", ""), os.environ.get("BOSUN_BENCH_DB", BENCH_DB)
    )
    say(db.create())
    configure(tmp, db.env(), args.workers)
    started = time.perf_counter()
    try:
        records, sides, bills = run_all(args, tmp)
        from django.db import connection

        say(f"database: {db.describe(connection)}; {os.cpu_count()} CPU(s)")
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.keep:
            say(f"kept: {db.location()}")
        else:
            db.drop()
    figures = report.print_report(records, sides, bills, args)
    problems = report.sanity(sides)
    for problem in problems:
        say(f"CHECK FAILED: {problem}")
    missed = report.targets(figures, sides)
    say(f"total bench time {time.perf_counter() - started:.0f} s")
    say(report.result_line(figures))
    if problems:
        return 1
    return 2 if missed and args.check_targets else 0


if __name__ == "__main__":
    # Run as the importable module, so `bench.economics.noop` is this module.
    sys.exit(importlib.import_module("bench.economics").main())
