"""How a repetition is measured: a library peer in a worker process is charged its library call's
own time, not the pipe's; every request asks a query of its own."""

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


class Asked(Worker):
    """Keeps every query it is asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def score(self, query: str, documents: tuple[str, ...]) -> float:
        self.queries.append(query)
        return 0.01


def test_every_request_measured_asks_a_query_of_its_own() -> None:
    # A server keeping prompts across requests (vLLM's prefix cache) would answer a repeated one
    # from its cache: each request measured, in every repetition, asks a new query, and each peer
    # the same ones in the same order; the warm-up's is the workload's own.
    workload = make("W3")
    first, second = Asked(), Asked()
    for peer in (first, second):
        into = Measurement("m", "worker", "fp32", "W3")
        for _ in range(2):  # two repetitions of 3 requests
            measure(peer, workload, 3, into, tokens_per_request=100)
    assert len(set(first.queries)) == 6 and workload.query not in first.queries
    assert first.queries == second.queries
    words = len(workload.query.split())
    assert all(len(q.split()) == words and q.endswith("?") for q in first.queries)
    concurrent = Asked()
    measure(concurrent, make("W2"), 2, Measurement("m", "worker", "fp32", "W2"), tokens_per_request=100)
    assert len(set(concurrent.queries)) == 16
