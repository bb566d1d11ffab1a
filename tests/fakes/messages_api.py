"""A local fake of the Anthropic Messages API, for driving the real SDK.

Script the answers, point the SDK at the fake, then assert on what it
received:

    api = MessagesAPI()
    api.reply(message(text_block("Hello")))
    api.reply(error_body("overloaded_error", "Overloaded"), status=529)
    client = anthropic.Anthropic(api_key="k", http_client=api.http_client())
    ...
    assert api.received[0].body["model"] == "claude-haiku-4-5"

Two ways in: an `httpx2.MockTransport` (`api.http_client()`), or a real
loopback server (`with api.serve() as base_url:`) for timeouts and for code
that builds its own client from a base URL. Both answer from the same queue
(or, once it is empty, from `api.respond`); `api.outage(529)` answers every
request with an error until `api.recover()`.
Like the real API it checks the credentials and the basic shape of the
body, and answers 400 when they are wrong, so a malformed request fails the
test instead of passing silently.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2

MODEL = "claude-haiku-4-5"
_ids = itertools.count(1)


@dataclass
class Scripted:
    """One answer: HTTP status, extra headers, JSON body, and a delay before it.

    Over the transport the delay is not slept: an answer later than the
    request's read timeout raises `httpx2.ReadTimeout` at once.
    """

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    """One request as the fake saw it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(tool_input: Any, *, name: str = "record_output") -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):06d}", "name": name, "input": tool_input}


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    *,
    cache_read: int | None = None,
    cache_write: int | None = None,
) -> dict[str, Any]:
    """A `usage` object; the cache fields are null unless given, as the API may send."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def message(
    *content: dict[str, Any],
    model: str = MODEL,
    stop_reason: str | None = None,
    usage_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Messages API response body. The stop reason follows the content by default."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {
        "id": f"msg_{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_ or usage(),
    }


def error_body(error_type: str, text: str, *, error_code: str | None = None) -> dict[str, Any]:
    """An API error body, e.g. `error_body("rate_limit_error", "Slow down")`."""
    error: dict[str, Any] = {"type": error_type, "message": text}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": f"req_{next(_ids):06d}"}


class MessagesAPI:
    """Answers `POST /v1/messages` from a queue of scripted answers, in order."""

    def __init__(self) -> None:
        self.queue: deque[Scripted] = deque()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        # While set, every request gets this answer (an outage), queue or not.
        self.down: Scripted | None = None
        # Answers a request when the queue is empty (None: a 500 says so).
        self.respond: Callable[[Received], Scripted] | None = None

    def outage(self, status: int = 529) -> None:
        """From now on every request is answered `status` (529: overloaded)."""
        self.down = Scripted(error_body("overloaded_error", "Overloaded"), status)

    def recover(self) -> None:
        self.down = None

    def reply(
        self,
        body: dict[str, Any],
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> MessagesAPI:
        self.queue.append(Scripted(body, status, headers or {}, delay_s))
        return self

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.received]

    def answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[Scripted, float]:
        """Record the request and pick its answer (and how long to wait first)."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.received.append(Received(method, path, headers, body))
            problem = _problem(method, path, headers, body)
            if problem is not None:
                return problem, 0.0
            if self.down is not None:
                return self.down, 0.0
            if not self.queue and self.respond is not None:
                return self.respond(self.received[-1]), 0.0
            if not self.queue:
                return Scripted(error_body("api_error", "the fake has no answer left"), 500), 0.0
            scripted = self.queue.popleft()
        return scripted, scripted.delay_s

    def pause(self, seconds: float) -> bool:
        """Wait before answering; True if the server closed meanwhile."""
        return self._closing.wait(seconds)

    # --- as an httpx2 transport ---------------------------------------------

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        scripted, delay = self.answer(request.method, request.url.path, headers, request.read())
        read_timeout = (request.extensions.get("timeout") or {}).get("read")
        if delay and read_timeout is not None and delay > read_timeout:
            # What a real socket would do, without spending the time.
            raise httpx2.ReadTimeout("timed out", request=request)
        return httpx2.Response(scripted.status, headers=scripted.headers, json=scripted.body)

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handle))

    # --- as a loopback HTTP server ------------------------------------------

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 for the duration; yields the base URL."""
        self._closing.clear()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        # A short poll interval keeps shutdown, and so each test, quick.
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            self._closing.set()  # wakes handlers still delaying their answer
            server.shutdown()
            server.server_close()
            thread.join()


def _handler_for(api: MessagesAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's naming)
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            scripted, delay = api.answer("POST", self.path, headers, raw)
            if delay and api.pause(delay):
                return  # the server is shutting down
            payload = json.dumps(scripted.body).encode()
            try:
                self.send_response(scripted.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in scripted.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

    return Handler


def _problem(method: str, path: str, headers: dict[str, str], body: Any) -> Scripted | None:
    """The API's own answer to a request it would refuse, else None."""
    if method != "POST" or path != "/v1/messages":
        return Scripted(error_body("not_found_error", f"{method} {path} not found"), 404)
    if not headers.get("authorization", "").startswith("Bearer ") and not headers.get("x-api-key"):
        return Scripted(error_body("authentication_error", "missing credentials"), 401)
    if not isinstance(body, dict):
        return _invalid("the body is not a JSON object")
    missing = [name for name in ("model", "max_tokens", "messages") if name not in body]
    if missing:
        return _invalid(f"missing {', '.join(missing)}")
    roles = [m.get("role") for m in body["messages"]]
    if not roles or roles[0] != "user" or any(a == b for a, b in itertools.pairwise(roles)):
        return _invalid(f"messages must alternate user/assistant from a user turn: {roles}")
    if _has_empty_text(body):
        return _invalid("text content blocks must be non-empty")
    choice = body.get("tool_choice") or {}
    names = {tool.get("name") for tool in body.get("tools", [])}
    if choice.get("type") == "tool" and choice.get("name") not in names:
        return _invalid(f"tool_choice names an unknown tool {choice.get('name')!r}")
    return None


def _has_empty_text(body: dict[str, Any]) -> bool:
    system = body.get("system")
    blocks = system if isinstance(system, list) else []
    for m in body["messages"]:
        content = m.get("content")
        blocks = [*blocks, *(content if isinstance(content, list) else [text_block(content)])]
    return any(b.get("type") == "text" and not b.get("text") for b in blocks)


def _invalid(text: str) -> Scripted:
    return Scripted(error_body("invalid_request_error", text), 400)
