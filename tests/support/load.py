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


@dataclass
class Load:
    """``clients`` threads sending ``request`` back to back until :meth:`stop`."""

    request: Callable[[httpx.Client], httpx.Response]
    base_url: str
    clients: int = 8
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
                try:
                    response = self.request(client)
                    status: int | None = response.status_code
                    error = "" if status == 200 else response.text[:200]
                except httpx.HTTPError as exc:
                    status, error = None, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.outcomes.append(Outcome(started, time.monotonic(), status, error))

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)
        return self.outcomes

    def failures(self, started_before: float | None = None) -> list[Outcome]:
        """Requests that did not get a 200 (only those started before ``started_before``)."""
        return [o for o in self.outcomes if o.status != 200 and (started_before is None or o.started < started_before)]
