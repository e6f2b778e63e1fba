"""The dynamic batcher: packing under a token budget, cancellation, the bounded queue, and the
event loop staying free while the model runs."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from rerank.service.backends.base import Batch
from rerank.service.core.admission import cost_of
from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.throughput import Throughput
from rerank.service.core.tokenization import Pair
from rerank.service.errors import QueueFull, TooManyDocuments


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
    # Budgets by token count only: the gated stand-in model's speed means nothing.
    config = {"batch_seconds": 1e9, "max_queue_seconds": 1e9, **config}
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


async def test_requests_queued_together_take_turns():
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
    # Each batch is shared (two slots to one, one to the other, in turn), each request shortest
    # first: 46 padded tokens, where first-come-first-served would pack [2,4,6],[8,2,4],[6,8] = 60.
    assert seen == [[2, 4, 2], [4, 6, 6], [8, 8]]
    assert batcher.metrics.padded_tokens == 1 + 12 + 18 + 16
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


async def test_the_next_batch_starts_while_the_event_loop_is_busy():
    # The model's worker takes the next micro-batch itself when it finishes one: a loop busy
    # with other work (parsing, tokenizing, answering) does not leave the model idle.
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = make(model, max_batch_tokens=10_000, max_batch_pairs=2)
    scoring = asyncio.create_task(batcher.score([pair(i, 4, token=i + 1) for i in range(6)]))
    await asyncio.sleep(0.05)  # the first batch waits at the gate, the second is composed
    gate.set()
    time.sleep(0.5)  # the event loop is busy: nothing of the batcher's runs on it meanwhile
    assert len(model.batches) == 2  # the second batch ran all the same (the third is composed once the loop is free)
    assert list(await scoring) == [4 * (i + 1) for i in range(6)]
    assert len(model.batches) == 3
    await batcher.close()


class TwoAtOnce(RecordingModel):
    """A two-stream stand-in: each run waits (up to 5 s) until another run is in the model too."""

    def __init__(self) -> None:
        super().__init__()
        self.together = threading.Barrier(2, timeout=5)

    def __call__(self, batch: Batch) -> np.ndarray:
        self.together.wait()
        return super().__call__(batch)


async def test_a_two_stream_model_runs_two_batches_at_once():
    model = TwoAtOnce()
    batcher = DynamicBatcher(
        model,
        pad_id=0,
        with_types=False,
        config=BatchingConfig(max_batch_pairs=2, batch_seconds=1e9, max_queue_seconds=1e9),
        metrics=ModelMetrics(),
        streams=2,
    )
    # Eight pairs, two a batch: each batch only gets past the barrier with another beside it.
    scores = await asyncio.wait_for(batcher.score([pair(i, 3, token=i + 1) for i in range(8)]), 10)
    assert list(scores) == [3 * (i + 1) for i in range(8)] and len(model.batches) == 4
    await batcher.close()


async def test_a_lone_request_is_split_over_idle_streams():
    model = RecordingModel()
    config = BatchingConfig(max_batch_tokens=10_000, batch_seconds=1e9, max_queue_seconds=1e9)
    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=config, metrics=ModelMetrics(), streams=2)
    await batcher.score([pair(i, n) for i, n in enumerate([12, 5, 11, 6, 10, 7, 9, 8])])
    # One batch would have held all 8; shared by tokens, padding would have left a third batch.
    assert sorted([int(m.sum()) for m in b.attention_mask] for b in model.batches) == [[5, 6, 7, 8], [9, 10, 11, 12]]
    await batcher.close()


async def test_the_halves_of_a_lone_request_start_together():
    model = TwoAtOnce()  # each half waits in the model for the other
    config = BatchingConfig(max_batch_tokens=10_000, batch_seconds=1e9, max_queue_seconds=1e9)
    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=config, metrics=ModelMetrics(), streams=2)
    scoring = asyncio.create_task(batcher.score([pair(i, 5) for i in range(8)]))
    await asyncio.sleep(0)  # queued and scheduled
    time.sleep(0.5)  # the event loop is busy: both halves must already have gone to the workers
    assert len(model.batches) == 2
    assert len(await scoring) == 8
    await batcher.close()


async def test_admission_counts_every_stream_s_speed():
    config = BatchingConfig(max_queue_seconds=1e9)
    one, two = (
        DynamicBatcher(
            RecordingModel(),
            pad_id=0,
            with_types=False,
            config=config,
            metrics=ModelMetrics(),
            throughput=FixedThroughput(1000.0),
            streams=streams,
        )
        for streams in (1, 2)
    )
    # A queue of 4,000 tokens: 4 s for one stream of 1,000 tokens/s, 2 s for two.
    assert one.state().tokens_per_second == 1000.0 and two.state().tokens_per_second == 2000.0
    assert two.state().estimated_wait(4000.0) == pytest.approx(one.state().estimated_wait(4000.0) / 2)
    await one.close()
    await two.close()


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


async def test_a_failing_pair_fails_alone():
    """A micro-batch that fails runs again pair by pair: the request with the bad pair fails,
    the request sharing its batch succeeds, and the loop goes on."""
    gate = threading.Event()

    def model(batch: Batch) -> np.ndarray:
        gate.wait(10)
        if (batch.input_ids == 99).any():
            raise RuntimeError("boom")
        return batch.input_ids.sum(axis=1).astype(float)

    batcher = DynamicBatcher(
        model, pad_id=0, with_types=False, config=BatchingConfig(batch_seconds=1e9), metrics=ModelMetrics()
    )
    blocker = asyncio.create_task(batcher.score([pair(0, 1)]))
    await asyncio.sleep(0.05)
    good = asyncio.create_task(batcher.score([pair(0, 2, token=3), pair(1, 2, token=4)]))
    bad = asyncio.create_task(batcher.score([pair(0, 2, token=5), pair(1, 2, token=99)]))
    await asyncio.sleep(0.05)
    gate.set()
    assert list(await good) == [6.0, 8.0]
    with pytest.raises(RuntimeError, match="boom"):
        await bad
    await blocker
    assert list(await batcher.score([pair(0, 2)])) == [14.0]
    assert batcher.queued_pairs == 0
    await batcher.close()


class FixedThroughput(Throughput):
    """A model speed the test sets, which the batcher's measurements do not move."""

    def record(self, tokens: int, seconds: float, full: int) -> None:
        pass


