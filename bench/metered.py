"""The model vendor of bench/economics.py: the `scripted` provider, billed
as Anthropic bills it.

Every call is booked, before its answer is returned, as one JSON line
appended to the file `BOSUN_BENCH_METER` names: the side that asked
(`SIDE`, from `BOSUN_BENCH_SIDE` in a worker process), the model the call
asked for, its tokens and its list price (`BOSUN_PRICES`). So the model
bill is counted at the vendor, like the sample vendors' `VendorCall`, and
a call whose answer a killed worker never saw is on the bill too.

Prompt caching is billed from the Messages API body the client sends: for
Bosun, `runs.llm.anthropic_provider.message_params`, the body the real
provider sends (so the parts it marks with `cache_control` are the parts
billed as cacheable); for the baselines, their own client (`HandWritten`).
As the API does (Anthropic's prompt-caching docs):

- the prompt is read in the API's order, tools, then system, then
  messages, and each block carrying `cache_control` ends a cacheable
  prefix (the prefix includes everything before it);
- a prefix shorter than the model's minimum (`runs.llm.base.cache_minimum`)
  is not cached: billed as plain input, no error;
- the longest prefix sent before with the same model by the same
  organisation, within the TTL (5 minutes of real time, refreshed by each
  hit), is read at the cache-read price (0.1x input); from there up to the
  last cacheable prefix is written at the cache-write price (1.25x input);
  the rest is input.

The cache's state is a JSON file beside the bill, changed under an
exclusive lock (`PromptCache`), so every worker process shares it. Each
side is its own organisation: Bosun's workers share one cache, each
baseline has its own. Tokens are estimated at four characters a token, as
the scripted provider does, over everything the body sends: the tool
definition (the output schema) counts, as the API bills it. The few hundred
tokens of system prompt the API adds for tool use are not counted.

In a worker process (side `bosun`) a call can be the benchmark's kill
point: right after booking, `demo.vendors.kill_if_planned("llm-<step>",
run)` may SIGKILL the process, once per chosen run (`BOSUN_VENDOR_KILL`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runs.llm.base import CACHE_TTL_S, LLMRequest, LLMResponse, Usage, cache_minimum

SIDE = os.environ.get("BOSUN_BENCH_SIDE", "bosun")
CHARS_PER_TOKEN = 4  # runs.llm.scripted.estimate_tokens


def book(line: dict[str, Any]) -> None:
    """Append one call to the bill: one write under O_APPEND, so lines from
    concurrent processes do not interleave."""
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    fd = os.open(os.environ["BOSUN_BENCH_METER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# --- what the body asks to cache ------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A request's input as the API reads it: its tokens, and each prefix
    ending at a block marked `cache_control` as (tokens, digest), shortest
    first."""

    tokens: int
    prefixes: tuple[tuple[int, str], ...] = ()

    @property
    def marked(self) -> int:
        """Tokens of the longest marked prefix, cacheable or not."""
        return self.prefixes[-1][0] if self.prefixes else 0


