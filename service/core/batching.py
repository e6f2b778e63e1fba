"""Dynamic batching with fair scheduling and time-budgeted admission.

Each model has one :class:`DynamicBatcher`. A request's pairs wait in the queue sorted by
length, shortest first. The event loop composes micro-batches; the model's worker thread runs
them, one at a time:

* **Fair**: a micro-batch is filled round-robin across API keys, and within a key across its
  requests, each getting an equal share of the batch; what a share leaves unused goes to whoever
  still has pairs. So a one-document request joins the next micro-batch even behind requests of
  thousands of pairs, and one key cannot take every slot.
* **Batches of the fastest size**: a micro-batch is cut at the size the model ran fastest at
  on this machine (:mod:`rerank.service.core.batch_sizing`; on a CPU that is a few thousand tokens, not
  the most that fit), at ``batch_seconds`` of work by the model's measured throughput (padded
  tokens per second), and at ``max_batch_tokens`` and ``max_batch_pairs``. The time limit
  bounds how long a new request waits for the batch in flight.
* **Time-budgeted admission**: before a request is queued (before it is even tokenized, from an
  estimate of its size) the batcher estimates how long it would wait under the fair schedule:
  every other request delays it by at most the smaller of its own remaining work and this
  request's work. Above ``max_queue_seconds`` the request is refused at once
  (:class:`~rerank.service.errors.QueueFull`, HTTP 429) with a retry delay derived from the estimate.
  ``max_queue_pairs`` caps the queue's memory as well. An admitted request is queued on that
  admission once tokenized, not checked again (unless its exact cost is far over the estimate:
  :data:`MISESTIMATE`): work once begun is not thrown away. The decision is one pure function
  (:func:`queue_time_refusal`) of a :class:`QueueState`; the batcher publishes a fresh one at
  every queue change (:attr:`DynamicBatcher.published`), which another thread may read (the
  early admission check of :mod:`rerank.service.telemetry.metrics_endpoint`).
* **Holds**: a request the early check admits before its body is read holds its place
  (:class:`Holds`) until it reaches :meth:`DynamicBatcher.admit` with the hold's token, which
  then admits it without a second look, or until :data:`HOLD_SECONDS` pass. Every admission
  counts the holds of others as queued work, so a burst of large bodies checked together is
  admitted as far as there is room and refused before its bodies are read beyond it, not
  admitted early in full and refused again after parsing.
* **Cancellation**: a request whose client went away has its waiting pairs dropped.
* **Failure isolation**: a micro-batch that fails is run again pair by pair, so one bad pair
  fails its own request only.
* **Pipelined**: the next micro-batch is composed while the current one runs (and composed
  again when the queue changes meanwhile, so a request arriving now still joins it), and the
  worker starts it the moment the current one ends, without waiting for the event loop: a
  loop busy parsing or answering requests does not leave the model idle between batches.
* The event loop never runs inference or padding: both happen on the worker thread.
* **Reporting**: the scheduler records what it does (:class:`~rerank.service.core.metrics.ModelMetrics`:
  batch sizes and tokens, inference and queue times, the queue's gauges, rejections by reason)
  and each request's ``rerank.queue`` and ``rerank.inference`` spans
  (:mod:`rerank.service.telemetry.tracing`) under the span it was queued from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from rerank.service.backends.base import Batch
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.tokenization import Pair
from rerank.service.errors import QueueFull, RerankError, TooManyDocuments
from rerank.service.telemetry import tracing

log = logging.getLogger(__name__)

MIN_BATCH_TOKENS = 512
"""The smallest token budget a micro-batch gets, however slow the model."""
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


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching settings (shown by ListModels)."""

    max_batch_tokens: int = 8192
    """Padded tokens per micro-batch (``longest sequence * pairs``), like TEI's max-batch-tokens.
    A single pair longer than this still runs, alone."""
    max_batch_pairs: int = 64
    max_queue_pairs: int = 8192
    """Pairs waiting across all requests before new requests are refused."""
    max_queue_seconds: float = 5.0
    """Longest estimated wait a new request is admitted with."""
    batch_seconds: float = 0.25
    """Target duration of one micro-batch."""
    batch_tokens: int | None = None
    """Padded tokens a micro-batch is cut at for speed; None: the fastest size timed at start-up
    (:func:`~rerank.service.core.batch_sizing.size_batches`)."""


