"""Per-key limits: requests per second and tokens per minute, from the keys file, counted for the
whole stack.

Each key with a limit gets token buckets. Requests per second: a bucket of ``rps`` requests (at
least one) refilled continuously; a request takes one. Tokens per minute: a bucket of ``tpm``
tokens refilled at ``tpm / 60`` per second; a request is admitted while the bucket is positive
and is charged its exact token count once tokenized, which may put the bucket in debt (a request
bigger than a minute's allowance still runs; the key then waits). Over a limit: a
:class:`~rerank.service.errors.RateLimited` naming the limit, with the seconds until it clears —
HTTP 429 with ``Retry-After``, gRPC RESOURCE_EXHAUSTED with a ``retry-after`` trailer. Other keys
are unaffected. Logs and metrics see the key's name, never the key.

Where the buckets live (``RERANK_LIMITS_STORE``), so that a limit holds for every process that
serves the key, not for each:

* :class:`MemoryBuckets`: in this process (a service alone);
* :class:`SqliteBuckets`: a SQLite file that the processes of one host share (rerank-stack's
  replicas: ``<state dir>/limits.sqlite``); each operation is one ``BEGIN IMMEDIATE``
  transaction, and the clock is the host's monotonic clock, which every process reads alike;
* :class:`RedisBuckets`: a Redis server that the processes of several hosts share
  (``redis://host:port/db``; needs the ``limits`` extra, redis-py); each operation is one Lua
  script, atomic on the server, on the server's clock.

A store that cannot be reached admits, and says so in the log: the limits are a fairness
contract, not an authentication step.

A request that came through the edge was charged there, by its check
(:mod:`rerank.service.router.edge`): its call proves it with its token
(:class:`~rerank.service.admission.holds.Holds`) and is not charged again.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from rerank.service.admission.contract import HOLD_HEADER
from rerank.service.admission.holds import Claim, Holds
from rerank.service.errors import ConfigurationError, RateLimited
from rerank.service.router.auth import ApiKey, Keyring

log = logging.getLogger(__name__)

REQUESTS_PER_SECOND, TOKENS_PER_MINUTE = "requests_per_second", "tokens_per_minute"


@dataclass(frozen=True)
class Bucket:
    """One key's bucket: ``capacity``, refilled at ``rate`` per second; the level may go negative (debt)."""

    name: str
    """``rps:{<key digest>}`` or ``tpm:{<key digest>}`` (in braces: Redis Cluster keeps a key's
    two buckets in one slot, so one script may update both)."""
    capacity: float
    rate: float

    def refill(self, level: float, updated: float, now: float) -> float:
        """The level at ``now`` of a bucket that was at ``level`` at ``updated``."""
        return min(self.capacity, level + max(0.0, now - updated) * self.rate)

    def wait(self, level: float, amount: float) -> float:
        """Seconds until a bucket at ``level`` holds ``amount`` (0 if it does)."""
        return 0.0 if level >= amount else (amount - level) / self.rate


def decide(requests: Bucket | None, tokens: Bucket | None, levels: Mapping[str, float]) -> tuple[str, float] | None:
    """The limit a request would break with buckets at ``levels`` (and the seconds until it
    clears), or None: then it takes one request. The one rule of every store."""
    if requests is not None:
        wait = requests.wait(levels[requests.name], 1)
        if wait > 0:
            return REQUESTS_PER_SECOND, wait
    if tokens is not None and levels[tokens.name] <= 0:  # admitted while positive
        return TOKENS_PER_MINUTE, -levels[tokens.name] / tokens.rate
    return None


class Buckets(Protocol):
    """Token buckets, each operation atomic for every process that shares them."""

    def admit(self, requests: Bucket | None, tokens: Bucket | None) -> tuple[str, float] | None:
        """Takes one request (:func:`decide`); else the limit broken and the seconds until it clears."""

    def charge(self, tokens: Bucket, amount: float) -> None:
        """Takes ``amount`` from ``tokens``, into debt if need be."""