def _blocks(body: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(section, text, marked) for each block, in the order the API reads them."""
    for tool in body.get("tools") or []:
        definition = {k: v for k, v in tool.items() if k != "cache_control"}
        yield "tools", json.dumps(definition, sort_keys=True), "cache_control" in tool
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    for block in system:
        yield "system", block["text"], "cache_control" in block
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            yield message["role"], content, False
            continue
        for block in content:
            yield message["role"], block.get("text", ""), "cache_control" in block


def prompt_of(body: dict[str, Any]) -> Prompt:
    digest = hashlib.sha256(body["model"].encode())
    chars = 0
    prefixes = []
    for section, text, marked in _blocks(body):
        digest.update(f"{section}\0{len(text)}\0".encode() + text.encode())
        chars += len(text)
        if marked:
            prefixes.append((chars // CHARS_PER_TOKEN, digest.hexdigest()))
    return Prompt(tokens=max(1, chars // CHARS_PER_TOKEN), prefixes=tuple(prefixes))


# --- the cache ------------------------------------------------------------------


@dataclass
class PromptCache:
    """The provider's prompt cache, kept in a file that every process of the
    bench shares: {organisation:digest: expiry (epoch seconds)}."""

    path: str
    clock: Callable[[], float] = time.time

    @contextlib.contextmanager
    def charge(self, *, org: str, model: str, prompt: Prompt) -> Iterator[tuple[int, int]]:
        """(tokens read, tokens written) for one request. The state is saved
        after the caller's block (where the call is booked) and under the
        lock, so a request is billed against every request before it."""
        minimum = cache_minimum(model)
        cacheable = [(n, f"{org}:{digest}") for n, digest in prompt.prefixes if n >= minimum]
        if not cacheable:
            yield 0, 0
            return
        with open(self.path + ".lock", "a") as lock:
            # Held across read, book and write: two workers sending the same
            # prefix at once are one write and one read, in the lock's order.
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = self.clock()
            live = {key: expiry for key, expiry in self._load().items() if expiry > now}
            read = max((n for n, key in cacheable if key in live), default=0)
            yield read, cacheable[-1][0] - read
            for _, key in cacheable:  # written, or read: the TTL starts again
                live[key] = now + CACHE_TTL_S
            self._save(live)

    def _load(self) -> dict[str, float]:
        try:
            with open(self.path) as state:
                return json.load(state)
        except FileNotFoundError:
            return {}

    def _save(self, live: dict[str, float]) -> None:
        # Replaced whole, so a process killed while writing leaves the old state.
        tmp = f"{self.path}.{os.getpid()}"
        with open(tmp, "w") as state:
            json.dump(live, state)
        os.replace(tmp, self.path)


def prompt_cache() -> PromptCache:
    return PromptCache(os.environ["BOSUN_BENCH_METER"] + ".prompt-cache")


# --- the provider ---------------------------------------------------------------


class MeteredProvider:
    name = "metered"

    def complete(self, request: LLMRequest, *, body: dict[str, Any] | None = None) -> LLMResponse:
        """The scripted answer to `request`, billed for `body` (by default the
        body Bosun's anthropic provider sends for it)."""
        from django.conf import settings

        from demo.vendors import kill_if_planned
        from runs.llm.anthropic_provider import message_params
        from runs.llm.base import cost_of
        from runs.llm.scripted import ScriptedProvider

        response = ScriptedProvider().complete(request)
        prompt = prompt_of(body if body is not None else message_params(request))
        out = response.usage.output_tokens
        run_id = (request.variables.get("run") or {}).get("id")
        with prompt_cache().charge(org=SIDE, model=request.model, prompt=prompt) as (read, write):
            usage = Usage(
                input_tokens=prompt.tokens - read - write,
                output_tokens=out,
                cache_read_tokens=read,
                cache_write_tokens=write,
            )
            # Every marked prefix read from the cache, whatever its length
            # and age: the most prompt caching could save on this call.
            all_read = Usage(
                input_tokens=prompt.tokens - prompt.marked,
                output_tokens=out,
                cache_read_tokens=prompt.marked,
            )
            # Every input token at the cache-read price: no caching can do better.
            every_input_read = Usage(output_tokens=out, cache_read_tokens=prompt.tokens)
            book(
                {
                    "side": SIDE,
                    "model": request.model,
                    "step": request.step_key,
                    "run": run_id,
                    "in": prompt.tokens,
                    "out": out,
                    "read": read,
                    "write": write,
                    "marked": prompt.marked,
                    "usd": str(cost_of(request.model, usage)),
                    "usd_balanced": str(cost_of(settings.BOSUN_MODEL_TIERS["balanced"], usage)),
                    "usd_all_read": str(cost_of(request.model, all_read)),
                    "usd_input_read": str(cost_of(request.model, every_input_read)),
                }
            )
        if SIDE == "bosun":
            kill_if_planned(f"llm-{request.step_key}", run_id)
        return response.model_copy(update={"model": request.model, "usage": usage})


def plain_body(request: LLMRequest, *, mark_system: bool = False) -> dict[str, Any]:
    """The Messages API body a team's own client sends for `request`: the
    system prompt, tool and messages Bosun's provider sends, without
    `cache_control`; with `mark_system`, the system prompt carries it (the
    simple way to turn prompt caching on)."""
    from runs.llm.anthropic_provider import message_params

    body = message_params(request)
    for tool in body.get("tools", []):
        tool.pop("cache_control", None)
    for block in body.get("system", []):
        block.pop("cache_control", None)
        if mark_system:
            block["cache_control"] = {"type": "ephemeral"}
    return body


@dataclass
class HandWritten:
    """A baseline's own Messages API client, in front of the metered model."""

    provider: MeteredProvider
    mark_system: bool = False
    name: str = "hand-written"

    def complete(self, request: LLMRequest) -> LLMResponse:
        body = plain_body(request, mark_system=self.mark_system)
        return self.provider.complete(request, body=body)


# --- the bill -------------------------------------------------------------------


@dataclass
class Bill:
    """The model bill of one side."""

    calls: int = 0
    tokens_in: int = 0  # all input: plain, read from the cache and written to it
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    usd: Decimal = Decimal(0)
    usd_balanced: Decimal = Decimal(0)
    usd_all_read: Decimal = Decimal(0)
    usd_input_read: Decimal = Decimal(0)
    by_step: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # step -> (model, the longest prefix its calls marked, in tokens)
    marked: dict[str, tuple[str, int]] = field(default_factory=dict)

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
            bill.cache_read += line["read"]
            bill.cache_write += line["write"]
            bill.usd += Decimal(line["usd"])
            bill.usd_balanced += Decimal(line["usd_balanced"])
            bill.usd_all_read += Decimal(line["usd_all_read"])
            bill.usd_input_read += Decimal(line["usd_input_read"])
            bill.by_step[line["step"]] += 1
            _, most = bill.marked.get(line["step"], ("", 0))
            if line["marked"] >= most:
                bill.marked[line["step"]] = (line["model"], line["marked"])
    return bills
