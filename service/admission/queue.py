"""Time-budgeted admission: what a request costs, the queue's state as admission reads it, and the
one refusal rule.

Before a request is queued (before it is even tokenized, from an estimate of its size) the
batcher estimates how long it would wait under the fair schedule: every other request delays it
by at most the smaller of its own remaining work and this request's work. That is exact if no
other request arrives meanwhile; under sustained overload later arrivals share the model with it
too, and a large request's wait runs past the estimate (docs/performance.md#overload). Above
``max_queue_seconds`` the request is refused at once (:class:`~rerank.service.errors.QueueFull`,
HTTP 429) with a retry delay derived from the estimate. The decision is one pure function
(:func:`queue_time_refusal`) of an immutable :class:`QueueState`, so that the batcher on the
event loop and the edge's check before a body is read decide alike (the check counts the places
it holds for bodies on their way as queued work: :mod:`~rerank.service.admission.holds`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rerank.service.errors import QueueFull

PADDING_ALLOWANCE = 1.1
"""A request's cost is its tokens, plus this share for the padding it will meet in batches."""
MISESTIMATE = 2.0
"""A request admitted on its estimated cost is queued without a second check after tokenizing,
unless its exact cost is more than this many times the estimate: refusing work already admitted
(its body read, its text tokenized) would waste it, and the queue's bound on waits is kept within
one estimate's error. The estimate, from characters at a learned rate, is usually within ~20 %;
text whose tokens are far denser (another script) meets the queue's check again at its real cost."""


def padded_cost(tokens: float) -> float:
    """What a request of ``tokens`` tokens (over all its pairs) will cost the model, in padded tokens."""
    return PADDING_ALLOWANCE * tokens


def shared_head_tokens(tokens: float, pairs: int, head: float, budget: float) -> float:
    """The tokens a graph that reads a micro-batch's common head once runs for ``pairs`` rows
    of ``tokens`` in all that begin with the same ``head`` tokens (one request's prompt: a
    decoder's template and query), cut into micro-batches of at most ``budget`` tokens: each
    micro-batch runs the head once and every row's tail."""
    if head <= 0 or pairs <= 1:
        return tokens
    tails = max(0.0, tokens - pairs * head)
    batches = min(pairs, max(1, math.ceil(tails / max(1.0, budget - head))))
    return tails + batches * head


@dataclass(frozen=True)
class QueueState:
    """What time-budgeted admission reads: immutable, so any thread may read a published one."""

    costs: tuple[float, ...] = ()
    """Padded tokens still to run of each queued request and each admitted one still tokenizing."""
    running_until: float = 0.0
    """When a micro-batch could start: when the first running one should end, every stream
    being busy (monotonic; 0: a stream is free)."""
    tokens_per_second: float = 2000.0
    max_queue_seconds: float = 5.0

    def estimated_wait(self, cost: float, now: float | None = None) -> float:
        """Seconds a request of ``cost`` would wait if admitted now: the batch in flight, plus
        at most the smaller of its own cost and this one's for every request ahead of it."""
        now = time.monotonic() if now is None else now
        shared = sum(min(c, cost) for c in self.costs)
        return max(0.0, self.running_until - now) + shared / self.tokens_per_second


def queue_time_refusal(state: QueueState, cost: float, now: float | None = None) -> QueueFull | None:
    """The refusal a request of ``cost`` padded tokens gets now (its message and retry delay),
    or None if it may wait. The one rule for the batcher's admission
    (:meth:`~rerank.service.core.batching.DynamicBatcher.admit`) and for the edge's check before a
    body is read."""
    wait = state.estimated_wait(cost, now)
    limit = state.max_queue_seconds
    if wait <= limit:
        return None
    return QueueFull(
        f"the server is busy: this request would wait about {wait:.1f} s, more than the "
        f"{limit:g} s it queues requests for; retry later",
        retry_after=retry_after(wait - limit),
    )


def retry_after(seconds: float) -> int:
    """A retry delay in whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
