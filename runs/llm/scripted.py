"""The offline `scripted` provider: deterministic answers computed from rules.

It lets the demo and the tests run without an API key. Its answer is built
from the step's `scripted` config and the run context:

    "scripted": {
        "points": [{"criterion": "size", "add": 30,
                    "when": {"path": "steps.normalize.employees", "op": ">=", "value": 50}}],
        "reply": {"total": "{{ points.total }}", "criteria": "{{ points.criteria }}",
                  "confidence": 0.9}
    }

`points` sums the rules that hold into `points.total` and `points.criteria`;
`reply` is a JSON template rendered against the context plus `points`.
Usage is estimated at four characters a token, so budgets and cost reports
behave as they would with a real model; the step records that the answer was
scripted.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from lib.conditions import Condition, evaluate
from lib.context import RenderError, render_value
from runs.llm.base import LLMError, LLMRequest, LLMResponse, Usage

_condition = TypeAdapter(Condition)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedProvider:
    name = "scripted"
    breaker = False  # answers offline: no outage to guard against

    def complete(self, request: LLMRequest) -> LLMResponse:
        rules = request.step_config.get("scripted") or {}
        variables = dict(request.variables)
        variables["points"] = self._points(rules.get("points", []), variables)
        try:
            reply = render_value(rules.get("reply", {}), variables)
        except RenderError as exc:
            raise LLMError(f"scripted reply: {exc}", retryable=False) from None
        text = reply if isinstance(reply, str) else json.dumps(reply)
        prompt_text = request.system + request.prompt
        return LLMResponse(
            text=text,
            model="scripted",
            usage=Usage(
                input_tokens=estimate_tokens(prompt_text),
                output_tokens=estimate_tokens(text),
            ),
        )

    @staticmethod
    def _points(rules: list[dict[str, Any]], variables: dict[str, Any]) -> dict[str, Any]:
        criteria: dict[str, float] = {}
        for rule in rules:
            name = rule.get("criterion", "points")
            criteria.setdefault(name, 0)
            if evaluate(_condition.validate_python(rule["when"]), variables):
                criteria[name] += rule.get("add", 0)
        return {"total": sum(criteria.values()), "criteria": criteria}
