"""What every console view shares: the login and permission check, and
htmx awareness (a partial for htmx, the whole page otherwise).

Every console view is wrapped in `console_view`, so that:
- an anonymous request goes to the login page (an htmx one by a client-side
  redirect, not by swapping the login page into a fragment);
- a user without the permission gets 403;
- the answer varies on `HX-Request`, since the same URL answers a page or a
  partial and caches must tell them apart.

Templates follow one rule: a page is `console/<area>/<page>.html`, the
fragment an htmx request swaps is `console/<area>/partials/_<noun>.html`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect

View = Callable[..., HttpResponse]


def console_view(permission: str | tuple[str, ...] | None) -> Callable[[View], View]:
    """Login required, then `permission` (every one of a tuple) or 403."""
    needed = (permission,) if isinstance(permission, str) else (permission or ())

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                htmx = getattr(request, "htmx", None)
                if htmx:
                    back = htmx.current_url_abs_path or "/"
                    return HttpResponseClientRedirect(redirect_to_login(back)["Location"])
                return redirect_to_login(request.get_full_path())
            if needed and not request.user.has_perms(needed):
                raise PermissionDenied
            response = view(request, *args, **kwargs)
            patch_vary_headers(response, ("HX-Request",))
            return response

        wrapped.console_permissions = needed  # type: ignore[attr-defined]
        return wrapped

    return decorate


def is_partial(request: HttpRequest) -> bool:
    """An htmx request that wants only the fragment (a history restore after
    a cache miss needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return htmx is not None and bool(htmx) and not htmx.history_restore_request


def after_post(request: HttpRequest, url: str) -> HttpResponse:
    """Where a form post goes next: a client-side redirect for htmx (so the
    whole page changes), an ordinary redirect otherwise."""
    return HttpResponseClientRedirect(url) if getattr(request, "htmx", None) else redirect(url)
