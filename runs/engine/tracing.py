"""OpenTelemetry traces of runs: what the agent did, step by step, and why.

One trace per run. Each task slice that advances the run is a span
("run <workflow>"); inside it, a span per step ("step <key>"), and inside a
step a span per model call ("chat <model>", GenAI semantic conventions) and
per tool call ("tool <name>"). The run's trace id is stored on
`Run.trace_id` by the claim of its first traced slice (the same statement,
no extra round trip), so the console links a run to its trace.

Slices of one run share that trace: each slice's span is started as the
child of one remote parent built from the stored trace id (its span id is
the trace id's low 64 bits). No process ever emits that parent span, so a
trace viewer shows the slices side by side under a missing root: the price
of joining spans written hours apart by different workers into one trace
without storing anything but the trace id. (Span links would keep each
slice in a trace of its own, which is harder to read at 3am.)

Export is OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (`settings.BOSUN_TRACING`); the
exporter reads the other standard `OTEL_EXPORTER_OTLP_*` variables
(headers, timeout) itself. Otherwise nothing is set up and every function
here returns at its first line: the engine's hot path pays one global read
per step and per tool call, and gets `OFF`, whose `with` block does
nothing.

What spans carry: ids, names, counts, costs, outcomes. Never a prompt, a
reply or a tool's arguments; every text value (names, errors) goes through
`lib.screening.redact_value` first, so personal data and secrets do
not leave in a trace.
"""

from __future__ import annotations

import random
import threading
from contextvars import Token
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Self

from django.conf import settings
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from runs.engine.errors import Refused, Wait

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from runs.engine.gate import Caller
    from runs.engine.kinds import StepContext
    from runs.llm.base import LLMRequest, LLMResponse

SCOPE = "bosun"
# Text attributes longer than this are cut (after redaction).
MAX_TEXT = 1000

_lock = threading.Lock()
_configured = False
_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


# Set-up -------------------------------------------------------------------


def configure(*, provider: TracerProvider | None = None) -> trace.Tracer | None:
    """Set up tracing for this process and return the tracer (None: off).

    With `provider`, spans go to it (tests; an application that builds its
    own). Without, from settings: when `BOSUN_TRACING` is on, a provider
    exporting OTLP over HTTP in batches, with `service.name` from
    `BOSUN_TRACING_SERVICE_NAME`, also installed as the global provider so
    that the model SDK's own spans join the same traces. Called lazily by
    the first span of a process, so each worker process sets up its own
    exporter (after any fork). Calling it again replaces the set-up.
    """
    global _configured, _tracer, _provider
    with _lock:
        if provider is None and settings.BOSUN_TRACING:
            provider = _otlp_provider()
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                trace.set_tracer_provider(provider)
        _provider = provider
        _tracer = provider.get_tracer(SCOPE) if provider is not None else None
        _configured = True
        return _tracer


def flush(timeout_millis: int = 5000) -> bool:
    """Export the spans still queued, e.g. before a short command exits
    (worker processes flush in batches, and at a normal exit)."""
    provider = _provider
    return provider.force_flush(timeout_millis) if provider is not None else True


def reset() -> None:
    """Forget the set-up: the next span configures from settings again."""
    global _configured, _tracer, _provider
    with _lock:
        _configured, _tracer, _provider = False, None, None


def _otlp_provider() -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": settings.BOSUN_TRACING_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _current_tracer() -> trace.Tracer | None:
    if not _configured:
        configure()
    return _tracer


# Redaction ----------------------------------------------------------------


def clean(value: Any) -> Any:
    """An attribute value fit to leave the process: text redacted and cut."""
    if isinstance(value, str):
        return _clean_short(value) if len(value) <= 200 else _clean_text(value)
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return value


@lru_cache(maxsize=4096)
def _clean_short(text: str) -> str:
    # Names (workflows, steps, tools, models) repeat on every span: redact
    # each once per process.
    return _clean_text(text)


def _clean_text(text: str) -> str:
    from lib.screening import redact

    return redact(text)[:MAX_TEXT]


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {key: clean(value) for key, value in values.items() if value is not None}


