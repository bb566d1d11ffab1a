"""The JSON API root: one NinjaAPI, one router per app, one error shape."""

from __future__ import annotations

from ninja import NinjaAPI

api = NinjaAPI(
    title="Bosun API",
    version="1",
    description="Start and follow runs, decide approvals, write knowledge, receive webhooks.",
    urls_namespace="api",
)
