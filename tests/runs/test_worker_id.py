"""Each worker process records its own id, also when forked from one parent."""

from __future__ import annotations

import multiprocessing
import os

from runs.engine.worker import worker_id


def _child_id(queue) -> None:
    queue.put((os.getpid(), worker_id()))


def test_a_forked_worker_gets_its_own_id():
    parent = worker_id()
    assert parent == worker_id()  # stable within a process
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_id, args=(queue,))
    child.start()
    pid, child_id = queue.get(timeout=30)
    child.join(timeout=30)
    assert child_id != parent
    assert f":{pid}:" in child_id and f":{os.getpid()}:" in parent