# Spans --------------------------------------------------------------------


class _Off:
    """What every span function returns when tracing is off: a `with`
    block and method calls that do nothing, fast."""

    __slots__ = ()

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        return False

    def set(self, **values: Any) -> None:
        pass

    def finish(self, *args: Any) -> None:
        pass

    def answered(self, response: Any, *, paid: bool = True) -> None:
        pass

    def called(self, *, from_ledger: bool) -> None:
        pass


OFF = _Off()


class _Span:
    """A started span, current (its children nest under it) until it ends.

    An exception leaving the block marks the span failed with the
    exception's type and redacted message (never a traceback: its frames
    may hold values).
    """

    __slots__ = ("span", "_token")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> Self:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        try:
            if exc is not None:
                self.failed(exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            self.span.end()
        return False

    def set(self, **values: Any) -> None:
        self.span.set_attributes(_attributes(_dotted(values)))

    def failed(self, exc: BaseException) -> None:
        self.error(f"{type(exc).__name__}: {exc}")
        self.span.set_attribute("error.type", type(exc).__qualname__)

    def error(self, description: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, clean(description)))


def _dotted(values: dict[str, Any]) -> dict[str, Any]:
    # Keyword arguments cannot hold dots: `bosun__step__key` is bosun.step.key.
    return {key.replace("__", "."): value for key, value in values.items()}


def _money(amount: Decimal | float | int | None) -> float:
    return float(amount or 0)


class RunSpan(_Span):
    __slots__ = ()

    def finish(self, result: str) -> None:
        self.set(bosun__run__result=str(result))


def new_trace_id() -> str:
    """A fresh trace id (32 hex digits) for a run that has none yet, or ""
    when tracing is off (then the claim stores nothing)."""
    if _current_tracer() is None:
        return ""
    return format(random.getrandbits(128) or 1, "032x")


def run_span(*, run_id: int, workflow: str, version: int, trace_id: str) -> RunSpan | _Off:
    """The span of one task slice advancing run `run_id`, in the run's trace
    (`trace_id`, stored on the run by the claim that started the slice)."""
    tracer = _current_tracer()
    if tracer is None or not trace_id:
        return OFF
    trace_number = int(trace_id, 16)
    parent = SpanContext(
        trace_id=trace_number,
        span_id=(trace_number & 0xFFFFFFFFFFFFFFFF) or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    span = tracer.start_span(
        clean(f"run {workflow}"),
        context=trace.set_span_in_context(NonRecordingSpan(parent)),
        attributes=_attributes(
            {"bosun.run.id": run_id, "bosun.workflow": workflow, "bosun.workflow.version": version}
        ),
    )
    return RunSpan(span)


class StepSpan(_Span):
    __slots__ = ()

    def finish(self, record: dict[str, Any] | None, result: Any) -> None:
        """Close with what the step's record says. A step that made no
        record, or parked the run, waited (or moved on without executing)."""
        status = (record or {}).get("status")
        if not status or record is None:  # (a status comes from a record)
            self.set(bosun__step__status="waiting" if result == "waiting" else "skipped")
            return
        self.set(
            bosun__step__status=status,
            bosun__step__edge=record.get("edge") or None,
            bosun__step__error_type=record.get("error_type") or None,
            bosun__step__cache_hit=bool(record.get("cache_hit")),
            bosun__cost_usd=_money(record.get("cost_usd")),
            bosun__cost_saved_usd=_money(record.get("cost_saved_usd")),
        )
        if status == "failed":
            self.error(record.get("error") or record.get("error_type") or "failed")


def step_span(*, run_id: int, key: str, kind: str, seq: int, attempt: int) -> StepSpan | _Off:
    """The span of one step attempt (a child of the current run span)."""
    tracer = _current_tracer()
    if tracer is None:
        return OFF
    span = tracer.start_span(
        clean(f"step {key}"),
        attributes=_attributes(
            {
                "bosun.run.id": run_id,
                "bosun.step.key": key,
                "bosun.step.kind": kind,
                "bosun.step.seq": seq,
                "bosun.step.attempt": attempt,
            }
        ),
    )
    return StepSpan(span)


class ModelCallSpan(_Span):
    __slots__ = ("requested",)

    def __init__(self, span: Span, requested: str) -> None:
        super().__init__(span)
        self.requested = requested

    def answered(self, response: LLMResponse, *, paid: bool = True) -> None:
        """Record the usage and cost of one answer (a replayed answer is free)."""
        from runs.llm.base import cost_of

        usage = response.usage
        model = response.model or self.requested
        cost = cost_of(model, usage, requested=self.requested) if paid else 0
        self.span.set_attributes(
            _attributes(
                {
                    "gen_ai.response.model": response.model or None,
                    "gen_ai.response.finish_reasons": [response.stop_reason],
                    # The conventions count every input token, cached or not.
                    "gen_ai.usage.input_tokens": usage.input_tokens
                    + usage.cache_read_tokens
                    + usage.cache_write_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
                    "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
                    "bosun.cost_usd": _money(cost),
                }
            )
        )


def model_call(ctx: StepContext, provider: str, request: LLMRequest) -> ModelCallSpan | _Off:
    """A span around one model call, with the GenAI semantic-convention
    attributes (never the prompt or the reply)."""
    tracer = _current_tracer()
    if tracer is None:
        return OFF
    span = tracer.start_span(
        clean(f"chat {request.model}"),
        kind=SpanKind.CLIENT,
        attributes=_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,  # the older name of the same attribute
                "gen_ai.request.model": request.model,
                "gen_ai.request.max_tokens": request.max_tokens,
                "bosun.run.id": ctx.run_id,
                "bosun.step.key": ctx.step_key,
                "bosun.step.seq": ctx.seq,
                "bosun.llm.repair": len(request.repairs),
            }
        ),
    )
    return ModelCallSpan(span, request.model)


