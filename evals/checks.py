"""What a run produced (`facts_of`), and the checks of an eval case on it.

Deterministic checks first; a judge (a model grading against a rubric)
only where a case asks for one. Each expectation is a dict with `check`:

| check | passes when |
|---|---|
| `condition` | the condition language (lib.conditions) holds on the facts: `{"when": {...}}` |
| `outcome` | the run's outcome label `equals` (or `not_equals`) the value |
| `route` | the route its last `score` step took `equals` the value |
| `field` | the value at `path` of the facts `equals` the value |
| `schema` | the value at `path` (default `output`) matches the JSON `schema` |
| `draft` | the draft of approval step `step` has every field of `equals` |
| `not_draft` | the draft of approval step `step` is not `draft` (or the step was not reached) |
| `judge` | a model, given the `rubric` and the value at `path`, says it passes |

The facts: `status`, `outcome`, `success`, `output` (the last step's),
`steps` (each step's output by key), `route`, `drafts` (each approval
step's draft as proposed) and `path` (the step keys in order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema
from django.conf import settings
from pydantic import TypeAdapter, ValidationError

from lib.conditions import Condition, evaluate
from lib.context import MISSING, resolve
from runs.llm.base import LLMError, LLMRequest, get_provider, resolve_model
from runs.models import Run, Score, StepKind, StepRun, StepRunStatus

CHECKS = ("condition", "outcome", "route", "field", "schema", "draft", "not_draft", "judge")
_condition = TypeAdapter(Condition)


@dataclass(frozen=True)
class Result:
    name: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def facts_of(run: Run) -> dict[str, Any]:
    """What the run produced, as the checks see it."""
    return facts_of_runs([run])[run.pk]


def facts_of_runs(runs: Iterable[Run]) -> dict[int, dict[str, Any]]:
    """`facts_of` for many runs in two queries, by run id."""
    runs = list(runs)
    facts: dict[int, dict[str, Any]] = {
        run.pk: {
            "status": run.status,
            "outcome": run.outcome,
            "success": run.success,
            "output": None,
            "steps": {},
            "route": None,
            "drafts": {},
            "path": [],
        }
        for run in runs
    }
    rows = StepRun.objects.filter(run__in=runs, status=StepRunStatus.SUCCEEDED).order_by(
        "run_id", "seq"
    )
    for run_id, key, kind, out in rows.values_list("run_id", "step_key", "kind", "output"):
        fact = facts[run_id]
        fact["steps"][key] = out
        fact["path"].append(key)
        fact["output"] = out
        if kind == StepKind.APPROVAL and isinstance(out, dict):
            fact["drafts"][key] = out.get("draft")
    # The newest score of each run names its route.
    scores = Score.objects.filter(run__in=runs).order_by("run_id", "seq")
    for run_id, route in scores.values_list("run_id", "route"):
        facts[run_id]["route"] = route
    return facts


def validate_expectations(expectations: Any) -> list[str]:
    """Problems with a case's expectations ([] when they are usable)."""
    if not isinstance(expectations, list):
        return ["expectations must be a list of checks"]
    problems = []
    for index, item in enumerate(expectations):
        if not isinstance(item, dict) or item.get("check") not in CHECKS:
            problems.append(f"expectation {index + 1}: `check` must be one of {', '.join(CHECKS)}")
            continue
        if item["check"] == "condition":
            try:
                _condition.validate_python(item.get("when"))
            except ValidationError as exc:
                problems.append(
                    f"expectation {index + 1}: invalid condition: {exc.errors()[0]['msg']}"
                )
        if item["check"] in ("draft", "not_draft") and not item.get("step"):
            problems.append(f"expectation {index + 1}: name the approval `step`")
        if item["check"] == "judge" and not item.get("rubric"):
            problems.append(f"expectation {index + 1}: a judge needs a `rubric`")
    return problems


def run_checks(expectations: list[dict[str, Any]], facts: dict[str, Any]) -> list[Result]:
    return [_check(item, facts) for item in expectations]


def _name(item: dict[str, Any]) -> str:
    if item.get("name"):
        return str(item["name"])
    check = item.get("check", "?")
    where = item.get("path") or item.get("step") or ""
    return f"{check}:{where}" if where else str(check)


