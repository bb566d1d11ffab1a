"""The HTTP tools against a loopback server: allowlist, errors, idempotency, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from lib.retry_after import parse_retry_after
from runs.tools import http
from runs.tools.base import ToolError
from tests.tools import tool_call


class Loopback(ThreadingHTTPServer):
    """Answers each path from `routes`; records every request it reads."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up early (timeouts, size cap) is expected here

    def route(self, path: str, *, status: int = 200, body: Any = None, **options: Any) -> str:
        self.routes[path] = {"status": status, "body": body, **options}
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    server: Loopback

    def do_GET(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body": body,
            }
        )
        route = self.server.routes.get(self.path, {"status": 200, "body": {"ok": True}})
        if route.get("drop"):
            self.close_connection = True
            return  # read the request, answer nothing
        time.sleep(route.get("sleep_s", 0))
        payload = route["body"]
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(route["status"])
        for name, value in route.get("headers", {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(settings):
    settings.BOSUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    loopback = Loopback()
    thread = threading.Thread(target=loopback.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield loopback
    loopback.shutdown()
    loopback.server_close()


def get(url: str, *, timeout_s: float = 5, **kwargs: Any) -> Any:
    tool = http.GetJson()
    return tool.run(tool.Args(url=url, **kwargs), tool_call(timeout_s=timeout_s))


def post(url: str, *, key: str = "bosun-run-7-seq-3", timeout_s: float = 5, **kwargs: Any) -> Any:
    tool = http.PostJson()
    return tool.run(tool.Args(url=url, **kwargs), tool_call(key, timeout_s=timeout_s))


def test_get_json_returns_the_status_and_the_parsed_answer(server):
    url = server.route("/lead", body={"name": "Acme", "score": 7})
    result = get(url, headers={"Accept": "application/json"})
    assert result.status == 200 and result.data == {"name": "Acme", "score": 7}
    (request,) = server.requests
    assert request["method"] == "GET" and request["headers"]["accept"] == "application/json"
    assert request["headers"]["user-agent"].startswith("Bosun/")


def test_a_body_that_is_not_json_comes_back_as_text(server):
    url = server.route("/plain", body=b"hello there")
    result = get(url)
    assert result.data is None and result.text == "hello there"


@pytest.mark.parametrize(
    "template",
    [
        "http://localhost:{port}/x",
        "http://127.0.0.1.evil.example:{port}/x",
        "http://127.0.0.1@evil.example:{port}/x",
        "http://user:secret@127.0.0.1:{port}/x",
        "http://0x7f.0.0.1:{port}/x",
        "http://2130706433:{port}/x",
        "http://[::1]:{port}/x",
        "ftp://127.0.0.1:{port}/x",
    ],
)
def test_a_url_outside_the_allowlist_is_refused_before_any_request(server, template):
    url = template.format(port=server.server_address[1])
    with pytest.raises(ToolError) as refused:
        http.send("GET", url, timeout_s=2)
    assert refused.value.retryable is False and "refused" in str(refused.value)
    assert server.requests == []


def test_nothing_is_reachable_when_the_allowlist_is_empty(server, settings):
    settings.BOSUN_HTTP_ALLOWED_HOSTS = []
    with pytest.raises(ToolError, match="not in BOSUN_HTTP_ALLOWED_HOSTS"):
        get(server.route("/x"))
    assert server.requests == []


def test_a_host_with_a_port_allows_only_that_port(server, settings):
    port = server.server_address[1]
    settings.BOSUN_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{port + 1}"]
    with pytest.raises(ToolError, match="not in BOSUN_HTTP_ALLOWED_HOSTS"):
        get(server.route("/x"))
    settings.BOSUN_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{port}"]
    assert get(server.route("/x")).status == 200


def test_args_refuse_credential_headers_and_other_schemes():
    with pytest.raises(ValidationError, match="headers not allowed: authorization"):
        http.GetJson.Args(url="https://api.example.com/", headers={"Authorization": "Bearer x"})
    with pytest.raises(ValidationError, match="http"):
        http.GetJson.Args(url="file:///etc/passwd")


def test_429_is_retryable_after_the_seconds_the_server_asks_for(server):
    url = server.route("/busy", status=429, headers={"Retry-After": "7"})
    with pytest.raises(ToolError) as busy:
        get(url)
    assert busy.value.retryable is True and busy.value.retry_after == 7.0


def test_503_with_an_http_date_retry_after_is_retryable_after_that_date(server):
    when = formatdate(time.time() + 120, usegmt=True)
    url = server.route("/down", status=503, headers={"Retry-After": when})
    with pytest.raises(ToolError) as down:
        get(url)
    assert down.value.retryable is True and 100 < down.value.retry_after <= 120


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (502, True), (400, False), (404, False)]
)
def test_5xx_is_retryable_and_4xx_is_not(server, status, retryable):
    url = server.route("/x", status=status, body={"error": "nope"})
    with pytest.raises(ToolError) as failed:
        get(url)
    assert failed.value.retryable is retryable and failed.value.outcome_unknown is False


def test_post_sends_the_calls_idempotency_key_and_the_json_body(server):
    url = server.route("/orders", status=201, body={"id": "ord_1"})
    result = post(url, body={"sku": "A-1", "qty": 2}, key="bosun-run-7-seq-3")
    assert result.status == 201 and result.data == {"id": "ord_1"}
    (request,) = server.requests
    assert request["method"] == "POST"
    assert request["headers"]["idempotency-key"] == "bosun-run-7-seq-3"
    assert request["headers"]["content-type"] == "application/json"
    assert json.loads(request["body"]) == {"sku": "A-1", "qty": 2}


def test_a_timeout_after_a_write_was_sent_is_an_unknown_outcome(server):
    url = server.route("/slow", sleep_s=1.0)
    with pytest.raises(ToolError) as lost:
        post(url, body={}, timeout_s=0.2)
    assert lost.value.outcome_unknown is True and lost.value.retryable is True
    assert len(server.requests) == 1  # it did reach the server


def test_a_timeout_on_a_read_is_simply_retryable(server):
    url = server.route("/slow", sleep_s=1.0)
    with pytest.raises(ToolError) as lost:
        get(url, timeout_s=0.2)
    assert lost.value.retryable is True and lost.value.outcome_unknown is False


def test_a_connection_dropped_after_a_write_was_sent_is_an_unknown_outcome(server):
    url = server.route("/drop", drop=True)
    with pytest.raises(ToolError) as lost:
        post(url, body={"x": 1})
    assert lost.value.outcome_unknown is True


def test_a_refused_connection_is_retryable_and_known_not_to_have_happened(settings):
    settings.BOSUN_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ToolError) as refused:
        post(f"http://127.0.0.1:{port}/x", body={})
    assert refused.value.retryable is True and refused.value.outcome_unknown is False


