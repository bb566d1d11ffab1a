"""Telling the workers that a run has something to do.

The engine does not know the queue: it calls the callable named by
`settings.BOSUN_DOORBELL` with a run id, after the transaction that made the
run ready commits. Ringing twice is harmless: a worker that finds nothing to
claim does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import cast

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string


@cache
def _bell(path: str) -> Callable[[int], None]:
    return cast(Callable[[int], None], import_string(path))


def ring(run_id: int) -> None:
    bell = _bell(settings.BOSUN_DOORBELL)
    transaction.on_commit(lambda: bell(run_id))
