"""What every API router shares: input types that PostgreSQL can store,
the one error shape, API-key authentication, and Idempotency-Key handling.

Routers import this module; `integrations.kit` mounts the routers and maps
errors to responses. Nothing here imports a router or `config`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import Header, NinjaAPI, Schema
from ninja.errors import ValidationError
from ninja.parser import Parser
from ninja.responses import Status
from ninja.security import HttpBearer
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints

from integrations import idempotency
from integrations.apikeys import authenticate_apikey
from lib.errors import NotFound
from policies.models import ApiKey

# ------------------------------------------------------------ input types
# PostgreSQL refuses NUL in text and in jsonb, and non-finite floats in
# jsonb; a string with a lone surrogate cannot be encoded at all. Each would
# surface as a 500, so every string and JSON value the API accepts goes
# through these checks and is refused as a 422 naming the field.

_MAX_DEPTH = 32


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _clean_json(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError(f"is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, str):
        _clean_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or infinite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_text(str(key))
            _clean_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _clean_json(item, depth + 1)
    return value


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+\- ]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """Only what the schema says (`date-time`): pydantic alone would also
    read numbers as timestamps and accept times without an offset."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2025-07-01T09:00:00Z")
    # An unencoded "+" in a query string arrives as a space.
    return value[:-6] + "+" + value[-5:] if value[-6] == " " else value


