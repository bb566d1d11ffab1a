"""Tools for tests: they count their executions in the database."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from runs.tools.base import Tool, ToolCall, ToolError
from tests.testapp.models import Execution, Switch


def _record(call: ToolCall) -> int:
    Execution.objects.create(
        run_id=call.run_id,
        seq=call.seq,
        step_key=call.step_key,
        attempt=call.attempt,
        pid=os.getpid(),
    )
    return Execution.objects.filter(run_id=call.run_id, step_key=call.step_key).count()


class Count(Tool):
    name = "test.count"

    class Args(BaseModel):
        sleep_s: float = Field(default=0, ge=0)

    class Result(BaseModel):
        executions: int

    def run(self, args: Args, call: ToolCall) -> Result:
        executions = _record(call)
        if args.sleep_s:
            time.sleep(args.sleep_s)
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
