"""The anthropic provider: the real SDK against a local fake of the Messages API.

Nothing here patches our own code: the provider builds a real SDK client
that talks HTTP to `tests.fakes.messages_api`, either through an httpx2
transport or, for engine runs and real timeouts, a loopback server that the
provider finds through `settings.ANTHROPIC_BASE_URL`. Each test asserts on
what the fake received as well as on what came back.
"""

from __future__ import annotations

import json
import typing
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from runs import engine
from runs.llm.anthropic_provider import AnthropicProvider
from runs.llm.base import LLMError, LLMRequest, get_provider
from runs.models import Run, StepRun
from tests.conftest import drive
from tests.fakes.messages_api import (
    MessagesAPI,
    error_body,
    message,
    text_block,
    tool_use_block,
    usage,
)

KEY = "sk-ant-test-key"
SYSTEM = "You score sales leads."
SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
CACHED = {"type": "ephemeral"}
DONE = {"key": "done", "kind": "end", "config": {"outcome": "scored"}}
REVIEW = {"key": "review", "kind": "end", "config": {"outcome": "needs_review", "success": False}}
RATE_LIMITED = (
    "This request would exceed the rate limit for your organization of 50,000 input tokens "
    "per minute. You can see the response headers for current usage. Please try again later, "
    "or contact sales to discuss a rate limit increase."
)


@pytest.fixture
def api() -> MessagesAPI:
    return MessagesAPI()


@pytest.fixture
def provider(api: MessagesAPI) -> AnthropicProvider:
    return AnthropicProvider(api_key=KEY, http_client=api.http_client())


@pytest.fixture
def served(api: MessagesAPI, settings):
    """The fake on a loopback port, where the registered provider will find it."""
    with api.serve() as base_url:
        settings.ANTHROPIC_API_KEY = KEY
        settings.ANTHROPIC_BASE_URL = base_url
        yield api


def ask(**fields) -> LLMRequest:
    return LLMRequest(
        **{"model": "claude-haiku-4-5", "system": SYSTEM, "prompt": "Score Acme", **fields}
    )


def llm_step(**fields) -> dict:
    config = fields.pop("config", {})
    return {
        "key": "ask",
        "kind": "llm",
        "edges": {"next": "done", "escape": "review"},
        "config": {
            "provider": "anthropic",
            "tier": "fast",
            "system": SYSTEM,
            "prompt": "Score {{ input.company }}",
            "output_schema": SCHEMA,
            **config,
        },
        **fields,
    }


def run_of(make_workflow, step: dict) -> Run:
    version = make_workflow([step, DONE, REVIEW])
    started = engine.start_run(workflow=version.workflow, input={"company": "Acme"})
    return drive(started.run.pk)


def attempts(run: Run) -> list[str]:
    return list(StepRun.objects.filter(run=run, step_key="ask").values_list("status", flat=True))


# --- replies --------------------------------------------------------------


def test_it_returns_a_plain_reply_and_the_model_that_answered(api, provider):
    api.reply(
        message(text_block("Acme looks "), text_block("promising."), model="claude-haiku-4-5")
    )
    response = provider.complete(ask())
    assert response.text == "Acme looks promising." and response.data is None
    assert (response.model, response.stop_reason) == ("claude-haiku-4-5", "end_turn")
    [received] = api.received
    assert (received.method, received.path) == ("POST", "/v1/messages")
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received.body["model"] == "claude-haiku-4-5" and received.body["max_tokens"] == 1024
    assert received.body["messages"] == [{"role": "user", "content": "Score Acme"}]
    assert "tools" not in received.body and "tool_choice" not in received.body


def test_it_marks_the_system_prompt_for_caching(api, provider):
    api.reply(message(text_block("ok")))
    provider.complete(ask())
    assert api.bodies[0]["system"] == [{"type": "text", "text": SYSTEM, "cache_control": CACHED}]


