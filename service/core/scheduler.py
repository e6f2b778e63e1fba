"""Fair composition of one model's micro-batches from its queue.

A request's pairs wait sorted by length, shortest first. A micro-batch is filled round-robin
across API keys, and within a key across its requests, each getting an equal share of the batch;
what a share leaves unused goes to whoever still has pairs. So a one-document request joins the
next micro-batch even behind requests of thousands of pairs, and one key cannot take every slot.
With several idle streams, what waits is spread over them (a lone small request then uses every
core, a batch per stream). Where the graph reads a batch's common head once (a decoder's prompt),
a batch is cut by the tokens it runs, so one request's pairs fit many to a batch. Composing does
not change the queue: :meth:`Scheduler.commit` does, once a worker has taken the batch. Event
loop only.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass, field

import numpy as np

from rerank.service.backends.base import Batch, common_head, work_tokens
from rerank.service.core.tokenization import Pair
from rerank.service.telemetry import tracing


@dataclass(eq=False)
class Request:
    """One request's pairs in the queue, and where its scores go."""

    pairs: list[Pair]
    order: list[int]
    """Pair indices sorted by length: the order in which they are taken."""
    future: asyncio.Future[np.ndarray]
    client: str
    request_id: str
    cost: float
    """Padded tokens it will cost (see :data:`~rerank.service.admission.queue.PADDING_ALLOWANCE`)."""
    head: int = 0
    """Leading tokens its pairs have in common, where the graph reads them once (else 0)."""
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


@dataclass(eq=False)
class Job:
    """One micro-batch: composed on the event loop, run on the model's worker thread."""

    first_client: str
    """The client it started with (the next batch starts with the one after)."""
    queues: list[collections.deque[Request]]
    """Every client's requests when it was composed (each starts with its next request next time)."""
    taken: list[tuple[Request, int]] = field(default_factory=list)
    """(request, pair index) in batch order."""
    counts: dict[Request, int] = field(default_factory=dict)
    """Pairs taken from each request: the next ones in its order."""
    head: int = 0
    """Leading tokens its pairs have in common, as :func:`~rerank.service.backends.base.pad`
    counts them, where the graph reads them once (else 0): tracked while it is filled."""
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


