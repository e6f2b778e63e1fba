"""The model's speed as admission reads it: how long a queue of tokens takes to drain."""

from __future__ import annotations

import pytest

from rerank.service.core.throughput import Throughput


def test_batches_of_varying_speed_give_the_speed_a_queue_drains_at() -> None:
    # Full batches of 6,000 tokens, alternately 20 ms and 60 ms (inference preempted by the
    # edge): 12,000 tokens every 80 ms is 150,000 tokens/s. The mean of the two speeds (200,000)
    # would promise a queue drains a third faster than it does.
    throughput = Throughput(150_000.0, measured=True)
    for _ in range(200):
        throughput.record(6000, 0.020, full=6000)
        throughput.record(6000, 0.060, full=6000)
    assert throughput.tokens_per_second == pytest.approx(150_000, rel=0.12)
    assert throughput.seconds(150_000) == pytest.approx(1.0, rel=0.12)


def test_a_steady_speed_is_learned_and_the_first_batch_replaces_a_guess() -> None:
    throughput = Throughput()
    throughput.record(4000, 0.01, full=8000)
    assert throughput.measured and throughput.tokens_per_second == pytest.approx(400_000)
    for _ in range(100):
        throughput.record(8000, 0.04, full=8000)
    assert throughput.tokens_per_second == pytest.approx(200_000, rel=1e-3)


def test_a_small_batch_moves_the_speed_less_than_a_full_one() -> None:
    small, full = Throughput(100_000.0, measured=True), Throughput(100_000.0, measured=True)
    small.record(600, 0.012, full=6000)  # 50,000 tokens/s, a tenth of a batch
    full.record(6000, 0.12, full=6000)
    assert 50_000 < full.tokens_per_second < small.tokens_per_second < 100_000
