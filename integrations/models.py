"""What the outside world sends in: Idempotency-Key records of API
requests, and inbound webhook sources with their deliveries.

The tables keep the names they had when these models lived in `runs`.
"""

from __future__ import annotations

from django.db import models


class IdempotencyRecord(models.Model):
    """A request made with an `Idempotency-Key` header, and its first answer.

    The row is inserted before the request is handled (the unique constraint
    decides which of concurrent duplicates goes ahead); the others see it
    `in_progress` (409, Retry-After) or `done` (the stored response, byte for
    byte). A different body under the same key is refused (422).
    """

    owner = models.CharField(max_length=100, help_text="Whose key space: the API key's prefix.")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=300)
    request_hash = models.CharField(max_length=64)
    in_progress = models.BooleanField(default=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "runs_idempotencyrecord"
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key_unique"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.owner}:{self.key}"


class WebhookSource(models.Model):
    """A sender of inbound webhooks (Standard Webhooks): each delivery is
    verified with the source's secret and starts a run of its workflow."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True)
    workflow = models.ForeignKey(
        "runs.Workflow", on_delete=models.PROTECT, related_name="webhook_sources"
    )
    secret = models.CharField(
        max_length=200, help_text='"whsec_" followed by base64; shared with the sender.'
    )
    input_path = models.CharField(
        max_length=200,
        blank=True,
        help_text='Dotted path of the run input inside the payload ("" = the whole payload).',
    )
    enabled = models.BooleanField(default=True)
    tolerance_s = models.PositiveIntegerField(
        default=300, help_text="How far a delivery's timestamp may be from now."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "runs_webhooksource"
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class WebhookDelivery(models.Model):
    """One accepted delivery. Unique on (source, webhook-id): a sender that
    delivers the same message again gets a 2xx and starts nothing."""

    source = models.ForeignKey(WebhookSource, on_delete=models.CASCADE, related_name="deliveries")
    webhook_id = models.CharField(max_length=255)
    received_at = models.DateTimeField(auto_now_add=True)
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL)
    payload = models.JSONField(default=dict)
    repeats = models.PositiveIntegerField(default=0, help_text="Duplicate deliveries seen.")

    class Meta:
        db_table = "runs_webhookdelivery"
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["source", "webhook_id"], name="webhook_delivery_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_id}:{self.webhook_id}"
