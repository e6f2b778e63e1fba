"""Helpers the tests share: ports, keys, processes, load. Imported by tests and by conftest,
never the other way round."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
"""gRPC metadata carrying :data:`API_KEY`."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    for _ in range(200):
        start = free_port()
        if start + n > 65535:
            continue
        try:
            sockets = []
            for port in range(start, start + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return start
    raise RuntimeError(f"no {n} consecutive free ports")


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


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


def sigmoid(x: float) -> float:
    """The logistic function, written here (not imported from the service) for parity checks."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def jina_logits(rest: httpx.Client, model: str, query: str, documents: list[str]) -> dict[int, float]:
    """index -> raw logit from ``POST /v1/rerank``: the face every other face is compared with."""
    response = rest.post("/v1/rerank", json={"model": model, "query": query, "documents": documents})
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


def best_first(scores: dict[int, float]) -> list[int]:
    """Indexes by score, descending, ties by index (the service's documented order)."""
    return sorted(scores, key=lambda i: (-scores[i], i))
