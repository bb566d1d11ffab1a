from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from policies.models import KillSwitch


def bosun(request: HttpRequest) -> dict[str, object]:
    """Tell every page whether answers come from the offline scripted
    provider, and, for a signed-in user, which kill switches are engaged
    (read only if the page shows them: the console's banner)."""
    context: dict[str, object] = {
        "bosun_scripted_provider": settings.BOSUN_DEFAULT_PROVIDER == "scripted"
    }
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        context["bosun_switches"] = SimpleLazyObject(_engaged)
    return context


def _engaged() -> list[KillSwitch]:
    return list(KillSwitch.objects.filter(engaged=True))
