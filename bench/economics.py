"""Economics benchmark: the lead workload through a naive agent and through Bosun.

    .venv/bin/python -m bench.economics              # SQLite in a temporary directory
    DATABASE_URL=postgresql://… .venv/bin/python -m bench.economics

The workload is `demo.sample_data.leads`: 500 inbound leads a week for 4
weeks with the overlap the articles describe (2,000 records naming 1,176
companies: 1.70 records per company), 5 credits per enrichment. Both sides
meet the same faults: the enrichment vendor answers 429 to 5 % of calls,
and one run in 50 (records 25, 75, …) loses its worker right after the
model has answered its scoring call (the call is paid, its answer lost).

- naive (bench/naive_agent.py): the model picks the next tool each turn and
  is sent the whole conversation every turn; every record is processed, so
  every record is enriched again; no cache; a crash restarts the record.
- Bosun: the sample workflow `lead-qualification` run by the engine
  (`runs.engine.advance_run`, in this process): idempotent starts, a dedup
  gate on the contact's address, an enrichment step cached by the company's
  domain, the score step,
  and for outreach a draft, a review (approved by the bench) and a send. A
  crash is recovered the way the sweeper does it: the lease runs out and the
  run resumes at the step that had not been checkpointed.

Same tools (the sample vendors count calls and credits), same provider (the
`scripted` rules, with usage estimated at four characters a token, billed
at the price of the model each call asked for), same price table. The
naive agent asks the `balanced` model every turn; Bosun's score step asks
the `fast` model and its draft step the `balanced` one, as the sample
workflow says; a second line prices every call of both sides at the
`balanced` model, to show what the architecture alone saves. Dollars are
model spend; credits are reported apart (and blended at an assumed price).

The last line is machine-readable:
RESULT enrich_per_lead=… baseline_enrich_per_lead=… usd_per_qualified=…
baseline_usd_per_qualified=… reduction=… respent_tokens_per_crash=…
Exit status: 1 when a sanity check fails (the two sides qualify different
leads, a run did not settle), 2 with --check-targets when a target is
missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/economics.py`
    sys.path.insert(0, str(ROOT))

# Parameters, fixed before measuring (see bench/README.md).
ENRICH_CREDITS = 5
FAULT_429_RATE = 0.05
CRASH_EVERY = 50  # one run in 50 loses its worker ...
CRASH_OFFSET = 25  # ... records 25, 75, 125, …
USD_PER_CREDIT = Decimal("0.02")  # only for the blended line
BENCH_DB = "bosun_bench_economics"
TARGETS = {"enrich_per_lead": 1.0, "reduction": 0.80}


def noop(*args: Any) -> None:
    """Doorbell and reviewer notifier: the bench advances runs itself."""


class WorkerKilledHere(BaseException):
    pass


@dataclass
class Meter:
    """Every model call, billed at the price of the model it asked for."""

    side: str = ""
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tokens_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tokens_out: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    usd: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    usd_same_model: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    # Bosun runs whose scoring call loses its worker (once each).
    kill_runs: set[int] = field(default_factory=set)
    lost_tokens: int = 0
    score_call_tokens: list[int] = field(default_factory=list)


METER = Meter()


class MeteredProvider:
    """The `scripted` provider, billed like the model requested, with the
    benchmark's worker kill injected right after a scoring call is paid."""

    name = "metered"

    def complete(self, request):
        from django.conf import settings

        from runs.llm.base import cost_of
        from runs.llm.scripted import ScriptedProvider

        response = ScriptedProvider().complete(request)
        response = response.model_copy(update={"model": request.model})
        usage, side = response.usage, METER.side
        tokens = usage.input_tokens + usage.output_tokens
        METER.calls[side] += 1
        METER.tokens_in[side] += usage.input_tokens
        METER.tokens_out[side] += usage.output_tokens
        METER.usd[side] += cost_of(request.model, usage)
        METER.usd_same_model[side] += cost_of(settings.BOSUN_MODEL_TIERS["balanced"], usage)
        run_id = (request.variables.get("run") or {}).get("id")
        if request.step_key == "score" and side == "bosun":
            METER.score_call_tokens.append(tokens)
            if run_id in METER.kill_runs:
                METER.kill_runs.discard(run_id)
                METER.lost_tokens += tokens
                raise WorkerKilledHere(f"worker killed in run {run_id} after its scoring call")
        return response


# --- database and Django -------------------------------------------------------------


