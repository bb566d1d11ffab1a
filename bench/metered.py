"""The model vendor of bench/economics.py: the `scripted` provider, billed.

Every call is booked, before its answer is returned, as one JSON line
appended to the file `BOSUN_BENCH_METER` names: the side that asked
(`SIDE`, from `BOSUN_BENCH_SIDE` in a worker process), the model the call
asked for, its tokens and its list price (`BOSUN_PRICES`). So the model
bill is counted at the vendor, like the sample vendors' `VendorCall`, and
a call whose answer a killed worker never saw is on the bill too.

In a worker process (side `bosun`) a call can be the benchmark's kill
point: right after booking, `demo.vendors.kill_if_planned("llm-<step>",
run)` may SIGKILL the process, once per chosen run (`BOSUN_VENDOR_KILL`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runs.llm.base import LLMRequest, LLMResponse

SIDE = os.environ.get("BOSUN_BENCH_SIDE", "bosun")


def book(line: dict[str, Any]) -> None:
    """Append one call to the bill: one write under O_APPEND, so lines from
    concurrent processes do not interleave."""
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    fd = os.open(os.environ["BOSUN_BENCH_METER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class MeteredProvider:
    name = "metered"

    def complete(self, request: LLMRequest) -> LLMResponse:
        from django.conf import settings

        from demo.vendors import kill_if_planned
        from runs.llm.base import cost_of
        from runs.llm.scripted import ScriptedProvider

        response = ScriptedProvider().complete(request)
        response = response.model_copy(update={"model": request.model})
        usage = response.usage
        run_id = (request.variables.get("run") or {}).get("id")
        book(
            {
                "side": SIDE,
                "model": request.model,
                "step": request.step_key,
                "run": run_id,
                "in": usage.input_tokens,
                "out": usage.output_tokens,
                "usd": str(cost_of(request.model, usage)),
                "usd_balanced": str(cost_of(settings.BOSUN_MODEL_TIERS["balanced"], usage)),
            }
        )
        if SIDE == "bosun":
            kill_if_planned(f"llm-{request.step_key}", run_id)
        return response


@dataclass
class Bill:
    """The model bill of one side."""

    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    usd: Decimal = Decimal(0)
    usd_balanced: Decimal = Decimal(0)
    by_step: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


def read_bill(path: str) -> dict[str, Bill]:
    bills: dict[str, Bill] = defaultdict(Bill)
    if not os.path.exists(path):
        return bills
    with open(path) as lines:
        for raw in lines:
            line = json.loads(raw)
            bill = bills[line["side"]]
            bill.calls += 1
            bill.tokens_in += line["in"]
            bill.tokens_out += line["out"]
            bill.usd += Decimal(line["usd"])
            bill.usd_balanced += Decimal(line["usd_balanced"])
            bill.by_step[line["step"]] += 1
    return bills
