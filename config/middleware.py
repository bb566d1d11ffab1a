"""Request plumbing the settings switch on: a body-size limit, API answers
never cached and always in the API's error shape, and what a locked-out
login sees.

- `ApiNoStore` marks every answer under /api/ (errors, 413s and replays
  included) `Cache-Control: no-store`: they carry runs, drafts and
  personal data for one API key, and no cache on the way may keep them.
- `ApiErrorShape` gives the two errors the API's own handlers never see,
  a path that matches no endpoint (404, from Django's resolver) and a
  method an endpoint does not take (405, from ninja), the API's error
  shape instead of an HTML page or plain text.
- `RequestSizeLimit` refuses a body over `DATA_UPLOAD_MAX_MEMORY_SIZE`
  (`BOSUN_MAX_REQUEST_BYTES`) with 413 before anything reads it: the API
  in its own error shape (`{"error", "code"}`), other pages in plain text.
- `lockout_response` (django-axes' `AXES_LOCKOUT_CALLABLE`) answers a
  locked-out login with the login page, the lockout said in words, 429.
- `client_ip` (`AXES_CLIENT_IP_CALLABLE`) is the address axes counts
  failures for: behind `BOSUN_PROXY_COUNT` proxies, the one the outermost
  proxy saw, from X-Forwarded-For.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


class ApiNoStore:
    """`Cache-Control: no-store` on every API answer, whatever made it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if _is_api(request):
            response["Cache-Control"] = "no-store"
        return response


class ApiErrorShape:
    """`{"error", "code"}` for the 404 and 405 answered outside the API's
    handlers (its own errors are JSON already)."""

    _CODES = {404: ("not_found", "no such endpoint"), 405: ("method_not_allowed", "")}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        shape = self._CODES.get(response.status_code)
        if shape is None or not _is_api(request) or _is_json(response):
            return response
        code, message = shape
        message = message or f"{request.method} is not allowed here"
        shaped = JsonResponse({"error": message, "code": code}, status=response.status_code)
        if response.has_header("Allow"):
            shaped["Allow"] = response["Allow"]
        return shaped


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class RequestSizeLimit:
    """413 for a request whose declared body is larger than allowed.

    Django itself refuses such a body only when a view reads it, as a 400;
    this answers first, with the right status, and without reading it. (A
    body cannot be longer than its Content-Length: the server stops there.)
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and _declared_length(request) > limit:
            return too_large(request, limit)
        return self.get_response(request)


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads no body without a valid length


def too_large(request: HttpRequest, limit: int) -> HttpResponse:
    message = f"the request body is larger than {limit} bytes"
    if _is_api(request):
        response: HttpResponse = JsonResponse(
            {"error": message, "code": "payload_too_large"}, status=413
        )
    else:
        response = HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
    # No `Connection: close`, though the client may still be sending: it is
    # a hop-by-hop header, which a WSGI application must not set (PEP 3333;
    # wsgiref, under runserver, turns it into a 500). The connection is the
    # server's: runserver and gunicorn read past the unread body, or close.
    return response


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    """The login page again, saying the login is locked and for how long."""
    from axes.helpers import get_cool_off

    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else 0
    minutes = max(1, math.ceil(seconds / 60)) if seconds else 0
    if _is_api(request):
        message = "too many failed logins: try again later"
        response: HttpResponse = JsonResponse({"error": message, "code": "locked_out"}, status=429)
    else:
        username = (credentials or {}).get("username") or request.POST.get("username", "")
        form = AuthenticationForm(request, initial={"username": username})
        context = {
            "form": form,
            "locked_out": True,
            "lockout_minutes": minutes,
            "next": request.POST.get("next") or request.GET.get("next", ""),
        }
        response = render(request, "registration/login.html", context, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


def client_ip(request: HttpRequest) -> str | None:
    """The client's address as the outermost of `BOSUN_PROXY_COUNT` trusted
    proxies saw it; REMOTE_ADDR when there are none. Entries further left
    in X-Forwarded-For were written by the client and are not trusted."""
    count = settings.BOSUN_PROXY_COUNT
    if count > 0:
        hops = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [hop for hop in hops if hop]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR")
