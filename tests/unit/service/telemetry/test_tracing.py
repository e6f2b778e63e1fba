"""Spans, with the SDK's in-memory exporter: a call's server span is the child of the client's
``traceparent``, its work (validate, tokenize, queue, inference) hangs under it, and a
micro-batch shared by two calls gives each call its own inference span with its share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the [tracing] extra")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.tokenization import Pair
from rerank.service.telemetry import tracing
from tests.support.stand_in import GatedModel
from tests.support.waiting import until

METHOD = "/rerank.v1.RerankService/Rerank"


def traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracing.configure("in-memory", exporter=spans)
    try:
        yield spans
    finally:
        tracing.shutdown()  # exports what is buffered
    assert not tracing.enabled()


def pairs(n: int) -> list[Pair]:
    return [Pair(i, np.full(4, 5, dtype=np.int64), np.zeros(4, dtype=np.int64)) for i in range(n)]


async def call(batcher: DynamicBatcher, parent: str, n: int) -> None:
    with tracing.server_span(METHOD, [("traceparent", parent), ("authorization", "Bearer k")]) as span:
        with tracing.span("rerank.validate"):
            pass
        with tracing.span("rerank.tokenize"):
            work = pairs(n)
        await batcher.score(work)
        span.finish({"rerank.model": "m"}, error=False)


async def test_each_call_gets_its_spans_under_the_clients_parent(exporter: InMemorySpanExporter) -> None:
    model = GatedModel(held=True)
    batcher = DynamicBatcher(
        model,
        pad_id=0,
        with_types=False,
        config=BatchingConfig(batch_seconds=1e9, max_queue_seconds=1e9),
        metrics=ModelMetrics(),
    )
    blocker = asyncio.create_task(batcher.score(pairs(1)))  # holds the model: both calls queue
    await until(lambda: model.entered == 1, "the model busy")
    one = asyncio.create_task(call(batcher, traceparent(0xA1, 0xB1), 2))
    two = asyncio.create_task(call(batcher, traceparent(0xA2, 0xB2), 3))
    await until(lambda: batcher.queued_pairs == 5, "both calls queued")
    model.gate.set()
    await asyncio.gather(blocker, one, two)
    await batcher.close()
    tracing.shutdown()

    spans = exporter.get_finished_spans()
    for trace_id, client_span, share in ((0xA1, 0xB1, 2), (0xA2, 0xB2, 3)):
        mine = [s for s in spans if s.context.trace_id == trace_id]
        (server,) = [s for s in mine if s.name == METHOD.lstrip("/")]
        assert server.parent is not None and server.parent.span_id == client_span and server.parent.is_remote
        assert server.attributes is not None and server.attributes["rerank.model"] == "m"
        assert "authorization" not in str(server.attributes)
        children = {s.name: s for s in mine if s.parent is not None and s.parent.span_id == server.context.span_id}
        assert set(children) == {"rerank.validate", "rerank.tokenize", "rerank.queue", "rerank.inference"}
        inference = children["rerank.inference"]
        assert inference.attributes is not None
        assert inference.attributes["rerank.request_pairs"] == share  # its own share of the batch
        assert inference.attributes["rerank.batch_pairs"] == 5  # both calls ran in one micro-batch
        queue = children["rerank.queue"]
        assert queue.end_time is not None and inference.start_time is not None
        assert queue.end_time == inference.start_time  # waited until its first pair went to the model
    # The request that queued outside any call made no spans.
    assert len(spans) == 2 * 5


def test_without_configure_nothing_is_traced() -> None:
    assert not tracing.enabled() and tracing.capture() is None
    with tracing.server_span(METHOD, [("traceparent", traceparent(1, 2))]) as span, tracing.span("rerank.validate"):
        span.finish({"rerank.model": "m"}, error=True)
