"""The `anthropic` provider: Claude through the official SDK's Messages API.

This is the only module that imports the `anthropic` SDK. It turns an
`LLMRequest` into one Messages API call and the answer into an
`LLMResponse`:

- structured output: the output schema is offered as a single tool that the
  model is forced to call; the tool call's `input` is the reply's `data`;
- repairs: each (previous reply, correction) pair becomes an assistant turn
  followed by a user turn after the first prompt;
- prompt caching: the tool definition and the system prompt, the stable
  prefix of every call of a step, carry `cache_control`;
- errors: every SDK failure becomes an `LLMError` whose `retryable` and
  `retry_after` the engine uses for its backoff, and whose `outage` (5xx,
  529, timeouts, connection errors; not 429 nor other 4xx) counts towards
  the model's circuit breaker (runs.engine.breakers).

The SDK's own retries are off (`max_retries=0`): the engine owns retries, so
each attempt is one HTTP request and is recorded as one `StepRun`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import anthropic
from django.conf import settings

from lib.retry_after import retry_after_from_headers
from runs.llm.base import LLMError, LLMRequest, LLMResponse, Usage

if TYPE_CHECKING:
    import httpx2
    from anthropic.types import Message

OUTPUT_TOOL = "record_output"
CACHED = {"type": "ephemeral"}
# Statuses worth another attempt: timeouts, lock conflicts, rate limits,
# server errors and 529 "overloaded". Other 4xx are the request's fault.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# A 429 for an exhausted budget is not a rate limit: waiting will not help
# until someone raises the limit or buys credit.
SPEND_LIMIT_CODES = frozenset({"contract_spend_limit_reached", "enforced_spend_limit_reached"})
SPEND_LIMIT_WORDS = re.compile(
    r"\b(spend|spending|credit|usage|billing)\s+limits?\b|credit balance", re.I
)


class AnthropicProvider:
    """Claude through the Messages API.

    The API key and base URL come from the constructor or, when not given,
    from `settings.ANTHROPIC_API_KEY` / `settings.ANTHROPIC_BASE_URL`, read
    at call time. `http_client` (an `httpx2.Client`) replaces the SDK's
    default one, e.g. with a fake transport in tests.
    """

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        http_client: httpx2.Client | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._http_client = http_client
        # One SDK client (and connection pool) per configuration: the
        # registry keeps one provider per process while settings may change.
        self._clients: dict[tuple[str, str], anthropic.Anthropic] = {}

    def complete(self, request: LLMRequest) -> LLMResponse:
        client = self._client()
        try:
            message = client.messages.create(**message_params(request), timeout=request.timeout_s)
        except anthropic.AnthropicError as exc:
            raise llm_error(exc, timeout_s=request.timeout_s) from exc
        return llm_response(message, structured=request.output_schema is not None)

    def _client(self) -> anthropic.Anthropic:
        api_key = self._api_key or settings.ANTHROPIC_API_KEY
        base_url = self._base_url or settings.ANTHROPIC_BASE_URL
        if not api_key:
            raise LLMError(
                "the anthropic provider needs an API key: set ANTHROPIC_API_KEY", retryable=False
            )
        key = (api_key, base_url)
        if key not in self._clients:
            self._clients[key] = anthropic.Anthropic(
                api_key=api_key,
                base_url=base_url or None,
                max_retries=0,  # the engine retries, with its own backoff and records
                http_client=self._http_client,
            )
        return self._clients[key]


def message_params(request: LLMRequest) -> dict[str, Any]:
    """The Messages API body for `request` (everything but the transport)."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": conversation(request),
    }
    if request.system:
        # A list of blocks, so the system prompt can be marked for caching.
        params["system"] = [{"type": "text", "text": request.system, "cache_control": CACHED}]
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.output_schema is not None:
        params["tools"] = [
            {
                "name": OUTPUT_TOOL,
                "description": "Record the answer. Its input must match the schema.",
                "input_schema": request.output_schema,
                "cache_control": CACHED,
            }
        ]
        params["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}
    return params


def conversation(request: LLMRequest) -> list[dict[str, Any]]:
    """The prompt, then each earlier reply and its correction, in turn."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": request.prompt}]
    for reply, correction in request.repairs:
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": correction})
    return messages


def llm_response(message: Message, *, structured: bool) -> LLMResponse:
    """Our response from the SDK's `Message`; an empty reply stays empty."""
    data: Any = None
    texts: list[str] = []
    for block in message.content:
        if block.type == "tool_use" and structured and block.name == OUTPUT_TOOL:
            data = block.input
        elif block.type == "text":
            texts.append(block.text)
    text = json.dumps(data) if data is not None else "".join(texts)
    usage = message.usage
    return LLMResponse(
        text=text,
        data=data,
        model=message.model,
        stop_reason=message.stop_reason or "",
        usage=Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
        ),
    )


def llm_error(exc: anthropic.AnthropicError, *, timeout_s: float) -> LLMError:
    """Classify an SDK failure for the engine: retry it or fail fast."""
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMError(f"Anthropic API: no answer within {timeout_s:g}s", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc
        return LLMError(f"Anthropic API unreachable: {cause}", retryable=True)
    if not isinstance(exc, anthropic.APIStatusError):
        return LLMError(f"Anthropic API: {exc}", retryable=False)
    message = _status_message(exc)
    if _is_spend_limit(exc):
        return LLMError(f"{message} (a spend limit, not retried)", retryable=False, outage=False)
    retryable = _should_retry(exc)
    retry_after = retry_after_from_headers(exc.response.headers) if retryable else None
    return LLMError(message, retryable=retryable, retry_after=retry_after, outage=_is_outage(exc))


def _status_message(exc: anthropic.APIStatusError) -> str:
    kind = f" {exc.type}" if exc.type else ""
    detail = exc.api_message or exc.message
    request_id = f" (request {exc.request_id})" if exc.request_id else ""
    return f"Anthropic API error {exc.status_code}{kind}: {detail}{request_id}"


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    if exc.status_code != 429:
        return False
    # Prefer the stable code; the wording of messages may change.
    if exc.error_code in SPEND_LIMIT_CODES:
        return True
    return bool(SPEND_LIMIT_WORDS.search(exc.api_message or ""))


def _should_retry(exc: anthropic.APIStatusError) -> bool:
    # The API may say explicitly whether a retry can succeed; it knows best.
    verdict = exc.response.headers.get("x-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500


def _is_outage(exc: anthropic.APIStatusError) -> bool:
    """Whether the answer says the API is down (for the model's circuit
    breaker): 5xx, 529 overloaded, 408. A 429 or another 4xx is the API
    answering about this request or this account."""
    return exc.status_code >= 500 or exc.status_code == 408
