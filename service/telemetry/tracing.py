"""OpenTelemetry traces, when ``RERANK_OTLP_ENDPOINT`` is set (the ``tracing`` extra).

Until :func:`configure` runs, every function here is a no-op and OpenTelemetry is not even
imported, so the serving path pays nothing for tracing it does not do.

Each call gets a server span, the child of the client's W3C ``traceparent`` (Envoy passes the
header through as gRPC metadata), and under it the spans of its work:

* ``rerank.validate``: the request's checks, before anything is queued;
* ``rerank.tokenize``: its tokenization (waiting for a tokenizer thread included);
* ``rerank.queue``: from queued to its first pair on the model;
* ``rerank.inference``: one per micro-batch that ran pairs of this request. A micro-batch serves
  several requests: each gets its own span with the batch's times, its share of the batch
  (``rerank.request_pairs``) and the whole batch's size, so each trace tells its own story.

Spans carry the request id, the model and the API key's name; never a key or a document.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from rerank.service.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

SERVICE_NAME = "rerank"
Attributes = dict[str, str | int | float | bool]
Parent = Any
"""Where a span recorded later hangs: an OpenTelemetry context captured by :func:`capture`."""

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(endpoint: str, *, exporter: SpanExporter | None = None) -> None:
    """Starts exporting spans to the OTLP/gRPC collector at ``endpoint`` (``http://`` means
    plaintext), or to ``exporter``. Raises :class:`ConfigurationError` without the extra."""
    global _tracer, _provider
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigurationError(
            "RERANK_OTLP_ENDPOINT is set, but OpenTelemetry is not installed: pip install 'rerank[tracing]'"
        ) from None
    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigurationError(
                "RERANK_OTLP_ENDPOINT is set, but the OTLP exporter is not installed: pip install 'rerank[tracing]'"
            ) from None
        exporter = OTLPSpanExporter(endpoint=endpoint)
    from rerank.service import __version__

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME, "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Our own provider, not OpenTelemetry's global one: nothing else in the process changes.
    _provider, _tracer = provider, provider.get_tracer("rerank")
    log.info("tracing: exporting spans to %s", endpoint)


def shutdown() -> None:
    """Exports what is still buffered and stops tracing."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


class ServerSpan:
    """The span of one call, for attributes known only as it ends (model, status code)."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def finish(self, attributes: Attributes, *, error: bool) -> None:
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attributes(attributes)
        if error:
            # The code only: an exception's message may quote the request.
            self._span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def server_span(method: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Iterator[ServerSpan]:
    """The call's span, the child of the ``traceparent`` in its metadata (a new trace without
    one), current while the handler runs."""
    if _tracer is None:
        yield ServerSpan(None)
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k.lower(): v for k, v in metadata or () if isinstance(v, str)}
    parent = TraceContextTextMapPropagator().extract(carrier)
    service, _, name = method.lstrip("/").partition("/")
    attributes: Attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    with _tracer.start_as_current_span(
        method.lstrip("/"),
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield ServerSpan(span)


@contextlib.contextmanager
def span(name: str, attributes: Attributes | None = None) -> Iterator[None]:
    """A child of the current span around a block (a no-op without tracing). An exception
    marks it as an error, without its message."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import Status, StatusCode

    with _tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield
        except BaseException:
            current.set_status(Status(StatusCode.ERROR))
            raise


def capture() -> Parent:
    """The current context, for :func:`record` to hang a span on later (None without tracing,
    or outside any span: work that no traced call asked for makes no spans)."""
    if _tracer is None:
        return None
    from opentelemetry import context, trace

    current = context.get_current()
    return current if trace.get_current_span(current).get_span_context().is_valid else None


def record(name: str, parent: Parent, start_ns: int, end_ns: int, attributes: Attributes | None = None) -> None:
    """A finished span of ``start_ns``..``end_ns`` (``time.time_ns()``) under ``parent``."""
    if _tracer is None or parent is None:
        return
    done = _tracer.start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    done.end(end_time=end_ns)