def _clean_datetime(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # from Python callers only
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not 1900 <= value.year <= 9000:
        raise ValueError("must be between the years 1900 and 9000")
    return value


def text(*, min_length: int | None = None, max_length: int | None = None) -> Any:
    """A string type without NUL (declared in the schema too, so clients
    and schema-driven tests know) and with valid Unicode."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length, pattern=r"^[^\x00]*$"),
        AfterValidator(_clean_text),
    ]


Text = text()
Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[-a-zA-Z0-9_]+$")]
JsonObject = Annotated[dict[str, Any], AfterValidator(_clean_json)]
JsonValue = Annotated[Any, AfterValidator(_clean_json)]
DateTime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_clean_datetime)]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]
# The optional `Idempotency-Key` header of POSTs (see `idempotent`).
IDEMPOTENCY_KEY = Header(
    None,
    alias="Idempotency-Key",
    description="Send the request at most once: a repeat gets the first answer back.",
)


class In(BaseModel):
    """Base of request bodies. A plain pydantic model, not a ninja Schema:
    a Schema also validates arbitrary objects by their attributes, so a body
    of `[null]` would pass for a model whose fields all have defaults."""


class ErrorOut(Schema):
    """Every error answer of the API."""

    error: str
    code: str
    fields: dict[str, str] | None = None


def errors(*codes: int) -> dict[int, type[ErrorOut]]:
    """Response declarations for an operation's error statuses: those
    given, plus what any operation may answer (bad body, no key, missing
    scope, invalid request)."""
    return {code: ErrorOut for code in sorted({400, 401, 403, 422, *codes})}


class ApiError(Exception):
    """An error an API handler raises itself (beyond the domain's)."""

    def __init__(
        self, message: str, *, status: int, code: str, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields


class MissingScope(Exception):
    code = "missing_scope"


# ----------------------------------------------------------------- auth


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`; the key must hold `scope` (when one
    is named), or the request is refused with 403. The key is available
    as `request.auth`."""

    def __init__(self, scope: str | None = None) -> None:
        self.scope = scope
        super().__init__()

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        # Parsed here rather than by HttpBearer, which logs a malformed
        # header in DEBUG: a key sent with the wrong scheme would be logged.
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        return self.authenticate(request, secret.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = authenticate_apikey(secret=token)
        if key is not None and self.scope and self.scope not in key.scopes:
            raise MissingScope(f"this key lacks the {self.scope!r} scope")
        return key


def bound_to(request: HttpRequest, queryset, field: str = "workflow_id"):
    """Narrow `queryset` to the workflows the request's key is bound to
    (all when it is bound to none). Outside them a key sees nothing, so a
    probe for another workflow's run answers 404, not 403."""
    ids = request.auth.bound_workflow_ids
    return queryset.filter(**{f"{field}__in": ids}) if ids else queryset


def get_or_404(queryset, message: str, **lookup):
    found = queryset.filter(**lookup).first()
    if found is None:
        raise NotFound(message)
    return found


# ---------------------------------------------------------------- parser


class StrictParser(Parser):
    """JSON without NaN/Infinity (a 400); query strings without NUL (a 422)."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        return json.loads(request.body, parse_constant=_refuse_constant)

    def parse_querydict(self, data, list_fields: list[str], request: HttpRequest):
        for key, values in data.lists():
            if any("\x00" in part for part in (key, *values)):
                raise ValidationError(
                    [{"loc": ("query", key), "msg": "must not contain NUL characters"}]
                )
        return super().parse_querydict(data, list_fields, request)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ----------------------------------------------------------- idempotency

# The API root that renders stored answers and maps errors exactly as it
# does for any other request. `config.api` names it once at start-up, so
# that routers need not import the module that mounts them.
_api: NinjaAPI | None = None


def serve_from(api: NinjaAPI) -> None:
    global _api
    _api = api


def _root() -> NinjaAPI:
    if _api is None:
        raise RuntimeError("integrations.kit.serve_from(api) was not called")
    return _api


# Answers not kept for replays (nor are 5xx): "try again" (409 a conflict
# of the moment, 429 a full queue), and a request that was refused before
# it did anything (400 and 422 it failed validation, 404 it named something
# missing). Stripe's rule: a result is kept only once the request ran.
RELEASED = frozenset({400, 404, 409, 422, 429})


def idempotent(
    request: HttpRequest,
    key: str | None,
    handle: Callable[[str | None], Status],
) -> Status | HttpResponse:
    """Handle a POST at most once per `Idempotency-Key` (Stripe's rules).

    Without a key, `handle(None)` runs as usual. With one (in the key
    space of the request's API key), the first request claims it and its
    answer is stored; a repeat of the same request (method, path and the
    parsed body: spacing and key order do not count) gets that answer back
    byte for byte, with `Idempotent-Replayed: true`; the same key with
    another request is refused (422 `idempotency_key_reused`), and a repeat
    while the first is still being handled gets 409 with Retry-After.
    Answers in `RELEASED` are not stored: the key is released, so that the
    client may retry, or send the corrected request, with it.

    `handle` gets a stable key to pass on (e.g. as the run's idempotency
    key), so a retry after a lost answer cannot do the work twice. Answers
    and errors are rendered by the API root (see `serve_from`).
    """
    if key is None:
        return handle(None)
    outcome = idempotency.claim_idempotency_key(
        owner=request.auth.prefix,
        key=key,
        method=request.method or "",  # (always set on a request)
        path=request.get_full_path(),
        body=request.body,
    )
    if isinstance(outcome, idempotency.Stored):
        response = HttpResponse(outcome.body, status=outcome.status)
        for name, value in outcome.headers.items():
            response[name] = value
        response["Idempotent-Replayed"] = "true"
        return response
    api = _root()
    try:
        try:
            result = handle(outcome.work_key)
            response = api.create_response(
                request, result.value.model_dump(by_alias=True), status=result.status_code
            )
        except Exception as exc:  # mapped like any error (re-raised if unmapped)
            response = api.on_exception(request, exc)
    except BaseException:
        idempotency.release_idempotency_key(claim=outcome)
        raise
    if response.status_code >= 500 or response.status_code in RELEASED:
        idempotency.release_idempotency_key(claim=outcome)
    else:
        idempotency.store_idempotent_answer(
            claim=outcome,
            status=response.status_code,
            headers=dict(response.items()),
            body=response.content,
        )
    return response
