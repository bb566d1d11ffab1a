"""The economics bench bills prompt caching as the provider does: a marked
prefix long enough for the model is written once (1.25x input) and then read
(0.1x) for five minutes after its last use."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from bench import metered
from bench.metered import HandWritten, MeteredProvider, PromptCache, plain_body, prompt_of
from runs.llm.anthropic_provider import message_params
from runs.llm.base import LLMRequest

SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"
RUBRIC = "Score the lead on size, industry, market and seniority. " * 200  # ~2,800 tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def request(model: str = SONNET, *, system: str = RUBRIC, prompt: str = "Lead: Acme") -> LLMRequest:
    return LLMRequest(
        model=model,
        system=system,
        prompt=prompt,
        output_schema={"type": "object", "properties": {"score": {"type": "number"}}},
        step_config={"scripted": {"reply": {"score": 88}}},
        step_key="score",
    )


@pytest.fixture
def cache(tmp_path):
    return PromptCache(str(tmp_path / "cache"), clock=Clock())


def charge(cache: PromptCache, req: LLMRequest, org: str = "bosun") -> tuple[int, int]:
    with cache.charge(org=org, model=req.model, prompt=prompt_of(message_params(req))) as split:
        return split


def test_the_metering_marks_the_prefix_bosuns_provider_marks():
    req = request()
    prefixes = prompt_of(message_params(req)).prefixes
    # The tool, then the tool and the system prompt: both carry cache_control.
    assert len(prefixes) == 2
    assert prefixes[0][0] < prefixes[1][0] < prompt_of(message_params(req)).tokens
    assert prompt_of(plain_body(req)).prefixes == ()
    marked = prompt_of(plain_body(req, mark_system=True)).prefixes
    assert marked == prefixes[1:]  # the system block's prefix takes the tool along


def test_the_first_request_writes_the_prefix_and_the_next_reads_it(cache):
    first, second = charge(cache, request()), charge(cache, request(prompt="Lead: Globex"))
    prefix = prompt_of(message_params(request())).marked
    assert first == (0, prefix)
    assert second == (prefix, 0)


def test_a_prefix_shorter_than_the_models_minimum_is_not_cached(cache):
    # About 2,800 tokens: enough for Sonnet 4.6 (1,024), not for Haiku 4.5 (4,096).
    assert charge(cache, request(HAIKU)) == (0, 0)
    assert charge(cache, request(HAIKU)) == (0, 0)
    assert charge(cache, request(SONNET, system="Short instructions.")) == (0, 0)


def test_the_cache_lives_five_minutes_after_its_last_use(cache):
    prefix = prompt_of(message_params(request())).marked
    assert charge(cache, request()) == (0, prefix)
    cache.clock.now += 299
    assert charge(cache, request()) == (prefix, 0)  # a hit starts the five minutes again
    cache.clock.now += 299
    assert charge(cache, request()) == (prefix, 0)
    cache.clock.now += 301
    assert charge(cache, request()) == (0, prefix)


def test_the_cache_is_per_model_and_per_organisation(cache):
    charge(cache, request(SONNET))
    assert charge(cache, request("claude-sonnet-4-5"))[0] == 0
    assert charge(cache, request(SONNET), org="script")[0] == 0
    assert charge(cache, request(SONNET, system=RUBRIC + "Changed."))[0] == 0


def test_a_write_costs_1_25x_input_and_a_read_0_1x(tmp_path, monkeypatch):
    bill = tmp_path / "bill.jsonl"
    monkeypatch.setenv("BOSUN_BENCH_METER", str(bill))
    monkeypatch.setattr(metered, "SIDE", "script_cached")
    model = HandWritten(MeteredProvider(), mark_system=True)
    first, second = model.complete(request()), model.complete(request())
    lines = [json.loads(raw) for raw in bill.read_text().splitlines()]
    written, read = first.usage.cache_write_tokens, second.usage.cache_read_tokens
    assert written == read > 1024 and first.usage.cache_read_tokens == 0
    plain = first.usage.input_tokens
    assert second.usage.input_tokens == plain  # the lead's own message
    out = Decimal(first.usage.output_tokens) * 15  # Sonnet 4.6: $15 and $3 a million

    def priced(input_tokens: Decimal) -> Decimal:
        return ((input_tokens * 3 + out) / 1_000_000).quantize(Decimal("0.000001"))

    assert Decimal(lines[0]["usd"]) == priced(plain + written * Decimal("1.25"))
    assert Decimal(lines[1]["usd"]) == priced(plain + read * Decimal("0.1"))
    assert lines[0]["in"] == lines[1]["in"] == plain + written


def test_a_client_that_marks_nothing_pays_full_input_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("BOSUN_BENCH_METER", str(tmp_path / "bill.jsonl"))
    monkeypatch.setattr(metered, "SIDE", "script")
    model = HandWritten(MeteredProvider())
    usages = [model.complete(request()).usage for _ in range(2)]
    assert [(u.cache_read_tokens, u.cache_write_tokens) for u in usages] == [(0, 0), (0, 0)]
