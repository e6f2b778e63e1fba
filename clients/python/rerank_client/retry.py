"""Retries with exponential backoff, for UNAVAILABLE only.

UNAVAILABLE means the call did not run (the server is starting, draining, or unreachable), so
sending it again is safe; every other status is the answer and is raised at once.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Retry:
    """How often and how patiently to retry UNAVAILABLE."""

    attempts: int = 4
    """Calls in all, the first included (1: never retry)."""
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): exponential, capped, with
        full jitter so that many clients do not retry in step."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(0, ceiling)

    def should_retry(self, error: grpc.RpcError, attempt: int) -> bool:
        """Whether the failed ``attempt`` (1, 2, ...) is retried."""
        return status_code(error) == grpc.StatusCode.UNAVAILABLE and attempt < self.attempts

    def pause(self, error: grpc.RpcError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before retrying the failed ``attempt``, or None to give up: not
        retryable, out of attempts, or the pause would reach the call's ``deadline`` (monotonic)."""
        pause = self.backoff(attempt)
        if not self.should_retry(error, attempt) or time.monotonic() + pause >= deadline:
            return None
        return pause


def deadline(timeout: float) -> float:
    """The monotonic deadline of a call of ``timeout`` seconds, retries included."""
    return time.monotonic() + timeout


def remaining(deadline: float) -> float:
    """What is left of ``deadline`` for the next attempt (never 0: gRPC reads that as none)."""
    return max(0.001, deadline - time.monotonic())


def status_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    """The status of a failed call: ``grpc``'s errors are ``grpc.Call``s, ``grpc.aio``'s are not,
    but both have ``code()``."""
    code = getattr(error, "code", None)
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else None


DEFAULT_RETRY = Retry()