def fair(model, **config) -> DynamicBatcher:
    config = {"batch_seconds": 1e9, "max_queue_seconds": 1e9, **config}
    return DynamicBatcher(
        model,
        pad_id=0,
        with_types=False,
        config=BatchingConfig(**config),
        metrics=ModelMetrics(),
        throughput=FixedThroughput(1000.0),
    )


async def test_a_small_request_is_not_stuck_behind_large_ones():
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = fair(model, max_batch_pairs=8)
    blocker = asyncio.create_task(batcher.score([pair(0, 4)]))
    await asyncio.sleep(0.05)
    large = [asyncio.create_task(batcher.score([pair(i, 4, token=2)] * 100, client=f"big-{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    small = asyncio.create_task(batcher.score([pair(0, 4, token=9)], client="small"))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, small, *large)
    first_with_small = next(i for i, b in enumerate(model.batches) if (b.input_ids == 9).any())
    assert first_with_small == 1  # the batch right after the one in flight, not after 300 pairs
    await batcher.close()


async def test_clients_get_equal_shares_of_a_batch():
    gate = threading.Event()
    model = RecordingModel(gate=gate)
    batcher = fair(model, max_batch_pairs=8)
    blocker = asyncio.create_task(batcher.score([pair(0, 4)]))
    await asyncio.sleep(0.05)
    # One client with three big requests, another with one: 50/50 per batch, not 3:1.
    many = [asyncio.create_task(batcher.score([pair(0, 4, token=2)] * 40, client="a")) for _ in range(3)]
    one = asyncio.create_task(batcher.score([pair(0, 4, token=3)] * 40, client="b"))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, one, *many)
    shares = [int((b.input_ids[:, 0] == 3).sum()) for b in model.batches[1:6]]
    assert shares == [4, 4, 4, 4, 4]
    await batcher.close()


async def test_the_batcher_cuts_micro_batches_at_the_chosen_size() -> None:
    model = RecordingModel()
    config = BatchingConfig(max_batch_tokens=10_000, max_batch_pairs=64, batch_seconds=1e9, max_queue_seconds=1e9)
    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=config, metrics=ModelMetrics(), batch_tokens=40)
    await batcher.score([pair(i, 10) for i in range(12)])
    assert [len(b.input_ids) for b in model.batches] == [4, 4, 4]
    await batcher.close()
    # The setting reaches it the same way when no size was measured.
    model = RecordingModel()
    config = BatchingConfig(max_batch_tokens=10_000, batch_tokens=30, batch_seconds=1e9, max_queue_seconds=1e9)
    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=config, metrics=ModelMetrics())
    await batcher.score([pair(i, 10) for i in range(6)])
    assert [len(b.input_ids) for b in model.batches] == [3, 3]
    await batcher.close()