class MemoryBuckets:
    """Buckets in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[float, float]] = {}
        """Bucket name -> (level, when)."""

    def _level(self, bucket: Bucket, now: float) -> float:
        level, updated = self._levels.get(bucket.name, (bucket.capacity, now))
        return bucket.refill(level, updated, now)

    def admit(self, requests: Bucket | None, tokens: Bucket | None) -> tuple[str, float] | None:
        with self._lock:
            now = self._clock()
            levels = {b.name: self._level(b, now) for b in (requests, tokens) if b is not None}
            refusal = decide(requests, tokens, levels)
            if refusal is None and requests is not None:
                levels[requests.name] -= 1
            for name, level in levels.items():
                self._levels[name] = (level, now)
            return refusal

    def charge(self, tokens: Bucket, amount: float) -> None:
        with self._lock:
            now = self._clock()
            self._levels[tokens.name] = (self._level(tokens, now) - amount, now)


class SqliteBuckets:
    """Buckets in a SQLite file that the processes of one host share."""

    SCHEMA = "CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, level REAL NOT NULL, updated REAL NOT NULL)"

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: the transactions are this class's own (BEGIN IMMEDIATE ... COMMIT).
            self._db = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")  # levels need not survive a power cut
            self._db.execute(self.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"RERANK_LIMITS_STORE: cannot use {path}: {exc}") from None

    def _read(self, buckets: list[Bucket], now: float) -> dict[str, float]:
        names = [b.name for b in buckets]
        marks = ",".join("?" * len(names))
        rows = self._db.execute(f"SELECT name, level, updated FROM buckets WHERE name IN ({marks})", names)
        found = {name: (level, updated) for name, level, updated in rows}
        # (Bucket.refill: a level written before a reboot, at a later monotonic time, counts as written now.)
        return {b.name: b.refill(*found[b.name], now) if b.name in found else b.capacity for b in buckets}

    def _write(self, levels: dict[str, float], now: float) -> None:
        self._db.executemany(
            "INSERT INTO buckets VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET level = excluded.level, updated = excluded.updated",
            [(name, level, now) for name, level in levels.items()],
        )

    def _atomically(self, work: Callable[[float], Any]) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._clock())
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def admit(self, requests: Bucket | None, tokens: Bucket | None) -> tuple[str, float] | None:
        buckets = [b for b in (requests, tokens) if b is not None]

        def work(now: float) -> tuple[str, float] | None:
            levels = self._read(buckets, now)
            refusal = decide(requests, tokens, levels)
            if refusal is None and requests is not None:
                levels[requests.name] -= 1
            self._write(levels, now)
            return refusal

        refusal: tuple[str, float] | None = self._guarded(lambda: self._atomically(work) if buckets else None)
        return refusal

    def charge(self, tokens: Bucket, amount: float) -> None:
        def work(now: float) -> None:
            levels = self._read([tokens], now)
            levels[tokens.name] -= amount
            self._write(levels, now)

        self._guarded(lambda: self._atomically(work))

    def _guarded(self, operation: Callable[[], Any]) -> Any:
        """``operation``; a store that fails (a locked or full disk) admits, and says so."""
        try:
            return operation()
        except sqlite3.Error as exc:
            log.warning("per-key limits not counted (%s: %s)", self.path, exc)
            return None

    def close(self) -> None:
        self._db.close()


class RedisBuckets:
    """Buckets on a Redis server that the processes of several hosts share."""

    ADMIT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local function level(key, capacity, rate)
  local stored = redis.call('HMGET', key, 'level', 'updated')
  if not stored[1] then return capacity end
  return math.min(capacity, tonumber(stored[1]) + math.max(0, now - tonumber(stored[2])) * rate)
end
local function store(key, value, capacity, rate)
  redis.call('HSET', key, 'level', tostring(value), 'updated', tostring(now))
  redis.call('EXPIRE', key, math.ceil((capacity - math.min(value, 0)) / rate) + 60)
end
-- ARGV: the operation ('admit' or 'charge'), then for each key its kind ('requests' or
-- 'tokens'), capacity and rate, then (to charge) the amount.
local buckets = {}
for i, key in ipairs(KEYS) do
  local kind, capacity, rate = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  buckets[i] = {key = key, kind = kind, level = level(key, capacity, rate), capacity = capacity, rate = rate}
end
if ARGV[1] == 'charge' then
  local b = buckets[1]
  store(b.key, b.level - tonumber(ARGV[3 * #KEYS + 2]), b.capacity, b.rate)
  return false
end
-- The rule of rerank.service.router.limits.decide: requests first, then tokens while positive.
for _, b in ipairs(buckets) do
  if b.kind == 'requests' and b.level < 1 then return {'requests_per_second', tostring((1 - b.level) / b.rate)} end
  if b.kind == 'tokens' and b.level <= 0 then return {'tokens_per_minute', tostring(-b.level / b.rate)} end
end
for _, b in ipairs(buckets) do
  store(b.key, b.kind == 'requests' and b.level - 1 or b.level, b.capacity, b.rate)
end
return false
"""
    TIMEOUT_SECONDS = 0.25

    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "RERANK_LIMITS_STORE: a Redis store needs the limits extra (pip install 'rerank[limits]')"
            ) from None
        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=self.TIMEOUT_SECONDS, socket_connect_timeout=self.TIMEOUT_SECONDS
            )
        except ValueError as exc:
            raise ConfigurationError(f"RERANK_LIMITS_STORE: {exc}") from None
        self._script = self._redis.register_script(self.ADMIT)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.url = url

    def _run(self, buckets: list[Bucket], operation: str, *rest: float) -> Any:
        keys = [f"rerank:{b.name}" for b in buckets]
        argv: list[str | float] = [operation]
        for bucket in buckets:
            argv += ["requests" if bucket.name.startswith("rps:") else "tokens", bucket.capacity, bucket.rate]
        argv += rest
        try:
            return self._script(keys=keys, args=argv)
        except self._errors as exc:
            log.warning("per-key limits not counted (%s: %s)", self.url.split("@")[-1], exc)
            return None

    def admit(self, requests: Bucket | None, tokens: Bucket | None) -> tuple[str, float] | None:
        buckets = [b for b in (requests, tokens) if b is not None]
        if not buckets:
            return None
        refusal = self._run(buckets, "admit")
        if not refusal:
            return None
        return refusal[0].decode(), float(refusal[1])

    def charge(self, tokens: Bucket, amount: float) -> None:
        self._run([tokens], "charge", amount)

    def close(self) -> None:
        self._redis.close()


