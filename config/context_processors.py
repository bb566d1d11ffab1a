from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def bosun(request: HttpRequest) -> dict[str, object]:
    """Tell every page whether answers come from the offline scripted provider."""
    return {"bosun_scripted_provider": settings.BOSUN_DEFAULT_PROVIDER == "scripted"}