def configure(url: str, tmp: str) -> str | None:
    """Environment for config.settings; returns the admin conninfo on PostgreSQL."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        BOSUN_DEMO="1",
        BOSUN_ENRICH_CREDITS=str(ENRICH_CREDITS),
        BOSUN_VENDOR_FAULTS=f"enrichco.429={FAULT_429_RATE}",
        BOSUN_VENDOR_RETRY_AFTER_S="0.05",
        BOSUN_DOORBELL="bench.economics.noop",
        BOSUN_REVIEW_NOTIFIER="bench.economics.noop",
        BOSUN_INLINE_WAIT_S="0",
        LOG_LEVEL="WARNING",
    )
    if not url:
        os.environ.pop("DATABASE_URL", None)
        os.environ["BOSUN_VAR_DIR"] = tmp
        return None
    from bench.engine import bench_urls, recreate_database

    admin, bench_url, _ = bench_urls(url, BENCH_DB)
    recreate_database(admin, BENCH_DB)
    os.environ["DATABASE_URL"] = bench_url
    return admin


# --- the two sides ------------------------------------------------------------------


@dataclass
class Side:
    name: str
    seconds: float = 0.0
    enrichments: int = 0
    faults: int = 0
    credits: int = 0
    sends: int = 0
    qualified: set[str] = field(default_factory=set)
    crashes: int = 0
    respent_tokens: int = 0
    unsettled: int = 0

    def usd(self) -> Decimal:
        return METER.usd[self.name]


def vendor_totals() -> dict[str, int]:
    from demo.vendors import vendor_usage

    enrich, mail = vendor_usage("enrichco"), vendor_usage("mailco")
    return {
        "enrichments": enrich["calls"] - enrich["faults"],
        "faults": enrich["faults"],
        "credits": enrich["credits"] + mail["credits"],
        "sends": mail["calls"],
    }


def measure(side: Side, work) -> Side:
    before = vendor_totals()
    METER.side = side.name
    started = time.perf_counter()
    work(side)
    side.seconds = time.perf_counter() - started
    after = vendor_totals()
    side.enrichments = after["enrichments"] - before["enrichments"]
    side.faults = after["faults"] - before["faults"]
    side.credits = after["credits"] - before["credits"]
    side.sends = after["sends"] - before["sends"]
    return side


def naive_side(records, crash_seqs: set[int]):
    from django.conf import settings

    from bench.naive_agent import NaiveAgent
    from policies.rubrics import latest_version
    from runs.llm.base import get_provider

    agent = NaiveAgent(
        provider=get_provider("metered"),
        model=settings.BOSUN_MODEL_TIERS["balanced"],
        rubric=latest_version("icp").snapshot,
        crash_at_score=lambda seq: seq in crash_seqs,
    )

    def work(side: Side) -> None:
        for record in records:
            done = agent.process(record.seq, record.input)
            side.crashes += done.crashes
            side.respent_tokens += done.respent_tokens
            if done.route == "outreach":
                side.qualified.add(record.company)

    return work


def bosun_side(records, crash_seqs: set[int]):
    def work(side: Side) -> None:
        from django.db.models import Sum

        from runs import engine
        from runs.models import Run, Score, StepRun, Workflow

        workflow = Workflow.objects.select_related("role", "policy").get(slug="lead-qualification")
        version = workflow.current_version
        company_of: dict[int, str] = {}
        waiting: dict[int, float] = {}  # run id -> when its backoff ends
        for record in records:
            started = engine.start_run(
                workflow=workflow, version=version, input=record.input, idempotency_key=record.key
            )
            if started.created:
                company_of[started.run.pk] = record.company
                if record.seq in crash_seqs:
                    METER.kill_runs.add(started.run.pk)
                _drive(started.run.pk, side, waiting)
            _drive_due(side, waiting, wait=False)
        _drive_due(side, waiting, wait=True)
        runs = Run.objects.filter(pk__in=list(company_of))
        side.unsettled = runs.exclude(status="succeeded").count()
        scores = Score.objects.filter(run_id__in=list(company_of), route="outreach")
        side.qualified = {company_of[run_id] for run_id in scores.values_list("run_id", flat=True)}
        recorded = StepRun.objects.filter(run_id__in=list(company_of)).aggregate(
            i=Sum("tokens_in"), o=Sum("tokens_out")
        )
        # Billed but not on any step record: the answers the crashes lost.
        billed = METER.tokens_in["bosun"] + METER.tokens_out["bosun"]
        side.respent_tokens = billed - (recorded["i"] or 0) - (recorded["o"] or 0)

    return work


def _drive(run_id: int, side: Side, waiting: dict[int, float]) -> None:
    """Advance the run as the workers would: recover a killed worker's run
    once its lease is over, approve its review, leave a backoff for later."""
    from django.utils import timezone

    from approvals.models import ApprovalStatus
    from runs import engine
    from runs.models import Run

    for _ in range(50):
        try:
            result = engine.advance_run(run_id)
        except WorkerKilledHere:
            side.crashes += 1
            # The dead worker's lease runs out; the sweeper rings for the run.
            expired = timezone.now() - timedelta(seconds=1)
            Run.objects.filter(pk=run_id, status="running").update(lease_expires_at=expired)
            continue
        if result is not engine.Advance.NOT_CLAIMED:
            continue
        run = Run.objects.get(pk=run_id)
        if run.status == "waiting" and run.wait_reason == "approval":
            pending = run.approvals.filter(status=ApprovalStatus.PENDING).first()
            engine.decide_approval(approval_id=pending.pk, approve=True, actor_label="bench")
            continue
        if run.status == "waiting" and run.not_before is not None:
            waiting[run_id] = time.monotonic() + max(
                0.0, (run.not_before - _db_now()).total_seconds()
            )
        return


def _drive_due(side: Side, waiting: dict[int, float], *, wait: bool) -> None:
    while waiting:
        run_id, due = min(waiting.items(), key=lambda item: item[1])
        delay = due - time.monotonic()
        if delay > 0:
            if not wait:
                return
            time.sleep(delay + 0.005)
        del waiting[run_id]
        _drive(run_id, side, waiting)


def _db_now():
    from knowledge.services import database_now

    return database_now()


# --- report -----------------------------------------------------------------------------


def per(value, count: int) -> float:
    return float(value) / count if count else float("nan")


def report(records, naive: Side, bosun: Side) -> dict[str, float]:
    unique = len({r.company for r in records})
    qualified, naive_q = len(bosun.qualified), len(naive.qualified)
    rows = [
        ("records / unique companies", f"{len(records)} / {unique}", f"{len(records)} / {unique}"),
        ("enrichment calls (charged)", naive.enrichments, bosun.enrichments),
        ("enrichments per unique lead", f"{per(naive.enrichments, unique):.2f}", f"{per(bosun.enrichments, unique):.2f}"),
        ("429 answers met", naive.faults, bosun.faults),
        ("model calls", METER.calls["naive"], METER.calls["bosun"]),
        ("model tokens in / out", f"{METER.tokens_in['naive']:,} / {METER.tokens_out['naive']:,}", f"{METER.tokens_in['bosun']:,} / {METER.tokens_out['bosun']:,}"),
        ("credits (enrichment + mail)", naive.credits, bosun.credits),
        ("model $", f"{naive.usd():.4f}", f"{bosun.usd():.4f}"),
        ("qualified leads (outreach)", len(naive.qualified), qualified),
        ("credits per qualified lead", f"{per(naive.credits, naive_q):.2f}", f"{per(bosun.credits, qualified):.2f}"),
        ("$ per qualified lead", f"{per(naive.usd(), naive_q):.5f}", f"{per(bosun.usd(), qualified):.5f}"),
        ("emails sent per qualified lead", f"{per(naive.sends, naive_q):.2f}", f"{per(bosun.sends, qualified):.2f}"),
        ("crashes", naive.crashes, bosun.crashes),
        ("tokens re-spent per crash", f"{per(naive.respent_tokens, naive.crashes):,.0f}", f"{per(bosun.respent_tokens, bosun.crashes):,.0f}"),
        ("seconds", f"{naive.seconds:.1f}", f"{bosun.seconds:.1f}"),
    ]  # fmt: skip
    print(f"{'':34}{'naive agent':>22}{'Bosun':>22}")
    for label, a, b in rows:
        print(f"{label:34}{a!s:>22}{b!s:>22}")
    score_calls = METER.score_call_tokens
    print(
        f"one scoring step: {per(sum(score_calls), len(score_calls)):.0f} tokens on average, "
        f"{max(score_calls, default=0)} at most"
    )
    reduction = 1 - per(bosun.usd(), qualified) / per(naive.usd(), naive_q)
    same = 1 - float(METER.usd_same_model["bosun"]) / float(METER.usd_same_model["naive"])
    print(f"reduction in model $ per qualified lead: {reduction:.1%}")
    print(f"  every call of both sides priced at the balanced model: {same:.1%}")
    blended = [s.usd() + s.credits * USD_PER_CREDIT for s in (naive, bosun)]
    print(
        f"  with credits at ${USD_PER_CREDIT} each: naive ${per(blended[0], naive_q):.4f}, "
        f"Bosun ${per(blended[1], qualified):.4f} per qualified lead "
        f"({1 - float(blended[1]) / float(blended[0]):.1%} less)"
    )
    return {
        "enrich_per_lead": per(bosun.enrichments, unique),
        "baseline_enrich_per_lead": per(naive.enrichments, unique),
        "usd_per_qualified": per(bosun.usd(), qualified),
        "baseline_usd_per_qualified": per(naive.usd(), naive_q),
        "reduction": reduction,
        "respent_tokens_per_crash": per(bosun.respent_tokens, bosun.crashes),
        "one_step_tokens": max(score_calls, default=0),
    }


def sanity(naive: Side, bosun: Side) -> list[str]:
    problems = []
    if naive.qualified != bosun.qualified:
        problems.append(
            f"the sides qualified different leads ({len(naive.qualified ^ bosun.qualified)} differ)"
        )
    if bosun.unsettled:
        problems.append(f"{bosun.unsettled} Bosun run(s) did not succeed")
    if not bosun.crashes or not naive.crashes:
        problems.append("no crash was injected on one side")
    return problems


def measure_both(weeks: int | None) -> tuple[list, Side, Side, dict[str, float]]:
    """Migrate the bench database, install the samples, run both sides."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    from demo.sample_data.leads import WEEKS, lead_stream
    from demo.samples import install_samples

    call_command("migrate", verbosity=0, interactive=False)
    records = lead_stream(weeks=weeks or WEEKS)
    crash_seqs = {r.seq for r in records if r.seq % CRASH_EVERY == CRASH_OFFSET}
    providers = {**settings.BOSUN_LLM_PROVIDERS, "metered": "bench.economics.MeteredProvider"}
    quiet = {"DEBUG": False, "BOSUN_LLM_PROVIDERS": providers, "BOSUN_DEFAULT_PROVIDER": "metered"}
    with override_settings(**quiet):
        install_samples()
        bosun = measure(Side("bosun"), bosun_side(records, crash_seqs))
        naive = measure(Side("naive"), naive_side(records, crash_seqs))
        return records, naive, bosun, report(records, naive, bosun)


