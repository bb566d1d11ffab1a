"""Step kinds: each is a pydantic `Config` and `execute(ctx) -> Outcome`.

A kind does the work of one step and says which edge to take. It never
writes the run's state: the worker checkpoints what it returns. Failures
are raised as `StepError` with `retryable` set; anything else that escapes
is classified by the worker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.module_loading import import_string
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from approvals.models import ApprovalRequest, ApprovalStatus
from lib.conditions import Condition, evaluate
from lib.context import RenderError, check_template_syntax, render_value
from runs.engine import breakers, gate, tracing
from runs.engine.errors import BreakerOpen, BudgetExceeded, Refused, StepError, Wait
from runs.llm.base import (
    LLMError,
    LLMRequest,
    LLMResponse,
    cost_of,
    get_provider,
    resolve_model,
)
from runs.models import StepRun
from runs.tools.base import FREE, Tool, ToolCost, ToolError, UnknownTool, get_tool

if TYPE_CHECKING:
    from policies.services import Rules


@dataclass
class StepContext:
    run_id: int
    seq: int
    attempt: int
    step_key: str
    timeout_s: float
    variables: dict[str, Any]  # {"input": …, "steps": {…}, "run": {…}, "flags": {…}}
    replay_of: int | None = None  # LLM steps answer from this run's records
    workflow: str = ""
    rules: Rules | None = None  # the run's role, budget and autonomy rules
    tainted: bool = False  # the run has read content from an untrusted source
    # The worker's fencing token for the run: the tool gate opens and closes
    # its ledger rows only while the run is still this worker's.
    fence: int | None = None
    # Tools a kill switch holds, as of the claim or the last checkpoint.
    tools_off: frozenset[str] = frozenset()
    # Leaves a succeeded call's ledger row to the step's checkpoint (see
    # gate.Caller.defer_close).
    defer_close: Callable[[int, dict[str, Any]], None] | None = None
    # Set when a heartbeat finds the run no longer this worker's (see
    # runs.engine.heartbeat): a long step may stop early.
    lease_lost: threading.Event | None = None
    suspicious: bool = False  # and some of it looked like an injection
    # Input fields to redact before a prompt is rendered (per policy).
    redact_fields: tuple[str, ...] = ()
    # Raises BudgetExceeded when the run may not start another paid call:
    # before_call(kind, spent_in_step, calls_in_step, the call's known price).
    before_call: Callable[[str, Decimal, int, ToolCost], None] | None = None
    # The run's mode (runs.models.RunMode): any but "live" is a sandbox, in
    # which the kinds make no effect outside (see `sandbox`).
    mode: str = "live"
    tools_from: int | None = None  # a sandbox run's reads answer from this run

    @property
    def sandbox(self) -> bool:
        """A sandbox run (experiment, shadow, dry run): tool writes are
        stubbed at the gate, approvals pass as proposed, and no knowledge
        event, dedup record, step cache entry or shared answer is written."""
        return self.mode != "live"

    def check_budget(
        self, kind: str, spent: Decimal = Decimal(0), calls: int = 0, price: ToolCost = FREE
    ) -> None:
        if self.before_call is not None:
            self.before_call(kind, spent, calls, price)


@dataclass
class Outcome:
    """What a step produced. `wait` set means the run pauses here."""

    output: Any = None
    edge: str = "next"
    input: Any = None
    wait: str = ""
    wait_s: float | None = None  # try again after this long (a full limit)
    end: tuple[str, bool] | None = None  # (outcome label, success)
    provider: str = ""
    model_requested: str = ""
    model_answered: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model_usd: Decimal = field(default_factory=Decimal)
    # A paid tool call's vendor, its credits and its vendor dollars.
    vendor: str = ""
    credits: int = 0
    vendor_usd: Decimal = field(default_factory=Decimal)
    llm_calls: int = 0
    tool_calls: int = 0
    cache_hit: bool = False
    # What an answer from the step cache or the ledger did not pay again.
    cost_saved_usd: Decimal = field(default_factory=Decimal)
    vendor_saved_usd: Decimal = field(default_factory=Decimal)
    credits_saved: int = 0
    # Writes that commit in the same transaction as this step's checkpoint,
    # run inside it after the run's row is updated (an end step's dedup
    # disposition): a crash leaves both undone, never one of them.
    commit_with: Callable[[], None] | None = None

    @property
    def cost_usd(self) -> Decimal:
        """What the step paid: model plus vendor spend."""
        return self.model_usd + self.vendor_usd

    def charge(self, cost: ToolCost) -> None:
        """Book a tool call's cost on the step."""
        if not cost:
            return
        if self.vendor and cost.vendor != self.vendor:
            raise ValueError(f"a step pays one vendor, not {self.vendor} and {cost.vendor}")
        self.vendor = cost.vendor
        self.credits += cost.credits
        self.vendor_usd += cost.usd

    def spared(self, cost: ToolCost) -> None:
        """Book a tool call's cost as not paid again (a recorded answer)."""
        if not cost:
            return
        self.vendor = self.vendor or cost.vendor
        self.credits_saved += cost.credits
        self.vendor_saved_usd += cost.usd
        self.cost_saved_usd += cost.usd


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The config class of a kind: the worker validates a step's config with
# `kind.Config` and hands that instance back to the kind's methods.
C = TypeVar("C", bound=StrictConfig)


