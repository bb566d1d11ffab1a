"""HTTP tools, and `send`: the one function through which every tool reaches HTTP.

`send` refuses every URL whose host is not in `settings.BOSUN_HTTP_ALLOWED_HOSTS`
(exact names, compared after the same parsing the client uses, so
`127.0.0.1.evil.example` and `http://127.0.0.1@evil.example/` do not pass).
An entry is `host` (any port on that host) or `host:port` (that port only);
IPv6 entries are bracketed (`[::1]:8080`). URLs with credentials in them
(`user@host`) are refused outright. Redirects are not followed, bodies are
capped at `settings.BOSUN_HTTP_MAX_RESPONSE_BYTES`, the whole exchange is
bounded by the call's time limit, and proxies and `.netrc` from the
environment are ignored (they would route around the allowlist).

How failures map to `ToolError`:
- refused URL, 3xx, 4xx other than 429, oversized body: not retryable;
- 429 and 503: retryable, `Retry-After` honoured (seconds or an HTTP date);
- other 5xx, and errors before the request was sent (connect, pool): retryable;
- a timeout or broken connection after the request was sent (and a 504):
  for a write (any method but GET/HEAD) `outcome_unknown=True`, since the
  server may have acted; for a read just retryable.
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx2
from django.conf import settings
from pydantic import BaseModel, Field, field_validator

from lib import webhooks
from lib.retry_after import parse_retry_after
from runs.tools.base import Tool, ToolCall, ToolError

SAFE_METHODS = frozenset({"GET", "HEAD"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers a workflow may set on a request. Credentials are deliberately not
# among them: a model-written argument must never carry a secret.
ALLOWED_ARG_HEADERS = frozenset(
    {"accept", "accept-language", "if-match", "if-none-match", "x-request-id"}
)
USER_AGENT = "Bosun/0.1"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json_or_text(self) -> tuple[Any, str]:
        """(parsed JSON, "") when the body is JSON, else (None, the text)."""
        text = self.body.decode("utf-8", errors="replace")
        if not text.strip():
            return None, ""
        try:
            return jsonlib.loads(text), ""
        except ValueError:
            return None, text


def json_bytes(value: Any) -> bytes:
    """The exact bytes sent for a JSON body (compact, UTF-8)."""
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _allowed_entries() -> set[tuple[str, int | None]]:
    entries = set()
    for raw in settings.BOSUN_HTTP_ALLOWED_HOSTS:
        entry = raw.strip().lower()
        match = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+)(?::(\d+))?", entry)
        host, port = (match.group(1), match.group(2)) if match else (f"[{entry}]", None)
        try:
            normalised = httpx2.URL(f"http://{host}/").raw_host.decode("ascii")
        except (httpx2.InvalidURL, UnicodeError):
            continue  # a malformed entry allows nothing
        entries.add((normalised, int(port) if port else None))
    return entries


def check_url(url: str) -> httpx2.URL:
    """The parsed URL if the allowlist permits it; ToolError otherwise."""
    try:
        parsed = httpx2.URL(url)
        host = parsed.raw_host.decode("ascii").lower()
    except (httpx2.InvalidURL, UnicodeError, TypeError) as exc:
        raise ToolError(f"invalid URL {url!r}: {exc}", retryable=False) from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise ToolError(f"refused {url!r}: only http and https are allowed", retryable=False)
    if parsed.userinfo:
        raise ToolError(f"refused {url!r}: credentials in a URL are not allowed", retryable=False)
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    entries = _allowed_entries()
    if not host or ((host, None) not in entries and (host, port) not in entries):
        raise ToolError(
            f"refused {url!r}: host {host or '(none)'!r} is not in BOSUN_HTTP_ALLOWED_HOSTS",
            retryable=False,
        )
    return parsed


def send(
    method: str,
    url: str,
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float,
) -> HttpResponse:
    """Sends one request to an allowlisted URL; returns a 2xx answer or raises ToolError."""
    method = method.upper()
    write = method not in SAFE_METHODS
    parsed = check_url(url)
    headers = {"user-agent": USER_AGENT, **(headers or {})}
    if json is not None:
        content = json_bytes(json)
        headers.setdefault("content-type", "application/json")
    deadline = time.monotonic() + timeout_s
    try:
        with (
            httpx2.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client,
            client.stream(method, parsed, content=content, headers=headers) as response,
        ):
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > settings.BOSUN_HTTP_MAX_RESPONSE_BYTES:
                    raise ToolError(
                        f"{method} {url}: the answer exceeds "
                        f"{settings.BOSUN_HTTP_MAX_RESPONSE_BYTES} bytes",
                        retryable=False,
                        outcome_unknown=write,
                    )
                if time.monotonic() > deadline:
                    raise httpx2.ReadTimeout("the answer took longer than the time limit")
    except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
        # Nothing reached the server: safe to try again.
        raise ToolError(f"{method} {url}: could not connect: {exc}", retryable=True) from None
    except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
        raise ToolError(
            f"{method} {url}: sent, but no answer came ({type(exc).__name__}: {exc})",
            retryable=True,
            outcome_unknown=write,
        ) from None
    except httpx2.HTTPError as exc:  # rare (an undecodable body…): assume the worst
        raise ToolError(
            f"{method} {url}: {type(exc).__name__}: {exc}",
            retryable=False,
            outcome_unknown=write,
        ) from None
    result = HttpResponse(response.status_code, dict(response.headers), bytes(body))
    _raise_for_status(method, url, result, write=write)
    return result


def _raise_for_status(method: str, url: str, response: HttpResponse, *, write: bool) -> None:
    status = response.status
    if status < 300:
        return
    what = f"{method} {url} answered {status}"
    if status < 400:
        # A 307/308 did not act; any other redirect after a write may have.
        raise ToolError(
            f"{what}: redirect to {response.headers.get('location', '?')!r} not followed",
            retryable=False,
            outcome_unknown=write and status not in (307, 308),
        )
    if status in (429, 503):
        raise ToolError(
            what,
            retryable=True,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            outage=status == 503,  # a 429 is the host answering: slow down
        )
    if status >= 500:
        # A gateway timeout says nothing about whether the origin acted.
        raise ToolError(what, retryable=True, outcome_unknown=write and status == 504)
    detail = response.body[:300].decode("utf-8", errors="replace")
    raise ToolError(f"{what}: {detail}", retryable=False, outage=False)


def host_key(url: str) -> tuple[str, ...]:
    try:
        host = httpx2.URL(url).raw_host.decode("ascii").lower()
    except (httpx2.InvalidURL, UnicodeError):
        host = "invalid"
    return (f"host:{host}",)


class _UrlArgs(BaseModel):
    url: str = Field(min_length=1, max_length=2000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value, re.IGNORECASE):
            raise ValueError("must be an http:// or https:// URL")
        return value


class _JsonArgs(_UrlArgs):
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
        lowered = {name.lower(): text for name, text in value.items()}
        refused = sorted(set(lowered) - ALLOWED_ARG_HEADERS)
        if refused:
            raise ValueError(f"headers not allowed: {', '.join(refused)}")
        if any("\r" in text or "\n" in text for text in lowered.values()):
            raise ValueError("header values may not contain line breaks")
        return lowered


class JsonResult(BaseModel):
    status: int
    data: Any = None
    text: str = ""  # the body when it is not JSON


class GetJson(Tool):
    """GETs a URL on an allowlisted host and returns its JSON (or text)."""

    name = "http.get_json"
    description = "GET a JSON document from an allowlisted host."
    side_effect = "read"
    egress = True  # the URL itself carries data out
    untrusted_output = True
    Args = _JsonArgs
    Result = JsonResult

    def keys_for(self, args: _JsonArgs) -> tuple[str, ...]:
        return host_key(args.url)

    def destinations(self, args: _JsonArgs) -> tuple[str, ...]:
        return host_key(args.url)

    def stub(self, args: _JsonArgs) -> JsonResult:
        return JsonResult(status=200, data=None, text="")

    def run(self, args: _JsonArgs, call: ToolCall) -> JsonResult:
        response = send("GET", args.url, headers=args.headers, timeout_s=call.timeout_s)
        data, text = response.json_or_text()
        return JsonResult(status=response.status, data=data, text=text)


class PostJson(Tool):
    """POSTs JSON to an allowlisted host with `Idempotency-Key: <call key>`;
    the receiver must honour the key for a retry to be safe."""

    name = "http.post_json"
    description = "POST a JSON body to an allowlisted host (sends an Idempotency-Key)."
    side_effect = "write_idempotent"
    risk = "medium"
    egress = True
    untrusted_output = True

    class Args(_JsonArgs):
        body: Any = None  # sent as JSON; nothing is sent when it is None

    Result = JsonResult

    def keys_for(self, args: Args) -> tuple[str, ...]:
        return host_key(args.url)

    def destinations(self, args: Args) -> tuple[str, ...]:
        return host_key(args.url)

    def stub(self, args: Args) -> JsonResult:
        return JsonResult(status=200, data=None, text="")

    def run(self, args: Args, call: ToolCall) -> JsonResult:
        headers = {**args.headers, "idempotency-key": call.idempotency_key}
        response = send(
            "POST",
            args.url,
            json=args.body,
            headers=headers,
            timeout_s=call.timeout_s,
        )
        data, text = response.json_or_text()
        return JsonResult(status=response.status, data=data, text=text)


class WebhookPost(Tool):
    """Posts an event with Standard Webhooks headers; `webhook-id` is the
    call's idempotency key, so a receiver that dedups on it applies a
    retried delivery once. Signed when BOSUN_WEBHOOK_SIGNING_SECRET is set."""

    name = "webhook.post"
    description = "Deliver a signed JSON event to an allowlisted webhook URL."
    side_effect = "write_idempotent"
    risk = "medium"
    egress = True

    class Args(_UrlArgs):
        type: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
        data: dict[str, Any] = Field(default_factory=dict)

    class Result(BaseModel):
        status: int
        webhook_id: str
        signed: bool

    def keys_for(self, args: Args) -> tuple[str, ...]:
        return host_key(args.url)

    def destinations(self, args: Args) -> tuple[str, ...]:
        return host_key(args.url)

    def stub(self, args: Args) -> Result:
        return self.Result(status=200, webhook_id="not-sent", signed=False)

    def run(self, args: Args, call: ToolCall) -> Result:
        timestamp = int(time.time())
        body = json_bytes({"type": args.type, "timestamp": timestamp, "data": args.data})
        headers = {
            "content-type": "application/json",
            "webhook-id": call.idempotency_key,
            "webhook-timestamp": str(timestamp),
        }
        secret = settings.BOSUN_WEBHOOK_SIGNING_SECRET
        if secret:
            headers["webhook-signature"] = webhooks.sign(
                secret=secret, webhook_id=call.idempotency_key, timestamp=timestamp, body=body
            )
        response = send("POST", args.url, content=body, headers=headers, timeout_s=call.timeout_s)
        return self.Result(
            status=response.status, webhook_id=call.idempotency_key, signed=bool(secret)
        )