def test_it_sends_no_system_block_when_there_is_no_system_prompt(api, provider):
    # The API refuses an empty text block, and the fake does too.
    api.reply(message(text_block("ok")))
    assert provider.complete(ask(system="")).text == "ok"
    assert "system" not in api.bodies[0]


def test_it_forces_the_output_tool_and_reads_its_input_as_the_data(api, provider):
    api.reply(message(tool_use_block({"total": 80, "why": "big"})))
    response = provider.complete(ask(output_schema=SCHEMA))
    assert response.data == {"total": 80, "why": "big"}
    assert json.loads(response.text) == response.data and response.stop_reason == "tool_use"
    body = api.bodies[0]
    assert body["tool_choice"] == {"type": "tool", "name": "record_output"}
    [tool] = body["tools"]
    assert tool["name"] == "record_output" and tool["input_schema"] == SCHEMA
    assert tool["cache_control"] == CACHED


def test_it_sends_repairs_as_alternating_turns_after_the_prompt(api, provider):
    api.reply(message(tool_use_block({"total": 3})))
    repairs = [('{"total": "high"}', "Fix total."), ('{"total": null}', "A number, please.")]
    provider.complete(ask(output_schema=SCHEMA, repairs=repairs))
    assert api.bodies[0]["messages"] == [
        {"role": "user", "content": "Score Acme"},
        {"role": "assistant", "content": '{"total": "high"}'},
        {"role": "user", "content": "Fix total."},
        {"role": "assistant", "content": '{"total": null}'},
        {"role": "user", "content": "A number, please."},
    ]


def test_an_empty_reply_has_no_text_and_no_data(api, provider):
    api.reply(message(stop_reason="end_turn"))
    response = provider.complete(ask(output_schema=SCHEMA))
    assert (response.text, response.data) == ("", None)


def test_it_reads_usage_and_counts_absent_cache_fields_as_zero(api, provider):
    api.reply(message(text_block("a"), usage_=usage(12, 7, cache_read=30, cache_write=40)))
    api.reply(message(text_block("b"), usage_=usage(12, 7)))
    first, second = provider.complete(ask()).usage, provider.complete(ask()).usage
    assert (first.input_tokens, first.output_tokens) == (12, 7)
    assert (first.cache_read_tokens, first.cache_write_tokens) == (30, 40)
    assert (second.cache_read_tokens, second.cache_write_tokens) == (0, 0)


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (400, "invalid_request_error", False),
        (401, "authentication_error", False),
        (403, "permission_error", False),
        (404, "not_found_error", False),
        (413, "request_too_large", False),
        (500, "api_error", True),
        (502, "api_error", True),
        (503, "api_error", True),
        (504, "timeout_error", True),
        (529, "overloaded_error", True),
    ],
)
def test_it_classifies_status_errors_and_sends_one_request_per_attempt(
    api, provider, status, error_type, retryable
):
    api.reply(error_body(error_type, "the API's own words"), status=status)
    with pytest.raises(LLMError) as raised:
        provider.complete(ask())
    assert raised.value.retryable is retryable
    assert str(status) in str(raised.value) and "the API's own words" in str(raised.value)
    # The SDK does not retry on its own: the engine decides, and records it.
    assert len(api.received) == 1


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"retry-after": "7"}, 7.0), ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5)],
)
def test_a_rate_limit_is_retryable_no_sooner_than_the_api_asks(api, provider, headers, seconds):
    api.reply(error_body("rate_limit_error", RATE_LIMITED), status=429, headers=headers)
    with pytest.raises(LLMError) as raised:
        provider.complete(ask())
    assert raised.value.retryable is True and raised.value.retry_after == seconds
    assert "429" in str(raised.value) and "rate limit" in str(raised.value)
    assert len(api.received) == 1


