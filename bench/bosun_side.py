"""The Bosun side of bench/economics.py: the real path, with real kills.

Runs are started through the engine's API (`engine.start_run`, the
production doorbell rings the queue) and executed by a real `manage.py
worker` (its worker processes) beside a real `manage.py sweeper`, which
rings for a run whose worker died once its lease is over. Workers die two
ways, both by SIGKILL:

- inside paid calls: the sample vendors and the bench's metered model kill
  their own process right after booking the charge, once per chosen run
  (`BOSUN_VENDOR_KILL`, see demo/vendors.py);
- at random points: for one started run in `random_kill_every`, up to a
  second later, the bench kills a worker process that is busy (using CPU).

The cluster's sentinel replaces a dead worker (with new queues, see
runs/cluster.py); the bench restarts the cluster or the sweeper themselves
if they exit, and, as a process supervisor would, the cluster when no run
has moved for longer than a lease (the report counts these restarts: none
is expected).
The bench approves every review as it appears (the simulated reviewer),
settles a call a run waits on (`needs_reconciliation`) by looking its key
up at the vendor (the simulated operator),
and keeps at most `window` runs queued or running, as a batch submission
with a bounded queue does.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("succeeded", "failed", "stopped", "cancelled")
# No run moved for this long, longer than a lease (BOSUN_LEASE_S, 90 s):
# the worker cluster is wedged and is restarted.
STALL_S = 100.0


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@dataclass
class Cluster:
    """One `manage.py worker` and one `manage.py sweeper`, restarted if they exit."""

    env: dict[str, str]
    log_dir: str
    worker_count: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=lambda: {"worker": 0, "sweeper": 0})
    seen_pids: set[int] = field(default_factory=set)
    most_alive: int = 0  # the cluster's processes alive at once, at most

    def start(self, name: str) -> None:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [sys.executable, "manage.py", name],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def up(self) -> None:
        for name in ("worker", "sweeper"):
            self.start(name)

    def restart(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.procs[name].pid, signal.SIGKILL)  # the whole session
        self.procs[name].wait()
        self.restarts[name] += 1
        self.start(name)

    def check(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.restart(name)
        alive = self.workers()
        self.seen_pids |= alive
        self.most_alive = max(self.most_alive, len(alive))

    @property
    def replaced(self) -> int:
        """Processes the cluster started in place of dead ones."""
        return len(self.seen_pids) - self.most_alive

    def workers(self) -> set[int]:
        proc = self.procs.get("worker")
        return descendants(proc.pid) if proc else set()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.log_dir, f"{name}.log")) as f:
            return "".join(f.readlines()[-lines:])
        return ""


@dataclass
class Driven:
    """What the driver saw."""

    company_of: dict[int, str] = field(default_factory=dict)  # run id -> true domain
    random_kills: int = 0  # busy worker processes killed at a random moment
    approvals: int = 0
    reconciled: int = 0  # paid calls a person had to settle
    unsettled: list[int] = field(default_factory=list)
    seconds: float = 0.0


def drive(
    records,
    cluster: Cluster,
    *,
    window: int,
    random_kill_every: int,
    seed: int,
    timeout_s: float,
    progress=print,
) -> Driven:
    """Start every record's run, approve reviews, kill workers at random
    points, until every run is terminal (or `timeout_s`)."""
    from runs import engine
    from runs.models import Run

    rng = random.Random(seed)
    out = Driven()
    pending: set[int] = set()  # runs not terminal
    active = 0  # of them, queued or running
    kills_due: list[float] = []
    started = time.monotonic()
    deadline = started + timeout_s
    next_note = started + 30
    index = 0
    last_rows: list = []
    last_change = started
    while index < len(records) or pending:
        now = time.monotonic()
        while index < len(records) and active < window:
            record = records[index]
            index += 1
            run = engine.start_run(
                workflow="lead-qualification", input=record.input, idempotency_key=record.key
            )
            if run.created:
                out.company_of[run.run.pk] = record.company
                pending.add(run.run.pk)
                active += 1
                if random_kill_every and rng.randrange(random_kill_every) == 0:
                    kills_due.append(now + rng.uniform(0.0, 1.0))
        rows = list(
            Run.objects.filter(pk__in=pending)
            .order_by("pk")
            .values_list("pk", "status", "wait_reason", "seq")
        )
        active = 0
        waiting_review, waiting_reconcile = [], []
        for pk, status, reason, _seq in rows:
            if status in TERMINAL:
                pending.discard(pk)
            elif status in ("queued", "running"):
                active += 1
            elif status == "waiting" and reason == "approval":
                waiting_review.append(pk)
            elif status == "waiting" and reason == "needs_reconciliation":
                waiting_reconcile.append(pk)
        if rows != last_rows:
            last_rows, last_change = rows, now
        elif pending and now - last_change > STALL_S:
            # Nothing moved for longer than a lease: the cluster is wedged
            # (a worker killed while it held the cluster's internal task
            # queue leaves the others waiting on it). Restart it, as a
            # process supervisor would.
            progress(f"  bosun: no run moved for {STALL_S:.0f} s: restarting the worker cluster")
            cluster.restart("worker")
            last_change = now
        out.approvals += _approve(waiting_review)
        out.reconciled += _reconcile(waiting_reconcile)
        if kills_due and min(kills_due) <= now and _kill_a_worker(cluster, pending, rng, out):
            kills_due.remove(min(kills_due))
        cluster.check()
        if now > next_note:
            next_note = now + 30
            progress(
                f"  bosun: {index}/{len(records)} records started, {len(pending)} runs open,"
                f" {now - started:.0f} s"
            )
        if now > deadline:
            out.unsettled = sorted(pending)
            break
        time.sleep(0.02)
    out.seconds = time.monotonic() - started
    return out


def _approve(run_ids: list[int]) -> int:
    """The simulated reviewer: approves each pending review as it is."""
    if not run_ids:
        return 0
    from approvals.models import ApprovalRequest, ApprovalStatus
    from runs import engine
    from runs.engine.errors import AlreadyDecided

    decided = 0
    pending = ApprovalRequest.objects.filter(run_id__in=run_ids, status=ApprovalStatus.PENDING)
    for approval_id in pending.values_list("pk", flat=True):
        try:
            engine.decide_approval(approval_id=approval_id, approve=True, actor_label="bench")
            decided += 1
        except AlreadyDecided:  # decided meanwhile (its timeout): nothing to do
            pass
    return decided


def _reconcile(run_ids: list[int]) -> int:
    """The simulated operator: settles a call whose worker died mid-call by
    looking it up at the vendor (the call's request key), as a person
    would in the vendor's dashboard."""
    if not run_ids:
        return 0
    from demo.models import VendorCall
    from runs import engine
    from runs.engine.errors import InvalidState
    from runs.models import ToolCallRecord

    settled = 0
    unknown = ToolCallRecord.objects.filter(run_id__in=run_ids, status="unknown")
    for record in unknown:
        booked = VendorCall.objects.filter(idempotency_key=record.idempotency_key).first()
        try:
            engine.reconcile_tool_call(
                record_id=record.pk,
                happened=booked is not None,
                result=booked.response if booked is not None else None,
                note="looked up at the vendor by its request key",
                by="bench",
            )
            settled += 1
        except InvalidState:  # settled meanwhile
            pass
    return settled


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])


def _kill_a_worker(cluster: Cluster, pending: set[int], rng: random.Random, out: Driven) -> bool:
    """SIGKILL one busy worker process, chosen at random, wherever it is.

    All worker processes of a cluster carry one engine worker id (they are
    forked from one parent), so a run's lease owner does not name the
    process. A worker is told apart from the cluster's other processes
    (sentinel, pusher, monitor) by the CPU time it spends: the bench takes
    the processes that used the most and are using CPU right now (sampled
    twice, 50 ms apart). False when none is busy (the kill waits)."""
    if not pending:
        return False
    pids = cluster.workers()
    before = {pid: _cpu_ticks(pid) for pid in pids}
    time.sleep(0.05)
    after = {pid: _cpu_ticks(pid) for pid in pids}
    ranked = sorted(pids, key=lambda pid: after[pid], reverse=True)[: cluster.worker_count]
    busy = [pid for pid in ranked if after[pid] > before[pid] >= 0]
    if not busy:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(rng.choice(busy), signal.SIGKILL)
        out.random_kills += 1
    return True
