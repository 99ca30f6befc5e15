"""A test OTLP/HTTP trace receiver on a real socket: it decodes each export (protobuf, as the
OpenTelemetry collector does) into plain span records; it can be told to refuse or to hang."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.audit import AUDIT


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    status: int
    service: str = ""
    events: list[str] = field(default_factory=list)


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


class OTLPReceiver:
    """``POST /v1/traces``; ``mode`` is ``ok``, ``refuse`` (503) or ``hang`` (never answers)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.mode = "ok"
        self.exports = 0
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self.traces, methods=["POST"])])

    async def traces(self, request: Request) -> Response:
        body = await request.body()
        self.exports += 1
        if self.mode == "refuse":
            return Response(status_code=503)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        export = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    record = Span(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status=span.status.code,
                        service=str(resource.get("service.name", "")),
                    )
                    found.append(record)
                    AUDIT.add(f"span {record.name} {record.attributes}")  # the secret audit
        with self._lock:
            self.spans.extend(found)
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    def named(self, name: str) -> list[Span]:
        with self._lock:
            return [span for span in self.spans if span.name == name]

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]
