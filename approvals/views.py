"""Console pages for people: the review queue and the weekly sample review."""

from __future__ import annotations

from django.http import Http404


def review_queue(request):
    raise Http404


sample_list = review_queue
