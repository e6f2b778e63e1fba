"""Prometheus metrics, recorded where the work happens: the scheduler (batches, queue waits, the
queue's gauges), the tokenizer pool (tokenization times) and admission (rejections by reason).
Every figure moves by exactly what the test sends, read back through the real text format."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import Metrics
from rerank.service.core.throughput import Throughput
from rerank.service.core.tokenization import Pair, TokenizerPool
from rerank.service.errors import QueueFull, TooManyDocuments, Unavailable
from tests.support.prometheus import Samples
from tests.support.stand_in import GatedModel
from tests.support.waiting import until

MODEL = "m"


def pair(length: int, token: int = 7) -> Pair:
    return Pair(0, np.full(length, token, dtype=np.int64), np.zeros(length, dtype=np.int64))


class FixedThroughput(Throughput):
    def record(self, tokens: int, seconds: float, full: int) -> None:
        pass


def batcher(metrics: Metrics, model: GatedModel, **config: float) -> DynamicBatcher:
    settings = {"batch_seconds": 1e9, "max_queue_seconds": 1e9, "max_batch_tokens": 10_000, **config}
    return DynamicBatcher(
        model,
        pad_id=0,
        with_types=False,
        config=BatchingConfig(**settings),  # type: ignore[arg-type]
        metrics=metrics.model(MODEL),
        throughput=FixedThroughput(1000.0),
    )


def scrape(metrics: Metrics) -> Samples:
    assert metrics.registry is not None
    return Samples.parse(generate_latest(metrics.registry).decode())


async def test_batches_are_recorded_exactly() -> None:
    metrics, model = Metrics(CollectorRegistry()), GatedModel()
    b = batcher(metrics, model)
    await b.score([pair(3), pair(5), pair(4)])  # one batch: 3 pairs of 5 padded tokens, 12 real
    model.gate.clear()
    first = asyncio.create_task(b.score([pair(2)]))
    await until(lambda: model.entered == 2, "on the model, held by the gate")
    second = asyncio.create_task(b.score([pair(6), pair(6)]))
    await until(lambda: b.queued_pairs == 2, "the second request queued")
    await asyncio.sleep(0.05)  # a known wait, which the second request's queue time must include
    waiting = scrape(metrics)
    assert waiting.get_value("rerank_queue_pairs", model=MODEL) == 2
    # The batch in flight is estimated, and the queued 12 tokens (+10 % padding) at 1000 tokens/s.
    assert waiting.get_value("rerank_queue_estimated_seconds", model=MODEL) >= 0.0132
    model.gate.set()
    await asyncio.gather(first, second)
    await b.close()

    s = scrape(metrics)
    assert s.get_value("rerank_pairs_total", model=MODEL) == 3 + 1 + 2
    assert s.get_value("rerank_tokens_total", model=MODEL) == 12 + 2 + 12
    assert s.get_value("rerank_padded_tokens_total", model=MODEL) == 15 + 2 + 12
    assert s.get_value("rerank_batch_size_count", model=MODEL) == 3
    assert s.get_value("rerank_batch_size_sum", model=MODEL) == 6
    assert s.get_value("rerank_batch_size_bucket", model=MODEL, le="1.0") == 1
    assert s.get_value("rerank_batch_size_bucket", model=MODEL, le="2.0") == 2
    assert s.get_value("rerank_batch_tokens_sum", model=MODEL) == 29
    assert s.get_value("rerank_batch_padding_ratio_sum", model=MODEL) == pytest.approx(3 / 15)
    assert s.get_value("rerank_inference_duration_seconds_count", model=MODEL) == 3
    # One wait per request, from queued to its first pair on the model; the second waited for
    # the gate (at least the 50 ms before the scrape).
    assert s.get_value("rerank_queue_duration_seconds_count", model=MODEL) == 3
    assert s.get_value("rerank_queue_duration_seconds_sum", model=MODEL) >= 0.05
    assert s.get_value("rerank_queue_pairs", model=MODEL) == 0
    assert s.get_value("rerank_queue_estimated_seconds", model=MODEL) == 0
    assert b.metrics.pairs == 6 and b.metrics.batches == 3  # ListModels' totals agree


async def test_every_series_of_a_model_exists_from_the_start() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.model(MODEL)
    s = scrape(metrics)
    assert s.get_value("rerank_pairs_total", model=MODEL) == 0
    assert ("rerank_batch_size_count", frozenset({("model", MODEL)})) in s
    assert ("rerank_queue_pairs", frozenset({("model", MODEL)})) in s


async def test_rejections_are_counted_by_reason() -> None:
    metrics, model = Metrics(CollectorRegistry()), GatedModel()
    b = batcher(metrics, model, max_queue_pairs=12, max_queue_seconds=1.0, max_batch_pairs=1)
    model.gate.clear()
    running = asyncio.create_task(b.score([pair(2)]))
    await until(lambda: model.entered == 1, "the model busy")
    queued = asyncio.create_task(b.score([pair(100)] * 10))  # 1100 tokens of cost: 1.1 s at 1000/s
    await until(lambda: b.queued_pairs == 10, "the request queued")
    with pytest.raises(TooManyDocuments):
        await b.score([pair(2)] * 13)  # more than the queue holds
    with pytest.raises(QueueFull, match="the limit is 12"):
        await b.score([pair(2)] * 3)  # 10 + 3 > 12
    with pytest.raises(QueueFull, match="would wait"):
        await b.score([pair(1000)])  # 1.1 s behind the queued request: over 1 s
    model.gate.set()
    await asyncio.gather(running, queued)
    b.refuse(Unavailable("stopping"))
    with pytest.raises(Unavailable):
        await b.score([pair(2)])
    await b.close()

    pool = TokenizerPool(threads=1, max_waiting=1)
    release = threading.Event()
    entered = threading.Event()
    busy = asyncio.create_task(pool.run(lambda: entered.set() or release.wait(10), metrics=b.metrics))
    await until(entered.is_set, "the tokenizer thread busy")
    with pytest.raises(QueueFull, match="tokenizer queue"):
        await pool.run(time.sleep, 0, metrics=b.metrics)
    release.set()
    await busy
    pool.shutdown()

    s = scrape(metrics)
    reasons = ("request_too_large", "queue_full", "queue_time", "draining", "tokenizer_queue")
    assert {r: s.get_value("rerank_rejected_requests_total", model=MODEL, reason=r) for r in reasons} == dict.fromkeys(
        reasons, 1.0
    )
    assert b.metrics.rejected_requests == 5


async def test_tokenization_time_is_the_time_on_the_thread() -> None:
    metrics = Metrics(CollectorRegistry())
    recorded = metrics.model(MODEL)
    pool = TokenizerPool(threads=1, max_waiting=4)
    assert await pool.run(lambda n: time.sleep(n) or n, 0.05, metrics=recorded) == 0.05
    await pool.run(lambda: None, metrics=recorded)
    pool.shutdown()
    s = scrape(metrics)
    assert s.get_value("rerank_tokenization_duration_seconds_count", model=MODEL) == 2
    assert s.get_value("rerank_tokenization_duration_seconds_sum", model=MODEL) >= 0.05


def test_servers_in_one_process_have_their_own_registries() -> None:
    one, two = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    one.model(MODEL).record_batch(pairs=2, padded_tokens=8, real_tokens=6, seconds=0.01)
    assert scrape(one).get_value("rerank_pairs_total", model=MODEL) == 2
    assert scrape(two).get_value("rerank_pairs_total", model=MODEL) == 0
