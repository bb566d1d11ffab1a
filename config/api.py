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
| a path that matches no endpoint, a method it does not take | 404 / 405 | `not_found`, `method_not_allowed` (config.middleware) |

Authentication is an API key (`Authorization: Bearer bk_…`) on every
operation except inbound webhooks, which are verified by signature. The
browser session is not accepted here, and nothing here reads cookies, so
the API is exempt from CSRF checks.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import ninja
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import path
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError
from ninja.openapi.docs import DocsBase

from approvals.api import router as approvals_router
from evals.api import router as evals_router
from integrations import idempotency
from integrations.api import router as integrations_router
from integrations.kit import ApiError, ApiKeyAuth, MissingScope, StrictParser, serve_from
from integrations.webhooks import WebhookRejected
from knowledge.api import router as knowledge_router
from knowledge.services import (
    AlreadySuperseded,
    InvalidEvent,
    InvalidPayload,
    KnowledgeError,
    UnknownEventType,
)
from policies.api import router as lanes_router
from runs.api import router as runs_router
from runs.api_rollout import router as rollout_router
from runs.engine.errors import EngineError, InvalidInput, InvalidState, NotFound, QueueFull

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
    """The API with Swagger's assets served beside its docs page."""

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
api.add_router("", runs_router)
api.add_router("", approvals_router)
api.add_router("", integrations_router)
api.add_router("/knowledge", knowledge_router)
api.add_router("", rollout_router)
api.add_router("", lanes_router)
api.add_router("", evals_router)
serve_from(api)


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