class Throughput:
    """The model's measured speed in padded tokens per second: an exponentially weighted
    average over micro-batches, so it follows the machine's load."""

    def __init__(self, tokens_per_second: float = 2000.0, weight: float = 0.2, *, measured: bool = False) -> None:
        self.tokens_per_second = tokens_per_second
        self.weight = weight
        self.measured = measured
        """Whether ``tokens_per_second`` was measured (else the first micro-batch replaces it)."""

    def record(self, tokens: int, seconds: float, full: int) -> None:
        """One micro-batch of ``tokens`` padded tokens took ``seconds``; ``full`` is the size of
        a full batch. A small batch weighs less: its speed is mostly per-call overhead, and
        letting it drag the average down would shrink the next batches in turn."""
        if seconds <= 0 or tokens <= 0:
            return
        rate = tokens / seconds
        if not self.measured:
            self.tokens_per_second, self.measured = rate, True
        else:
            weight = self.weight * min(1.0, tokens / max(1, full))
            self.tokens_per_second += weight * (rate - self.tokens_per_second)

    def seconds(self, tokens: float) -> float:
        return tokens / self.tokens_per_second


@dataclass(eq=False)
class _Request:
    """One request's pairs in the queue, and where its scores go."""

    pairs: list[Pair]
    order: list[int]
    """Pair indices sorted by length: the order in which they are taken."""
    future: asyncio.Future[np.ndarray]
    client: str
    request_id: str
    cost: float
    """Padded tokens it will cost (see :data:`PADDING_ALLOWANCE`)."""
    taken: int = 0
    done: int = 0
    cancelled: bool = False
    enqueued_at: float = field(default_factory=time.monotonic)
    enqueued_ns: int = field(default_factory=time.time_ns)
    """When it was queued, on the wall clock (spans)."""
    first_batch_at: float | None = None
    """When its first pair went to the model (None: still waiting)."""
    trace: tracing.Parent = None
    """The span it was queued from, for its queue and inference spans."""
    scores: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.scores = np.zeros(len(self.pairs))

    @property
    def waiting(self) -> int:
        return len(self.pairs) - self.taken

    @property
    def remaining_cost(self) -> float:
        return self.cost * self.waiting / len(self.pairs)

    def next_length(self) -> int:
        return len(self.pairs[self.order[self.taken]].ids)


