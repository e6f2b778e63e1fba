"""What the service tells its operators: metrics, logs and traces.

* ``context.py``: the call being answered (request id, API key name, model), for log lines,
  metric labels and spans;
* ``logs.py``: log lines as text or JSON, each with the request id of its call;
* ``metrics_endpoint.py``: ``GET /metrics`` over HTTP (Prometheus text), one process's or, in
  multiprocess mode, every replica's;
* ``tracing.py``: OpenTelemetry spans, only when an OTLP endpoint is set.

The metric families themselves are in :mod:`rerank.service.core.metrics`, recorded where the work
happens. Never a key or a document's text goes into any of these.
"""
