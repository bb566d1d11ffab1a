"""The straightforward script: the headline baseline of bench/economics.py.

What a team's first version of lead qualification is: a loop over the
inbound records that, for each one, normalises it, enriches the company
once, scores it once (one model call: the same `fast` tier, prompt and ICP
rubric the sample workflow's score step sends), and when it qualifies
drafts one email (the workflow's `balanced` draft prompt) and sends it
after the same simulated review (approved). No dedup, no cache, no
checkpoint: every record is processed, and a crash starts the record over
from scratch. A 429 is retried after its Retry-After, as the workflow's
step retries it (4 attempts).

It calls the same sample vendors (which book every call and its credits)
with a fresh request key per call, as a script that keeps no state does,
and the same metered model (bench/metered.py) through its own client
(`metered.HandWritten`): the same system prompt, tool and message Bosun's
provider sends, with no prompt caching, as a first version is written. The
bench runs it a second time with the system prompt marked for caching (the
simple way to turn it on), to show what caching alone buys. Its crashes follow the same
plan as the worker kills on the Bosun side (`demo.vendors.kill_planned`,
the same rate per paid call, chosen by record instead of run), plus a
crash at a random point of one record in `RANDOM_CRASH_EVERY`. The script
runs in the benchmark's process, so a crash is simulated by an exception:
the script keeps nothing between attempts, so dying and being restarted
on the record is the same thing.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from demo.sample_data.workflows import LEAD_QUALIFICATION
from demo.vendors import kill_planned
from lib.context import render_value
from policies.rubrics import route_for, total_for
from runs.engine.score_kind import criteria_prompt, output_schema
from runs.llm.base import LLMRequest, Provider, cost_of, resolve_model
from runs.tools.base import ToolCall, ToolError, get_tool, price_of

MAX_ATTEMPTS = 4  # the workflow's enrich step: max_attempts 4
POINTS = ("normalize", "enrich", "score", "draft", "send")
# The paid calls, by the name the kill plan gives their vendor.
PAID = {"enrich": "enrichco", "score": "llm-score", "draft": "llm-draft", "send": "mailco"}


class ScriptCrashed(BaseException):
    """The script's process died on this record (the injected crash)."""


def _step(key: str) -> dict[str, Any]:
    return next(s for s in LEAD_QUALIFICATION["steps"] if s["key"] == key)["config"]


@dataclass
class Spend:
    tokens: int = 0
    model_usd: Decimal = Decimal(0)
    credits: int = 0
    vendor_usd: Decimal = Decimal(0)

    def add(self, other: Spend) -> None:
        self.tokens += other.tokens
        self.model_usd += other.model_usd
        self.credits += other.credits
        self.vendor_usd += other.vendor_usd

    @property
    def usd(self) -> Decimal:
        return self.model_usd + self.vendor_usd


@dataclass
class Processed:
    route: str = ""
    crashes: int = 0
    respent: Spend = field(default_factory=Spend)  # spend of the attempts a crash threw away


@dataclass
class Script:
    provider: Provider
    rubric: dict[str, Any]  # the icp rubric's newest snapshot
    random_crash_every: int
    seed: int = 7

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def process(self, seq: int, lead: dict[str, Any]) -> Processed:
        done = Processed()
        # The crash plan: which paid calls of this record kill the script
        # (once each), and a random point for one record in N.
        kills = {p for p, v in PAID.items() if kill_planned(v, f"record-{seq}")}
        random_point = None
        if self.random_crash_every and self.rng.randrange(self.random_crash_every) == 0:
            random_point = self.rng.choice(POINTS)
        while True:
            spend = Spend()
            try:
                done.route = self._attempt(lead, spend, kills, random_point)
                return done
            except ScriptCrashed as crash:
                done.crashes += 1
                done.respent.add(spend)
                point = str(crash)
                kills.discard(point)
                if point == random_point:
                    random_point = None

    def _attempt(
        self, lead: dict[str, Any], spend: Spend, kills: set[str], random_point: str | None
    ) -> str:
        def checkpoint(point: str) -> None:
            # Nothing is saved: the process dies here, after what it paid.
            if point in kills or point == random_point:
                raise ScriptCrashed(point)

        ctx: dict[str, Any] = {"input": lead, "steps": {}}
        steps = ctx["steps"]
        steps["normalize"] = self._tool("lead.normalize", _step("normalize")["args"], ctx, spend)
        checkpoint("normalize")
        if not steps["normalize"].get("domain"):
            return "needs_company"
        steps["enrich"] = self._tool("enrich.company", _step("enrich")["args"], ctx, spend)
        if steps["enrich"] is None:
            return "unscored"
        checkpoint("enrich")
        scores = self._score(ctx, spend)
        total = total_for(self.rubric, scores)
        route = route_for(self.rubric, total)
        steps["score"] = {"criteria": scores, "total": total, "route": route}
        checkpoint("score")
        if route != "outreach":
            return route
        steps["draft"] = self._draft(ctx, spend)
        checkpoint("draft")
        # The review: a person approves the draft as it is (as on the Bosun side).
        args = {
            "to": steps["normalize"]["email"],
            "subject": steps["draft"]["subject"],
            "body": steps["draft"]["body"],
        }
        self._tool("outreach.send", args, ctx, spend)
        checkpoint("send")
        return route

    def _tool(
        self, name: str, raw_args: dict[str, Any], ctx: dict[str, Any], spend: Spend
    ) -> dict[str, Any] | None:
        tool = get_tool(name)
        args = tool.Args.model_validate(render_value(raw_args, ctx))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            call = ToolCall(
                run_id=0,
                step_key=name,
                seq=0,
                attempt=attempt,
                idempotency_key=f"script-{uuid.uuid4().hex}",
                timeout_s=30.0,
            )
            try:
                result = tool.run(args, call).model_dump(mode="json")
            except ToolError as exc:
                if not exc.retryable or attempt == MAX_ATTEMPTS:
                    return None
                time.sleep(exc.retry_after or 0.0)
                continue
            price = price_of(name)
            spend.credits += price.credits
            spend.vendor_usd += price.usd
            return result
        return None

    def _ask(self, config: dict[str, Any], ctx: dict[str, Any], spend: Spend, **extra) -> str:
        request = LLMRequest(
            model=resolve_model(tier=config["tier"], model=None),
            system=str(render_value(config["system"], ctx)),
            prompt=str(render_value(config["prompt"], ctx)) + extra.pop("append", ""),
            step_config={"scripted": config["scripted"]},
            variables=ctx,
            **extra,
        )
        response = self.provider.complete(request)
        usage = response.usage
        spend.tokens += usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        spend.tokens += usage.output_tokens
        spend.model_usd += cost_of(request.model, usage)
        return response.text

    def _score(self, ctx: dict[str, Any], spend: Spend) -> dict[str, float]:
        import json

        config = _step("score")
        subject = str(render_value(config["subject"], ctx))
        text = self._ask(
            config,
            ctx,
            spend,
            append="\n\n" + criteria_prompt(self.rubric, subject=subject),
            output_schema=output_schema(self.rubric),
            step_key="score",
        )
        return json.loads(text)["criteria"]

    def _draft(self, ctx: dict[str, Any], spend: Spend) -> dict[str, str]:
        import json

        config = _step("draft")
        text = self._ask(
            config, ctx, spend, output_schema=config["output_schema"], step_key="draft"
        )
        return json.loads(text)