def open_buckets(store: str) -> Buckets:
    """The buckets ``RERANK_LIMITS_STORE`` names: '' this process, ``redis://...`` (or
    ``rediss://``, ``unix://``) a Redis server, anything else a SQLite file's path."""
    if not store:
        return MemoryBuckets()
    if store.startswith(("redis://", "rediss://", "unix://")):
        return RedisBuckets(store)
    return SqliteBuckets(Path(store))


class KeyCaller:
    """One call's caller: the key's name, its limits (a :class:`~rerank.service.core.reranker.Caller`),
    and what its edge check proved (``claim``: charged already, and the places held for it)."""

    def __init__(self, key: ApiKey | None, buckets: Buckets, claim: Claim | None = None) -> None:
        self.key = key
        self.name = key.name if key else ""
        self.claim = claim
        self._buckets = buckets
        self._requests = (
            Bucket(f"rps:{{{key.digest.hex()}}}", max(1.0, key.requests_per_second), key.requests_per_second)
            if key is not None and key.requests_per_second
            else None
        )
        self._tokens = (
            Bucket(f"tpm:{{{key.digest.hex()}}}", key.tokens_per_minute, key.tokens_per_minute / 60.0)
            if key is not None and key.tokens_per_minute
            else None
        )

    def admit(self) -> None:
        """Takes one request from the key's allowance (unless its edge check did); raises
        :class:`RateLimited`."""
        if self.claim is not None or (self._requests is None and self._tokens is None):
            return
        refusal = self._buckets.admit(self._requests, self._tokens)
        if refusal is not None:
            raise self._limited(*refusal)

    def charge(self, tokens: int) -> None:
        """Charges a tokenized request's tokens to the key's per-minute allowance."""
        if self._tokens is not None:
            self._buckets.charge(self._tokens, tokens)

    def held(self, model: str) -> float | None:
        """The cost the edge's check holds a place at on ``model`` for this call, or None."""
        return self.claim.costs.get(model) if self.claim is not None else None

    def _limited(self, limit: str, wait: float) -> RateLimited:
        assert self.key is not None
        value = self.key.requests_per_second if limit == REQUESTS_PER_SECOND else self.key.tokens_per_minute
        unit = "requests per second" if limit == REQUESTS_PER_SECOND else "tokens per minute"
        seconds = max(1, math.ceil(wait))
        return RateLimited(
            f"key {self.name!r} is over its limit of {value:g} {unit}; retry in {seconds} s",
            retry_after=seconds,
            metadata={"limit": limit, "value": f"{value:g}", "key": self.name},
        )


def identity(key: ApiKey | None) -> str:
    """What a hold is bound to: the key's digest ('' without keys)."""
    return key.digest.hex() if key is not None else ""


class Callers:
    """Who a call is from: the key it presented (by name), that key's limits, and what its edge
    check proved. One per server, shared by every API face and the edge's check."""

    def __init__(
        self, keyring: Keyring | None = None, buckets: Buckets | None = None, holds: Holds | None = None
    ) -> None:
        self.keyring = keyring or Keyring([])
        self.buckets = buckets or MemoryBuckets()
        self.holds = holds if holds is not None else Holds()

    def of(self, context: grpc.aio.ServicerContext[Any, Any]) -> KeyCaller:
        """The caller of ``context``'s call; its :data:`~rerank.service.admission.contract.HOLD_HEADER`
        token is claimed (once)."""
        metadata = context.invocation_metadata() or ()
        key = self.keyring.caller(metadata)
        token = next((str(v) for k, v in metadata if k == HOLD_HEADER), None)
        claim = self.holds.claim(token, identity(key)) if token else None
        return KeyCaller(key, self.buckets, claim)

    def for_key(self, key: ApiKey | None) -> KeyCaller:
        """The caller with ``key``, as the edge's check charges it."""
        return KeyCaller(key, self.buckets)
