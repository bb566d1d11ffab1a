"""The checks the worker makes around each step: budgets before, kill
switches before, output checks and taint after."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.utils import timezone

from lib.conditions import AllOf, AnyOf, Compare, Condition, Not, evaluate
from policies.models import WordList
from policies.services import Budget
from runs.engine.definition import StepDef
from runs.engine.errors import BudgetExceeded
from runs.engine.store import RunState

if TYPE_CHECKING:
    from runs.engine.kinds import ToolKind


def over_budget(
    state: RunState,
    budget: Budget,
    kind: str,
    *,
    spent: Decimal = Decimal(0),
    calls: int = 0,
) -> BudgetExceeded | None:
    """The breach that forbids the next step (kind = the step's kind) or the
    next paid call (kind = "llm" or "tool", with what the current step has
    spent so far), or None.

    Checked before, charged after: a call that starts under the cap may end
    over it, so spend stays within the cap plus one call.
    """
    if state.steps_executed >= budget.max_steps:
        return BudgetExceeded("steps", f"{state.steps_executed} of {budget.max_steps} steps")
    cost = state.cost_usd + spent
    if cost >= budget.max_cost_usd:
        return BudgetExceeded("cost_usd", f"${cost:.4f} spent of ${budget.max_cost_usd}")
    if kind == "llm" and state.llm_calls + calls >= budget.max_llm_calls:
        return BudgetExceeded("llm_calls", f"{state.llm_calls + calls} of {budget.max_llm_calls}")
    if kind == "tool" and state.tool_calls + calls >= budget.max_tool_calls:
        return BudgetExceeded(
            "tool_calls", f"{state.tool_calls + calls} of {budget.max_tool_calls}"
        )
    if state.started_at is not None:
        elapsed = (timezone.now() - state.started_at).total_seconds()
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


def taint(step: StepDef, output: Any) -> str:
    """Why this step's output taints the run ('' when it does not): text
    from outside (a tool marked `untrusted_output`) that looks like an
    injection."""
    if step.kind.name != "tool":
        return ""
    from runs.tools.base import get_tool

    if not get_tool(cast("ToolKind.Config", step.config).tool).untrusted_output:
        return ""
    from lib.screening import scan_value

    signals = scan_value(output)
    if not signals:
        return ""
    return f"{step.key}: {', '.join(sorted(set(signals)))}"