def _check(item: dict[str, Any], facts: dict[str, Any]) -> Result:
    name, check = _name(item), item.get("check")
    try:
        if check == "condition":
            held = evaluate(_condition.validate_python(item["when"]), facts)
            return Result(name, held, "" if held else f"does not hold: {json.dumps(item['when'])}")
        if check in ("outcome", "route"):
            return _equality(name, facts.get(check), item)
        if check == "field":
            return _equality(name, _at(facts, item.get("path", "")), item)
        if check == "schema":
            return _schema(name, _at(facts, item.get("path") or "output"), item.get("schema") or {})
        if check == "draft":
            return _draft(name, facts, item)
        if check == "not_draft":
            draft = facts["drafts"].get(item["step"], MISSING)
            same = draft is not MISSING and draft == item.get("draft")
            return Result(name, not same, "produced the draft a reviewer rejected" if same else "")
        if check == "judge":
            return _judge(name, facts, item)
    except (KeyError, TypeError, ValidationError) as exc:
        return Result(name, False, f"the check is malformed: {exc}")
    return Result(name, False, f"unknown check {check!r}")


def _at(facts: dict[str, Any], path: str) -> Any:
    value = resolve(facts, path) if path else facts
    return None if value is MISSING else value


def _equality(name: str, actual: Any, item: dict[str, Any]) -> Result:
    if "not_equals" in item:
        ok = actual != item["not_equals"]
        return Result(name, ok, "" if ok else f"is {_short(actual)}, which it must not be")
    ok = actual == item.get("equals")
    return Result(
        name, ok, "" if ok else f"expected {_short(item.get('equals'))}, got {_short(actual)}"
    )


def _schema(name: str, value: Any, schema: dict[str, Any]) -> Result:
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is None:
        return Result(name, True)
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return Result(name, False, f"at {where}: {error.message}")


def _draft(name: str, facts: dict[str, Any], item: dict[str, Any]) -> Result:
    draft = facts["drafts"].get(item["step"], MISSING)
    if draft is MISSING:
        return Result(name, False, f"step {item['step']} was not reached")
    expected = item.get("equals")
    if not isinstance(expected, dict) or not isinstance(draft, dict):
        ok = draft == expected
        return Result(name, ok, "" if ok else f"expected {_short(expected)}, got {_short(draft)}")
    wrong = [key for key, value in expected.items() if draft.get(key) != value]
    if not wrong:
        return Result(name, True)
    shown = "; ".join(f"{key}: {_short(draft.get(key))} ≠ {_short(expected[key])}" for key in wrong)
    return Result(name, False, shown)


JUDGE_SCHEMA = {
    "type": "object",
    "required": ["pass", "reason"],
    "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}},
}
JUDGE_SYSTEM = (
    "You grade the output of an automated workflow against a rubric. Answer only with "
    'JSON: {"pass": true|false, "reason": "<one sentence>"}.'
)


def _judge(name: str, facts: dict[str, Any], item: dict[str, Any]) -> Result:
    """A model grades the value at `path` against `rubric`, through the
    provider registry (the case's `provider`, else BOSUN_EVAL_JUDGE_PROVIDER,
    else the default): offline with `scripted` (rules in `scripted`, as for
    an llm step), a real model when a key is set."""
    subject = _at(facts, item.get("path") or "output")
    provider_name = (
        item.get("provider")
        or getattr(settings, "BOSUN_EVAL_JUDGE_PROVIDER", "")
        or settings.BOSUN_DEFAULT_PROVIDER
    )
    request = LLMRequest(
        model=resolve_model(tier=item.get("tier", "fast"), model=item.get("model") or None),
        system=JUDGE_SYSTEM,
        prompt=f"Rubric:\n{item['rubric']}\n\nOutput:\n{json.dumps(subject, indent=2, default=str)}",
        output_schema=JUDGE_SCHEMA,
        max_tokens=300,
        timeout_s=60.0,
        step_config={
            "scripted": item.get("scripted") or {"reply": {"pass": True, "reason": "scripted"}}
        },
        variables={**facts, "subject": subject},
        step_key="judge",
    )
    try:
        response = get_provider(provider_name).complete(request)
        answer = response.data if response.data is not None else json.loads(response.text)
    except (LLMError, LookupError, ValueError) as exc:
        return Result(name, False, f"the judge did not answer: {exc}")
    if not isinstance(answer, dict) or not isinstance(answer.get("pass"), bool):
        return Result(name, False, f"the judge's answer is not a verdict: {_short(answer)}")
    return Result(name, answer["pass"], str(answer.get("reason", ""))[:300])


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
