"""A provider for tests: the step config lists the replies, one per turn."""

from __future__ import annotations

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
