"""Time-budgeted admission: the queue's state as admission reads it, the one refusal rule, and
the places the early check holds.

Before a request is queued (before it is even tokenized, from an estimate of its size) the
batcher estimates how long it would wait under the fair schedule: every other request delays it
by at most the smaller of its own remaining work and this request's work. Above
``max_queue_seconds`` the request is refused at once (:class:`~rerank.service.errors.QueueFull`,
HTTP 429) with a retry delay derived from the estimate. The decision is one pure function
(:func:`queue_time_refusal`) of an immutable :class:`QueueState`, so that the batcher on the
event loop and the early check on another thread decide alike.

:class:`Holds` are the places the early check keeps for requests it admitted before their body
was read: every admission counts the holds of others as queued work, so a burst of large bodies
checked together is admitted as far as there is room and refused before its bodies are read
beyond it.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rerank.service.core.tokenization import Pair
from rerank.service.errors import QueueFull

PADDING_ALLOWANCE = 1.1
"""A request's cost is its tokens, plus this share for the padding it will meet in batches."""
HOLD_SECONDS = 1.0
"""How long the early check's place for a request whose body is still on its way is kept (the
body's upload, Envoy's transcoding and the call to the service take milliseconds on a local
network; a hold that is never used, say for a body that turns out invalid, blocks no longer)."""
MISESTIMATE = 2.0
"""A request admitted on its estimated cost is queued without a second check after tokenizing,
unless its exact cost is more than this many times the estimate: refusing work already admitted
(its body read, its text tokenized) would waste it, and the queue's bound on waits is kept within
one estimate's error. The estimate, from characters at a learned rate, is usually within ~20 %;
text whose tokens are far denser (another script) meets the queue's check again at its real cost."""
LAPSED_MEMORY = 60.0
"""How long a lapsed hold's token is remembered, so that its body, should it still come, is
counted as late (``rerank_early_holds_total{outcome="late"}``) rather than as never held."""


def cost_of(pairs: Sequence[Pair]) -> float:
    """What ``pairs`` will cost the model, in padded tokens."""
    return PADDING_ALLOWANCE * sum(len(p.ids) for p in pairs)


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


class Holds:
    """Places the early check keeps for requests it admitted before their body was read, by
    token, with the cost each has on each model (the check cannot know which model a body
    names, so it holds a place on every model that has room). Shared by a server's batchers:
    the first model a token reaches takes it, which frees it on the others. Thread-safe: the
    early check runs on the metrics port's thread, the batchers on the event loop."""

    def __init__(
        self,
        seconds: float = HOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        record: Callable[[str], None] | None = None,
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._record = record
        """Called with each hold's outcomes (thread-safe: Prometheus counters): ``placed``, then
        ``taken`` (its body came in time) or ``lapsed`` (it did not), and ``late`` for a lapsed
        hold whose body came after all (refused if the queue has no room for it then)."""
        self._lock = threading.Lock()
        self._held: dict[str, tuple[float, dict[str, float]]] = {}
        """Token -> (when it lapses, cost by model)."""
        self._lapsed: dict[str, float] = {}
        """Token of a lapsed hold -> when it is forgotten (:data:`LAPSED_MEMORY`)."""

    def costs(self, model: str) -> list[float]:
        """The costs held on ``model`` now."""
        with self._lock:
            self._expire()
            return [costs[model] for _, costs in self._held.values() if model in costs]

    def place(self, costs: dict[str, float]) -> str:
        """Holds ``costs`` (by model) for :attr:`seconds`; returns the token that takes them."""
        token = secrets.token_hex(12)
        with self._lock:
            self._expire()
            self._held[token] = (self._clock() + self.seconds, costs)
        self._note("placed")
        return token

    def peek(self, token: str) -> dict[str, float] | None:
        """The costs ``token`` holds, or None if it holds none (never placed, taken, lapsed)."""
        with self._lock:
            self._expire()
            held = self._held.get(token)
        return held[1] if held is not None else None

    def take(self, token: str) -> None:
        """Removes the hold ``token`` on every model: its body came."""
        with self._lock:
            self._expire()
            taken = self._held.pop(token, None) is not None
            late = not taken and self._lapsed.pop(token, None) is not None
        if taken or late:
            self._note("taken" if taken else "late")

    def _expire(self) -> None:
        now = self._clock()
        lapsed = [t for t, (until, _) in self._held.items() if until <= now]
        for token in lapsed:
            del self._held[token]
            self._lapsed[token] = now + LAPSED_MEMORY
        for token in [t for t, until in self._lapsed.items() if until <= now]:
            del self._lapsed[token]
        for _ in lapsed:
            self._note("lapsed")

    def _note(self, outcome: str) -> None:
        if self._record is not None:
            self._record(outcome)


def queue_time_refusal(state: QueueState, cost: float, now: float | None = None) -> QueueFull | None:
    """The refusal a request of ``cost`` padded tokens gets now (its message and retry delay),
    or None if it may wait. The one rule for the batcher's admission
    (:meth:`~rerank.service.core.batching.DynamicBatcher.admit`) and for the early check before a
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