class Kind(Generic[C]):
    name: ClassVar[str]
    Config: ClassVar[type[StrictConfig]]
    # Edge labels the step may take; a kind whose labels come from its
    # config (branch) overrides `edge_labels`.
    required_edges: ClassVar[tuple[str, ...]] = ("next",)
    optional_edges: ClassVar[tuple[str, ...]] = ()

    def edge_labels(self, config: C) -> tuple[set[str], set[str]]:
        return set(self.required_edges), set(self.optional_edges)

    def check(self, config: C) -> list[str]:
        """Problems that a pydantic model cannot see (registry look-ups)."""
        return []

    def cacheable(self, config: C) -> bool:
        """Whether the step cache may answer for this step."""
        return False

    def cache_material(self, config: C, ctx: StepContext) -> Any:
        """What, besides the config, decides the answer (the rendered input)."""
        raise NotImplementedError

    def cost_of_answer(self, config: C, ctx: StepContext, output: Any) -> ToolCost:
        """What a vendor would charge for this answer (a cache hit did not
        pay it). Kinds that call no paid tool cost nothing."""
        return FREE

    def execute(self, config: C, ctx: StepContext) -> Outcome:  # pragma: no cover
        raise NotImplementedError


def _render(value: Any, ctx: StepContext) -> Any:
    try:
        return render_value(value, ctx.variables)
    except RenderError as exc:
        raise StepError(str(exc), retryable=False, error_type="render") from None


