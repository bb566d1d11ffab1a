"""The `replay` provider: answers from a prior run's recorded step outputs.

A run started with `replay_of=<run id>` sends every llm step here, so a
changed workflow can be tried on real past inputs without paying for the
model again. It answers with what the earlier run's step of the same key
recorded, at zero cost; a step the earlier run never answered is an error,
not an invented value.
"""

from __future__ import annotations

import json

from runs.llm.base import LLMError, LLMRequest, LLMResponse, Usage
from runs.models import StepRun


class ReplayProvider:
    name = "replay"
    breaker = False  # answers offline: no outage to guard against

    def complete(self, request: LLMRequest) -> LLMResponse:
        if request.replay_of is None:
            raise LLMError("replay needs the run to replay", retryable=False)
        record = (
            StepRun.objects.filter(
                run_id=request.replay_of, step_key=request.step_key, status="succeeded"
            )
            .order_by("-seq")
            .values("output", "edge", "model_answered")
            .first()
        )
        if record is None:
            raise LLMError(
                f"run {request.replay_of} recorded no answer for step {request.step_key!r}",
                retryable=False,
            )
        model = f"replay:{record['model_answered']}"
        if record["edge"] == "escape":
            # The original answer was not usable; replaying it escapes again.
            return LLMResponse(model=model, stop_reason="replayed_escape", usage=Usage())
        output = record["output"]
        text = output if isinstance(output, str) else json.dumps(output)
        return LLMResponse(text=text, model=model, usage=Usage())
