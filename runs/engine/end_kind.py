"""The `end` step: finishes the run with an outcome label and a success flag,
and says what becomes of the dedup keys the run holds.

A `dedup` gate lets a key through once per scope and window. Whether the
run that took the key should keep it depends on how it ended: a lead that
was sent an email should not come back for months, but one held by a
paused account, or rejected by a reviewer, must not lock its subject out.
So each end names its disposition:

| `dedup` | the keys this run holds |
|---|---|
| `"keep"` (default) | stay as the dedup step set them (its `window_s`) |
| `"release"` | are freed: the next run with the key proceeds on `next` |
| `{"keep_s": 2592000}` | are held that long from when the run first saw them, in place of the dedup step's window |

The disposition commits in the same transaction as the end's checkpoint
(`Outcome.commit_with`): a crash before the commit leaves the run at its
end step holding the key as before, and the worker that picks the run up
executes the end again, disposition included. It is keyed by the run, so
applying it twice changes nothing, and a key another run has taken over
since is not touched.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Literal

from pydantic import Field, field_validator

from knowledge import services
from runs.engine.kinds import Kind, Outcome, StepContext, StrictConfig, _render

MAX_KEEP_S = 10 * 365 * 86_400  # ten years: longer is "keep" without a window


class KeepFor(StrictConfig):
    keep_s: float = Field(gt=0, le=MAX_KEEP_S)


DedupDisposition = Literal["keep", "release"] | KeepFor


class EndKind(Kind["EndKind.Config"]):
    name = "end"
    required_edges = ()

    class Config(StrictConfig):
        outcome: str = Field(default="done", min_length=1, max_length=80)
        success: bool = True
        output: Any = None
        dedup: DedupDisposition = "keep"

        @field_validator("dedup", mode="before")
        @classmethod
        def _one_of_three(cls, value: Any) -> Any:
            # One message that names the choices, instead of one per member
            # of the union.
            if value in ("keep", "release"):
                return value
            if isinstance(value, KeepFor):
                return value
            seconds = value.get("keep_s") if isinstance(value, dict) else None
            if (
                isinstance(value, dict)
                and set(value) == {"keep_s"}
                and isinstance(seconds, int | float)
                and not isinstance(seconds, bool)
                and 0 < seconds <= MAX_KEEP_S
            ):
                return value
            raise ValueError(
                'must be "keep", "release" or {"keep_s": seconds} with 0 < seconds '
                f"<= {MAX_KEEP_S}, not {json.dumps(value, default=str)[:80]}"
            )

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        output = _render(config.output, ctx)
        outcome = Outcome(output=output, edge="", end=(config.outcome, config.success))
        if config.dedup == "keep" or ctx.sandbox:  # a sandbox run holds no keys
            return outcome  # nothing to write: the end stays one statement
        keep_s = config.dedup.keep_s if isinstance(config.dedup, KeepFor) else None
        # Recorded on the step, so the run's timeline says what became of its keys.
        outcome.input = {"dedup": "release" if keep_s is None else {"keep_s": keep_s}}
        outcome.commit_with = partial(services.settle_dedup, run_id=ctx.run_id, keep_s=keep_s)
        return outcome
