"""The start-up sweep that picks a model's micro-batch size, on stand-in models whose speed at
each size is known (a fake clock advanced by each run). The batcher cutting batches at that size:
test_batching.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rerank.service.backends.base import Batch
from rerank.service.core.batch_sizing import SWEEP_PAIRS, fastest, size_batches, sweep_sizes
from rerank.service.core.batching import MIN_BATCH_TOKENS


class TimedModel:
    """Takes ``per_token[pairs]`` seconds a token at a batch of ``pairs`` (on a fake clock); with
    ``shares_head``, a graph that runs the rows' common head once."""

    def __init__(self, per_token: dict[int, float] | Callable[[int], float], shares_head: bool = False) -> None:
        self.per_token = per_token.__getitem__ if isinstance(per_token, dict) else per_token
        self.shares_head = shares_head
        self.now = 0.0
        self.shapes: list[tuple[int, int]] = []
        self.heads: set[int] = set()

    def clock(self) -> float:
        return self.now

    def __call__(self, batch: Batch) -> np.ndarray:
        pairs, length = batch.input_ids.shape
        self.shapes.append((pairs, length))
        self.heads.add(batch.shared)
        self.now += self.per_token(pairs) * batch.work(self.shares_head)
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


def test_one_reading_far_off_is_outvoted() -> None:
    # U_SHAPE's curve, but 32 pairs' second timed round reads 6x too fast (a VM's clock jump):
    # the best of two rounds would choose it, at six times its speed.
    calls: dict[int, int] = {}

    def per_token(pairs: int) -> float:
        calls[pairs] = calls.get(pairs, 0) + 1
        glitch = 1 / 6 if (pairs, calls[pairs]) == (32, 3) else 1.0  # untimed, round 1, round 2
        return U_SHAPE[pairs] * 1e-5 * glitch

    sizing = sized(TimedModel(per_token))
    assert sizing.batch_tokens == 8 * 192
    assert sizing.measured[32 * 192] == pytest.approx(1 / 1.2e-5)
    assert calls[32] == 4 and calls[8] == 3  # a third round for the size whose rounds disagree only


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


def test_a_slow_model_times_each_size_once_and_stops_at_its_time_budget() -> None:
    # A pair of 192 tokens takes 1.92 s: over SIZE_SECONDS, so each size is timed on one run
    # after its untimed first. One pair: 3.84 s; two: 7.68 s more (11.5 s); four: 15.4 s more
    # (26.9 s). The budget of 20 s is spent: eight pairs never run.
    model = TimedModel(dict.fromkeys(SWEEP_PAIRS, 0.01))
    sizing = sized(model, seconds=20.0)
    assert sorted(sizing.measured) == [192, 384, 768]
    assert model.shapes == [(1, 192)] * 2 + [(2, 192)] * 2 + [(4, 192)] * 2


def test_sizes_over_the_batchers_time_limit_are_not_timed() -> None:
    # 1,000 tokens a second: a quarter of a second is 250 tokens, under the batcher's floor of
    # MIN_BATCH_TOKENS (512), which it cuts at however slow the model: 1 and 2 pairs of 192 fit.
    slow = TimedModel(lambda pairs: 1e-3)
    sizing = sized(slow, batch_seconds=0.25)
    assert sorted(sizing.measured) == [192, 384] and MIN_BATCH_TOKENS == 512
    assert max(pairs for pairs, _ in slow.shapes) == 2
    # Still as fast at the largest size it may run: cut at the floor, not at the last size timed
    # (a decoder's W1 pairs of ~270 tokens then run two to a batch, their head read once).
    assert sizing.batch_tokens == MIN_BATCH_TOKENS and "over the time limit" in sizing.reason
    assert sized(TimedModel({1: 0.9e-3, 2: 1e-3}), batch_seconds=0.25).batch_tokens == 192  # slower at two
    # 100,000 tokens a second: 25,000 tokens in a quarter of a second, so up to 64 pairs of 192.
    assert sorted(sized(TimedModel(lambda pairs: 1e-5), batch_seconds=0.25).measured) == [p * 192 for p in SWEEP_PAIRS]
    # Two streams on the fake clock: 1,000 tokens a second in all, 500 each. A micro-batch runs
    # at one stream's speed: 0.8 s of it is 400 tokens, so the floor (512) decides again.
    model = TimedModel(lambda pairs: 1e-3)
    two = sized(model, streams=2, batch_seconds=0.8)
    assert two.measured[192] == pytest.approx(1000)
    assert sorted(two.measured) == [192, 384]


