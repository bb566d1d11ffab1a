"""The checks the worker makes around each step: budgets before, kill
switches before, output checks and taint after.

Taint is provenance: content from an untrusted source (an input field the
workflow marks untrusted, the answer of a tool marked `untrusted_output`)
taints the run whatever it says. The phrase screening (lib.screening) only
adds signals for the reviewer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from lib.conditions import AllOf, AnyOf, Compare, Condition, Not, evaluate
from lib.context import MISSING, resolve
from policies.models import WordList
from policies.services import Budget
from runs.engine.definition import Definition, StepDef
from runs.engine.errors import BudgetExceeded
from runs.engine.store import RunState
from runs.tools.base import FREE, ToolCost

if TYPE_CHECKING:
    from runs.engine.kinds import ToolKind


def over_budget(
    state: RunState,
    budget: Budget,
    kind: str,
    *,
    spent: Decimal = Decimal(0),
    calls: int = 0,
    price: ToolCost = FREE,
) -> BudgetExceeded | None:
    """The breach that forbids the next step (kind = the step's kind) or the
    next paid call (kind = "llm" or "tool", with what the current step has
    spent so far), or None.

    Money is model plus vendor spend. A model call's price is known only
    once it answers: checked before, charged after, so model spend stays
    within the cap plus one call. A tool call's price is known before it
    is made (`price`): a call that would take the run over the USD cap or
    over its vendor's credit cap is refused before the vendor is called.
    """
    if state.steps_executed >= budget.max_steps:
        return BudgetExceeded("steps", f"{state.steps_executed} of {budget.max_steps} steps")
    cost = state.cost_usd + spent
    if cost >= budget.max_cost_usd:
        return BudgetExceeded("cost_usd", f"${cost:.4f} spent of ${budget.max_cost_usd}")
    if price.usd and cost + price.usd > budget.max_cost_usd:
        return BudgetExceeded(
            "cost_usd",
            f"${cost:.4f} spent of ${budget.max_cost_usd}; the call costs ${price.usd:.4f}",
        )
    cap = budget.max_credits.get(price.vendor) if price.credits else None
    if cap is not None:
        used = state.credits.get(price.vendor, 0)
        if used + price.credits > cap:
            return BudgetExceeded(
                "credits",
                f"{used} of {cap} {price.vendor} credits spent; the call costs {price.credits}",
            )
    if kind == "llm" and state.llm_calls + calls >= budget.max_llm_calls:
        return BudgetExceeded("llm_calls", f"{state.llm_calls + calls} of {budget.max_llm_calls}")
    if kind == "tool" and state.tool_calls + calls >= budget.max_tool_calls:
        return BudgetExceeded(
            "tool_calls", f"{state.tool_calls + calls} of {budget.max_tool_calls}"
        )
    if state.wall_from is not None:
        elapsed = (datetime.now(UTC) - state.wall_from).total_seconds()
        if elapsed >= budget.max_wall_s:
            return BudgetExceeded("wall_s", f"{elapsed:.0f}s of {budget.max_wall_s:.0f}s")
    return None


def flags(step: StepDef, output: Any, variables: dict[str, Any]) -> list[str]:
    """Names of the step's output checks that hold for this output."""
    if not step.output_checks:
        return []
    context = {**variables, "output": output}
    return [
        check.name
        for check in step.output_checks
        if evaluate(_with_word_lists(check.when), context)
    ]


def _with_word_lists(condition: Condition) -> Condition:
    """Replace `{"word_list": name}` values by the list's current words, so
    a manager's edit applies to the next check without a new version."""
    if isinstance(condition, Compare):
        value = condition.value
        if isinstance(value, dict) and set(value) == {"word_list"}:
            words = WordList.objects.filter(name=value["word_list"]).values_list("words", flat=True)
            return condition.model_copy(update={"value": next(iter(words), [])})
        return condition
    if isinstance(condition, AllOf):
        return AllOf(all=[_with_word_lists(c) for c in condition.all])
    if isinstance(condition, AnyOf):
        return AnyOf(any=[_with_word_lists(c) for c in condition.any])
    if isinstance(condition, Not):
        return Not(**{"not": _with_word_lists(condition.not_)})
    return condition


@dataclass(frozen=True)
class Taint:
    """Untrusted content entered the run. `source` says where from (this
    alone taints the run, whatever the content says); `signals` names the
    phrases that look like an injection, for the reviewer ('' for none)."""

    source: str
    signals: str = ""


def taint_of_input(value: Any, fields: list[str]) -> Taint | None:
    """The taint of a run's input: any non-empty field the workflow marks
    untrusted (text a stranger wrote: a form, an email)."""
    if not fields or not isinstance(value, dict):
        return None
    from lib.screening import scan_value

    present = [name for name in fields if _filled(resolve(value, name))]
    if not present:
        return None
    signals = []
    for name in present:
        found = scan_value(resolve(value, name))
        if found:
            signals.append(f"input.{name}: {', '.join(sorted(set(found)))}")
    source = ", ".join(f"input.{name}" for name in present)
    return Taint(f"untrusted input ({source})", "; ".join(signals))


def taint(step: StepDef, output: Any, definition: Definition) -> Taint | None:
    """The taint this step's output brings: the answer of a tool marked
    `untrusted_output` (a vendor's text, a fetched page, a ticket), also
    when it comes from the step cache; outputs of such steps that a dedup
    step carries over from an earlier run; knowledge events that a tainted
    run wrote."""
    untrusted = [key for key in _carried(step, output) if _untrusted_tool(definition, key)]
    if step.kind.name == "tool" and _untrusted_tool(definition, step.key):
        tool = cast("ToolKind.Config", step.config).tool
        source = f"steps.{step.key} ({tool} output)"
    elif untrusted:
        source = f"steps.{step.key} (carries {', '.join(untrusted)} of an earlier run)"
    elif tainted_writers := _tainted_writers(step, output):
        runs = ", ".join(f"#{run_id}" for run_id in tainted_writers)
        source = f"steps.{step.key} (events written by tainted runs {runs})"
    else:
        return None
    from lib.screening import scan_value

    signals = sorted(set(scan_value(output)))
    return Taint(source, f"steps.{step.key}: {', '.join(signals)}" if signals else "")


def _untrusted_tool(definition: Definition, key: str) -> bool:
    step = definition.steps.get(key)
    if step is None or step.kind.name != "tool":
        return False
    from runs.tools.base import UnknownTool, get_tool

    try:
        return get_tool(cast("ToolKind.Config", step.config).tool).untrusted_output
    except UnknownTool:
        return True  # a tool that is gone: nothing vouches for what it returned


def _carried(step: StepDef, output: Any) -> list[str]:
    """Step keys whose outputs a dedup step brought over from the first run."""
    if step.kind.name != "dedup" or not isinstance(output, dict):
        return []
    carried = output.get("steps")
    return list(carried) if isinstance(carried, dict) else []


def _tainted_writers(step: StepDef, output: Any) -> list[int]:
    """Runs that had read untrusted content and wrote the knowledge events
    this step read: what they wrote may carry that content. One query, and
    only when an event was written by a run."""
    if step.kind.name != "knowledge_check" or not isinstance(output, dict):
        return []
    writers = {
        event.get("source_run")
        for event in output.get("events") or []
        if isinstance(event, dict) and isinstance(event.get("source_run"), int)
    }
    if not writers:
        return []
    from runs.models import Run

    tainted = Run.objects.filter(pk__in=writers, tainted=True).values_list("pk", flat=True)
    return sorted(tainted)


def _filled(value: Any) -> bool:
    if value is MISSING or value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    return value not in ({}, [])
