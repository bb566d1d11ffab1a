"""The demo's own table: what the sample vendors were asked and charged.

The table keeps the name it had when the model lived in `runs`.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class VendorCall(models.Model):
    """Calls received by the sample vendors (enrichment, mail delivery, billing).

    The sample vendors stand in for paid services in the demo and the
    benchmarks: each call is counted here with the credits it cost, and a
    repeated idempotency key is answered without a second charge.
    """

    vendor = models.CharField(max_length=60)
    operation = models.CharField(max_length=60)
    subject = models.CharField(max_length=300, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    credits = models.PositiveIntegerField(default=0)
    request = models.JSONField(default=dict)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "runs_vendorcall"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["vendor", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="vendor_call_key_unique",
            )
        ]
        indexes = [models.Index(fields=["vendor", "operation"], name="vendorcall_vendor_op")]

    def __str__(self) -> str:
        return f"{self.vendor}.{self.operation} {self.subject}"
