"""Console pages and actions on policies: the circuit breakers (each
breaker's state, since when, the runs waiting on it and its last errors;
operators close one by hand), and lifting a kill switch from its banner.

Breakers: seeing needs `policies.view_breaker`, closing
`policies.change_breaker`; a request from htmx gets the table alone (the
page polls it every 5 s).

Kill switches: engaging one stays in admin, where its scope and target are
chosen; lifting it is one button on every console page while it is
engaged, since that is where an operator sees it. Either way the change
goes through `set_switch`, which records who and why and audits it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from lib.console import after_post, console_view, is_partial
from policies.audit import actor_of
from policies.models import Breaker, KillSwitch
from runs.engine import breakers
from runs.engine.switches import set_switch


@require_GET
@console_view("policies.view_breaker")
def breaker_list(request: HttpRequest) -> HttpResponse:
    waiting = breakers.waiting_counts()
    rows: list[dict[str, Any]] = []
    for breaker in Breaker.objects.all():
        limits = breakers.Thresholds.of(
            (
                breaker.failures_to_open,
                breaker.window_s,
                breaker.cooldown_s,
                breaker.max_cooldown_s,
                breaker.probe_timeout_s,
            )
        )
        rows.append({"breaker": breaker, "waiting": waiting.get(breaker.key, 0), "limits": limits})
    # The open ones first: they are what the page is for.
    order = {"open": 0, "half_open": 1, "closed": 2}
    rows.sort(key=lambda row: (order.get(row["breaker"].state, 3), row["breaker"].key))
    context = {
        "nav": "breakers",
        "rows": rows,
        "can_close": request.user.has_perm("policies.change_breaker"),
    }
    template = (
        "console/breakers/partials/_table.html"
        if is_partial(request)
        else "console/breakers/list.html"
    )
    return render(request, template, context)


@require_POST
@console_view("policies.change_breaker")
def breaker_close(request: HttpRequest, breaker_id: int) -> HttpResponse:
    breaker = get_object_or_404(Breaker, pk=breaker_id)
    reason = request.POST.get("reason", "").strip()[:500] or "closed from the console"
    if breakers.close_now(key=breaker.key, actor=actor_of(request.user), reason=reason):
        messages.success(request, f"{breaker.key} closed: the runs waiting on it resume.")
    else:
        messages.info(request, f"{breaker.key} was closed already.")
    return after_post(request, reverse("console-breaker-list"))


# --- kill switches -----------------------------------------------------------


@require_POST
@console_view("policies.change_killswitch")
def lift_switch(request: HttpRequest, switch_id: int) -> HttpResponse:
    switch = get_object_or_404(KillSwitch, pk=switch_id)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("console-home")
    reason = request.POST.get("reason", "").strip()
    if not reason:
        messages.error(request, f"Say why the kill switch on {switch.stops} is lifted.")
    elif not switch.engaged:
        messages.info(request, f"The kill switch on {switch.stops} was already lifted.")
    else:
        set_switch(
            scope=switch.scope,
            target=switch.target,
            engaged=False,
            reason=reason,
            by=request.user.get_username(),
            user=request.user,
        )
        messages.success(request, f"Lifted the kill switch on {switch.stops}.")
    return after_post(request, back)