def test_redirects_are_not_followed(server):
    server.route("/target", body={"secret": True})
    url = server.route("/moved", status=302, headers={"Location": server.base + "/target"})
    with pytest.raises(ToolError, match="not followed") as moved:
        get(url)
    assert moved.value.retryable is False
    assert [r["path"] for r in server.requests] == ["/moved"]


def test_an_answer_over_the_size_cap_is_refused(server, settings):
    settings.BOSUN_HTTP_MAX_RESPONSE_BYTES = 1000
    url = server.route("/big", body=b"x" * 5000)
    with pytest.raises(ToolError, match="exceeds 1000 bytes") as big:
        get(url)
    assert big.value.retryable is False


def test_limit_keys_name_the_host():
    tool = http.PostJson()
    args = tool.Args(url="https://API.example.com:8443/v1/x")
    assert tool.keys_for(args) == ("host:api.example.com",)


def _verify(secret_key: bytes, headers: dict[str, str], body: bytes) -> bool:
    """What a Standard Webhooks receiver does."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret_key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig.partition(",")[2], expected)
        for sig in headers["webhook-signature"].split()
    )


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("plain-shared-secret", b"plain-shared-secret"),
        ("whsec_" + base64.b64encode(b"raw key bytes").decode(), b"raw key bytes"),
    ],
)
def test_a_webhook_is_signed_so_the_receiver_can_verify_it(server, settings, secret, key):
    settings.BOSUN_WEBHOOK_SIGNING_SECRET = secret
    url = server.route("/hook", status=204)
    tool = http.WebhookPost()
    args = tool.Args(url=url, type="lead.qualified", data={"lead": 42})
    result = tool.run(args, tool_call("bosun-run-9-seq-2"))
    assert result.status == 204 and result.signed and result.webhook_id == "bosun-run-9-seq-2"
    (request,) = server.requests
    headers = request["headers"]
    assert headers["webhook-id"] == "bosun-run-9-seq-2"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert _verify(key, headers, request["body"])
    assert not _verify(b"another secret", headers, request["body"])
    event = json.loads(request["body"])
    assert event["type"] == "lead.qualified" and event["data"] == {"lead": 42}


def test_a_webhook_without_a_secret_goes_out_unsigned(server, settings):
    settings.BOSUN_WEBHOOK_SIGNING_SECRET = ""
    tool = http.WebhookPost()
    result = tool.run(tool.Args(url=server.route("/hook"), type="ping"), tool_call())
    assert result.signed is False
    assert "webhook-signature" not in server.requests[0]["headers"]


def test_a_webhook_to_a_host_outside_the_allowlist_is_refused(server):
    tool = http.WebhookPost()
    with pytest.raises(ToolError, match="refused"):
        tool.run(tool.Args(url="https://hooks.example.com/x", type="ping"), tool_call())


def test_retry_after_reads_seconds_and_dates_and_ignores_nonsense():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