@pytest.mark.parametrize(
    "error",
    [
        error_body("rate_limit_error", "Limit reached.", error_code="enforced_spend_limit_reached"),
        error_body("rate_limit_error", "Limit reached.", error_code="contract_spend_limit_reached"),
        error_body("rate_limit_error", "You have reached your specified API usage limits."),
        error_body("rate_limit_error", "Your credit balance is too low to access the API."),
    ],
)
def test_a_spent_budget_is_not_retried_even_though_it_is_a_429(api, provider, error):
    api.reply(error, status=429, headers={"retry-after": "60"})
    with pytest.raises(LLMError) as raised:
        provider.complete(ask())
    assert raised.value.retryable is False and "spend limit" in str(raised.value)


def test_the_apis_should_retry_header_overrides_the_status(api, provider):
    api.reply(
        error_body("api_error", "Do not bother."), status=500, headers={"x-should-retry": "false"}
    )
    with pytest.raises(LLMError) as raised:
        provider.complete(ask())
    assert raised.value.retryable is False and len(api.received) == 1


def test_a_read_timeout_is_retryable(api):
    api.reply(message(text_block("too late")), delay_s=5)
    with api.serve() as base_url:
        provider = AnthropicProvider(api_key=KEY, base_url=base_url)
        with pytest.raises(LLMError) as raised:
            provider.complete(ask(timeout_s=0.2))
    assert raised.value.retryable is True and "0.2s" in str(raised.value)
    assert len(api.received) == 1


def test_a_late_answer_over_the_transport_is_a_retryable_timeout_too(api, provider):
    api.reply(message(text_block("too late")), delay_s=5)
    with pytest.raises(LLMError) as raised:
        provider.complete(ask(timeout_s=0.2))
    assert raised.value.retryable is True and len(api.received) == 1


def test_a_refused_connection_is_retryable(api):
    with api.serve() as base_url:
        pass  # nothing listens there any more
    with pytest.raises(LLMError) as raised:
        AnthropicProvider(api_key=KEY, base_url=base_url).complete(ask())
    assert raised.value.retryable is True and "unreachable" in str(raised.value)


def test_without_an_api_key_it_fails_clearly_and_sends_nothing(api, settings):
    settings.ANTHROPIC_API_KEY = ""
    with pytest.raises(LLMError) as raised:
        AnthropicProvider(http_client=api.http_client()).complete(ask())
    assert raised.value.retryable is False and "ANTHROPIC_API_KEY" in str(raised.value)
    assert api.received == []


# --- through the engine -----------------------------------------------------


def test_the_registry_serves_the_anthropic_provider():
    assert isinstance(get_provider("anthropic"), AnthropicProvider)


def test_a_schema_miss_is_repaired_through_the_engine(make_workflow, served):
    served.reply(message(tool_use_block({"total": "high"})))
    served.reply(message(tool_use_block({"total": 75})))
    run = run_of(make_workflow, llm_step())
    step = StepRun.objects.get(run=run, step_key="ask")
    assert run.outcome == "scored" and step.output == {"total": 75} and run.llm_calls == 2
    first, second = served.bodies
    assert second["messages"][:2] == [
        {"role": "user", "content": "Score Acme"},
        {"role": "assistant", "content": '{"total": "high"}'},
    ]
    correction = second["messages"][2]
    assert correction["role"] == "user" and "total" in correction["content"]
    # The cached prefix is the same on every turn, so the repair reads the cache.
    assert (first["system"], first["tools"]) == (second["system"], second["tools"])


def test_repairs_exhausted_take_the_escape_edge(make_workflow, served):
    served.reply(message(tool_use_block({"score": 1})))
    served.reply(message(tool_use_block({"score": 2})))
    run = run_of(make_workflow, llm_step())
    step = StepRun.objects.get(run=run, step_key="ask")
    assert run.outcome == "needs_review" and step.edge == "escape"
    assert "total" in step.output["reason"] and len(served.received) == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (message(tool_use_block({}), stop_reason="max_tokens"), "max_tokens"),
        (message(text_block("I can't help with that."), stop_reason="refusal"), "refusal"),
        (message(stop_reason="end_turn"), "reply"),
    ],
    ids=["truncated", "refused", "empty"],
)
def test_a_truncated_refused_or_empty_reply_escapes_without_a_repair(
    make_workflow, served, reply, reason
):
    served.reply(reply)
    run = run_of(make_workflow, llm_step())
    step = StepRun.objects.get(run=run, step_key="ask")
    assert run.outcome == "needs_review" and step.edge == "escape"
    assert reason in step.output["reason"] and len(served.received) == 1


