"""The JSON API root: one NinjaAPI, one router per app, one error shape.

Every error leaves the API as `{"error": "<message>", "code": "<code>",
"fields": {...}}` (`fields` only where a field is to blame), mapped here
once from the domain's exceptions:

| raised | status | code |
|---|---|---|
| request validation (ninja) | 422 | `invalid_request`, with fields |
| `InvalidInput` (run input vs the workflow's entry schema) | 422 | `invalid_input`, with fields |
| `QueueFull` (backpressure) | 429 + `Retry-After` | `queue_full` |
| `NotFound` | 404 | `not_found` |
| `InvalidState`, `AlreadyDecided` | 409 | `invalid_state`, `already_decided` |
| knowledge errors | 409 / 422 | their `code`, with fields where they have them |
| no / bad / revoked / expired key | 401 | `unauthorized` |
| key without the operation's scope | 403 | `missing_scope` |

Authentication is an API key (`Authorization: Bearer bk_…`) on every
operation except inbound webhooks, which are verified by signature. The
browser session is not accepted here, and nothing here reads cookies, so
the API is exempt from CSRF checks.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import ninja
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import path
from ninja import Header, NinjaAPI, Schema
from ninja.errors import HttpError, ValidationError
from ninja.openapi.docs import DocsBase
from ninja.parser import Parser
from ninja.responses import Status
from ninja.security import HttpBearer
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints

from knowledge.services import (
    AlreadySuperseded,
    InvalidEvent,
    InvalidPayload,
    KnowledgeError,
    UnknownEventType,
)
from policies.apikeys import apikey_authenticate
from policies.models import ApiKey
from runs import idempotency
from runs.engine.errors import EngineError, InvalidInput, InvalidState, NotFound, QueueFull
from runs.webhooks import WebhookRejected

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
        key = apikey_authenticate(secret=token)
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


# -------------------------------------------------------------- the api


class LocalSwagger(DocsBase):
    """Swagger UI from the files ninja ships, served by this API: no CDN,
    and no dependency on the static files setup."""

    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        settings = json.dumps({"url": self.get_openapi_url(api, kwargs), "layout": "BaseLayout"})
        base = request.path.rstrip("/") + "/assets/"
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(api.title)}</title>"
            f"<link rel='stylesheet' href='{base}swagger-ui.css'></head><body>"
            f"<script type='application/json' id='swagger-settings'>{settings}</script>"
            "<div id='swagger-ui'></div>"
            f"<script src='{base}swagger-ui-bundle.js'></script>"
            f"<script src='{base}swagger-ui-init.js'></script></body></html>"
        )
        return HttpResponse(page)


_ASSETS_DIR = Path(ninja.__file__).parent / "static" / "ninja"
_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-init.js": "text/javascript",
}


def _docs_asset(request: HttpRequest, name: str) -> FileResponse:
    if name not in _ASSETS:
        raise Http404(name)
    return FileResponse((_ASSETS_DIR / name).open("rb"), content_type=_ASSETS[name])


class BosunAPI(NinjaAPI):
    """Mounts the app routers when its URLs or schema are first built, so
    that a router module may import this one whatever is imported first."""

    _app_routers = (
        ("", "runs.api.router"),
        ("", "approvals.api.router"),
        ("/knowledge", "knowledge.api.router"),
    )
    _mounted = False

    def _get_bound_routers(self):
        if not self._mounted:
            self._mounted = True
            for prefix, router in self._app_routers:
                self.add_router(prefix, router)
        return super()._get_bound_routers()

    def _get_urls(self):
        return [
            path("docs/assets/<str:name>", _docs_asset, name="docs-asset"),
            *super()._get_urls(),
        ]


api = BosunAPI(
    title="Bosun API",
    version="1",
    description=(
        "Start and follow runs, decide approvals, write knowledge, receive webhooks. "
        "Authenticate with `Authorization: Bearer <API key>`; errors are "
        '`{"error", "code", "fields"?}`.'
    ),
    urls_namespace="api",
    auth=ApiKeyAuth(),
    parser=StrictParser(),
    docs=LocalSwagger(),
)


# ---------------------------------------------------------------- errors


def error_response(
    request: HttpRequest,
    *,
    status: int,
    code: str,
    message: str,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    body: dict[str, Any] = {"error": message, "code": code}
    if fields:
        body["fields"] = {str(k): str(v) for k, v in fields.items()}
    response = api.create_response(request, body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 429: "throttled"}


@api.exception_handler(ValidationError)
def _on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    fields: dict[str, str] = {}
    for error in exc.errors:
        loc = [str(part) for part in error.get("loc", ())]
        # ("body", "<param>", "input", "x") names the field "input.x";
        # ("query", "status") names "status".
        name = ".".join(loc[2:] if loc[:1] == ["body"] else loc[1:]) or "(body)"
        fields.setdefault(name, str(error.get("msg", "is invalid")))
    return error_response(
        request, status=422, code="invalid_request", message="invalid request", fields=fields
    )


@api.exception_handler(HttpError)
def _on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    status = exc.status_code
    headers = {"WWW-Authenticate": 'Bearer realm="bosun"'} if status == 401 else {}
    message = "a valid API key is required" if status == 401 else str(exc)
    return error_response(
        request,
        status=status,
        code=_HTTP_CODES.get(status, "error"),
        message=message,
        headers=headers,
    )


@api.exception_handler(Http404)
def _on_http404(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, status=404, code="not_found", message=str(exc) or "not found")


@api.exception_handler(MissingScope)
def _on_missing_scope(request: HttpRequest, exc: MissingScope) -> HttpResponse:
    return error_response(request, status=403, code=exc.code, message=str(exc))


@api.exception_handler(ApiError)
def _on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(
        request, status=exc.status, code=exc.code, message=str(exc), fields=exc.fields
    )


@api.exception_handler(EngineError)
def _on_engine_error(request: HttpRequest, exc: EngineError) -> HttpResponse:
    status, fields, headers = 400, None, None
    if isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, InvalidState):  # AlreadyDecided included
        status = 409
    elif isinstance(exc, InvalidInput):
        status, fields = (
            422,
            {f"input.{k}" if k != "(input)" else "input": v for k, v in exc.fields.items()},
        )
    elif isinstance(exc, QueueFull):
        status, headers = 429, _retry_after(exc.retry_after)
    return error_response(
        request, status=status, code=exc.code, message=str(exc), fields=fields, headers=headers
    )


@api.exception_handler(KnowledgeError)
def _on_knowledge_error(request: HttpRequest, exc: KnowledgeError) -> HttpResponse:
    status, fields = 422, None
    if isinstance(exc, AlreadySuperseded):
        status = 409
    elif isinstance(exc, InvalidPayload):
        fields = {"payload" if k == "(root)" else f"payload.{k}": v for k, v in exc.errors.items()}
    elif isinstance(exc, InvalidEvent):
        fields = exc.errors
    elif isinstance(exc, UnknownEventType):
        fields = {"type": str(exc)}
    return error_response(request, status=status, code=exc.code, message=str(exc), fields=fields)


@api.exception_handler(WebhookRejected)
def _on_webhook_rejected(request: HttpRequest, exc: WebhookRejected) -> HttpResponse:
    return error_response(request, status=400, code=exc.code, message=str(exc))


@api.exception_handler(idempotency.KeyReused)
def _on_key_reused(request: HttpRequest, exc: idempotency.KeyReused) -> HttpResponse:
    return error_response(
        request,
        status=422,
        code=exc.code,
        message=str(exc),
        fields={"Idempotency-Key": "was used with a different request"},
    )


@api.exception_handler(idempotency.KeyInProgress)
def _on_key_in_progress(request: HttpRequest, exc: idempotency.KeyInProgress) -> HttpResponse:
    return error_response(
        request,
        status=409,
        code=exc.code,
        message=str(exc),
        headers=_retry_after(exc.retry_after),
    )


# ----------------------------------------------------------- idempotency


def idempotent(
    request: HttpRequest,
    key: str | None,
    handle: Callable[[str | None], Status],
) -> Status | HttpResponse:
    """Handle a POST at most once per `Idempotency-Key` (Stripe's rules).

    Without a key, `handle(None)` runs as usual. With one (in the key
    space of the request's API key), the first request claims it and its
    answer is stored; a repeat of the same request (method, path, body)
    gets that answer back byte for byte, with `Idempotent-Replayed: true`;
    the same key with another request is refused (422
    `idempotency_key_reused`), and a repeat while the first is still being
    handled gets 409 with Retry-After. Answers that say "try again" (5xx,
    409, 429) are not stored: the key is released for the retry.

    `handle` gets a stable key to pass on (e.g. as the run's idempotency
    key), so a retry after a lost answer cannot do the work twice.
    """
    if key is None:
        return handle(None)
    outcome = idempotency.idempotency_claim(
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
    try:
        try:
            result = handle(outcome.work_key)
            response = api.create_response(
                request, result.value.model_dump(by_alias=True), status=result.status_code
            )
        except Exception as exc:  # mapped like any error (re-raised if unmapped)
            response = api.on_exception(request, exc)
    except BaseException:
        idempotency.idempotency_release(claim=outcome)
        raise
    if response.status_code >= 500 or response.status_code in (409, 429):
        idempotency.idempotency_release(claim=outcome)
    else:
        idempotency.idempotency_store(
            claim=outcome,
            status=response.status_code,
            headers=dict(response.items()),
            body=response.content,
        )
    return response
