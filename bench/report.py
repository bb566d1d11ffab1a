"""The figures of bench/economics.py: the table, the targets, the RESULT line."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

TARGETS = {
    "enrich_per_company": 1.0,  # exactly
    "reduction_model": 0.80,  # at least, against the script
    "reduction_total": 0.50,  # at least, against the script
}
ORDER = ("script", "script_cached", "agent", "bosun")


def per(value: Any, count: int) -> float:
    return float(value) / count if count else float("nan")


def print_report(records, sides: dict, bills: dict, args) -> dict[str, float]:
    unique = len({r.company for r in records})
    bosun = sides["bosun"]
    x = bosun.extra
    print()
    print(
        f"workload: {len(records)} records ({args.weeks} weeks x {args.per_week}) naming"
        f" {unique} companies; Bosun started {x['runs']} runs (a retried submission with the"
        " same idempotency key starts none)"
    )

    def row(label: str, fn) -> None:
        print(f"{label:40}" + "".join(f"{fn(sides[n], bills[n])!s:>16}" for n in ORDER))

    def total(s, b) -> Decimal:
        return b.usd + s.vendor_usd

    print(f"{'':40}" + "".join(f"{sides[n].label:>16}" for n in ORDER))
    row("enrichment calls charged", lambda s, b: s.enrichments)
    row("enrichments per unique company", lambda s, b: f"{per(s.enrichments, unique):.2f}")
    row("429 answers met", lambda s, b: s.faults)
    row("model calls", lambda s, b: f"{b.calls:,}")
    row("model tokens in", lambda s, b: f"{b.tokens_in:,}")
    row("model tokens out", lambda s, b: f"{b.tokens_out:,}")
    row("  of the input: read from cache", lambda s, b: f"{b.cache_read:,}")
    row("  of the input: written to cache", lambda s, b: f"{b.cache_write:,}")
    row("credits (enrichment + mail)", lambda s, b: f"{s.credits:,}")
    row("credits per unique company", lambda s, b: f"{per(s.credits, unique):.2f}")
    row("model $", lambda s, b: f"{b.usd:.4f}")
    row("credits $", lambda s, b: f"{s.vendor_usd:.2f}")
    row("total $", lambda s, b: f"{total(s, b):.2f}")
    row("qualified leads (companies)", lambda s, b: len(s.qualified))
    row("model $ per qualified lead", lambda s, b: f"{per(b.usd, len(s.qualified)):.5f}")
    row("total $ per qualified lead", lambda s, b: f"{per(total(s, b), len(s.qualified)):.4f}")
    row("emails sent", lambda s, b: s.sends)
    row("emails per qualified lead", lambda s, b: f"{per(s.sends, len(s.qualified)):.2f}")
    row("crashes (worker or process killed)", lambda s, b: s.crashes)
    row("tokens re-spent per crash", lambda s, b: f"{per(s.respent_tokens, s.crashes):,.0f}")
    row("$ re-spent per crash", lambda s, b: f"{per(s.respent_usd, s.crashes):.5f}")
    row("seconds", lambda s, b: f"{s.seconds:.0f}")

    print()
    kills = ", ".join(f"{n} {p}" for p, n in sorted(x["kills_by_point"].items()))
    print(
        f"Bosun kills: {bosun.crashes} SIGKILLs of worker processes in {x['runs']} runs"
        f" (1 in {per(x['runs'], bosun.crashes):.0f}): inside paid calls, right after the"
        f" charge was booked: {kills or 'none'}; at random points: {x['random_kills']}."
    )
    print(
        f"  worker processes started in place of killed ones (by django-q2's sentinel):"
        f" {x['replaced']};"
        f" worker restarts {x['restarts']['worker']}, sweeper restarts"
        f" {x['restarts']['sweeper']}; reviews approved: {x['driven'].approvals}; calls a"
        f" person had to settle (needs_reconciliation): {x['driven'].reconciled}"
    )
    b = bills["bosun"]
    print(
        f"  billed at the vendors: model ${b.usd:.4f}, credits ${bosun.vendor_usd:.2f};"
        f" recorded by the runs: model ${x['recorded_model_usd']:.4f},"
        f" vendor ${x['recorded_vendor_usd']:.2f} ({x['recorded_credits']} credits)"
    )
    print(
        f"  paid again because of the crashes: model ${x['respent_model_usd']:.5f}"
        f" ({bosun.respent_tokens:,} tokens), vendor ${x['respent_vendor_usd']:.2f};"
        f" one step at most: ${x['one_step_usd']:.5f} ({x['one_step_tokens']} tokens,"
        " the largest model call a step recorded)"
    )
    script, agent = sides["script"], sides["agent"]
    fig = {
        "enrich_per_company": per(bosun.enrichments, unique),
        "usd_total_per_qualified": per(total(bosun, b), len(bosun.qualified)),
        "baseline_usd_total_per_qualified": per(
            total(script, bills["script"]), len(script.qualified)
        ),
        "agent_usd_total_per_qualified": per(total(agent, bills["agent"]), len(agent.qualified)),
        "model_per_qualified": per(b.usd, len(bosun.qualified)),
        "baseline_model_per_qualified": per(bills["script"].usd, len(script.qualified)),
        "agent_model_per_qualified": per(bills["agent"].usd, len(agent.qualified)),
        "respent_per_crash_usd": per(bosun.respent_usd, bosun.crashes),
        "one_step_usd": float(x["one_step_usd"]),
        "qualified": len(bosun.qualified),
        "baseline_qualified": len(script.qualified),
    }
    fig["reduction_total"] = (
        1 - fig["usd_total_per_qualified"] / fig["baseline_usd_total_per_qualified"]
    )
    fig["reduction_model"] = 1 - fig["model_per_qualified"] / fig["baseline_model_per_qualified"]
    same = 1 - float(b.usd_balanced) / float(bills["script"].usd_balanced)
    print()
    print(
        f"against the script: model $ per qualified lead {fig['reduction_model']:.1%} lower,"
        f" total $ per qualified lead {fig['reduction_total']:.1%} lower"
        f" (every call of both priced at the balanced model: model $ {same:.1%} lower)"
    )
    # A first script may send every call to one model: the same calls and
    # tokens (the offline provider's answers do not depend on the model),
    # priced at the balanced tier, which the script's own bill also keeps.
    one_model = bills["script"].usd_balanced
    one_model_model = per(one_model, len(script.qualified))
    one_model_total = per(one_model + script.vendor_usd, len(script.qualified))
    fig["one_model_baseline_model_per_qualified"] = one_model_model
    fig["one_model_baseline_usd_total_per_qualified"] = one_model_total
    print(
        "against the script sending every call to one model (balanced):"
        f" model $ per qualified lead {1 - fig['model_per_qualified'] / one_model_model:.1%}"
        f" lower, total $ per qualified lead"
        f" {1 - fig['usd_total_per_qualified'] / one_model_total:.1%} lower"
        f" ({one_model_model:.5f} and {one_model_total:.4f} per qualified lead)"
    )
    cached, cached_bill = sides["script_cached"], bills["script_cached"]
    fig["cached_script_model_per_qualified"] = per(cached_bill.usd, len(cached.qualified))
    fig["reduction_model_vs_cached_script"] = (
        1 - fig["model_per_qualified"] / fig["cached_script_model_per_qualified"]
    )
    cached_total = per(total(cached, cached_bill), len(cached.qualified))
    print(
        "against the script with its system prompt marked for caching: model $ per qualified"
        f" lead {fig['reduction_model_vs_cached_script']:.1%} lower, total $ per qualified lead"
        f" {1 - fig['usd_total_per_qualified'] / cached_total:.1%} lower"
        f" ({fig['cached_script_model_per_qualified']:.5f} and {cached_total:.4f} per qualified"
        f" lead; caching alone took the script's model $"
        f" {1 - fig['cached_script_model_per_qualified'] / fig['baseline_model_per_qualified']:.1%}"
        " lower)"
    )
    print(
        "against the agent loop: model $ per qualified lead"
        f" {1 - fig['model_per_qualified'] / fig['agent_model_per_qualified']:.1%} lower,"
        " total $ per qualified lead"
        f" {1 - fig['usd_total_per_qualified'] / fig['agent_usd_total_per_qualified']:.1%} lower"
    )
    print_bounds(fig, sides, bills, unique)
    return fig


def print_bounds(fig: dict[str, float], sides: dict, bills: dict, unique: int) -> None:
    """What prompt caching could buy Bosun at most, and how far below the
    script its total can go at all: both from the measured figures."""
    from runs.llm.base import cache_minimum

    bosun, script, b = sides["bosun"], sides["script"], bills["bosun"]
    print()
    print("prompt caching on the Bosun side (the prefix its provider marks: tool, then system):")
    for step, (model, marked) in sorted(b.marked.items()):
        minimum = cache_minimum(model)
        verdict = "cached" if marked >= minimum else "shorter, so billed as plain input"
        print(f"  {step}: {marked:,} tokens on {model}, which caches from {minimum:,}: {verdict}")
    all_read = per(b.usd_all_read, len(bosun.qualified))
    fig["all_read_model_per_qualified"] = all_read
    input_read = per(b.usd_input_read, len(bosun.qualified))
    print(
        f"  read {b.cache_read:,} tokens from the cache, wrote {b.cache_write:,}. Had every"
        " marked prefix been read from the cache (no minimum, no TTL, no write), model $ per"
        f" qualified lead would be {all_read:.5f},"
        f" {1 - all_read / fig['baseline_model_per_qualified']:.1%} below the script; had every"
        f" input token been, {input_read:.5f},"
        f" {1 - input_read / fig['baseline_model_per_qualified']:.1%} below: the most prompt"
        " caching could buy"
    )
    script_total = script.vendor_usd + bills["script"].usd
    credits_only = per(bosun.vendor_usd, len(bosun.qualified))
    fig["total_bound"] = 1 - credits_only / fig["baseline_usd_total_per_qualified"]
    print(
        f"credits are {float(script.vendor_usd / script_total):.1%} of the script's total;"
        f" it buys {per(script.enrichments, unique):.2f} enrichments a company and"
        f" {per(script.sends, len(script.qualified)):.2f} emails a qualified lead, Bosun"
        f" {per(bosun.enrichments, unique):.2f} and {per(bosun.sends, len(bosun.qualified)):.2f}."
        f" With no model dollars at all, Bosun's total per qualified lead ({credits_only:.4f},"
        f" its credits) would be {fig['total_bound']:.1%} below the script's: the most it can be"
    )


def sanity(sides: dict) -> list[str]:
    bosun = sides["bosun"]
    problems = []
    if bosun.extra["driven"].unsettled:
        problems.append(f"{len(bosun.extra['driven'].unsettled)} Bosun run(s) did not settle")
    if bosun.extra["not_succeeded"]:
        problems.append(f"{bosun.extra['not_succeeded']} Bosun run(s) did not succeed")
    if not all(sides[n].crashes for n in ORDER):
        problems.append("no crash was injected on one side")
    if sides["script"].qualified != sides["agent"].qualified:
        problems.append("the script and the agent loop qualified different leads")
    if sides["script"].qualified != sides["script_cached"].qualified:
        problems.append("the script qualified other leads with prompt caching on")
    return problems


def targets(fig: dict[str, float], sides: dict) -> list[str]:
    """Print each target and whether it is met; returns the missed ones."""
    lost = sides["script"].qualified - sides["bosun"].qualified
    checks = [
        (
            "enrichments per unique company = 1.00",
            f"{fig['enrich_per_company']:.2f}",
            abs(fig["enrich_per_company"] - 1.0) < 1e-9,
        ),
        (
            "model $ per qualified lead >= 80 % below the script",
            f"{fig['reduction_model']:.1%}",
            fig["reduction_model"] >= TARGETS["reduction_model"],
        ),
        (
            "total $ per qualified lead >= 50 % below the script",
            f"{fig['reduction_total']:.1%}",
            fig["reduction_total"] >= TARGETS["reduction_total"],
        ),
        (
            "re-spent per crash <= one step's",
            f"${fig['respent_per_crash_usd']:.5f} vs ${fig['one_step_usd']:.5f}",
            fig["respent_per_crash_usd"] <= fig["one_step_usd"],
        ),
        (
            "no qualified lead lost (Bosun qualifies every lead the script does)",
            f"{len(lost)} lost",
            not lost and fig["qualified"] >= fig["baseline_qualified"],
        ),
    ]
    missed = []
    print()
    for label, value, ok in checks:
        print(f"target {label}: {value} {'met' if ok else 'MISSED'}")
        if not ok:
            missed.append(label)
    return missed


def result_line(fig: dict[str, float]) -> str:
    return (
        f"RESULT enrich_per_company={fig['enrich_per_company']:.2f}"
        f" usd_total_per_qualified={fig['usd_total_per_qualified']:.4f}"
        f" baseline_usd_total_per_qualified={fig['baseline_usd_total_per_qualified']:.4f}"
        f" reduction_total={fig['reduction_total']:.3f}"
        f" reduction_model={fig['reduction_model']:.3f}"
        f" reduction_model_vs_cached_script={fig['reduction_model_vs_cached_script']:.3f}"
        f" respent_per_crash_usd={fig['respent_per_crash_usd']:.5f}"
        f" qualified={fig['qualified']} baseline_qualified={fig['baseline_qualified']}"
    )