class ToolCallSpan(_Span):
    __slots__ = ()

    def called(self, *, from_ledger: bool) -> None:
        self.set(bosun__tool__outcome="from_ledger" if from_ledger else "called")

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, Wait):
            self.set(bosun__tool__outcome=exc.reason)
            return
        if isinstance(exc, Refused):
            self.set(bosun__tool__outcome="refused", bosun__tool__refusal=exc.code)
            self.error(f"refused ({exc.code}): {exc}")
            return
        self.set(
            bosun__tool__outcome="error", bosun__tool__retryable=getattr(exc, "retryable", None)
        )
        super().failed(exc)


def tool_call(name: str, caller: Caller) -> ToolCallSpan | _Off:
    """A span around one call through the tool gate: its outcome is
    `called`, `from_ledger`, `refused`, a wait or `error`."""
    tracer = _current_tracer()
    if tracer is None:
        return OFF
    from runs.tools.base import UnknownTool, get_tool

    try:
        side_effect = get_tool(name).side_effect
    except UnknownTool:
        side_effect = None
    span = tracer.start_span(
        clean(f"tool {name}"),
        attributes=_attributes(
            {
                "bosun.tool.name": name,
                "bosun.tool.side_effect": side_effect,
                "bosun.run.id": caller.run_id,
                "bosun.step.key": caller.step_key,
                "bosun.step.seq": caller.seq,
                "bosun.step.attempt": caller.attempt,
            }
        ),
    )
    return ToolCallSpan(span)


def breaker_event(name: str, key: str, **values: Any) -> None:
    """An event on the current span (the model or tool call, or the step,
    that met the breaker): a breaker's transition (`breaker.opened`,
    `breaker.probing`, `breaker.closed`, `breaker.reopened`) or a call held
    by it (`breaker.wait`)."""
    if _current_tracer() is None:
        return
    attributes: dict[str, Any] = {"bosun.breaker.key": key}
    attributes.update({f"bosun.breaker.{field}": value for field, value in values.items()})
    trace.get_current_span().add_event(name, _attributes(attributes))
