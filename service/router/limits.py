"""Per-key limits: requests per second and tokens per minute, from the keys file.

Each key with a limit gets token buckets. Requests per second: a bucket of ``rps`` requests
(at least one) refilled continuously; a request takes one. Tokens per minute: a bucket of
``tpm`` tokens refilled at ``tpm / 60`` per second; a request is admitted while the bucket is
positive and is charged its exact token count once tokenized, which may put the bucket in debt
(a request bigger than a minute's allowance still runs; the key then waits). Over a limit: a
:class:`~rerank.service.errors.RateLimited` naming the limit, with the seconds until it clears — HTTP
429 with ``Retry-After``, gRPC RESOURCE_EXHAUSTED with a ``retry-after`` trailer. Other keys
are unaffected. Logs and metrics see the key's name, never the key.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from rerank.service.errors import RateLimited
from rerank.service.router.auth import ApiKey, Keyring


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; the level may go negative (debt)."""

    capacity: float
    rate: float
    level: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.capacity

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, amount: float, now: float | None = None) -> float:
        """Seconds until ``amount`` is available (0 if it is now)."""
        self._refill(time.monotonic() if now is None else now)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float, now: float | None = None) -> None:
        self._refill(time.monotonic() if now is None else now)
        self.level -= amount


class KeyCaller:
    """One call's caller: the key's name, and its limits (a :class:`~rerank.service.core.reranker.Caller`)."""

    def __init__(
        self, key: ApiKey | None, requests: TokenBucket | None, tokens: TokenBucket | None, lock: threading.Lock
    ) -> None:
        self.key = key
        self.name = key.name if key else ""
        self._requests = requests
        self._tokens = tokens
        self._lock = lock

    def admit(self) -> None:
        """Takes one request from the key's allowance; raises :class:`RateLimited`."""
        if self.key is None:
            return
        with self._lock:
            if self._requests is not None:
                wait = self._requests.wait(1)
                if wait > 0:
                    raise self._limited("requests_per_second", self.key.requests_per_second, wait)
            if self._tokens is not None:
                wait = self._tokens.wait(math.ulp(0.0))  # admitted while the bucket is positive
                if wait > 0:
                    raise self._limited("tokens_per_minute", self.key.tokens_per_minute, wait)
            if self._requests is not None:
                self._requests.take(1)

    def charge(self, tokens: int) -> None:
        """Charges a tokenized request's tokens to the key's per-minute allowance."""
        if self._tokens is not None:
            with self._lock:
                self._tokens.take(tokens)

    def _limited(self, limit: str, value: float | None, wait: float) -> RateLimited:
        unit = "requests per second" if limit == "requests_per_second" else "tokens per minute"
        seconds = max(1, math.ceil(wait))
        return RateLimited(
            f"key {self.name!r} is over its limit of {value:g} {unit}; retry in {seconds} s",
            retry_after=seconds,
            metadata={"limit": limit, "value": f"{value:g}", "key": self.name},
        )


class KeyLimiter:
    """The buckets of every key that has limits."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._lock = threading.Lock()
        self._requests: dict[bytes, TokenBucket] = {}
        self._tokens: dict[bytes, TokenBucket] = {}
        for key in keys:
            if key.requests_per_second:
                rps = key.requests_per_second
                self._requests[key.digest] = TokenBucket(capacity=max(1.0, rps), rate=rps)
            if key.tokens_per_minute:
                self._tokens[key.digest] = TokenBucket(
                    capacity=key.tokens_per_minute, rate=key.tokens_per_minute / 60.0
                )

    def caller(self, key: ApiKey | None) -> KeyCaller:
        digest = key.digest if key else b""
        return KeyCaller(key, self._requests.get(digest), self._tokens.get(digest), self._lock)


class Callers:
    """Who a call is from: the key it presented (by name) and that key's limits. One per server,
    shared by every API face."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self.keyring = keyring or Keyring([])
        self.limiter = KeyLimiter(self.keyring.keys)

    def of(self, context: grpc.aio.ServicerContext[Any, Any]) -> KeyCaller:
        return self.limiter.caller(self.keyring.caller(context.invocation_metadata()))
