"""Load generation: client threads sending a request back to back, every outcome kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    started: float
    finished: float
    status: int | None
    """HTTP status, or None when the request failed without one (refused, reset, timeout)."""
    error: str = ""
    refusals: int = 0
    """Times it was refused with 429 and ``Retry-After`` and sent again after waiting that long
    (only with :attr:`Load.honour_retry_after`)."""


MAX_REFUSALS = 5
"""Retries of one request a client honouring ``Retry-After`` makes before it keeps the 429."""


@dataclass
class Load:
    """``clients`` threads sending ``request`` back to back until :meth:`stop`."""

    request: Callable[[httpx.Client], httpx.Response]
    base_url: str
    clients: int = 8
    honour_retry_after: bool = False
    """Clients as the API asks them to be: a 429 with ``Retry-After`` is sent again after that
    many seconds (a refusal is an answer, not a lost request; a 429 without it still fails)."""
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                refusals = 0
                while True:
                    try:
                        response = self.request(client)
                        status: int | None = response.status_code
                        error = "" if status == 200 else response.text[:200]
                    except httpx.HTTPError as exc:
                        status, error = None, f"{type(exc).__name__}: {exc}"
                        break
                    wait = response.headers.get("retry-after", "")
                    if not (self.honour_retry_after and status == 429 and wait.isdigit() and refusals < MAX_REFUSALS):
                        break
                    refusals += 1
                    time.sleep(int(wait))
                with self._lock:
                    self.outcomes.append(Outcome(started, time.monotonic(), status, error, refusals))

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)
        return self.outcomes

    def failures(self, started_before: float | None = None) -> list[Outcome]:
        """Requests that did not get a 200 (only those started before ``started_before``)."""
        return [o for o in self.outcomes if o.status != 200 and (started_before is None or o.started < started_before)]