@dataclass(eq=False)
class _Job:
    """One micro-batch: composed on the event loop, run on the model's worker thread."""

    first_client: str
    """The client it started with (the next batch starts with the one after)."""
    queues: list[collections.deque[_Request]]
    """Every client's requests when it was composed (each starts with its next request next time)."""
    taken: list[tuple[_Request, int]] = field(default_factory=list)
    """(request, pair index) in batch order."""
    counts: dict[_Request, int] = field(default_factory=dict)
    """Pairs taken from each request: the next ones in its order."""
    started: float = 0.0
    started_ns: int = 0
    until: float = 0.0
    """When it should end (monotonic), by its estimated cost."""
    seconds: float = 0.0
    ended_ns: int = 0
    outcome: tuple[np.ndarray, Batch] | list[float | Exception] | None = None
    """(logits, padded batch), or each pair's result alone after the batch failed."""

    @property
    def pairs(self) -> list[Pair]:
        return [request.pairs[index] for request, index in self.taken]


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
    or None if it may wait. The one rule for the batcher's :meth:`~DynamicBatcher.admit` and for
    the early check before a body is read."""
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


def pad(pairs: list[Pair], pad_id: int, with_types: bool) -> Batch:
    """Right-pads ``pairs`` to the longest one."""
    longest = max(len(p.ids) for p in pairs)
    ids = np.full((len(pairs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(pairs), longest), dtype=np.int64)
    types = np.zeros((len(pairs), longest), dtype=np.int64) if with_types else None
    for row, pair in enumerate(pairs):
        n = len(pair.ids)
        ids[row, :n] = pair.ids
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = pair.type_ids
    return Batch(ids, mask, types)


def _split(total: int, parts: int) -> list[int]:
    """``total`` slots shared by ``parts`` as evenly as integers allow, the first ones getting
    the remainder (the rotation moves who is first)."""
    if parts == 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def cost_of(pairs: list[Pair]) -> float:
    """What ``pairs`` will cost the model, in padded tokens."""
    return PADDING_ALLOWANCE * sum(len(p.ids) for p in pairs)


class DynamicBatcher:
    """Schedules and runs one model's pairs. Create it inside the running event loop."""

    def __init__(
        self,
        run: Callable[[Batch], np.ndarray],
        *,
        pad_id: int,
        with_types: bool,
        config: BatchingConfig,
        metrics: ModelMetrics,
        name: str = "model",
        throughput: Throughput | None = None,
        holds: Holds | None = None,
        batch_tokens: int | None = None,
        streams: int = 1,
    ) -> None:
        self._run = run
        self.name = name
        self.holds = holds or Holds()
        """The early check's places, this batcher's and its sibling models' (:class:`Holds`)."""
        self._pad_id = pad_id
        self._with_types = with_types
        self.config = config
        self.metrics = metrics
        self.throughput = throughput or Throughput()
        self.batch_tokens = batch_tokens or config.batch_tokens or config.max_batch_tokens
        """Padded tokens a micro-batch is cut at: the model's fastest size, timed at start-up
        (:mod:`rerank.service.core.batch_sizing`), or the ``batch_tokens`` setting; within ``max_batch_tokens``."""
        self._clients: collections.OrderedDict[str, collections.deque[_Request]] = collections.OrderedDict()
        """Requests with pairs still waiting, by client; the first client is served first next."""
        self._queued_pairs = 0
        self._reserved: dict[int, float] = {}
        """Costs admitted but not yet queued (the requests being tokenized)."""
        self._running_until = 0.0
        """When a stream frees up (monotonic; 0: one is free), by the running batches' estimated costs."""
        self.streams = streams
        """Micro-batches the model runs at once (the backend's streams), one per worker thread."""
        self._running: set[_Job] = set()
        """The micro-batches the workers run (committed)."""
        self._executor = ThreadPoolExecutor(max_workers=streams, thread_name_prefix=f"infer-{name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._slot: list[_Job] = []
        """The micro-batches the workers run next, in order (composed, not committed): one, or
        one per idle stream. Under the lock."""
        self._started: list[_Job] = []
        """Micro-batches the worker took from the slot that the loop has not committed. Under the lock."""
        self._drivers = 0
        """Workers running slots (or about to). Under the lock."""
        self._closed = False
        self._refusal: RerankError | None = None
        self.published = self.state()
        """The queue's state at its last change, for readers on other threads (replaced, never
        mutated). A stopping server's early check does not read it (it admits everything)."""

    @property
    def queued_pairs(self) -> int:
        return self._queued_pairs

    def start(self) -> None:
        """Binds the batcher to the running event loop (where its results are delivered)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------------- admission

    def state(self) -> QueueState:
        """The queue as admission sees it now (on the event loop's thread)."""
        costs = [r.remaining_cost for queue in self._clients.values() for r in queue]
        costs += self._reserved.values()
        return QueueState(tuple(costs), self._running_until, self._model_speed(), self.config.max_queue_seconds)

    def with_holds(self, state: QueueState) -> QueueState:
        """``state`` with the early check's held places counted as queued requests: what every
        admission decides on (this one's, or the early check's on :attr:`published`)."""
        return replace(state, costs=state.costs + tuple(self.holds.costs(self.name)))

    def estimated_wait(self, cost: float) -> float:
        """Seconds a request of ``cost`` would wait if admitted now (:meth:`QueueState.estimated_wait`)."""
        return self.state().estimated_wait(cost)

    def admit(self, cost: float, pairs: int, hold: str = "") -> int:
        """Checks that a request of ``cost`` padded tokens and ``pairs`` pairs may wait in the
        queue, and reserves its place until :meth:`score` (or :meth:`release`). Returns the
        reservation. Raises :class:`QueueFull` (with a retry delay) or :class:`TooManyDocuments`.
        ``hold``: the early check's token for this request (:class:`Holds`); while it is held the
        request was admitted by that check and is not timed again (the queue's size cap and a
        drain still apply)."""
        held = self.holds.peek(hold) if hold else None
        try:
            if self._refusal is not None:
                self.metrics.reject("draining")
                raise self._refusal
            limit = self.config.max_queue_pairs
            if pairs > limit:
                self.metrics.reject("request_too_large")
                raise TooManyDocuments(
                    f"this request needs {pairs} sequences, more than the queue holds ({limit}); "
                    "send fewer documents per request",
                    field="documents",
                    metadata={"limit": str(limit)},
                )
            if self._queued_pairs + pairs > limit:
                self.metrics.reject("queue_full")
                raise QueueFull(
                    f"the queue holds {self._queued_pairs} pairs and this request adds {pairs}; "
                    f"the limit is {limit}: retry later",
                    retry_after=retry_after(self._queued_cost() / self._model_speed()),
                )
            if held is None or self.name not in held:
                refusal = queue_time_refusal(self.with_holds(self.state()), cost)
                if refusal is not None:
                    self.metrics.reject("queue_time")
                    raise refusal
            reservation = id(object())
            self._reserved[reservation] = cost
            self._queue_changed()
            return reservation
        finally:
            # The request came: its hold goes, and only now, after a reservation is published,
            # so that the early check (on another thread) always sees its place in one form.
            if hold:
                self.holds.take(hold)

    def release(self, reservation: int) -> None:
        if self._reserved.pop(reservation, None) is not None:
            self._queue_changed()

    def _queued_cost(self) -> float:
        return sum(r.remaining_cost for queue in self._clients.values() for r in queue)

    def _queue_changed(self) -> None:
        """Updates the queue's gauges: pairs waiting, and the estimated seconds to work through
        them (and the admitted requests still tokenizing, and the batch in flight)."""
        in_flight = max(0.0, self._running_until - time.monotonic())
        waiting = self._queued_cost() + sum(self._reserved.values())
        self.metrics.set_queue(self._queued_pairs, in_flight + waiting / self._model_speed())
        self.published = self.state()

    # ------------------------------------------------------------------------- queueing

    def refuse(self, error: RerankError) -> None:
        """From now on new requests are refused with ``error``, and every request still waiting
        fails with it (the end of a drain: it gets an answer instead of a dropped call). A batch
        already on the model finishes; its requests' other pairs do not run."""
        self._refusal = error
        with self._lock:
            self._slot = []  # composed, not started: it does not run
        self._commit_started()
        for request in [r for queue in self._clients.values() for r in queue]:
            if not request.future.done():
                request.future.set_exception(error)
            self._drop(request)
        self._clients.clear()
        self._schedule()

    async def close(self) -> None:
        """Stops: the batch in flight finishes, nothing else runs."""
        self._closed = True
        with self._lock:
            self._slot = []
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def score(
        self, pairs: list[Pair], *, client: str = "", request_id: str = "", reservation: int | None = None
    ) -> np.ndarray:
        """Logits for ``pairs``, in their order. Admits the request first unless ``reservation``
        (from :meth:`admit`, on the request's estimated cost) says it was: then it is queued at
        once, unless it costs over :data:`MISESTIMATE` times its estimate or has more pairs than
        the queue holds. Raises :class:`QueueFull` or :class:`TooManyDocuments`."""
        if not pairs:
            if reservation is not None:
                self.release(reservation)
            return np.zeros(0)
        cost = cost_of(pairs)
        estimated = self._reserved.get(reservation, 0.0) if reservation is not None else 0.0
        if reservation is None or cost > MISESTIMATE * estimated or len(pairs) > self.config.max_queue_pairs:
            if reservation is not None:
                self.release(reservation)
            reservation = self.admit(cost, len(pairs))
        self.release(reservation)
        if self._refusal is not None:
            self.metrics.reject("draining")
            raise self._refusal
        self.start()
        # Shortest first: requests served round-robin then advance through similar lengths
        # together, so a micro-batch mixing them pads little.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
        request = _Request(pairs, order, asyncio.get_running_loop().create_future(), client, request_id, cost)
        request.trace = tracing.capture()
        self._clients.setdefault(client, collections.deque()).append(request)
        self._queued_pairs += len(pairs)
        self._schedule()
        try:
            return await request.future
        except asyncio.CancelledError:
            # The client went away: drop whatever of this request has not reached the model.
            if not request.cancelled:
                self._drop(request)
                self.metrics.cancelled_requests += 1
                self._schedule()
            raise

    def _drop(self, request: _Request) -> None:
        """Takes ``request``'s waiting pairs out of the queue (the caller then reschedules)."""
        self._commit_started()  # what the worker already took is not waiting any more
        if not request.cancelled:
            request.cancelled = True
            self._queued_pairs -= request.waiting

    # ------------------------------------------------------------------------- scheduling
    #
    # The event loop composes the next micro-batch (the slot; one for each idle stream) while the
    # current ones run, and composes it again whenever the queue changes, so a request that
    # arrives while a batch runs still joins the very next one. A worker thread (one per stream
    # at most) takes from the slot the moment its batch is done, so the model never waits for the
    # event loop to come round (a busy loop parsing requests could take milliseconds). The loop
    # then commits what was taken (those pairs leave the queue) and composes the next. Only the
    # slot, the list of taken batches and the count of running workers cross threads, under a lock.

    def _budget(self) -> int:
        """Padded tokens the next micro-batch may hold: the model's fastest size
        (:attr:`batch_tokens`), and at most ``batch_seconds`` of work, but never fewer than
        :data:`MIN_BATCH_TOKENS` by that time limit (below that, per-call overhead dominates)."""
        timed = int(self.throughput.tokens_per_second * self.config.batch_seconds)
        return min(self.config.max_batch_tokens, self.batch_tokens, max(MIN_BATCH_TOKENS, timed))

    def _prune(self) -> None:
        for client in list(self._clients):
            queue = self._clients[client]
            while queue and (queue[0].cancelled or queue[0].waiting == 0):
                queue.popleft()
            if not queue:
                del self._clients[client]
            else:
                for request in [r for r in queue if r.cancelled or r.waiting == 0]:
                    queue.remove(request)

    def _compose_slot(self) -> list[_Job]:
        """The next micro-batch from the queue as it is (which it does not change); with idle
        streams, one for each, what waits spread over them (a lone small request then uses
        every core, a batch per stream, and they start together)."""
        self._prune()
        clients = list(self._clients.items())
        if not clients:
            return []
        budget = self._budget()
        free = self.streams - len(self._running)
        most = self.config.max_batch_pairs
        if free > 1:
            pairs, tokens = self._waiting(clients, budget * free)
            if tokens < budget * free:  # it would not fill every stream: share it out by pairs
                most = min(most, math.ceil(pairs / free))
        jobs: list[_Job] = []
        pending: dict[_Request, int] = {}
        while len(jobs) < max(1, free):
            job = self._compose(clients, budget, most, pending)
            if job is None:
                break
            jobs.append(job)
            for request, count in job.counts.items():
                pending[request] = pending.get(request, 0) + count
        return jobs

    def _compose(
        self,
        clients: list[tuple[str, collections.deque[_Request]]],
        budget: int,
        most: int,
        pending: dict[_Request, int],
    ) -> _Job | None:
        """A micro-batch of up to ``budget`` padded tokens and ``most`` pairs from what waits
        after the ``pending`` pairs (the slot's earlier batches'): shares round-robin across
        clients and their requests, then whatever room is left to whoever still waits. None when
        nothing waits."""
        job = _Job(first_client=clients[0][0], queues=[queue for _, queue in clients])
        longest = 0

        def position(request: _Request) -> int:
            return request.taken + pending.get(request, 0) + job.counts.get(request, 0)

        def fits(length: int) -> bool:
            if not job.taken:
                return True  # a pair longer than the budget still runs, alone
            pairs = len(job.taken) + 1
            return max(longest, length) * pairs <= budget and pairs <= most

        def take(request: _Request, pairs: float, tokens: float) -> None:
            nonlocal longest
            spent_pairs = spent_tokens = 0
            while position(request) < len(request.pairs) and spent_pairs < pairs and spent_tokens < tokens:
                index = request.order[position(request)]
                length = len(request.pairs[index].ids)
                if not fits(length):
                    break
                job.taken.append((request, index))
                job.counts[request] = job.counts.get(request, 0) + 1
                longest = max(longest, length)
                spent_pairs += 1
                spent_tokens += length

        slots = most
        for (_, queue), client_slots in zip(clients, _split(slots, len(clients)), strict=True):
            for request, request_slots in zip(list(queue), _split(client_slots, len(queue)), strict=True):
                if request_slots:
                    take(request, request_slots, budget * request_slots / slots)
        for _, queue in clients:  # work-conserving: fill what the shares left
            for request in queue:
                take(request, math.inf, math.inf)
        return job if job.taken else None

    @staticmethod
    def _waiting(clients: list[tuple[str, collections.deque[_Request]]], enough: int) -> tuple[int, int]:
        """Pairs waiting and their tokens, counted until the tokens reach ``enough`` (past it the
        exact sums do not matter)."""
        pairs = tokens = 0
        for _, queue in clients:
            for request in queue:
                for position in range(request.taken, len(request.pairs)):
                    pairs += 1
                    tokens += len(request.pairs[request.order[position]].ids)
                    if tokens >= enough:
                        return pairs, tokens
        return pairs, tokens

    def _commit(self, job: _Job) -> None:
        """The worker started ``job``: its pairs leave the queue, and the next batch starts with
        the next client (and each client's next request)."""
        for request, count in job.counts.items():
            request.taken += count
            if not request.cancelled:  # a dropped request's pairs left the count when it was dropped
                self._queued_pairs -= count
        if job.first_client in self._clients:
            self._clients.move_to_end(job.first_client)
        for queue in job.queues:
            queue.rotate(-1)
        job.until = job.started + self.throughput.seconds(cost_of(job.pairs))
        self._running.add(job)
        self._update_running_until()
        self._record_first_batch(job.taken, job.started, job.started_ns)

    def _model_speed(self) -> float:
        """Padded tokens per second the model works through a queue at: every stream's."""
        return self.throughput.tokens_per_second * self.streams

    def _update_running_until(self) -> None:
        """When a new micro-batch could start: now if a stream is free, else when the first of
        the running ones should end."""
        busy = len(self._running) >= self.streams
        self._running_until = min(job.until for job in self._running) if busy else 0.0

    def _commit_started(self) -> None:
        with self._lock:
            started, self._started = self._started, []
        for job in started:
            self._commit(job)

    def _schedule(self) -> None:
        """Commits what the workers have taken, (re)composes the slot from the queue as it is
        now, and starts a worker for each batch in it that no running worker will take. Called
        on the event loop after every queue change."""
        if self._closed:
            return
        while True:
            self._commit_started()
            jobs = self._compose_slot() if self._refusal is None else []
            with self._lock:
                if self._started:  # a worker took from the previous slot meanwhile: commit it first
                    continue
                self._slot = jobs
                wake = min(len(jobs), self.streams - self._drivers)
                self._drivers += wake
            break
        for _ in range(wake):
            self._executor.submit(self._drive)
        self._queue_changed()

    def _drive(self) -> None:
        """A worker thread: runs the slot's batches one after the other until it finds none."""
        while True:
            with self._lock:
                if not self._slot:
                    self._drivers -= 1
                    return
                job = self._slot.pop(0)
                job.started, job.started_ns = time.monotonic(), time.time_ns()
                self._started.append(job)
            self._post(self._schedule)  # commit it, and compose the next while this one runs
            job.outcome = self._execute(job.pairs)
            job.seconds, job.ended_ns = time.monotonic() - job.started, time.time_ns()
            self._post(self._finish, job)

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _execute(self, pairs: list[Pair]) -> tuple[np.ndarray, Batch] | list[float | Exception]:
        """On the worker thread: the batch's logits (and the padded batch), or after a failure,
        each pair's result alone, so one bad pair fails alone."""
        try:
            return self._infer(pairs)
        except Exception:
            log.exception("a micro-batch of %d pairs failed; running its pairs one by one", len(pairs))
            return [self._infer_alone(pair) for pair in pairs]

    def _infer(self, pairs: list[Pair]) -> tuple[np.ndarray, Batch]:
        batch = pad(pairs, self._pad_id, self._with_types)
        return self._run(batch), batch

    def _infer_alone(self, pair: Pair) -> float | Exception:
        try:
            return float(self._infer([pair])[0][0])
        except Exception as exc:  # noqa: BLE001 - the pair's request gets this error
            return exc

    def _finish(self, job: _Job) -> None:
        """On the event loop: ``job``'s results go to their requests."""
        self._commit_started()  # (normally done already: the worker posts that first)
        self._running.discard(job)
        self._update_running_until()
        if isinstance(job.outcome, list):
            for (request, index), result in zip(job.taken, job.outcome, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "pair %d of request %s failed",
                        index,
                        request.request_id or "-",
                        exc_info=result,
                        extra={"request_id": request.request_id},
                    )
                    if not request.future.done():
                        request.future.set_exception(result)
                    self._drop(request)
                else:
                    self._deliver(request, index, result)
            self._schedule()
            return
        assert job.outcome is not None
        logits, batch = job.outcome
        self.throughput.record(int(batch.input_ids.size), job.seconds, full=self._budget())
        self.metrics.record_batch(
            pairs=len(job.pairs),
            padded_tokens=int(batch.input_ids.size),
            real_tokens=int(batch.attention_mask.sum()),
            seconds=job.seconds,
        )
        self._trace_batch(job.taken, job.started_ns, job.ended_ns, int(batch.input_ids.size))
        for (request, index), logit in zip(job.taken, logits, strict=True):
            self._deliver(request, index, float(logit))
        self._queue_changed()

    def _record_first_batch(self, taken: list[tuple[_Request, int]], started: float, started_ns: int) -> None:
        """Each request whose first pairs go to the model now has finished waiting: its queue
        time and its ``rerank.queue`` span."""
        for request in dict.fromkeys(r for r, _ in taken):
            if request.first_batch_at is None:
                request.first_batch_at = started
                self.metrics.record_queue_wait(started - request.enqueued_at)
                tracing.record("rerank.queue", request.trace, request.enqueued_ns, started_ns)

    def _trace_batch(self, taken: list[tuple[_Request, int]], start_ns: int, end_ns: int, padded_tokens: int) -> None:
        """A ``rerank.inference`` span for each request in the micro-batch, with its share."""
        if not tracing.enabled():
            return
        shares = collections.Counter(r for r, _ in taken)
        for request, share in shares.items():
            attributes: tracing.Attributes = {
                "rerank.request_pairs": share,
                "rerank.batch_pairs": len(taken),
                "rerank.batch_tokens": padded_tokens,
            }
            tracing.record("rerank.inference", request.trace, start_ns, end_ns, attributes)

    def _deliver(self, request: _Request, index: int, logit: float) -> None:
        if request.future.done():
            return
        request.scores[index] = logit
        request.done += 1
        if request.done == len(request.pairs):
            request.future.set_result(request.scores)