class ToolKind(Kind["ToolKind.Config"]):
    """Calls a registered tool through the gate (`runs.engine.gate`).

    A refusal (not in the role, invalid arguments, blocked, approval
    rejected) fails the step, or takes its `refused` edge when it has one.
    """

    name = "tool"
    optional_edges = ("refused",)

    class Config(StrictConfig):
        tool: str = Field(min_length=1)
        args: dict[str, Any] = Field(default_factory=dict)
        # An approval step before this one whose approved draft holds the
        # call's arguments (e.g. to, subject, body): a person's approval
        # there is the approval this call needs (see gate._approved_before).
        approved_by: str = ""

    def check(self, config: Config) -> list[str]:
        try:
            get_tool(config.tool)
        except UnknownTool as exc:
            return [str(exc)]
        return check_template_syntax(config.args)

    def cacheable(self, config: Config) -> bool:
        # Only a read can be answered from a cache: a write must happen.
        return get_tool(config.tool).side_effect == "read"

    def cache_material(self, config: Config, ctx: StepContext) -> Any:
        return self._args(get_tool(config.tool), config, ctx).model_dump(mode="json")

    def cost_of_answer(self, config: Config, ctx: StepContext, output: Any) -> ToolCost:
        tool = get_tool(config.tool)
        return tool.cost(self._args(tool, config, ctx), output)

    @staticmethod
    def _args(tool: Tool, config: Config, ctx: StepContext) -> BaseModel:
        raw_args = _render(config.args, ctx)
        try:
            return tool.Args.model_validate(raw_args)
        except ValidationError as exc:
            raise StepError(
                f"arguments for {tool.name} are invalid: {_brief(exc)}",
                retryable=False,
                error_type="invalid_arguments",
            ) from None

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        raw_args = _render(config.args, ctx)
        assert ctx.rules is not None, "the worker binds every run to its rules"
        caller = gate.Caller(
            run_id=ctx.run_id,
            seq=ctx.seq,
            step_key=ctx.step_key,
            attempt=ctx.attempt,
            timeout_s=ctx.timeout_s,
            workflow=ctx.workflow,
            rules=ctx.rules,
            tainted=ctx.tainted,
            suspicious=ctx.suspicious,
            fence=ctx.fence,
            tools_off=ctx.tools_off,
            lease_lost=ctx.lease_lost,
            defer_close=ctx.defer_close,
            before_call=lambda price: ctx.check_budget("tool", price=price),
            prior_approval=_prior_approval(config.approved_by, ctx),
            mode=ctx.mode,
            tools_from=ctx.tools_from,
        )
        try:
            called = gate.call_tool(config.tool, raw_args, caller)
        except Wait as exc:
            return Outcome(wait=exc.run_wait, wait_s=exc.wait_s, input=exc.detail)
        except Refused as exc:
            raise StepError(
                str(exc), retryable=False, error_type=f"refused:{exc.code}", detail=exc.detail
            ) from None
        except ToolError as exc:
            raise StepError(
                str(exc), retryable=exc.retryable, retry_after=exc.retry_after, error_type="tool"
            ) from None
        outcome = Outcome(
            output=called.result,
            input=called.args,
            tool_calls=0 if called.from_ledger else 1,
        )
        if called.shared:
            # Another call bought this answer (and booked its charge).
            outcome.spared(called.cost)
        elif not called.from_ledger:
            outcome.charge(called.cost)
        elif called.cost:
            # The recorded answer of an earlier attempt: not bought again.
            # If that attempt died before its checkpoint, its charge was
            # never booked: book it here, once.
            outcome.spared(called.cost)
            if not _charged_before(ctx, called.cost.vendor):
                outcome.charge(called.cost)
        return outcome


def _charged_before(ctx: StepContext, vendor: str) -> bool:
    """Did an earlier attempt of this step book a vendor charge? (Only an
    answer from the ledger asks, so the common path pays no query.)"""
    paid = Q(credits__gt=0) | Q(vendor_usd__gt=0)
    return StepRun.objects.filter(paid, run_id=ctx.run_id, seq=ctx.seq, vendor=vendor).exists()


def _prior_approval(step_key: str, ctx: StepContext) -> gate.PriorApproval | None:
    decided = (ctx.variables.get("steps") or {}).get(step_key) if step_key else None
    if not isinstance(decided, dict) or decided.get("decision") != ApprovalStatus.APPROVED:
        return None
    if decided.get("approval_id") is None:  # passed by itself in a sandbox run
        return None
    return gate.PriorApproval(approval_id=decided["approval_id"], draft=decided.get("draft"))


class BranchRule(StrictConfig):
    when: Condition
    edge: str = Field(min_length=1)


class BranchKind(Kind["BranchKind.Config"]):
    name = "branch"

    class Config(StrictConfig):
        rules: list[BranchRule] = Field(min_length=1)
        default: str = Field(min_length=1)

    def edge_labels(self, config: Config) -> tuple[set[str], set[str]]:
        return {rule.edge for rule in config.rules} | {config.default}, set()

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        for index, rule in enumerate(config.rules):
            if evaluate(rule.when, ctx.variables):
                return Outcome(output={"edge": rule.edge, "rule": index}, edge=rule.edge)
        return Outcome(output={"edge": config.default, "rule": None}, edge=config.default)


