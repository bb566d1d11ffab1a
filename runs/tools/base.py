"""The tool protocol and the explicit registry of tools.

A tool is a class with a name, a pydantic `Args` model, a `Result` model, a
side-effect class and `run()`. The registry is `settings.BOSUN_TOOLS`, a
literal dict of dotted paths, plus the same kind of dict declared by an
installed app's config (`bosun_tools`): nothing is discovered by import
side effects.

Side-effect classes:
- `read`: no effect outside; may be cached and retried freely.
- `write_idempotent`: passes `call.idempotency_key` to the external system,
  which applies a repeated key once; after a crash it is simply called again.
- `write_unsafe`: no idempotency outside (an SMTP send); after a crash with
  the outcome unknown the run waits for a human to reconcile.

What a call costs comes from the tool price table beside the model prices
(`settings.BOSUN_TOOL_PRICES`, credits priced by `BOSUN_CREDIT_PRICES`):
`Tool.price(args)` before the call, `Tool.cost(args, result)` after it, for
a vendor that reports its charge in its answer. A tool with a price is
`paid`: after a crash with the outcome unknown it is treated like a write,
asked again only under the same request key of a vendor that honours it
(`vendor_dedups`), else reconciled by a person.

Tools never call each other or the network directly: the gate
(`runs.engine.gate`) is the one way in, and it applies the role, the
autonomy rules, the kill switches, the limits and the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from types import MappingProxyType, UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from pydantic import BaseModel, ValidationError

SideEffect = Literal["read", "write_idempotent", "write_unsafe"]
RiskTier = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class ToolCall:
    """Who is calling, and the stable key a write passes to the outside."""

    run_id: int
    step_key: str
    seq: int
    attempt: int
    idempotency_key: str
    timeout_s: float
    # Set when the worker has lost the run (a heartbeat found it taken
    # over): a long tool may check it between pieces of work and stop. What
    # it returns then is not recorded.
    lease_lost: threading.Event | None = None


@dataclass(frozen=True)
class ToolCost:
    """What one call costs at a vendor: its credits and the vendor dollars
    (the per-call USD plus the credits at the vendor's credit price)."""

    vendor: str = ""
    credits: int = 0
    usd: Decimal = Decimal(0)

    def __bool__(self) -> bool:
        return bool(self.credits or self.usd)


FREE = ToolCost()


def priced(vendor: str, credits: int = 0, usd: Decimal | str = "0") -> ToolCost:
    """A cost of `credits` of `vendor` plus `usd`, the credits priced by
    `settings.BOSUN_CREDIT_PRICES` (a vendor it does not list: an error,
    never a free call)."""
    total = Decimal(usd)
    if credits:
        try:
            total += credits * settings.BOSUN_CREDIT_PRICES[vendor]
        except KeyError:
            raise LookupError(f"BOSUN_CREDIT_PRICES has no price for {vendor} credits") from None
    return ToolCost(vendor, credits, total)


def price_of(name: str) -> ToolCost:
    """A call's price from the table `settings.BOSUN_TOOL_PRICES` (FREE when
    the tool is not listed)."""
    entry = settings.BOSUN_TOOL_PRICES.get(name)
    if entry is None:
        return FREE
    return priced(entry["vendor"], entry["credits"], entry["usd"])


class ToolError(Exception):
    """A failed call. `outcome_unknown` means it may have taken effect
    anyway (a timeout after the request was sent): the ledger then treats
    the call like a crash mid-call, never as a clean failure. `outage`
    tells the vendor's circuit breaker what the failure says about the
    vendor: True, down or unreachable (a 5xx, a timeout, no connection);
    False, it answered (a 4xx, a rate limit); None, nothing (the call was
    not sent). By default a retryable error is an outage."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        outage: bool | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.outage = outage if outage is not None else (True if retryable else None)


class Tool:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    side_effect: ClassVar[SideEffect] = "read"
    risk: ClassVar[RiskTier] = "low"
    # Sends data outside the system (a tainted run needs approval for it).
    egress: ClassVar[bool] = False
    # Its result carries text from outside (screened for prompt injection).
    untrusted_output: ClassVar[bool] = False
    # Keys of the concurrency caps and rate limits it counts against,
    # e.g. ("vendor:enrichco",); limits themselves are configured in admin.
    limit_keys: ClassVar[tuple[str, ...]] = ()
    # The vendor answers a repeated request key without charging again (a
    # paid call is asked again after a crash only when it does).
    vendor_dedups: ClassVar[bool] = False
    # How long (seconds) an answer of this read is reused across runs and
    # workflows by default (0: never); a manager overrides it in admin
    # (policies.AnswerReuse). Only for tools that define `answer_key`.
    answer_ttl_s: ClassVar[int] = 0
    Args: ClassVar[type[BaseModel]]
    Result: ClassVar[type[BaseModel]]

    @property
    def writes(self) -> bool:
        return self.side_effect != "read"

    @property
    def paid(self) -> bool:
        """A call is charged by a vendor: the tool has a price in the table,
        or reads its charge from the answer (it defines its own `cost`)."""
        return bool(price_of(self.name)) or type(self).cost is not Tool.cost

    # `args` is an instance of the tool's own `Args` (the gate validates it),
    # which subclasses name in their signatures.
    def keys_for(self, args: Any) -> tuple[str, ...]:
        """Limit keys for this call; a tool may derive them from its args."""
        return self.limit_keys

    def destinations(self, args: Any) -> tuple[str, ...]:
        """Where this call sends data, as far as its arguments decide it:
        `email:<address>` and `host:<name>` strings (see lib.destinations).
        The gate holds them to the policy's allowlist and its knowledge
        guards. A tool that always talks to the same system names none."""
        return ()

    def price(self, args: Any) -> ToolCost:
        """What the call is known to cost before it is made: the budget is
        checked with it. By default the tool's entry in the price table."""
        return price_of(self.name)

    def cost(self, args: Any, result: dict[str, Any]) -> ToolCost:
        """What the call cost, once answered (`result` as the ledger records
        it): a tool whose vendor reports the credits it charged in its answer
        reads them here (see `priced`). By default the call's price."""
        return self.price(args)

    def answer_key(self, args: Any) -> str | None:
        """What a read's answer describes (`company:acme.com`), when any
        caller asking about the same thing may share it; None otherwise."""
        return None

    def stub(self, args: Any) -> BaseModel:
        """What a sandbox run (an experiment, a shadow) is answered instead
        of a call that must not happen: a valid `Result` describing the call
        as if it had succeeded, made without touching anything outside. By
        default each field of the result takes the argument of the same
        name, else an empty value of its type (see `stub_result`)."""
        return stub_result(self.Result, args)

    def run(self, args: Any, call: ToolCall) -> BaseModel:  # pragma: no cover - protocol
        raise NotImplementedError


def stub_result(model: type[BaseModel], args: Any = None, **given: Any) -> BaseModel:
    """A valid instance of `model`: the `given` values, then the arguments'
    fields of the same name, then each required field's empty value (""
    , 0, False, [], {}, the first of a Literal, a nested model's stub)."""
    known = args.model_dump() if isinstance(args, BaseModel) else dict(args or {})
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in given:
            values[name] = given[name]
        elif name in known:
            values[name] = known[name]
        elif field.is_required():
            values[name] = _empty(field.annotation)
    try:
        return model.model_validate(values)
    except ValidationError:
        # An argument of the same name but another shape: empty values only.
        return model.model_validate(
            {
                **{
                    n: _empty(f.annotation)
                    for n, f in model.model_fields.items()
                    if f.is_required()
                },
                **given,
            }
        )


def _empty(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is Literal:
        return get_args(annotation)[0]
    if origin in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return None if len(options) < len(get_args(annotation)) else _empty(options[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return stub_result(annotation).model_dump()
    base = origin or annotation
    for kind, value in ((bool, False), (int, 0), (float, 0.0), (str, "")):
        if base is kind:
            return value
    if base in (list, tuple, set, frozenset):
        return []
    if base is dict:
        return {}
    return None


class UnknownTool(LookupError):
    pass


@cache
def _load(path: str) -> type[Tool]:
    return import_string(path)


_registry: dict[str, str] | None = None


def registry() -> Mapping[str, str]:
    """Tool name -> dotted path: `settings.BOSUN_TOOLS`, plus the
    `bosun_tools` dict of each installed app that declares one (the demo
    app's sample vendors exist only while it is installed). Built once (a
    step looks tools up on its hot path), again after those settings change."""
    global _registry
    if _registry is None:
        tools = dict(settings.BOSUN_TOOLS)
        for app_config in apps.get_app_configs():
            tools.update(getattr(app_config, "bosun_tools", {}))
        _registry = tools
    return MappingProxyType(_registry)


@receiver(setting_changed)
def _forget_registry(*, setting: str, **kwargs: Any) -> None:
    global _registry
    if setting in ("BOSUN_TOOLS", "INSTALLED_APPS"):
        _registry = None


def get_tool(name: str) -> Tool:
    try:
        path = registry()[name]
    except KeyError:
        raise UnknownTool(f"no tool named {name!r} is registered") from None
    return _load(path)()


def tool_names() -> list[str]:
    return sorted(registry())
