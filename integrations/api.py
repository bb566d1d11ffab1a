"""Inbound webhooks (Standard Webhooks) and the sources that may send them."""

from __future__ import annotations

from dataclasses import asdict

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.responses import Status

from integrations.kit import ApiKeyAuth, Slug, bound_to, errors
from integrations.models import WebhookSource
from integrations.webhooks import receive_webhook
from policies.models import ApiScope

router = Router(tags=["webhooks"])


class WebhookSourceOut(Schema):
    slug: str
    name: str
    workflow: str
    input_path: str
    enabled: bool
    tolerance_s: int

    @staticmethod
    def resolve_workflow(source: WebhookSource) -> str:
        return source.workflow.slug


class WebhookAckOut(Schema):
    delivery_id: int
    run_id: int | None
    duplicate: bool


@router.get(
    "/webhook-sources",
    response={200: list[WebhookSourceOut], **errors()},
    auth=ApiKeyAuth(ApiScope.WEBHOOKS),
    tags=["webhooks"],
)
def webhook_source_list(request: HttpRequest):
    """The webhook sources (their secrets are not shown here)."""
    return bound_to(request, WebhookSource.objects.select_related("workflow"))


_WEBHOOK_HEADERS = [
    {
        "in": "header",
        "name": name,
        "required": True,
        "schema": {"type": "string"},
        "description": text,
    }
    for name, text in (
        ("webhook-id", "The message id; a repeat with the same id starts nothing."),
        ("webhook-timestamp", "Seconds since the epoch, within the source's tolerance."),
        ("webhook-signature", "Space-separated `v1,<base64 HMAC-SHA256>` signatures."),
    )
]


@router.post(
    "/webhooks/{source_slug}",
    response={200: WebhookAckOut, 202: WebhookAckOut, **errors(404, 409, 429)},
    auth=None,
    tags=["webhooks"],
    openapi_extra={
        "parameters": _WEBHOOK_HEADERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "security": [],
    },
)
def webhook_deliver(request: HttpRequest, source_slug: Slug):
    """Receive a Standard Webhooks delivery (verified by its signature, not
    an API key): 202 with the run it started, or 200 for a repeat."""
    received = receive_webhook(slug=source_slug, headers=request.headers, body=request.body)
    return Status(200 if received.duplicate else 202, WebhookAckOut(**asdict(received)))