class ApprovalKind(Kind["ApprovalKind.Config"]):
    """Puts a draft in the review queue; the run waits for the decision.

    The step runs twice: first it creates the request (once per run and seq,
    a unique constraint) and the run waits; after the decision the worker
    runs it again and it returns the decision as its edge.
    """

    name = "approval"
    required_edges = ("approved", "rejected")

    class Config(StrictConfig):
        draft: Any = None
        title: str = ""
        # Empty: the output check that flagged the step before, if any.
        reason_code: str = ""
        # Service level. `queue`: the role group told when a request arrives.
        # `sla_s`: due this long after it arrives; once overdue it is marked
        # breached and the `escalate_to` group is told. `timeout_s`: after
        # this long the policy decides as `on_timeout` says: "reject" (the
        # default, the safe choice for outbound sends and spending) or
        # "approve" only where the step says so. No `timeout_s`: it waits
        # for a person however long it takes.
        queue: str = Field(default="reviewer", min_length=1, max_length=80)
        sla_s: float | None = Field(default=None, gt=0)
        escalate_to: str = Field(default="", max_length=80)
        on_timeout: Literal["", "approve", "reject"] = ""
        timeout_s: float | None = Field(default=None, gt=0)

        @model_validator(mode="after")
        def _sla_is_complete(self) -> ApprovalKind.Config:
            if self.on_timeout and self.timeout_s is None:
                raise ValueError("on_timeout needs timeout_s")
            if self.escalate_to and self.sla_s is None:
                raise ValueError("escalate_to needs sla_s: escalation happens once overdue")
            return self

    def check(self, config: Config) -> list[str]:
        """A role group the step names must exist (the default queue is
        not named: without its group the request still shows in the queue)."""
        from django.contrib.auth.models import Group

        named = {config.escalate_to} | (
            {config.queue} if "queue" in config.model_fields_set else set()
        )
        named -= {""}
        known = set(Group.objects.filter(name__in=named).values_list("name", flat=True))
        return [f"no role group named {name!r}" for name in sorted(named - known)]

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        if ctx.sandbox:
            return self._auto_pass(config, ctx)
        request = ApprovalRequest.objects.filter(run_id=ctx.run_id, seq=ctx.seq).first()
        if request is None:
            draft = _render(config.draft, ctx)
            try:
                with transaction.atomic():
                    request = ApprovalRequest.objects.create(
                        run_id=ctx.run_id,
                        seq=ctx.seq,
                        step_key=ctx.step_key,
                        title=str(_render(config.title, ctx))[:300],
                        draft=draft,
                        reason_code=config.reason_code or _flag_reason(ctx),
                        **self._service_level(config),
                    )
                    # Reviewers are told once the request has committed, by
                    # a queued task: a slow or failing mail server neither
                    # holds nor fails the step (the SLA sweep tells anyone
                    # missed; `notified_at` makes sure it is told once).
                    transaction.on_commit(partial(_announce, request.pk))
            except IntegrityError:
                # Created by an earlier attempt of this step: use that one.
                request = ApprovalRequest.objects.get(run_id=ctx.run_id, seq=ctx.seq)
        if request.status == ApprovalStatus.PENDING:
            return Outcome(wait="approval", input={"approval_id": request.pk})
        approved = request.status == ApprovalStatus.APPROVED
        final = request.edited_draft if request.edited_draft is not None else request.draft
        return Outcome(
            input={"approval_id": request.pk},
            output={
                "approval_id": request.pk,
                "decision": request.status,
                "draft": final,
                "edited": request.edited_draft is not None,
                "reason": request.decision_reason,
                "decided_by": request.decided_by_label,
            },
            edge="approved" if approved else "rejected",
        )

    @staticmethod
    def _auto_pass(config: Config, ctx: StepContext) -> Outcome:
        """A sandbox run waits for nobody and puts nothing in the queue: the
        draft passes as it was proposed, recorded as passed by itself."""
        draft = _render(config.draft, ctx)
        return Outcome(
            input={"auto_passed": True},
            output={
                "approval_id": None,
                "decision": ApprovalStatus.APPROVED.value,
                "draft": draft,
                "edited": False,
                "reason": "sandbox run: approved as proposed, no person asked",
                "decided_by": "sandbox",
                "auto_passed": True,
            },
            edge="approved",
        )

    @staticmethod
    def _service_level(config: Config) -> dict[str, Any]:
        """The request's SLA fields; times read the database clock."""

        def after(seconds: float | None) -> Any:
            return None if seconds is None else Now() + timedelta(seconds=seconds)

        return {
            "queue": config.queue,
            "due_at": after(config.sla_s),
            "escalate_to": config.escalate_to,
            # A timeout with no decision named rejects: never send or spend
            # because nobody looked.
            "on_timeout": config.on_timeout or ("reject" if config.timeout_s else ""),
            "timeout_after": after(config.timeout_s),
        }


