"""The provider protocol: `complete(request) -> response`, one error type.

Providers are registered in `settings.BOSUN_LLM_PROVIDERS` (dotted paths).
The engine speaks only these types; no SDK is imported outside its provider.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string
from pydantic import BaseModel, Field


class LLMRequest(BaseModel):
    model: str
    system: str = ""
    prompt: str
    output_schema: dict[str, Any] | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    timeout_s: float = 60.0
    # Previous turns of a repair loop: (assistant reply, user correction).
    repairs: list[tuple[str, str]] = Field(default_factory=list)
    # Step configuration and run context, for offline providers that compute
    # their answer (scripted) or look it up (replay). Never sent to a vendor.
    step_config: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, Any] = Field(default_factory=dict)
    step_key: str = ""
    replay_of: int | None = None


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class LLMResponse(BaseModel):
    text: str = ""
    data: Any = None  # structured output when the provider returns it parsed
    model: str = ""  # the model version that answered
    stop_reason: str = "end_turn"
    usage: Usage = Field(default_factory=Usage)


class LLMError(Exception):
    """A failed model call. `outage` is what it says about the provider,
    for its circuit breaker: True, down or unreachable (a 5xx, overloaded,
    a timeout, no connection); False, it answered (a 4xx, a rate limit);
    None, nothing (no request was sent). By default a retryable error is
    an outage and another says nothing."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        outage: bool | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.outage = outage if outage is not None else (True if retryable else None)


class Provider(Protocol):
    """`complete(request) -> response`. A provider that answers offline sets
    a class attribute `breaker = False`: its calls skip the circuit breaker."""

    name: str

    def complete(self, request: LLMRequest) -> LLMResponse: ...


@cache
def _load(path: str) -> Provider:
    return import_string(path)()


def get_provider(name: str) -> Provider:
    try:
        path = settings.BOSUN_LLM_PROVIDERS[name]
    except KeyError:
        raise LookupError(f"no LLM provider named {name!r} is registered") from None
    return _load(path)


def resolve_model(*, tier: str | None, model: str | None) -> str:
    if model:
        return model
    tiers = settings.BOSUN_MODEL_TIERS
    if tier not in tiers:
        raise LookupError(f"unknown model tier {tier!r}; choose one of {sorted(tiers)}")
    return tiers[tier]


_DATED = re.compile(r"-\d{8}$")


def price_of(*models: str) -> dict[str, float] | None:
    """The first price found for these model ids; a dated id
    (`claude-haiku-4-5-20251001`) is priced as its alias."""
    table = settings.BOSUN_PRICES
    for model in models:
        if model and (model in table or _DATED.sub("", model) in table):
            return table.get(model) or table[_DATED.sub("", model)]
    return None


# The shortest prefix Anthropic's API caches, in tokens, by model (its
# prompt-caching docs): a request whose marked prefix is shorter is billed as
# plain input, with no error. Models not listed are taken at the lowest floor.
CACHE_MIN_TOKENS = {
    "claude-haiku-4-5": 4096,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-7": 4096,
}
CACHE_TTL_S = 300  # the default (5-minute) cache, refreshed by every hit


def cache_minimum(model: str) -> int:
    """The fewest prefix tokens `model` caches; a dated id as its alias."""
    return CACHE_MIN_TOKENS.get(model) or CACHE_MIN_TOKENS.get(_DATED.sub("", model), 1024)


def cost_of(model: str, usage: Usage, *, requested: str = "") -> Decimal:
    """USD for `usage` on `model` (or, unpriced, the model requested)."""
    prices = price_of(model, requested)
    if prices is None:
        return Decimal(0)
    per_token = (
        usage.input_tokens * prices["input"]
        + usage.output_tokens * prices["output"]
        + usage.cache_read_tokens * prices["cache_read"]
        + usage.cache_write_tokens * prices["cache_write"]
    )
    return (Decimal(str(per_token)) / Decimal(1_000_000)).quantize(Decimal("0.000001"))