def test_a_graph_that_reads_the_shared_head_once_is_judged_by_the_pairs_it_serves() -> None:
    # Each token 3 % dearer at two pairs than at one (the 0.6B Qwen3 shape on Zen 5: 357 against
    # 345 tokens a second) and 1,000 tokens a second: timed on pairs with nothing in common, one
    # pair a micro-batch wins, and every pair of a request then runs the prompt's head again.
    curve = {1: 1e-3, 2: 1.03e-3}
    unshared = sized(TimedModel(curve), batch_seconds=0.25)
    assert unshared.batch_tokens == 192 and sorted(unshared.measured) == [192, 384]
    # Timed as the graph runs a request's pairs, their 64-token head once: two pairs run
    # 64 + 2 x 128 = 320 tokens for 384 of pairs, 1.17x the pairs a second at 3 % more a token.
    # Four (576 tokens) are over the time limit's floor (512): cut there, 512 tokens.
    model = TimedModel(curve, shares_head=True)
    shared = sized(model, shares_head=True, batch_seconds=0.25)
    assert model.heads == {64} and sorted(shared.measured) == [192, 320]
    assert shared.measured[320] == pytest.approx(1 / 1.03e-3)  # tokens run, the head once
    assert shared.tokens_per_second == pytest.approx(1 / 1.03e-3)
    assert shared.batch_tokens == MIN_BATCH_TOKENS and "a 64-token head shared" in shared.reason
    # A graph whose batches really are dearer a pair still gets one pair a micro-batch.
    assert (
        sized(TimedModel({1: 1e-3, 2: 1.3e-3}, shares_head=True), shares_head=True, batch_seconds=0.25).batch_tokens
        == 192
    )
    # The head is at most a third of a short model's pairs.
    short = TimedModel(dict.fromkeys(SWEEP_PAIRS, 1e-5), shares_head=True)
    sized(short, max_length=60, shares_head=True)
    assert short.heads == {20}


def test_a_size_the_first_round_left_out_stays_out_when_the_model_speeds_up() -> None:
    # 1,000 tokens a second through the first round (a machine busy at start-up): four pairs
    # (768 tokens) are over the time limit's floor and not run. Then 100,000 a second: the time
    # limit would allow four pairs now, but a size is timed only after its untimed first run.
    calls: list[int] = []

    def per_token(pairs: int) -> float:
        calls.append(pairs)
        return 1e-3 if len(calls) <= 5 else 1e-5

    sizing = sized(TimedModel(per_token), batch_seconds=0.25)
    assert sorted(sizing.measured) == [192, 384] and max(calls) == 2
    assert "over the time limit when reached" in sizing.reason


def test_a_model_still_speeding_up_when_the_time_runs_out_is_cut_at_the_time_limit() -> None:
    # About 1,000 tokens a second on pairs of 64 tokens, a little faster at two pairs. The sweep's
    # second is spent on one and two pairs (0.51 s, then 0.51 s more); four and eight would be
    # allowed (the floor of 512 tokens, over a quarter second's 250) but are not timed.
    # Micro-batches are cut at the time limit, 512 tokens.
    model = TimedModel({1: 1e-3, 2: 0.95e-3, 4: 0.9e-3, 8: 0.9e-3})
    sizing = sized(model, max_length=64, batch_seconds=0.25, seconds=1.0)
    assert sorted(sizing.measured) == [64, 128]
    assert sizing.batch_tokens == MIN_BATCH_TOKENS and "ran out" in sizing.reason
    # Where the curve had already turned, the fastest size timed stands.
    turned = sized(TimedModel({1: 0.9e-3, 2: 1e-3}), max_length=64, batch_seconds=0.25, seconds=1.0)
    assert turned.batch_tokens == 64 and "ran out" not in turned.reason
    # A model timed at every size it may run at gets the fastest of them.
    timed = sized(TimedModel({1: 1e-3, 2: 0.95e-3, 4: 0.9e-3, 8: 0.92e-3}), max_length=64, batch_seconds=0.25)
    assert timed.batch_tokens == 256 and sorted(timed.measured) == [64, 128, 256, 512]


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
