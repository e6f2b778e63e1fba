"""What the service tells its operators: metrics, logs and traces.

* ``context.py``: the call being answered (request id, API key name, model), for log lines,
  metric labels and spans;
* ``logs.py``: log lines as text or JSON, each with the request id of its call;
* ``tracing.py``: OpenTelemetry spans, only when an OTLP endpoint is set.

Below the core and the router: it imports neither. The metric families themselves are in
:mod:`rerank.service.core.metrics`, recorded where the work happens; the metrics port that serves
them is :mod:`rerank.service.router.metrics_endpoint`. Never a key or a document's text goes into any of these.
"""
