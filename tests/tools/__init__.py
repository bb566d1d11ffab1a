"""Tests of the generic tools and the sample vendors, called directly."""

from __future__ import annotations

from runs.tools.base import ToolCall


def tool_call(
    key: str = "bosun-run-1-seq-1", *, attempt: int = 1, timeout_s: float = 5.0
) -> ToolCall:
    """A `ToolCall` as the gate would make it."""
    return ToolCall(
        run_id=1,
        step_key="step",
        seq=1,
        attempt=attempt,
        idempotency_key=key,
        timeout_s=timeout_s,
    )