async def busy_batcher(
    max_queue_seconds: float, queued_pairs: int
) -> tuple[DynamicBatcher, threading.Event, asyncio.Task, asyncio.Task]:
    """A batcher at 1000 tokens/s whose model is held (until the gate is set) on a small batch,
    with ``queued_pairs`` pairs of 100 tokens waiting behind it: (batcher, gate, the running
    request, the queued one)."""
    gate = threading.Event()
    batcher = fair(RecordingModel(gate=gate), max_queue_seconds=max_queue_seconds, max_batch_pairs=1)
    blocker = asyncio.create_task(batcher.score([pair(0, 10)]))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(batcher.score([pair(i, 100) for i in range(queued_pairs)]))
    await asyncio.sleep(0.05)
    return batcher, gate, blocker, queued


async def test_admission_refuses_a_request_that_would_wait_too_long():
    batcher, gate, blocker, queued = await busy_batcher(1.0, 40)  # 4400 tokens of cost queued
    # Another big one would wait behind all of it: about 4.4 s at 1000 tokens/s.
    with pytest.raises(QueueFull, match=r"would wait about 4\.\d s") as refused:
        await batcher.score([pair(i, 100) for i in range(40)])
    assert refused.value.retry_after == 4  # ceil(4.4 - 1)
    # A small one waits only its share: admitted.
    small = asyncio.create_task(batcher.score([pair(0, 10)]))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, queued, small)
    assert batcher.metrics.rejected_requests == 1
    await batcher.close()


async def test_a_request_admitted_on_its_estimate_is_queued_on_that_admission():
    """Admitted before tokenizing at an estimated cost, a request is queued on that admission
    even if a check at its exact cost would now refuse it (its work has begun); only an exact
    cost over MISESTIMATE times the estimate meets the check again."""
    batcher, gate, blocker, queued = await busy_batcher(0.7, 8)  # 880 tokens of cost queued
    reservation = batcher.admit(500.0, 8)  # estimated: 0.5 s behind the queued one
    exact = [pair(i, 100) for i in range(8)]  # 880: 0.88 s behind it, over 0.7 s
    with pytest.raises(QueueFull):
        batcher.admit(cost_of(exact), 8)  # a fresh check at the exact cost refuses it
    admitted = asyncio.create_task(batcher.score(exact, reservation=reservation))
    await asyncio.sleep(0.05)
    assert not admitted.done() and batcher.metrics.queue_pairs == 16, "queued behind the other"
    # Far over its estimate (1100 > 2 x 500): checked again at its exact cost, and refused.
    reservation = batcher.admit(300.0, 10)
    with pytest.raises(QueueFull):
        await batcher.score([pair(i, 100) for i in range(10)], reservation=reservation)
    assert batcher.state().costs == pytest.approx((880.0, 880.0)), "the refused request's reservation was released"
    gate.set()
    await asyncio.gather(blocker, queued, admitted)
    await batcher.close()


async def test_an_idle_server_admits_any_size():
    batcher = fair(RecordingModel(), max_queue_seconds=0.001)
    scores = await batcher.score([pair(i, 100) for i in range(40)])
    assert len(scores) == 40
    await batcher.close()
