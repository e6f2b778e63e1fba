"""Per-key limits raced by several processes sharing one store (a SQLite file, a Redis server)."""

from __future__ import annotations

import hashlib
import multiprocessing

from rerank.service.errors import RateLimited
from rerank.service.router.auth import ApiKey
from rerank.service.router.limits import KeyCaller, open_buckets


def admitted_across_processes(store: str, processes: int = 4, attempts: int = 50) -> int:
    """How many of ``processes`` x ``attempts`` requests, sent at once, the store
    (``RERANK_LIMITS_STORE``'s form) admits for a key with one request's allowance (capacity 1,
    the next one in 1000 s): 1 when the processes share the limit, ``processes`` when they do not."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(processes)
        with context.Pool(processes) as pool:
            return sum(pool.starmap(_take_requests, [(store, attempts, barrier)] * processes))


def _take_requests(store: str, count: int, barrier) -> int:  # type: ignore[no-untyped-def]
    buckets = open_buckets(store)
    key = ApiKey(hashlib.sha256(b"shared").digest(), "team", requests_per_second=0.001)
    barrier.wait()
    return sum(_admitted(KeyCaller(key, buckets)) for _ in range(count))


def _admitted(caller: KeyCaller) -> bool:
    try:
        caller.admit()
    except RateLimited:
        return False
    return True
