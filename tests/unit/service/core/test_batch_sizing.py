"""The start-up sweep that picks a model's micro-batch size, on stand-in models whose speed at
each size is known (a fake clock advanced by each run). The batcher cutting batches at that size:
test_batching.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rerank.service.backends.base import Batch
from rerank.service.core.batch_sizing import SWEEP_PAIRS, fastest, size_batches, sweep_sizes


class TimedModel:
    """Takes ``per_token[pairs]`` seconds a token at a batch of ``pairs`` (on a fake clock)."""

    def __init__(self, per_token: dict[int, float] | Callable[[int], float]) -> None:
        self.per_token = per_token.__getitem__ if isinstance(per_token, dict) else per_token
        self.now = 0.0
        self.shapes: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, batch: Batch) -> np.ndarray:
        pairs, length = batch.input_ids.shape
        self.shapes.append((pairs, length))
        self.now += self.per_token(pairs) * pairs * length
        return np.zeros(pairs)


# Seconds per token by batch size: a U, like a CPU's (per-call overhead, then caches).
U_SHAPE = {1: 1.30, 2: 1.15, 4: 1.00, 8: 0.99, 16: 1.05, 32: 1.20, 64: 1.40}


def sized(model: TimedModel, **kwargs: object):
    options = {"token": 5, "max_length": 512, "max_batch_tokens": 100_000, "max_batch_pairs": 64, "seconds": 1e9}
    return size_batches(model, clock=model.clock, **{**options, **kwargs})  # type: ignore[arg-type]


def test_the_sweep_picks_the_bottom_of_the_curve() -> None:
    model = TimedModel({p: s * 1e-5 for p, s in U_SHAPE.items()})
    sizing = sized(model)
    assert sizing.batch_tokens == 8 * 192  # 0.99 s/token: the fastest
    assert sorted(sizing.measured) == [p * 192 for p in SWEEP_PAIRS]
    assert sizing.tokens_per_second == sizing.measured[8 * 192] == pytest.approx(1 / 0.99e-5)
    assert "fastest of 7 sizes" in sizing.reason
    assert {length for _, length in model.shapes} == {192}


def test_near_ties_go_to_the_larger_batch() -> None:
    assert fastest({192: 100.0, 384: 120.0, 768: 119.0, 1536: 117.9}) == 1536  # 1.75 % behind the best: tied
    assert fastest({192: 100.0, 384: 120.0, 768: 119.0, 1536: 117.5}) == 768  # 2.1 % behind: not tied
    assert fastest({192: 100.0, 384: 120.0, 768: 117.7}) == 768
    assert fastest({192: 100.0}) == 192


def test_a_gpu_like_curve_takes_the_biggest_batch_the_limits_allow() -> None:
    model = TimedModel({p: 1e-5 / p for p in SWEEP_PAIRS})
    assert sized(model).batch_tokens == 64 * 192
    limited = sized(TimedModel({p: 1e-5 / p for p in SWEEP_PAIRS}), max_batch_tokens=4000, max_batch_pairs=64)
    assert limited.batch_tokens == 16 * 192 and max(limited.measured) == 16 * 192
    assert sized(TimedModel({p: 1e-5 / p for p in SWEEP_PAIRS}), max_batch_pairs=4).batch_tokens == 4 * 192


def test_short_models_are_swept_at_their_length() -> None:
    model = TimedModel({p: s * 1e-5 for p, s in U_SHAPE.items()})
    sizing = sized(model, max_length=64)
    assert sizing.batch_tokens == 8 * 64 and {length for _, length in model.shapes} == {64}
    assert sweep_sizes(512, max_batch_tokens=100, max_batch_pairs=64) == [1]  # one pair always runs


def test_a_slow_model_stops_the_sweep_at_its_time_budget() -> None:
    # A pair of 192 tokens takes 1.92 s. One pair at a time: a warm-up run and 8 timed ones,
    # 17.3 s, under the budget of 20 s; two at a time: 1 + 4 runs of 3.84 s, 36.5 s in all. The
    # budget is spent: the larger sizes never run.
    model = TimedModel(dict.fromkeys(SWEEP_PAIRS, 0.01))
    sizing = sized(model, seconds=20.0)
    assert sorted(sizing.measured) == [192, 384]
    assert max(pairs for pairs, _ in model.shapes) == 2 and len(model.shapes) == 1 + 8 + 1 + 4


def test_a_pinned_size_is_timed_only_for_the_speed_estimate() -> None:
    model = TimedModel(lambda pairs: 2e-5)
    sizing = sized(model, pinned=1000)
    assert sizing.batch_tokens == 1000 and sizing.reason == "pinned by RERANK_BATCH_TOKENS"
    assert {pairs for pairs, _ in model.shapes} == {5}  # 1000 // 192 pairs, run twice: warm, timed
    assert len(model.shapes) == 2 and sizing.tokens_per_second == pytest.approx(1 / 2e-5)


def test_every_stream_is_busy_while_a_size_is_timed() -> None:
    import threading

    together = threading.Barrier(2, timeout=5)

    def two_at_once(batch: Batch) -> np.ndarray:
        together.wait()  # breaks (BrokenBarrierError) unless another run is in the model too
        return np.zeros(len(batch.input_ids))

    options = {"token": 5, "max_length": 64, "max_batch_tokens": 10_000, "max_batch_pairs": 4}
    sizing = size_batches(two_at_once, streams=2, **options)  # type: ignore[arg-type]
    assert sorted(sizing.measured) == [64, 128, 256]
    # The model's speed is both streams'; one micro-batch runs at one stream's share of it.
    assert sizing.tokens_per_second == pytest.approx(sizing.measured[sizing.batch_tokens] / 2)
    assert "2 at once" in sizing.reason
