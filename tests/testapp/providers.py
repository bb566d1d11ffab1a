"""A provider for tests: the step config lists the replies, one per turn."""

from __future__ import annotations

import json

from runs.llm.base import LLMError, LLMRequest, LLMResponse, Usage

# Every request the provider answered, in order (tests clear it).
calls: list[LLMRequest] = []


class SequenceProvider:
    name = "sequence"

    def complete(self, request: LLMRequest) -> LLMResponse:
        calls.append(request)
        replies = request.step_config["scripted"]["replies"]
        reply = replies[min(len(request.repairs), len(replies) - 1)]
        if "error" in reply:
            raise LLMError(reply["error"], retryable=reply.get("retryable", True))
        return LLMResponse(
            text=reply.get("text", ""),
            model=reply.get("model", "claude-haiku-4-5"),
            stop_reason=reply.get("stop_reason", "end_turn"),
            usage=Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=500),
        )


# What the obedient model does when it reads a planted text: text -> the
# attacker's call ({"tool": ..., args}). Tests fill it; anything else it
# reads gets `routine`, the job the workflow asks for.
orders: dict[str, dict] = {}
routine: dict = {}


class ObedientProvider:
    """A model that does whatever the content it reads tells it to: when
    its prompt contains a planted instruction, it answers with the call the
    instruction asks for; otherwise with the routine answer. No guard may
    rely on the model resisting."""

    name = "obedient"

    def complete(self, request: LLMRequest) -> LLMResponse:
        calls.append(request)
        reply = next((goal for text, goal in orders.items() if text in request.prompt), routine)
        return LLMResponse(
            text=json.dumps(reply),
            model="claude-haiku-4-5",
            stop_reason="end_turn",
            usage=Usage(input_tokens=400, output_tokens=80),
        )