def _announce(approval_id: int) -> None:
    """Hand a new request to the notifier (`BOSUN_REVIEW_NOTIFIER`); never raises."""
    try:
        import_string(settings.BOSUN_REVIEW_NOTIFIER)(approval_id)
    except Exception:  # telling people must not fail the run
        logging.getLogger("bosun.engine").exception("approval %s: notifier failed", approval_id)


def _flag_reason(ctx: StepContext) -> str:
    flags = ctx.variables.get("flags") or {}
    for step_key in reversed(list(flags)):
        if flags[step_key]:
            return f"check:{flags[step_key][0]}"[:80]
    return "review_required"


class LLMKind(Kind["LLMKind.Config"]):
    """Renders prompts, asks a provider, validates the reply against a contract.

    A reply that misses the output schema is sent back with the validation
    error, at most `max_repairs` times; a reply still invalid, refused,
    truncated or below the confidence floor takes the `escape` edge. No
    value is ever invented.
    """

    name = "llm"
    optional_edges = ("escape",)

    class Config(StrictConfig):
        provider: str = ""
        tier: str = "balanced"
        model: str = ""
        system: str = ""
        prompt: str = Field(min_length=1)
        output_schema: dict[str, Any] | None = None
        max_tokens: int = Field(default=1024, ge=1, le=64000)
        max_repairs: int = Field(default=1, ge=0, le=5)
        confidence_field: str = ""
        confidence_floor: float = Field(default=0.0, ge=0, le=1)
        scripted: dict[str, Any] = Field(default_factory=dict)
        # Ask the tier's next route (BOSUN_MODEL_ROUTES) when the first is
        # down; False keeps the step to its first model (a prompt tuned for
        # one model, a judged step).
        fallback: bool = True

    def check(self, config: Config) -> list[str]:
        from django.conf import settings

        problems = check_template_syntax([config.system, config.prompt])
        provider = config.provider or settings.BOSUN_DEFAULT_PROVIDER
        if provider not in settings.BOSUN_LLM_PROVIDERS:
            problems.append(f"no LLM provider named {provider!r} is registered")
        if not config.model and config.tier not in settings.BOSUN_MODEL_TIERS:
            problems.append(f"unknown model tier {config.tier!r}")
        for route in model_routes(config, provider)[1:]:
            if route[0] not in settings.BOSUN_LLM_PROVIDERS:
                problems.append(f"fallback route {route[0]}:{route[1]}: no such provider")
        if config.output_schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(config.output_schema)
            except jsonschema.SchemaError as exc:
                problems.append(f"output_schema is not a valid JSON Schema: {exc.message}")
        return problems

    def cacheable(self, config: Config) -> bool:
        return True

    def cache_material(self, config: Config, ctx: StepContext) -> Any:
        request = self._request(config, ctx)
        return {"model": request.model, "system": request.system, "prompt": request.prompt}

    @staticmethod
    def _request(config: Config, ctx: StepContext) -> LLMRequest:
        if ctx.redact_fields:
            # The model never sees the raw values of sensitive fields.
            from lib.screening import redact_fields

            redacted = redact_fields(ctx.variables.get("input") or {}, list(ctx.redact_fields))
            ctx = replace(ctx, variables={**ctx.variables, "input": redacted})
        return LLMRequest(
            model=resolve_model(tier=config.tier, model=config.model or None),
            system=str(_render(config.system, ctx)),
            prompt=str(_render(config.prompt, ctx)),
            output_schema=config.output_schema,
            max_tokens=config.max_tokens,
            timeout_s=ctx.timeout_s,
            step_config=config.model_dump(),
            variables=ctx.variables,
            step_key=ctx.step_key,
            replay_of=ctx.replay_of,
        )

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        """Ask the first route of the step's tier; when its breaker is open
        or its call fails for an outage, ask the next route in the same
        attempt (unless the step forbids fallback). The step records the
        route that answered (`provider`, `model_answered`) and, in its
        input, the routes passed over and why; it is priced at what answered."""
        from django.conf import settings

        if ctx.replay_of is not None:
            provider_name = "replay"
        else:
            provider_name = config.provider or settings.BOSUN_DEFAULT_PROVIDER
        request = self._request(config, ctx)
        outcome = Outcome(
            input={"system": request.system, "prompt": request.prompt},
            provider=provider_name,
            model_requested=request.model,
        )
        routes = [(provider_name, request.model)]
        if provider_name != "replay" and config.fallback:
            routes = model_routes(config, provider_name)
        passed_over: list[dict[str, str]] = []
        for index, (route_provider, model) in enumerate(routes):
            last = index == len(routes) - 1
            asked = (
                request if model == request.model else request.model_copy(update={"model": model})
            )
            try:
                answered = self._ask_route(config, ctx, route_provider, asked, outcome)
            except BreakerOpen as exc:
                if last:
                    return Outcome(wait=exc.run_wait, wait_s=exc.wait_s, input=exc.detail)
                passed_over.append({"route": f"{route_provider}:{model}", "why": str(exc)})
                continue
            except StepError as exc:
                if last or not exc.outage:
                    raise
                passed_over.append({"route": f"{route_provider}:{model}", "why": str(exc)})
                continue
            if passed_over:
                answered.provider = route_provider
                answered.input = {
                    **(answered.input or {}),
                    "route": {"answered": f"{route_provider}:{model}", "passed_over": passed_over},
                }
            return answered
        raise AssertionError("unreachable: the last route returns or raises")

    def _ask_route(
        self,
        config: Config,
        ctx: StepContext,
        provider_name: str,
        request: LLMRequest,
        outcome: Outcome,
    ) -> Outcome:
        """One route: the call and its repair turns. Raises BreakerOpen when
        the route's breaker holds the first call, StepError when it fails."""
        from django.conf import settings

        provider = get_provider(provider_name)
        model = request.model
        for turn in range(config.max_repairs + 1):
            if provider_name != "replay":
                try:
                    ctx.check_budget("llm", outcome.model_usd, outcome.llm_calls)
                except BudgetExceeded as exc:
                    exc.outcome = outcome  # what this step spent before the stop
                    raise
            try:
                # The model's circuit breaker, at the call: an open one holds
                # the call instead of making it. A repair turn follows an
                # answer this step was charged for: it is not held (parking
                # would drop that charge), only counted.
                keys = _breaker_keys(provider, provider_name, model)
                holder = f"run-{ctx.run_id}-seq-{ctx.seq}:{ctx.attempt}:{turn}"
                guard = (
                    breakers.admit(
                        keys,
                        holder=holder,
                        hold_s=request.timeout_s + settings.BOSUN_LEASE_MARGIN_S,
                    )
                    if turn == 0
                    else breakers.Guard(keys, holder)
                )
                with tracing.model_call(ctx, provider_name, request) as call:
                    with guard.call():
                        response = provider.complete(request)
                    call.answered(response, paid=provider_name != "replay")
            except LLMError as exc:
                error = StepError(
                    str(exc), retryable=exc.retryable, retry_after=exc.retry_after, error_type="llm"
                )
                error.outage = bool(exc.outage) and turn == 0
                raise error from None
            _charge(outcome, response, model, counted=provider_name != "replay")
            unusable = _unusable(response)
            if unusable:
                return _escape(outcome, unusable)
            value, problem = _parse(response, config.output_schema)
            if problem is None:
                confidence = _confidence(value, config.confidence_field)
                if config.confidence_field and (
                    confidence is None or confidence < config.confidence_floor
                ):
                    return _escape(outcome, f"confidence {confidence} below the floor")
                outcome.output = value
                return outcome
            if turn < config.max_repairs:
                request = request.model_copy(
                    update={"repairs": [*request.repairs, (response.text, _repair_prompt(problem))]}
                )
        return _escape(outcome, f"reply does not match the output schema: {problem}")


