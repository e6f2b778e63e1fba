"""An OTLP/gRPC trace collector in this process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OtlpCollector:
    """An OTLP/gRPC trace collector in this process: it keeps every span it is sent."""

    spans: list = field(default_factory=list)
    port: int = 0
    _server: object = None

    def start(self) -> OtlpCollector:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        collector = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend(scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 30) -> list:
        """The spans, once ``predicate(spans)`` holds; raises after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(list(self.spans)):
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.spans})
                raise AssertionError(f"the spans did not arrive; {len(self.spans)} did: {names}")
            time.sleep(0.05)
        return list(self.spans)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0)