def teardown(admin: str | None, tmp: str, *, keep: bool) -> None:
    from django.db import connections

    connections.close_all()
    shutil.rmtree(tmp, ignore_errors=True)
    if admin is not None and not keep:
        from bench.engine import recreate_database

        recreate_database(admin, BENCH_DB, drop_only=True)


def missed_targets(figures: dict[str, float]) -> list[str]:
    checks = {
        "enrich_per_lead": abs(figures["enrich_per_lead"] - TARGETS["enrich_per_lead"]) < 1e-9,
        "reduction": figures["reduction"] >= TARGETS["reduction"],
        # Tokens re-spent per crash at most one step's (the largest scoring call).
        "respent_tokens_per_crash": figures["respent_tokens_per_crash"]
        <= figures["one_step_tokens"],
    }
    return [name for name, ok in checks.items() if not ok]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weeks", type=int, default=None, help="fewer weeks for a quick look")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL bench database")
    parser.add_argument("--check-targets", action="store_true", help="exit 2 on a missed target")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bosun-economics-")
    admin = configure(os.environ.get("DATABASE_URL", ""), tmp)
    try:
        _records, naive, bosun, figures = measure_both(args.weeks)
    finally:
        teardown(admin, tmp, keep=args.keep)
    problems = sanity(naive, bosun)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    missed = missed_targets(figures)
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    print(
        f"RESULT enrich_per_lead={figures['enrich_per_lead']:.2f} "
        f"baseline_enrich_per_lead={figures['baseline_enrich_per_lead']:.2f} "
        f"usd_per_qualified={figures['usd_per_qualified']:.5f} "
        f"baseline_usd_per_qualified={figures['baseline_usd_per_qualified']:.5f} "
        f"reduction={figures['reduction']:.3f} "
        f"respent_tokens_per_crash={figures['respent_tokens_per_crash']:.0f}"
    )
    if problems:
        return 1
    return 2 if missed and args.check_targets else 0


if __name__ == "__main__":
    # Run as the importable module, so the provider the settings name
    # (bench.economics.MeteredProvider) shares this module's meter.
    sys.exit(importlib.import_module("bench.economics").main())