def model_routes(config: LLMKind.Config, provider: str) -> list[tuple[str, str]]:
    """The (provider, model) routes of a step, first the one it asks: its
    `model` alone, or its tier's routes (BOSUN_MODEL_ROUTES: "model" on the
    step's provider, or "provider:model"), without repeats."""
    from django.conf import settings

    first = resolve_model(tier=config.tier, model=config.model or None)
    routes = [(provider, first)]
    if config.model:
        return routes
    for entry in settings.BOSUN_MODEL_ROUTES.get(config.tier, []):
        name, _, model = entry.rpartition(":")
        route = (name or provider, model)
        if route not in routes:
            routes.append(route)
    return routes


def _breaker_keys(provider: Any, name: str, model: str) -> tuple[str, ...]:
    """The breaker a model call goes through: one per provider and model.
    Providers that answer offline (scripted, replay) say `breaker = False`."""
    if not getattr(provider, "breaker", True):
        return ()
    return (breakers.llm_key(name, model),)


# Stop reasons after which the reply is cut short or withheld.
_TRUNCATED = {"max_tokens": "truncated", "model_context_window_exceeded": "truncated"}


def _unusable(response: LLMResponse) -> str:
    """Why a reply cannot be used as output at all ('' when it can)."""
    if response.stop_reason in _TRUNCATED:
        return f"reply {_TRUNCATED[response.stop_reason]} ({response.stop_reason})"
    if response.stop_reason == "refusal":
        return "reply refused (refusal)"
    if not response.text and response.data is None:
        return "reply empty"
    return ""