def test_usage_and_cost_include_the_cache_tokens(make_workflow, served):
    tokens = usage(1000, 200, cache_read=500, cache_write=2000)
    served.reply(message(tool_use_block({"total": 90}), usage_=tokens))
    run = run_of(make_workflow, llm_step())
    step = StepRun.objects.get(run=run, step_key="ask")
    assert (step.tokens_in, step.tokens_out) == (1000, 200)
    assert (step.cache_read_tokens, step.cache_write_tokens) == (500, 2000)
    assert (step.provider, step.model_requested, step.model_answered) == (
        "anthropic",
        "claude-haiku-4-5",
        "claude-haiku-4-5",
    )
    # haiku per million: $1 in, $5 out, $0.10 cache read, $1.25 cache write
    assert step.cost_usd == Decimal("0.004550") and run.cost_usd == Decimal("0.004550")


def test_the_engine_waits_at_least_retry_after_before_the_next_attempt(make_workflow, served):
    served.reply(
        error_body("rate_limit_error", RATE_LIMITED), status=429, headers={"retry-after": "30"}
    )
    run = run_of(make_workflow, llm_step())
    [step] = StepRun.objects.filter(run=run, step_key="ask")
    assert (run.status, run.wait_reason) == ("waiting", "retry")
    assert step.status == "failed" and step.retry_delay_s >= 30
    assert run.not_before > timezone.now() + timedelta(seconds=25)
    assert len(served.received) == 1


def test_overloaded_twice_then_an_answer_takes_three_attempts(make_workflow, served):
    served.reply(error_body("overloaded_error", "Overloaded"), status=529)
    served.reply(error_body("overloaded_error", "Overloaded"), status=529)
    served.reply(message(tool_use_block({"total": 60})))
    run = run_of(make_workflow, llm_step(max_attempts=3))
    assert run.status == "succeeded" and run.outcome == "scored"
    assert attempts(run) == ["failed", "failed", "succeeded"]
    assert len(served.received) == 3


def test_a_bad_request_is_not_retried(make_workflow, served):
    served.reply(error_body("invalid_request_error", "max_tokens: too large"), status=400)
    run = run_of(make_workflow, llm_step(max_attempts=3))
    assert run.status == "failed" and "400" in run.error and "max_tokens: too large" in run.error
    assert attempts(run) == ["failed"] and len(served.received) == 1


# --- model routing ----------------------------------------------------------


def _sdk_model_names() -> set[str]:
    from anthropic.types import Model

    literal = next(
        arg for arg in typing.get_args(Model) if typing.get_origin(arg) is typing.Literal
    )
    return set(typing.get_args(literal))


def test_every_tier_names_a_model_the_sdk_knows(settings):
    unknown = {
        tier: m for tier, m in settings.BOSUN_MODEL_TIERS.items() if m not in _sdk_model_names()
    }
    assert unknown == {}


def test_no_tier_names_a_model_the_sdk_deprecates(settings):
    from anthropic.resources.messages.messages import DEPRECATED_MODELS

    deprecated = {t: m for t, m in settings.BOSUN_MODEL_TIERS.items() if m in DEPRECATED_MODELS}
    assert deprecated == {}


def test_every_tier_model_has_a_price(settings):
    unpriced = {
        t: m for t, m in settings.BOSUN_MODEL_TIERS.items() if m not in settings.BOSUN_PRICES
    }
    assert unpriced == {}
