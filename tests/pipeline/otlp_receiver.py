"""An OTLP/HTTP trace receiver for the tests: the services' (and a submitter's) span exporters
send to it as they would to a collector, and tests wait on the spans with deadlines."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from cfstream.dev.procs import HOST


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    links: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def start_ms(self) -> float:
        return self.start_ns / 1e6

    @property
    def end_ms(self) -> float:
        return self.end_ns / 1e6


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def _attributes(items: list[KeyValue]) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class Receiver:
    """Listens on ``endpoint`` (give it as OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.endpoint = f"http://{HOST}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = _attributes(list(resource_spans.resource.attributes)).get("service.name")
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    spans.append(Span(
                        service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                        s.kind, s.start_time_unix_nano, s.end_time_unix_nano,
                        _attributes(list(s.attributes)), s.status.code,
                        [(e.name, e.time_unix_nano, _attributes(list(e.attributes)))
                         for e in s.events],
                        [(link.trace_id.hex(), link.span_id.hex(),
                          _attributes(list(link.attributes))) for link in s.links]))
        with self._cond:
            self.spans.extend(spans)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Span], bool], count: int = 1,
                 timeout: float = 30) -> list[Span]:
        """The spans matching ``predicate`` once there are ``count``; AssertionError at the
        deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self.spans if predicate(s)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(found)} of {count} spans within {timeout}s")
                self._cond.wait(left)

    def of(self, execution_id: str, name: str) -> Span:
        """The one span named ``name`` about ``execution_id`` (waiting for it)."""
        (span,) = self.wait_for(lambda s: s.name.startswith(name)
                                and s.attributes.get("cfstream.execution.id") == execution_id)
        return span

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