def _charge(outcome: Outcome, response: LLMResponse, model: str, *, counted: bool) -> None:
    # A replayed answer is a look-up, not a model call.
    outcome.llm_calls += int(counted)
    outcome.model_answered = response.model
    usage = response.usage
    outcome.tokens_in += usage.input_tokens
    outcome.tokens_out += usage.output_tokens
    outcome.cache_read_tokens += usage.cache_read_tokens
    outcome.cache_write_tokens += usage.cache_write_tokens
    outcome.model_usd += cost_of(response.model or model, usage, requested=model)


def _parse(response: LLMResponse, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    value = response.data
    if value is None:
        if schema is None:
            return response.text, None
        try:
            value = json.loads(response.text)
        except json.JSONDecodeError as exc:
            return None, f"the reply is not JSON ({exc.msg})"
    if schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(value)
        )
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return None, f"at {where}: {error.message}"
    return value, None


def _confidence(value: Any, field_name: str) -> float | None:
    if not field_name or not isinstance(value, dict):
        return None
    found = value.get(field_name)
    return float(found) if isinstance(found, int | float) else None


def _repair_prompt(problem: str) -> str:
    return (
        "Your reply did not match the required output schema: "
        f"{problem}. Reply again with only the corrected JSON."
    )


def _escape(outcome: Outcome, reason: str) -> Outcome:
    outcome.edge = "escape"
    outcome.output = {"escaped": True, "reason": reason}
    return outcome


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
