"""The dynamic batcher: packing under a token budget, cancellation, the bounded queue, and the
event loop staying free while the model runs."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from rerank.service.admission.queue import PADDING_ALLOWANCE
from rerank.service.backends.base import Batch
from rerank.service.core.batching import DynamicBatcher, common_head_of, cost_of
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.throughput import Throughput
from rerank.service.core.tokenization import Pair
from rerank.service.errors import QueueFull, TooManyDocuments
from tests.support.stand_in import GatedModel
from tests.support.waiting import until


def pair(doc: int, length: int, token: int = 7) -> Pair:
    ids = np.full(length, token, dtype=np.int64)
    return Pair(doc, ids, np.zeros(length, dtype=np.int64))


def make(model: GatedModel, **config) -> DynamicBatcher:
    # Budgets by token count only: the gated stand-in model's speed means nothing.
    config = {"batch_seconds": 1e9, "max_queue_seconds": 1e9, **config}
    return DynamicBatcher(model, pad_id=0, with_types=False, config=BatchingConfig(**config), metrics=ModelMetrics())


async def test_scores_come_back_in_request_order():
    model = GatedModel()
    batcher = make(model, max_batch_tokens=64, max_batch_pairs=8)
    pairs = [pair(i, n, token=i + 1) for i, n in enumerate([5, 1, 9, 3])]
    scores = await batcher.score(pairs)
    assert list(scores) == [(i + 1) * n for i, n in enumerate([5, 1, 9, 3])]
    await batcher.close()


async def test_micro_batches_respect_token_budget_and_sort_by_length():
    model = GatedModel()
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
    model = GatedModel(held=True)
    batcher = make(model, max_batch_tokens=10_000, max_batch_pairs=3)
    blocker = asyncio.create_task(batcher.score([pair(0, 1)]))
    await until(lambda: model.entered == 1, "the model busy")  # the next two requests queue together
    lengths = [2, 4, 6, 8]
    first = asyncio.create_task(batcher.score([pair(i, n) for i, n in enumerate(lengths)]))
    second = asyncio.create_task(batcher.score([pair(i, n) for i, n in enumerate(lengths)]))
    await until(lambda: batcher.queued_pairs == 8, "both requests queued")
    model.gate.set()
    await asyncio.gather(blocker, first, second)
    seen = [[int(m.sum()) for m in b.attention_mask] for b in model.batches[1:]]
    # Each batch is shared (two slots to one, one to the other, in turn), each request shortest
    # first: 46 padded tokens, where first-come-first-served would pack [2,4,6],[8,2,4],[6,8] = 60.
    assert seen == [[2, 4, 2], [4, 6, 6], [8, 8]]
    assert batcher.metrics.padded_tokens == 1 + 12 + 18 + 16
    await batcher.close()


async def test_pairs_from_concurrent_requests_share_batches():
    model = GatedModel(held=True)
    batcher = make(model, max_batch_tokens=10_000, max_batch_pairs=64)
    first = asyncio.create_task(batcher.score([pair(0, 4)]))
    await until(lambda: model.entered == 1, "the first batch blocked inside the model")
    rest = [asyncio.create_task(batcher.score([pair(0, 4, token=t)] * 3)) for t in range(2, 6)]
    await until(lambda: batcher.queued_pairs == 12, "the other requests queued")
    model.gate.set()
    await asyncio.gather(first, *rest)
    assert len(model.batches) == 2 and len(model.batches[1].input_ids) == 12
    await batcher.close()


async def test_the_next_batch_starts_while_the_event_loop_is_busy():
    # The model's worker takes the next micro-batch itself when it finishes one: a loop busy
    # with other work (parsing, tokenizing, answering) does not leave the model idle.
    model = GatedModel(held=True)
    batcher = make(model, max_batch_tokens=10_000, max_batch_pairs=2)
    scoring = asyncio.create_task(batcher.score([pair(i, 4, token=i + 1) for i in range(6)]))
    # The first batch waits at the gate, and its pairs have left the queue: the second is composed.
    await until(lambda: model.entered == 1 and batcher.queued_pairs == 4, "the second batch composed")
    model.gate.set()
    # The event loop is kept busy (this thread blocks): nothing of the batcher's runs on it meanwhile.
    model.block_until(lambda m: len(m.batches) == 2)  # the second batch ran all the same
    assert len(model.batches) == 2  # (the third is composed once the loop is free)
    assert list(await scoring) == [4 * (i + 1) for i in range(6)]
    assert len(model.batches) == 3
    await batcher.close()


class TwoAtOnce(GatedModel):
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
    model = GatedModel()
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
    await asyncio.sleep(0)  # one turn of the loop: the task runs, queued and scheduled
    # The event loop is kept busy (this thread blocks): both halves must already have gone to the workers.
    model.block_until(lambda m: len(m.batches) == 2)
    assert len(model.batches) == 2
    assert len(await scoring) == 8
    await batcher.close()


async def test_admission_counts_every_stream_s_speed():
    config = BatchingConfig(max_queue_seconds=1e9)
    one, two = (
        DynamicBatcher(
            GatedModel(),
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
    model = GatedModel(held=True)
    batcher = make(model, max_batch_tokens=10_000)
    running = asyncio.create_task(batcher.score([pair(0, 3, token=1)]))
    await until(lambda: model.entered == 1, "the model busy")
    doomed = asyncio.create_task(batcher.score([pair(0, 3, token=99)] * 5))
    await until(lambda: batcher.queued_pairs == 5, "the request queued")
    doomed.cancel()  # what grpc.aio does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queued_pairs == 0
    model.gate.set()
    await running
    survivor = await batcher.score([pair(0, 2, token=3)])
    assert list(survivor) == [6]
    assert all(99 not in b.input_ids for b in model.batches)
    assert batcher.metrics.cancelled_requests == 1
    await batcher.close()


async def test_queue_is_bounded():
    model = GatedModel(held=True)
    batcher = make(model, max_queue_pairs=6, max_batch_tokens=10_000)
    first = asyncio.create_task(batcher.score([pair(0, 2)] * 4))
    await until(lambda: model.entered == 1 and batcher.queued_pairs == 0, "taken by the model: no longer queued")
    waiting = asyncio.create_task(batcher.score([pair(0, 2)] * 5))
    await until(lambda: batcher.queued_pairs == 5, "the second request queued")
    with pytest.raises(QueueFull, match="retry later"):
        await batcher.score([pair(0, 2)] * 2)
    with pytest.raises(TooManyDocuments, match="more than the queue holds"):
        await batcher.score([pair(0, 2)] * 7)
    model.gate.set()
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
    await until(inside.is_set, "the pair in the model")  # yields to the loop: the batcher takes it there
    released.set()  # this line runs on the loop, while the model is still inside run()
    assert list(await task) == [1.0], "the model ran on the event loop: the loop could not release it"
    await batcher.close()


async def test_a_failing_pair_fails_alone():
    """A micro-batch that fails runs again pair by pair: the request with the bad pair fails,
    the request sharing its batch succeeds, and the loop goes on."""
    gated = GatedModel(held=True)

    def model(batch: Batch) -> np.ndarray:
        scores = gated(batch)
        if (batch.input_ids == 99).any():
            raise RuntimeError("boom")
        return scores

    batcher = DynamicBatcher(
        model, pad_id=0, with_types=False, config=BatchingConfig(batch_seconds=1e9), metrics=ModelMetrics()
    )
    blocker = asyncio.create_task(batcher.score([pair(0, 1)]))
    await until(lambda: gated.entered == 1, "the model busy")
    good = asyncio.create_task(batcher.score([pair(0, 2, token=3), pair(1, 2, token=4)]))
    bad = asyncio.create_task(batcher.score([pair(0, 2, token=5), pair(1, 2, token=99)]))
    await until(lambda: batcher.queued_pairs == 4, "both requests queued")
    gated.gate.set()
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
    model = GatedModel(held=True)
    batcher = fair(model, max_batch_pairs=8)
    blocker = asyncio.create_task(batcher.score([pair(0, 4)]))
    await until(lambda: model.entered == 1, "the model busy")
    large = [asyncio.create_task(batcher.score([pair(i, 4, token=2)] * 100, client=f"big-{i}")) for i in range(3)]
    await until(lambda: batcher.queued_pairs == 300, "the large requests queued")
    small = asyncio.create_task(batcher.score([pair(0, 4, token=9)], client="small"))
    await until(lambda: batcher.queued_pairs == 301, "the small one queued behind them")
    model.gate.set()
    await asyncio.gather(blocker, small, *large)
    first_with_small = next(i for i, b in enumerate(model.batches) if (b.input_ids == 9).any())
    assert first_with_small == 1  # the batch right after the one in flight, not after 300 pairs
    await batcher.close()


async def test_clients_get_equal_shares_of_a_batch():
    model = GatedModel(held=True)
    batcher = fair(model, max_batch_pairs=8)
    blocker = asyncio.create_task(batcher.score([pair(0, 4)]))
    await until(lambda: model.entered == 1, "the model busy")
    # One client with three big requests, another with one: 50/50 per batch, not 3:1.
    many = [asyncio.create_task(batcher.score([pair(0, 4, token=2)] * 40, client="a")) for _ in range(3)]
    one = asyncio.create_task(batcher.score([pair(0, 4, token=3)] * 40, client="b"))
    await until(lambda: batcher.queued_pairs == 160, "every request queued")
    model.gate.set()
    await asyncio.gather(blocker, one, *many)
    shares = [int((b.input_ids[:, 0] == 3).sum()) for b in model.batches[1:6]]
    assert shares == [4, 4, 4, 4, 4]
    await batcher.close()


async def test_the_batcher_cuts_micro_batches_at_the_chosen_size() -> None:
    model = GatedModel()
    config = BatchingConfig(max_batch_tokens=10_000, max_batch_pairs=64, batch_seconds=1e9, max_queue_seconds=1e9)
    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=config, metrics=ModelMetrics(), batch_tokens=40)
    await batcher.score([pair(i, 10) for i in range(12)])
    assert [len(b.input_ids) for b in model.batches] == [4, 4, 4]
    await batcher.close()
    # The setting reaches it the same way when no size was measured.
    model = GatedModel()
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
    model = GatedModel(held=True)
    batcher = fair(model, max_queue_seconds=max_queue_seconds, max_batch_pairs=1)
    blocker = asyncio.create_task(batcher.score([pair(0, 10)]))
    await until(lambda: model.entered == 1, "the model busy")
    queued = asyncio.create_task(batcher.score([pair(i, 100) for i in range(queued_pairs)]))
    await until(lambda: batcher.queued_pairs == queued_pairs, "the request queued")
    return batcher, model.gate, blocker, queued


async def test_admission_refuses_a_request_that_would_wait_too_long():
    batcher, gate, blocker, queued = await busy_batcher(1.0, 40)  # 4400 tokens of cost queued
    # Another big one would wait behind all of it: about 4.4 s at 1000 tokens/s.
    with pytest.raises(QueueFull, match=r"would wait about 4\.\d s") as refused:
        await batcher.score([pair(i, 100) for i in range(40)])
    assert refused.value.retry_after == 4  # ceil(4.4 - 1)
    # A small one waits only its share: admitted.
    small = asyncio.create_task(batcher.score([pair(0, 10)]))
    await until(lambda: batcher.queued_pairs == 41, "the small request queued")
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
    await until(lambda: batcher.metrics.queue_pairs == 16, "queued behind the other")
    assert not admitted.done()
    # Far over its estimate (1100 > 2 x 500): checked again at its exact cost, and refused.
    reservation = batcher.admit(300.0, 10)
    with pytest.raises(QueueFull):
        await batcher.score([pair(i, 100) for i in range(10)], reservation=reservation)
    assert batcher.state().costs == pytest.approx((880.0, 880.0)), "the refused request's reservation was released"
    gate.set()
    await asyncio.gather(blocker, queued, admitted)
    await batcher.close()


async def test_an_idle_server_admits_any_size():
    batcher = fair(GatedModel(), max_queue_seconds=0.001)
    scores = await batcher.score([pair(i, 100) for i in range(40)])
    assert len(scores) == 40
    await batcher.close()


def prompted(doc: int, head: int, tail: int, query: int = 3) -> Pair:
    """A decoder's pair: ``head`` tokens of its request's prompt (``query`` sets them apart from
    another request's), then ``tail`` of its own."""
    ids = np.concatenate([np.full(head, query), np.full(tail, 100 + doc)]).astype(np.int64)
    return Pair(doc, ids, np.zeros(len(ids), dtype=np.int64))


class RecordedThroughput(Throughput):
    """Keeps the tokens each micro-batch is recorded at."""

    def __init__(self) -> None:
        super().__init__(1000.0, measured=True)
        self.tokens: list[int] = []

    def record(self, tokens: int, seconds: float, full: int) -> None:
        self.tokens.append(tokens)


def shared_batcher(model: GatedModel, *, shares_head: bool, throughput: Throughput | None = None) -> DynamicBatcher:
    config = BatchingConfig(max_batch_tokens=10_000, batch_seconds=1e9, max_queue_seconds=1e9)
    return DynamicBatcher(
        model,
        pad_id=0,
        with_types=False,
        config=config,
        metrics=ModelMetrics(),
        batch_tokens=110,
        shares_head=shares_head,
        throughput=throughput,
    )


async def test_a_graph_that_reads_the_head_once_gets_micro_batches_cut_by_the_tokens_it_runs() -> None:
    # Eight pairs of 40 tokens, the first 30 their request's prompt. A graph that reads the head
    # once runs 30 + 8 x 10 = 110 tokens for all of them: one micro-batch at a budget of 110,
    # where padded rows (320 tokens) would take four of two.
    model, throughput = GatedModel(), RecordedThroughput()
    batcher = shared_batcher(model, shares_head=True, throughput=throughput)
    await batcher.score([prompted(i, 30, 10) for i in range(8)])
    assert [len(b.input_ids) for b in model.batches] == [8] and model.batches[0].shared == 30
    assert throughput.tokens == [110]  # its speed is counted in the tokens it ran
    await batcher.close()
    model = GatedModel()
    padded = shared_batcher(model, shares_head=False)
    await padded.score([prompted(i, 30, 10) for i in range(8)])
    assert [len(b.input_ids) for b in model.batches] == [2, 2, 2, 2]
    await padded.close()


async def test_pairs_of_another_prompt_join_a_micro_batch_only_where_they_fit_unshared() -> None:
    # Two requests whose prompts differ from the first token. Mixed, a micro-batch shares no head
    # and three pairs (120 tokens) overrun the budget; one request's four pairs run 70 tokens. So
    # each request's pairs go together, one micro-batch each.
    model = GatedModel(held=True)
    batcher = shared_batcher(model, shares_head=True)
    blocker = asyncio.create_task(batcher.score([prompted(0, 30, 10, query=9)]))
    await until(lambda: model.entered == 1, "the model busy")
    first = asyncio.create_task(batcher.score([prompted(i, 30, 10, query=1) for i in range(4)]))
    second = asyncio.create_task(batcher.score([prompted(i, 30, 10, query=2) for i in range(4)]))
    await until(lambda: batcher.queued_pairs == 8, "both requests queued")
    model.gate.set()
    await asyncio.gather(blocker, first, second)
    assert [b.input_ids[:, 0].tolist() for b in model.batches[1:]] == [[1] * 4, [2] * 4]
    assert [(b.shared, b.work(True)) for b in model.batches[1:]] == [(30, 70), (30, 70)]
    await batcher.close()


def test_a_requests_cost_counts_its_head_once_a_micro_batch() -> None:
    pairs = [prompted(i, 30, 10) for i in range(8)]
    assert cost_of(pairs) == pytest.approx(PADDING_ALLOWANCE * 320)
    assert cost_of(pairs, head=30, budget=110) == pytest.approx(PADDING_ALLOWANCE * 110)  # one micro-batch
    assert cost_of(pairs, head=30, budget=70) == pytest.approx(PADDING_ALLOWANCE * (80 + 2 * 30))  # two
    assert cost_of(pairs, head=30, budget=10) == pytest.approx(PADDING_ALLOWANCE * 320)  # one pair each
    assert common_head_of(pairs) == 30 and common_head_of(pairs[:1]) == 39
    late = [*pairs[:5], Pair(5, np.concatenate([pairs[0].ids[:12], [9] * 28]), np.zeros(40)), *pairs[6:]]
    assert common_head_of(late) == 12  # one pair far down the list that parts early
    short = [*pairs, Pair(8, pairs[0].ids[:20], np.zeros(20))]
    assert common_head_of(short) == 19  # fewer than the shortest has, as pad() counts
