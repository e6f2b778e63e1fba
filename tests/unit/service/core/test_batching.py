"""The dynamic batcher: packing under a token budget, cancellation, the bounded queue, and the
event loop staying free while the model runs."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.backends.base import Batch
from service.core.batching import BatchingConfig, DynamicBatcher
from service.core.metrics import ModelMetrics
from service.core.tokenization import Pair
from service.errors import QueueFull, TooManyDocuments


def pair(doc: int, length: int, token: int = 7) -> Pair:
    ids = np.full(length, token, dtype=np.int64)
    return Pair(doc, ids, np.zeros(length, dtype=np.int64))


class RecordingModel:
    """A stand-in backend: score = sum of a row's token ids; remembers every batch it ran."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[Batch] = []
        self.delay = delay
        self.gate = gate

    def __call__(self, batch: Batch) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        self.batches.append(batch)
        return (batch.input_ids * batch.attention_mask).sum(axis=1).astype(float)


def make(model: RecordingModel, **config) -> DynamicBatcher:
    return DynamicBatcher(model, pad_id=0, with_types=False, config=BatchingConfig(**config), metrics=ModelMetrics())


async def test_scores_come_back_in_request_order():
    model = RecordingModel()
    batcher = make(model, max_batch_tokens=64, max_batch_pairs=8)
    pairs = [pair(i, n, token=i + 1) for i, n in enumerate([5, 1, 9, 3])]
    scores = await batcher.score(pairs)
    assert list(scores) == [(i + 1) * n for i, n in enumerate([5, 1, 9, 3])]
    await batcher.close()


async def test_micro_batches_respect_token_budget_and_sort_by_length():
    model = RecordingModel()
    batcher = make(model, max_batch_tokens=40, max_batch_pairs=100)
    lengths = [10, 2, 8, 3, 9, 1, 10, 4]
    await batcher.score([pair(i, n) for i, n in enumerate(lengths)])
    for batch in model.batches:
        assert batch.input_ids.size <= 40 or len(batch.input_ids) == 1
    seen = [int(m.sum()) for b in model.batches for m in b.attention_mask]
    assert seen == sorted(lengths)  # taken shortest first: neighbours pad little
    # Taken in arrival order under the same budget, the batches would be [10,2,8,3] and
    # [9,1,10,4]: 80 padded tokens for 47 real ones. Sorted: [1,2,3,4,8] and [9,10,10], 70.
    assert batcher.metrics.padded_tokens == 70 and batcher.metrics.real_tokens == 47
    await batcher.close()


async def test_queued_requests_alternate_sort_direction():
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = make(model, max_batch_tokens=10_000, max_batch_pairs=3)
    blocker = asyncio.create_task(batcher.score([pair(0, 1)]))
    await asyncio.sleep(0.05)  # the model is busy: the next two requests queue together
    lengths = [2, 4, 6, 8]
    first = asyncio.create_task(batcher.score([pair(i, n) for i, n in enumerate(lengths)]))
    second = asyncio.create_task(batcher.score([pair(i, n) for i, n in enumerate(lengths)]))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, first, second)
    seen = [[int(m.sum()) for m in b.attention_mask] for b in model.batches[1:]]
    # First request shortest first, the second longest first: the batch spanning them holds
    # [8, 8, 6] (24 padded tokens) instead of [8, 2, 4] (24, of which 10 padding).
    assert seen == [[2, 4, 6], [8, 8, 6], [4, 2]]
    assert batcher.metrics.padded_tokens == 1 + 18 + 24 + 8
    await batcher.close()


async def test_pairs_from_concurrent_requests_share_batches():
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = make(model, max_batch_tokens=10_000, max_batch_pairs=64)
    first = asyncio.create_task(batcher.score([pair(0, 4)]))
    await asyncio.sleep(0.05)  # the first batch is now blocked inside the model
    rest = [asyncio.create_task(batcher.score([pair(0, 4, token=t)] * 3)) for t in range(2, 6)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, *rest)
    assert len(model.batches) == 2 and len(model.batches[1].input_ids) == 12
    await batcher.close()


async def test_cancelled_request_never_reaches_the_model():
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = make(model, max_batch_tokens=10_000)
    running = asyncio.create_task(batcher.score([pair(0, 3, token=1)]))
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(batcher.score([pair(0, 3, token=99)] * 5))
    await asyncio.sleep(0.05)
    assert batcher.queued_pairs == 5
    doomed.cancel()  # what grpc.aio does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queued_pairs == 0
    gate.set()
    await running
    survivor = await batcher.score([pair(0, 2, token=3)])
    assert list(survivor) == [6]
    assert all(99 not in b.input_ids for b in model.batches)
    assert batcher.metrics.cancelled_requests == 1
    await batcher.close()


async def test_queue_is_bounded():
    gate = threading.Event()
    batcher = make(RecordingModel(gate=gate), max_queue_pairs=6, max_batch_tokens=10_000)
    first = asyncio.create_task(batcher.score([pair(0, 2)] * 4))
    await asyncio.sleep(0.05)  # taken by the model: no longer queued
    waiting = asyncio.create_task(batcher.score([pair(0, 2)] * 5))
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFull, match="retry later"):
        await batcher.score([pair(0, 2)] * 2)
    with pytest.raises(TooManyDocuments, match="more than the queue holds"):
        await batcher.score([pair(0, 2)] * 7)
    gate.set()
    await asyncio.gather(first, waiting)
    assert batcher.metrics.rejected_requests == 2
    await batcher.close()


async def test_event_loop_is_free_while_the_model_runs():
    """The model waits inside ``run`` until the event loop releases it. Only a loop that is free
    while inference runs (the model on its worker thread) can do that; a model run on the loop
    blocks it, waits out its timeout unreleased, and the request gets -1."""
    inside, released = threading.Event(), threading.Event()

    def model(batch: Batch) -> np.ndarray:
        inside.set()
        return np.full(len(batch.input_ids), 1.0 if released.wait(timeout=2) else -1.0)

    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=BatchingConfig(), metrics=ModelMetrics())
    task = asyncio.create_task(batcher.score([pair(0, 4)]))
    while not inside.is_set():  # yields to the loop: the batcher takes the pair to the model
        await asyncio.sleep(0.001)
    released.set()  # this line runs on the loop, while the model is still inside run()
    assert list(await task) == [1.0], "the model ran on the event loop: the loop could not release it"
    await batcher.close()


async def test_a_failing_batch_fails_its_requests_not_the_loop():
    calls = {"n": 0}

    def flaky(batch: Batch) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return np.ones(len(batch.input_ids))

    batcher = DynamicBatcher(flaky, pad_id=0, with_types=False, config=BatchingConfig(), metrics=ModelMetrics())
    with pytest.raises(RuntimeError, match="boom"):
        await batcher.score([pair(0, 2)])
    assert list(await batcher.score([pair(0, 2)])) == [1.0]
    assert batcher.queued_pairs == 0
    await batcher.close()
