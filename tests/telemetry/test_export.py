"""Export: OTLP over HTTP when an endpoint is configured, nothing otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from runs import engine
from runs.engine import tracing as telemetry
from runs.models import Run
from tests.conftest import chain, drive

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A local OTLP/HTTP collector: records (path, body) of each POST."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's naming)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_global_provider(monkeypatch):
    """Set-up installs its provider globally (once per process, for good):
    record the call instead, so later tests keep a clean process."""
    installed = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    yield installed
    telemetry.reset()


@pytest.mark.django_db
def test_with_an_endpoint_runs_are_exported_over_otlp_http(
    make_workflow, settings, monkeypatch, no_global_provider
):
    with collector() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        settings.BOSUN_TRACING = True
        tracer = telemetry.configure()
        assert tracer is not None and len(no_global_provider) == 1
        step = {"key": "echo", "kind": "tool", "config": {"tool": "echo", "args": {"value": 1}}}
        version = make_workflow(chain(step, {"key": "done", "kind": "end"}))
        run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
        assert telemetry.flush()
    assert {path for path, _ in received} == {"/v1/traces"}
    names, trace_ids, services = [], set(), set()
    for _, body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            }
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    names.append(span.name)
                    trace_ids.add(span.trace_id.hex())
    assert services == {"bosun"}
    assert sorted(names) == sorted(
        [f"run {version.workflow.slug}", "step echo", "step done", "tool echo"]
    )
    assert trace_ids == {Run.objects.get(pk=run.pk).trace_id}


def test_without_an_endpoint_tracing_stays_off(settings, no_global_provider):
    settings.BOSUN_TRACING = False
    assert telemetry.configure() is None
    assert no_global_provider == []
    assert telemetry.tool_call("echo", None) is telemetry.OFF
    assert telemetry.flush() is True


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"},
            False,
        ),
    ],
    ids=["none", "endpoint", "traces-endpoint", "sdk-disabled"],
)
def test_the_settings_turn_tracing_on_only_with_an_endpoint(env, on):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.BOSUN_TRACING)"],
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(on)
