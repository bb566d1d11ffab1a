"""Spans collected in memory, and helpers to read a run's trace."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runs.engine import tracing as telemetry


@pytest.fixture
def exporter():
    """Tracing on, into memory, for one test; off again after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bosun"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(provider=provider)
    yield exporter
    telemetry.reset()
    provider.shutdown()


class Trace:
    """The finished spans, by name and kind, with their parents."""

    def __init__(self, spans: tuple[ReadableSpan, ...]) -> None:
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans]
        return found[0]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        return self.by_id.get(span.parent.span_id) if span.parent else None

    def attribute_texts(self) -> list[str]:
        """Every text that leaves in a span: names, attributes, statuses, events."""
        texts = []
        for span in self.spans:
            texts.append(span.name)
            texts += [str(v) for v in span.attributes.values()]
            texts.append(span.status.description or "")
            for event in span.events:
                texts += [event.name, *(str(v) for v in event.attributes.values())]
        return texts


@pytest.fixture
def spans(exporter):
    return lambda: Trace(exporter.get_finished_spans())
