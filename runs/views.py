"""Console pages for runs: dashboard, runs list, run timeline, dead letters."""

from __future__ import annotations

from django.http import Http404


def home(request):
    raise Http404


dashboard = run_list = run_detail = deadletter_list = home
