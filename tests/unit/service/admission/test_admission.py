"""Admission, the component: the one queue rule (:func:`queue_time_refusal`), the places the
edge's check holds and what their tokens prove (:class:`Holds`: bound to a key and a price,
taken once, lapsing), and the batcher admitting a request on its claimed place."""

from __future__ import annotations

import numpy as np
import pytest

from rerank.service.admission.holds import Holds
from rerank.service.admission.queue import QueueState, queue_time_refusal
from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.throughput import Throughput
from rerank.service.errors import QueueFull

STATE = QueueState(costs=(10_000.0, 500.0), running_until=0.0, tokens_per_second=1000.0, max_queue_seconds=5.0)


def test_an_idle_queue_admits_anything() -> None:
    assert queue_time_refusal(QueueState(), 1e12) is None


def test_each_request_ahead_delays_by_at_most_the_smaller_cost() -> None:
    assert STATE.estimated_wait(2000.0, now=1.0) == (2000 + 500) / 1000
    assert queue_time_refusal(STATE, 2000.0, now=1.0) is None  # 2.5 s
    refusal = queue_time_refusal(STATE, 8000.0, now=1.0)  # 8.5 s
    assert isinstance(refusal, QueueFull) and refusal.reason == "QUEUE_FULL"
    assert refusal.retry_after == 4  # ceil(8.5 - 5)
    assert refusal.message.startswith("the server is busy: this request would wait about 8.5 s, more than the 5 s")


def test_the_batch_in_flight_counts_and_retry_after_is_at_least_one() -> None:
    state = QueueState(costs=(), running_until=11.0, tokens_per_second=1000.0, max_queue_seconds=5.0)
    assert queue_time_refusal(state, 1.0, now=10.0) is None
    refusal = queue_time_refusal(state, 1.0, now=5.5)  # 5.5 s in flight
    assert refusal is not None and refusal.retry_after == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_taken_once_with_every_models_place_and_lapses() -> None:
    clock = Clock()
    holds = Holds(seconds=1.0, clock=clock)
    first = holds.place("team", {"a": 300.0, "b": 200.0})
    second = holds.place("team", {"a": 50.0})
    assert first != second and len(first) >= 22  # 128 random bits, url-safe
    assert sorted(holds.costs("a")) == [50.0, 300.0] and holds.costs("b") == [200.0]
    claim = holds.claim(first, "team")
    assert claim is not None and claim.costs == {"a": 300.0, "b": 200.0}
    assert holds.costs("a") == [50.0] and holds.costs("b") == []  # gone from every model
    assert holds.claim(first, "team") is None  # replayed: proves nothing
    clock.now += 1.0
    assert holds.costs("a") == []  # never used: it lapsed


def test_a_token_proves_nothing_for_another_key_or_forged() -> None:
    holds = Holds()
    token = holds.place("team", {"a": 10.0})
    assert holds.claim(token, "other-team") is None
    assert holds.claim("forged-" + token, "team") is None
    assert holds.claim("", "team") is None
    assert holds.claim(token, "team") is not None  # its own key still claims it (once)


def test_a_late_token_proves_the_charge_but_holds_no_place_and_is_forgotten() -> None:
    clock = Clock()
    holds = Holds(seconds=1.0, memory=60.0, clock=clock)
    slow, never = holds.place("team", {"a": 1.0}), holds.place("team", {"a": 1.0})
    clock.now += 1.5
    claim = holds.claim(slow, "team")
    assert claim is not None and claim.costs == {}  # charged at the edge; its queue time is checked again
    clock.now += 60
    assert holds.claim(never, "team") is None  # long forgotten


def test_outcomes_are_counted() -> None:
    clock = Clock()
    outcomes: list[str] = []
    holds = Holds(seconds=1.0, clock=clock, record=outcomes.append)
    kept, slow, _unused = (holds.place("k", {"a": 1.0}) for _ in range(3))
    holds.claim(kept, "k")
    clock.now += 1.5
    holds.costs("a")
    holds.claim(slow, "k")
    holds.claim(slow, "k")
    holds.claim("never-placed", "k")
    assert outcomes == ["placed"] * 3 + ["taken", "lapsed", "lapsed", "late", "invalid", "invalid"]


def test_the_table_is_bounded_oldest_first() -> None:
    holds = Holds(limit=3)
    tokens = [holds.place("k", {"a": float(i)}) for i in range(5)]
    assert holds.claim(tokens[0], "k") is None and holds.claim(tokens[1], "k") is None
    assert sorted(holds.costs("a")) == [2.0, 3.0, 4.0]


def idle_batcher(tokens_per_second: float, max_queue_seconds: float, holds: Holds) -> DynamicBatcher:
    """A batcher named ``m`` on a model that scores nothing, at a measured ``tokens_per_second``."""
    return DynamicBatcher(
        lambda batch: np.zeros(len(batch.input_ids)),
        pad_id=0,
        with_types=False,
        config=BatchingConfig(max_queue_seconds=max_queue_seconds),
        metrics=ModelMetrics(),
        name="m",
        throughput=Throughput(tokens_per_second, measured=True),
        holds=holds,
    )


async def test_a_held_place_counts_against_the_others_and_admits_its_own_request_up_to_its_price() -> None:
    """Three large bodies checked at once by an idle server: the first is held a place, the
    others see it (refused before their bodies are read); the held request is admitted on its
    place, but only up to :data:`MISESTIMATE` times the price it was held at."""
    holds = Holds()
    batcher = idle_batcher(1000.0, max_queue_seconds=1.0, holds=holds)
    assert batcher.holds is holds  # an empty table is still the one shared with the edge
    assert queue_time_refusal(batcher.with_holds(batcher.state()), 4000.0) is None
    token = holds.place("k", {"m": 4000.0})
    refusal = queue_time_refusal(batcher.with_holds(batcher.state()), 4000.0)  # 4 s behind the held body
    assert refusal is not None and refusal.retry_after == 3
    with pytest.raises(QueueFull):  # a call without a claim (a direct gRPC call) counts it too
        batcher.admit(4000.0, 10)
    holds.place("k", {"m": 4000.0})  # another body on its way
    claim = holds.claim(token, "k")
    assert claim is not None
    with pytest.raises(QueueFull):  # claimed at a price far below its cost: checked like any call
        batcher.admit(9000.0, 10, held=claim.costs["m"])
    reservation = batcher.admit(4500.0, 10, held=claim.costs["m"])  # over its price, within the misestimate
    assert batcher.state().costs == (4500.0,)
    batcher.release(reservation)
    await batcher.close()