class Scheduler:
    """One model's queue: the requests with pairs still waiting, by client (the first client is
    served first next), and how the next micro-batches are composed from it."""

    def __init__(self, shares_head: bool = False) -> None:
        self.shares_head = shares_head
        """Whether the graph reads a micro-batch's common head once (a decoder's shared-prefix
        graph): a batch is then cut by the tokens it runs, the head counted once
        (:func:`~rerank.service.backends.base.work_tokens`)."""
        self.clients: collections.OrderedDict[str, collections.deque[Request]] = collections.OrderedDict()
        self.queued_pairs = 0
        """Pairs waiting (not yet taken by a worker) of the requests not dropped."""

    def add(self, request: Request) -> None:
        self.clients.setdefault(request.client, collections.deque()).append(request)
        self.queued_pairs += len(request.pairs)

    def requests(self) -> list[Request]:
        return [r for queue in self.clients.values() for r in queue]

    def queued_cost(self) -> float:
        return sum(r.remaining_cost for queue in self.clients.values() for r in queue)

    def drop(self, request: Request) -> None:
        """Takes ``request``'s waiting pairs out of the queue."""
        if not request.cancelled:
            request.cancelled = True
            self.queued_pairs -= request.waiting

    def clear(self) -> None:
        self.clients.clear()

    def _prune(self) -> None:
        for client in list(self.clients):
            queue = self.clients[client]
            while queue and (queue[0].cancelled or queue[0].waiting == 0):
                queue.popleft()
            if not queue:
                del self.clients[client]
            else:
                for request in [r for r in queue if r.cancelled or r.waiting == 0]:
                    queue.remove(request)

    def compose(self, budget: int, most: int, free: int) -> list[Job]:
        """The next micro-batch from the queue as it is (which it does not change), of up to
        ``budget`` padded tokens and ``most`` pairs; with ``free`` idle streams, one for each,
        what waits spread over them (a lone small request then uses every core, a batch per
        stream, and they start together)."""
        self._prune()
        clients = list(self.clients.items())
        if not clients:
            return []
        if free > 1:
            pairs, tokens = self._waiting(clients, budget * free)
            if tokens < budget * free:  # it would not fill every stream: share it out by pairs
                most = min(most, math.ceil(pairs / free))
        jobs: list[Job] = []
        pending: dict[Request, int] = {}
        while len(jobs) < max(1, free):
            job = self._compose_one(clients, budget, most, pending)
            if job is None:
                break
            jobs.append(job)
            for request, count in job.counts.items():
                pending[request] = pending.get(request, 0) + count
        return jobs

    def _compose_one(
        self,
        clients: list[tuple[str, collections.deque[Request]]],
        budget: int,
        most: int,
        pending: dict[Request, int],
    ) -> Job | None:
        """A micro-batch of up to ``budget`` padded tokens and ``most`` pairs from what waits
        after the ``pending`` pairs (the slot's earlier batches'): shares round-robin across
        clients and their requests, then whatever room is left to whoever still waits. None when
        nothing waits."""
        job = Job(first_client=clients[0][0], queues=[queue for _, queue in clients])
        longest = 0

        def position(request: Request) -> int:
            return request.taken + pending.get(request, 0) + job.counts.get(request, 0)

        def head_with(ids: np.ndarray) -> int:
            if not self.shares_head:
                return 0
            if not job.taken:
                return len(ids) - 1
            first = job.taken[0][0].pairs[job.taken[0][1]].ids
            return min(job.head, common_head(first, ids), len(ids) - 1)

        def fits(ids: np.ndarray) -> bool:
            if not job.taken:
                return True  # a pair longer than the budget still runs, alone
            pairs = len(job.taken) + 1
            return pairs <= most and work_tokens(pairs, max(longest, len(ids)), head_with(ids)) <= budget

        def take(request: Request, pairs: float, tokens: float) -> None:
            nonlocal longest
            spent_pairs = spent_tokens = 0
            while position(request) < len(request.pairs) and spent_pairs < pairs and spent_tokens < tokens:
                index = request.order[position(request)]
                ids = request.pairs[index].ids
                if not fits(ids):
                    break
                job.head = head_with(ids)
                job.taken.append((request, index))
                job.counts[request] = job.counts.get(request, 0) + 1
                longest = max(longest, len(ids))
                spent_pairs += 1
                spent_tokens += len(ids)

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
    def _waiting(clients: list[tuple[str, collections.deque[Request]]], enough: int) -> tuple[int, int]:
        """Pairs waiting and their tokens, counted until the tokens reach ``enough`` (past it the
        exact sums do not matter)."""
        pairs = tokens = 0
        for _, queue in clients:
            for request in queue:
                for position in range(request.taken, len(request.pairs)):
                    pairs += 1
                    tokens += len(request.pairs[request.order[position]].ids)
                    if position > request.taken:  # a shared head counts once a request
                        tokens -= request.head
                    if tokens >= enough:
                        return pairs, tokens
        return pairs, tokens

    def commit(self, job: Job) -> None:
        """The worker started ``job``: its pairs leave the queue, and the next batch starts with
        the next client (and each client's next request)."""
        for request, count in job.counts.items():
            request.taken += count
            if not request.cancelled:  # a dropped request's pairs left the count when it was dropped
                self.queued_pairs -= count
        if job.first_client in self.clients:
            self.clients.move_to_end(job.first_client)
        for queue in job.queues:
            queue.rotate(-1)


def _split(total: int, parts: int) -> list[int]:
    """``total`` slots shared by ``parts`` as evenly as integers allow, the first ones getting
    the remainder (the rotation moves who is first)."""
    if parts == 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]
