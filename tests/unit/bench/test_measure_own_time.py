"""A library peer in a worker process is charged its library call's own time, not the pipe's."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

from bench.measure import Measurement, measure
from bench.peers import Peer
from bench.workloads import make


class Worker(Peer):
    """Reports 10 ms of library time for a call that takes 50 ms (a slow pipe)."""

    name, precision, times_itself = "worker", "fp32", True

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def score(self, query: str, documents: tuple[str, ...]) -> float:
        time.sleep(0.05)
        return 0.01

    def pids(self) -> list[int]:
        return [os.getpid()]


def test_one_client_counts_the_reported_seconds_only() -> None:
    into = Measurement("m", "worker", "fp32", "W1")
    measure(Worker(), make("W1"), 3, into, tokens_per_request=100)
    assert into.latencies == [0.01] * 3
    assert into.seconds == pytest.approx(0.03)
    assert into.pairs_per_s == pytest.approx(64 * 3 / 0.03)


def test_concurrent_clients_count_the_wall_time() -> None:
    into = Measurement("m", "worker", "fp32", "W2")
    measure(Worker(), make("W2"), 1, into, tokens_per_request=100)
    assert into.latencies == [0.01] * 8
    assert into.seconds >= 0.05  # the 8 calls overlap; their wall time, not 8 x 10 ms
