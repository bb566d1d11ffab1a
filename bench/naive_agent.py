"""The agent loop: the second baseline of bench/economics.py.

A model in a loop, told to "process inbound leads". Each turn it is sent the
task, the ICP rubric, the tools it may call (with their argument schemas),
the lead and everything that happened so far, and it picks the next action:
call a tool, give its score, write the email, or finish. There is no dedup
gate (every record it sees is processed, so every record is enriched again),
no cache, and no checkpoint: when the worker dies mid-record, the record
starts over from scratch.

It calls the same tools (the sample vendors, which book every call and its
credits) and the same LLM provider as Bosun's sample workflow, so tokens,
credits and dollars are counted the same way on both sides. The model's
choices come from `scripted` rules (offline, deterministic): normalise,
enrich, score, then draft and send when the score reaches 70, then finish;
after a failed tool call, call the tool again (three tries at most). Its
scores come from the very rules the sample workflow's score step uses, so
both qualify the same leads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from demo.sample_data.workflows import ICP_SCRIPTED_RULES, LEAD_QUALIFICATION
from policies.rubrics import route_for, total_for
from runs.engine.score_kind import criteria_prompt
from runs.llm.base import LLMRequest, Provider, cost_of
from runs.tools.base import ToolCall, ToolError, get_tool, price_of

TOOLS = ("lead.normalize", "enrich.company", "outreach.send")
MAX_TRIES = 3
MAX_TURNS = 12  # a bound on the loop, far above what one lead needs


class WorkerKilled(BaseException):
    """The process running the agent died (the benchmark's injected crash).
    A BaseException, like the signal that kills a worker: nothing catches it
    on the way out."""


def _config(key: str) -> dict[str, Any]:
    """The sample workflow's step config: the agent calls the same tools with
    the same arguments and writes the same email."""
    return next(s for s in LEAD_QUALIFICATION["steps"] if s["key"] == key)["config"]


REPLIES: dict[str, dict[str, Any]] = {
    "normalize": {"action": "call", "tool": "lead.normalize", "args": _config("normalize")["args"]},
    "enrich": {"action": "call", "tool": "enrich.company", "args": _config("enrich")["args"]},
    "score": {"action": "score", "criteria": {"$ref": "points.criteria"}},
    "draft": {"action": "draft", **_config("draft")["scripted"]["reply"]},
    "send": {
        "action": "call",
        "tool": "outreach.send",
        "args": {
            "to": {"$ref": "steps.normalize.email"},
            "subject": {"$ref": "steps.draft.subject"},
            "body": {"$ref": "steps.draft.body"},
        },
    },
    "finish": {"action": "finish", "route": "{{ steps.route | default('') }}"},
}


def _describe(name: str) -> str:
    tool = get_tool(name)
    text = tool.description or (type(tool).__doc__ or name).strip().splitlines()[0]
    return text.rstrip(".") + "."


def system_prompt(rubric: dict[str, Any]) -> str:
    """The task, the rubric and the tools, as a tool-using agent is sent them
    every turn (the tool schemas are the tools' own argument models)."""
    tools = "\n".join(
        f"- {name}: {_describe(name)} Arguments (JSON Schema): "
        + json.dumps(get_tool(name).Args.model_json_schema(), separators=(",", ":"))
        for name in TOOLS
    )
    return (
        "You process inbound B2B leads. For each lead: normalise it, enrich the company, "
        "score it against our ideal customer profile, and route it: a total of 70 or more "
        "goes to outreach (write a short first email and send it), 40 to 70 to nurture, "
        "below 40 to archive.\n\n"
        + criteria_prompt(rubric)
        + "\n\nTools you may call:\n"
        + tools
        + '\n\nReply with one JSON object per turn: {"action": "call", "tool": …, "args": '
        '{…}} to call a tool; {"action": "score", "criteria": {…}} to give your scores; '
        '{"action": "draft", "subject": …, "body": …} for the email; {"action": "finish", '
        '"route": …} when the lead is done.'
    )


@dataclass
class Attempt:
    """One pass over a record, from scratch."""

    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 0
    usd: Decimal = Decimal(0)  # model and vendor dollars this pass paid


@dataclass
class Processed:
    """What the agent did with one record, over all its attempts."""

    route: str = ""
    enrichments: int = 0
    sends: int = 0
    tool_errors: int = 0
    crashes: int = 0
    respent_tokens: int = 0  # tokens of attempts a crash threw away
    respent_usd: Decimal = Decimal(0)  # their model and vendor dollars
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class NaiveAgent:
    provider: Provider
    model: str
    rubric: dict[str, Any]  # a rubric version's snapshot
    crash_at_score: Callable[[int], bool] = lambda seq: False
    system: str = ""

    def __post_init__(self) -> None:
        self.system = self.system or system_prompt(self.rubric)

    def process(self, seq: int, lead: dict[str, Any]) -> Processed:
        """Process one record; a crash restarts it from the beginning."""
        done = Processed()
        while True:
            attempt = Attempt()
            done.attempts.append(attempt)
            try:
                self._attempt(seq, lead, attempt, done, crash=len(done.attempts) == 1)
                return done
            except WorkerKilled:
                done.crashes += 1
                done.respent_tokens += attempt.tokens_in + attempt.tokens_out
                done.respent_usd += attempt.usd

    def _attempt(
        self, seq: int, lead: dict[str, Any], attempt: Attempt, done: Processed, *, crash: bool
    ) -> None:
        steps: dict[str, Any] = {}
        transcript: list[str] = []
        tries: dict[str, int] = {}
        for turn in range(1, MAX_TURNS + 1):
            action = next_action(steps, tries)
            reply = self._ask(action, lead, steps, transcript, attempt)
            transcript.append(f"assistant: {json.dumps(reply, separators=(',', ':'))}")
            if reply["action"] == "finish":
                done.route = steps.get("route", "")
                return
            if reply["action"] == "score":
                steps["score"] = reply["criteria"]
                total = total_for(self.rubric, reply["criteria"])
                steps["route"] = route_for(self.rubric, total)
                if crash and self.crash_at_score(seq):
                    raise WorkerKilled(f"worker killed on record {seq} after scoring")
            elif reply["action"] == "draft":
                steps["draft"] = {"subject": reply["subject"], "body": reply["body"]}
            else:
                key = action
                tries[key] = tries.get(key, 0) + 1
                result = self._call(reply["tool"], reply["args"], turn, tries[key], done)
                if "error" not in result:
                    attempt.usd += price_of(reply["tool"]).usd
                transcript.append(
                    f"tool {reply['tool']}: {json.dumps(result, separators=(',', ':'))}"
                )
                if "error" not in result:
                    steps[key] = result
        raise RuntimeError(f"record {seq}: the agent did not finish in {MAX_TURNS} turns")

    def _ask(
        self,
        action: str,
        lead: dict[str, Any],
        steps: dict[str, Any],
        transcript: list[str],
        attempt: Attempt,
    ) -> dict[str, Any]:
        prompt = "Lead:\n" + json.dumps(lead, ensure_ascii=False) + "\n\nSo far:\n"
        prompt += "\n".join(transcript) if transcript else "(nothing yet)"
        request = LLMRequest(
            model=self.model,
            system=self.system,
            prompt=prompt,
            step_config={"scripted": {"points": ICP_SCRIPTED_RULES, "reply": REPLIES[action]}},
            variables={"input": lead, "steps": steps},
            step_key="agent",
        )
        response = self.provider.complete(request)
        attempt.calls += 1
        attempt.tokens_in += response.usage.input_tokens
        attempt.tokens_out += response.usage.output_tokens
        attempt.usd += cost_of(self.model, response.usage)
        return json.loads(response.text)

    def _call(
        self, name: str, raw_args: dict[str, Any], turn: int, tries: int, done: Processed
    ) -> dict[str, Any]:
        tool = get_tool(name)
        try:
            args = tool.Args.model_validate(raw_args)
        except ValidationError as exc:
            return {"error": f"invalid arguments: {exc.errors()[0]['msg']}"}
        # No ledger: a fresh key every call, so a repeated send is a new send.
        call = ToolCall(
            run_id=0,
            step_key="agent",
            seq=turn,
            attempt=tries,
            idempotency_key=f"naive-{uuid.uuid4().hex}",
            timeout_s=30.0,
        )
        try:
            result = tool.run(args, call).model_dump(mode="json")
        except ToolError as exc:
            done.tool_errors += 1
            return {"error": str(exc)}
        if name == "enrich.company":
            done.enrichments += 1
        elif name == "outreach.send":
            done.sends += 1
        return result


def next_action(steps: dict[str, Any], tries: dict[str, int]) -> str:
    """The scripted model's choice of what to do next, from what it has."""
    for key in ("normalize", "enrich"):
        if key not in steps:
            return key if tries.get(key, 0) < MAX_TRIES else "finish"
    if "score" not in steps:
        return "score"
    if steps["route"] != "outreach":
        return "finish"
    if "draft" not in steps:
        return "draft"
    if "send" not in steps and tries.get("send", 0) < MAX_TRIES:
        return "send"
    return "finish"
