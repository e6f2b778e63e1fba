"""How many padded tokens a micro-batch should hold on this machine, found by timing.

Bigger is not faster on a CPU. A transformer layer's activations grow with the tokens in the
batch (``tokens x intermediate`` floats for the feed-forward alone); once they outgrow the
caches, the element-wise work between the matrix products (GELU, LayerNorm, residual adds,
softmax) runs from memory, and a token costs more. Too small a batch pays per-call overhead
instead. A GPU wants the opposite: the bigger the better, up to its memory (measured curves:
docs/performance.md, "Batching"). Where the curve bends depends on the model, the runtime and the
machine, so the server measures it at start-up (:func:`size_batches`) instead of guessing: a
short sweep of batch sizes on one typical length, and the batcher then cuts micro-batches at
the fastest size (:class:`~rerank.service.core.batching.DynamicBatcher`), within its other limits.
The sweep skips the sizes those limits rule out: above ``batch_seconds`` of work (or
:data:`~rerank.service.core.batching.MIN_BATCH_TOKENS`) the batcher never cuts, so a large
model is timed on the sizes it can use instead of on one. A graph that reads a request's shared
head once (a decoder reranker's prompt) is timed on pairs that share one (:data:`SWEEP_HEAD`)
and judged by the pairs it serves, not the tokens it runs: a larger batch reads the head fewer
times per pair, which a sweep of unshared pairs cannot see.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rerank.service.backends.base import Batch, timed_runs, work_tokens
from rerank.service.core.batching import MIN_BATCH_TOKENS

SWEEP_PAIRS = (1, 2, 4, 8, 16, 32, 64)
"""Batch sizes timed, smallest first."""
SWEEP_LENGTH = 192
"""Tokens per pair in the sweep (capped at the model's ``max_length``): about the pairs of
~150-word documents, what rerankers are mostly sent."""
SWEEP_HEAD = 64
"""Tokens the sweep's pairs share at their start for a graph that reads the shared head once
(capped at a third of the pair): about a Qwen3-Reranker prompt's system prefix, default
instruction and a short query (W1's head: 70 tokens)."""
SWEEP_WORK_PAIRS = 8
"""Pairs each size scores per round (a size above it: one batch), so that the small sizes are
timed on as much work as the middle ones."""
SIZE_SECONDS = 0.5
"""A size is timed on fewer runs than :data:`SWEEP_WORK_PAIRS` asks where its first (untimed)
run says they would take longer than this (at least one): a large model's runs are long enough
to time alone."""
SWEEP_SECONDS = 3.0
"""The sweep stops at the first size that would start after this long."""
ROUNDS = 2
"""Timed rounds over the sizes (after one untimed run of each shape); the best counts, unless
they disagree (:data:`DISAGREE`)."""
DISAGREE = 1.5
"""A size whose rounds' speeds differ by more than this factor is timed a third time and takes
the median: one reading can be far off either way on a VM (a stalled vCPU, a clock's jump: a
1,024-token batch once timed at 6.6x its neighbours), and the size chosen here is kept for the
replica's life."""
TIE = 0.02
"""Sizes within this share of the fastest count as tied: the largest of them is chosen, since
each micro-batch also costs the scheduler a little that the sweep does not see."""


@dataclass(frozen=True)
class BatchSizing:
    """The micro-batch size a model is served with, and how it was found (``/v1/models``)."""

    batch_tokens: int
    """Tokens the batcher cuts a micro-batch at, padded, a shared head counted once (still
    within ``max_batch_tokens`` and ``max_batch_pairs``)."""
    tokens_per_second: float
    """One stream's speed at that size (the model's with every stream busy, shared): the
    batcher's first estimate of how fast a micro-batch runs."""
    reason: str
    measured: dict[int, float]
    """Tokens per micro-batch -> tokens per second the model runs (every stream busy), for every
    size timed; both padded, a shared head counted once."""


def sweep_sizes(length: int, max_batch_tokens: int, max_batch_pairs: int, head: int = 0) -> list[int]:
    """The pairs per micro-batch the sweep times: :data:`SWEEP_PAIRS` within the limits (at least
    1), pairs of ``length`` tokens whose first ``head`` count once."""
    sizes = [p for p in SWEEP_PAIRS if p <= max_batch_pairs and work_tokens(p, length, head) <= max_batch_tokens]
    return sizes or [1]


def fastest(measured: dict[int, float]) -> int:
    """The largest batch (in tokens) whose speed (here: pairs' tokens served a second) is within
    :data:`TIE` of the best one's."""
    best = max(measured.values())
    return max(tokens for tokens, rate in measured.items() if rate >= best * (1 - TIE))


def size_batches(
    run: Callable[[Batch], np.ndarray],
    *,
    token: int,
    max_length: int,
    max_batch_tokens: int,
    max_batch_pairs: int,
    pinned: int | None = None,
    streams: int = 1,
    shares_head: bool = False,
    batch_seconds: float = math.inf,
    seconds: float = SWEEP_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> BatchSizing:
    """Times ``run`` (a backend's, with ``streams`` streams: each size runs on all of them at
    once, as the batcher keeps them) on micro-batches of :func:`sweep_sizes` pairs of
    :data:`SWEEP_LENGTH` tokens each (``token`` repeated: speed does not depend on it; for a
    graph that ``shares_head``, their first :data:`SWEEP_HEAD` in common) and returns the
    :func:`fastest` by pairs served. Sizes above what the batcher's time limit allows at the
    speed timed so far (``batch_seconds`` of one stream's work, at least
    :data:`MIN_BATCH_TOKENS`) are not timed. With ``pinned`` (the ``RERANK_BATCH_TOKENS``
    setting) only that size is timed, for the speed estimate."""
    length = min(SWEEP_LENGTH, max_length)
    head = max(1, min(SWEEP_HEAD, length // 3)) if shares_head else 0

    def work(pairs: int) -> int:
        """Tokens the graph runs for a batch of ``pairs``: the unit micro-batches are cut in."""
        return work_tokens(pairs, length, head)

    def batch(pairs: int) -> Batch:
        return Batch.filled(pairs, length, token, shared=max(1, head))

    def usable(pairs: int) -> bool:
        fastest_yet = max((max(seen) for seen in readings.values()), default=math.inf) / streams
        return work(pairs) <= max(MIN_BATCH_TOKENS, fastest_yet * batch_seconds)

    def rate(pairs: int, runs: int) -> float:
        """Tokens run a second, every stream busy."""
        elapsed = timed_runs(run, batch(pairs), streams=streams, runs=runs, clock=clock)
        return streams * runs * work(pairs) / max(elapsed, 1e-9)

    if pinned is not None:
        pairs = max(1, min(max_batch_pairs, (pinned - head) // (length - head)))
        timed_runs(run, batch(pairs), streams=streams)  # a new shape's first runs build kernels
        speed = rate(pairs, runs=1)
        return BatchSizing(pinned, speed / streams, "pinned by RERANK_BATCH_TOKENS", {work(pairs): speed})
    sizes = sweep_sizes(length, max_batch_tokens, max_batch_pairs, head)
    readings: dict[int, list[float]] = {}  # pairs -> each timed round's speed
    runs: dict[int, int] = {}
    began = clock()
    for round_ in range(ROUNDS):
        for pairs in sizes if round_ == 0 else list(runs):  # later rounds: the sizes the first one ran
            if readings and (clock() - began > seconds or not usable(pairs)):
                break
            if round_ == 0:  # (untimed) builds its kernels, and says how long a run takes
                first = timed_runs(run, batch(pairs), streams=streams, clock=clock)
                runs[pairs] = max(1, min(SWEEP_WORK_PAIRS // pairs, int(SIZE_SECONDS / max(first, 1e-9))))
            readings.setdefault(pairs, []).append(rate(pairs, runs=runs[pairs]))
    best: dict[int, float] = {}  # work tokens -> tokens run a second
    served: dict[int, float] = {}  # work tokens -> pairs' tokens served a second (each pair's head counted)
    for pairs, seen in readings.items():
        if len(seen) > 1 and max(seen) > DISAGREE * min(seen):
            seen.append(rate(pairs, runs=runs[pairs]))
            best[work(pairs)] = float(np.median(seen))
        else:
            best[work(pairs)] = max(seen)
        served[work(pairs)] = best[work(pairs)] * pairs * length / work(pairs)
    chosen = fastest(served)
    speed = best[chosen] / streams
    reason = f"fastest of {len(best)} sizes timed at start-up ({length}-token pairs"
    reason += f", a {head}-token head shared" if head else ""
    reason += f", {streams} at once)" if streams > 1 else ")"
    untimed = [work(pairs) for pairs in sizes if work(pairs) not in best]
    if untimed and chosen == max(best):
        # A model still speeding up at the largest size timed (the sweep's time ran out, or the
        # next size is over the time limit): one this slow spends its time in the matrix
        # products, where a larger batch reuses each weight more (and a decoder's shared head
        # is read once for more rows), so it is cut where the batcher's time limit cuts (its W3
        # figures: docs/performance.md, Qwen3-Reranker on Zen 4).
        limit = max(MIN_BATCH_TOKENS, speed * batch_seconds)
        chosen = max(chosen, max_batch_tokens if limit >= max_batch_tokens else int(limit))
        why = f"the sweep's {seconds:g} s ran out" if clock() - began > seconds else "over the time limit when reached"
        reason += f"; larger sizes untimed ({why}): the time limit's {chosen}"
    return BatchSizing(min(chosen, max_batch_tokens), speed, reason, best)
