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
        scripted = request.step_config["scripted"]
        # `by_model`: the replies of each model asked (fallback routes).
        replies = (
            scripted["by_model"][request.model] if "by_model" in scripted else scripted["replies"]
        )
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


class TrippingProvider:
    """Answers off-schema, and while it answers its model's breaker opens
    (other calls failed meanwhile); then answers the repair in schema."""

    name = "tripping"

    def complete(self, request: LLMRequest) -> LLMResponse:
        from datetime import timedelta

        from django.utils import timezone

        from policies.models import Breaker

        calls.append(request)
        if not request.repairs:
            Breaker.objects.update_or_create(
                key=f"llm:tripping:{request.model}",
                defaults={"state": "open", "open_until": timezone.now() + timedelta(minutes=5)},
            )
            reply = "not json"
        else:
            reply = json.dumps({"total": 1})
        return LLMResponse(
            text=reply, model=request.model, usage=Usage(input_tokens=1000, output_tokens=200)
        )
