"""Tools for tests: they count their executions in the database."""

from __future__ import annotations

import os
import signal
import time

from pydantic import BaseModel, Field

from runs.tools.base import Tool, ToolCall, ToolCost, ToolError, priced
from tests.testapp.models import Execution, Gauge, Switch


def _record(call: ToolCall) -> int:
    Execution.objects.create(
        run_id=call.run_id,
        seq=call.seq,
        step_key=call.step_key,
        attempt=call.attempt,
        pid=os.getpid(),
    )
    return Execution.objects.filter(run_id=call.run_id, step_key=call.step_key).count()


def _freeze() -> None:
    """Stop this process where it stands, until a SIGCONT: a worker frozen
    inside a tool call at a known point, not wherever a signal from the
    test happened to find it."""
    os.kill(os.getpid(), signal.SIGSTOP)


class Count(Tool):
    name = "test.count"

    class Args(BaseModel):
        sleep_s: float = Field(default=0, ge=0)
        # Count once the sleep is over: a body cut short leaves no row.
        count_after: bool = False
        # The first execution stops its own process (SIGSTOP) once counted:
        # frozen inside the call, however slow the machine (see _freeze).
        freeze: bool = False
        # Every execution ends its own process (SIGKILL) once counted: a
        # worker lost inside the step, as the OOM killer would leave it.
        kill: bool = False

    class Result(BaseModel):
        executions: int

    def run(self, args: Args, call: ToolCall) -> Result:
        executions = 0 if args.count_after else _record(call)
        if args.freeze and executions == 1:
            _freeze()
        if args.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if args.sleep_s:
            time.sleep(args.sleep_s)
        if args.count_after:
            executions = _record(call)
        return self.Result(executions=executions)


class Fail(Tool):
    """Fails the first `failures` attempts, retryably or not."""

    name = "test.fail"

    class Args(BaseModel):
        failures: int = 1000
        retryable: bool = True
        retry_after: float | None = None

    class Result(BaseModel):
        attempt: int

    def run(self, args: Args, call: ToolCall) -> Result:
        _record(call)
        if call.attempt <= args.failures:
            raise ToolError(
                f"planned failure {call.attempt}",
                retryable=args.retryable,
                retry_after=args.retry_after,
            )
        return self.Result(attempt=call.attempt)


class FailWhile(Tool):
    """Fails, not retryably, while the named switch is on."""

    name = "test.fail_while"

    class Args(BaseModel):
        switch: str

    class Result(BaseModel):
        ok: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        _record(call)
        if Switch.objects.filter(name=args.switch, on=True).exists():
            raise ToolError(f"switch {args.switch} is on", retryable=False)
        return self.Result(ok=True)


class Send(Tool):
    """A write: it may never be answered from a cache."""

    name = "test.send"
    side_effect = "write_idempotent"

    class Args(BaseModel):
        to: str = "someone"

    class Result(BaseModel):
        sent: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        _record(call)
        return self.Result(sent=True)


class HangOnceSend(Tool):
    """A write whose vendor hangs on the first call for the run's step (for
    `first_sleep_s`) and answers later calls at once."""

    name = "test.hang_once_send"
    side_effect = "write_idempotent"

    class Args(BaseModel):
        first_sleep_s: float = Field(default=0, ge=0)
        freeze: bool = False  # as test.count's

    class Result(BaseModel):
        sent: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        if _record(call) == 1:
            if args.freeze:
                _freeze()
            time.sleep(args.first_sleep_s)
        return self.Result(sent=True)


class InTransaction(Tool):
    """Reports whether the engine called it inside a database transaction."""

    name = "test.in_transaction"

    class Args(BaseModel):
        pass

    class Result(BaseModel):
        in_transaction: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        from django.db import connection

        _record(call)
        return self.Result(in_transaction=connection.in_atomic_block)


class InFlight(Tool):
    """Measures, inside the tool, how many calls of a key run at once."""

    name = "test.inflight"
    limit_keys = ("vendor:test",)

    class Args(BaseModel):
        sleep_s: float = Field(default=0.05, ge=0)

    class Result(BaseModel):
        concurrent: int

    def run(self, args: Args, call: ToolCall) -> Result:
        from django.db import connection

        _record(call)
        Gauge.objects.get_or_create(key="vendor:test")
        with connection.cursor() as cursor:
            # One atomic statement each way: the peak is exact across processes.
            cursor.execute(
                "UPDATE testapp_gauge SET current = current + 1,"
                " peak = CASE WHEN current + 1 > peak THEN current + 1 ELSE peak END"
                " WHERE key = %s RETURNING current",
                ["vendor:test"],
            )
            now = cursor.fetchone()[0]
        try:
            time.sleep(args.sleep_s)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE testapp_gauge SET current = current - 1 WHERE key = %s",
                    ["vendor:test"],
                )
        return self.Result(concurrent=now)


class Page(Tool):
    """Returns the text it is given, as if fetched from outside."""

    name = "test.page"
    untrusted_output = True

    class Args(BaseModel):
        text: str

    class Result(BaseModel):
        text: str

    def run(self, args: Args, call: ToolCall) -> Result:
        return self.Result(text=args.text)


class UnsafeSend(Tool):
    """A write the outside cannot dedupe (like SMTP). With `crash_after` the
    process dies right after the send, before the engine can checkpoint."""

    name = "test.unsafe_send"
    side_effect = "write_unsafe"
    egress = True

    class Args(BaseModel):
        to: str = "someone"
        crash_after: bool = False

    class Result(BaseModel):
        sent: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        _record(call)
        if args.crash_after:
            os._exit(137)
        return self.Result(sent=True)


class Metered(Tool):
    """A paid read whose vendor (meterco, a credit a row) reports in its
    answer the credits it charged: at most `limit`, known before the call,
    and only the rows it found, known after."""

    name = "test.metered"
    limit_keys = ("vendor:meterco",)

    class Args(BaseModel):
        limit: int = Field(ge=1, le=1000)
        found: int = Field(default=0, ge=0)

    class Result(BaseModel):
        rows: int
        credits_used: int

    def price(self, args: Args) -> ToolCost:
        return priced("meterco", args.limit)

    def cost(self, args: Args, result: dict) -> ToolCost:
        return priced("meterco", int(result["credits_used"]))

    def run(self, args: Args, call: ToolCall) -> Result:
        _record(call)
        rows = min(args.limit, args.found)
        return self.Result(rows=rows, credits_used=rows)


class EngageSwitch(Tool):
    """Engages a kill switch while its step runs (an operator's change that
    commits between this step and the next)."""

    name = "test.engage_switch"

    class Args(BaseModel):
        scope: str
        target: str = ""

    class Result(BaseModel):
        engaged: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        from runs.engine.switches import set_switch

        set_switch(scope=args.scope, target=args.target, engaged=True, reason="test", by="ops")
        return self.Result(engaged=True)


class Flaky(Tool):
    """A vendor (limit key `vendor:flaky`) that is down while the switch
    `flaky.down` is on (a 503: an outage) and refuses the request while
    `flaky.invalid` is on (a 422: it answered)."""

    name = "test.flaky"
    limit_keys = ("vendor:flaky",)

    class Args(BaseModel):
        n: int = 0

    class Result(BaseModel):
        ok: bool

    def run(self, args: Args, call: ToolCall) -> Result:
        _record(call)
        if Switch.objects.filter(name="flaky.down", on=True).exists():
            raise ToolError("flaky answered 503", retryable=True)
        if Switch.objects.filter(name="flaky.invalid", on=True).exists():
            raise ToolError("flaky answered 422: invalid", retryable=False, outage=False)
        return self.Result(ok=True)
