"""Console actions on policies: lifting a kill switch from its banner.

Engaging a switch stays in admin, where its scope and target are chosen;
lifting it is one button on every console page while it is engaged, since
that is where an operator sees it. Either way the change goes through
`set_switch`, which records who and why and audits it.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from lib.console import after_post, console_view
from policies.models import KillSwitch, SwitchScope
from runs.engine.switches import set_switch


def describe(switch: KillSwitch) -> str:
    """What the switch stops, in words: "everything", "workflow lead-intake"."""
    if switch.scope == SwitchScope.GLOBAL:
        return "everything"
    return f"{switch.scope} {switch.target}"


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
        messages.error(request, f"Say why the kill switch on {describe(switch)} is lifted.")
    elif not switch.engaged:
        messages.info(request, f"The kill switch on {describe(switch)} was already lifted.")
    else:
        set_switch(
            scope=switch.scope,
            target=switch.target,
            engaged=False,
            reason=reason,
            by=request.user.get_username(),
            user=request.user,
        )
        messages.success(request, f"Lifted the kill switch on {describe(switch)}.")
    return after_post(request, back)
