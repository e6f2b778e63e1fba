"""The one admission rule (:func:`queue_time_refusal`), shared by the batcher's exact check and
the early check before a body is read (``GET /admission`` on the metrics port), and the places
that check holds for the bodies it admits (:class:`Holds`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rerank.service.core.admission import Holds, QueueState, queue_time_refusal
from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.throughput import Throughput
from rerank.service.errors import QueueFull, Unavailable
from rerank.service.router.auth import Keyring
from rerank.service.router.metrics_endpoint import ADMISSION_PATH, MetricsEndpoint

STATE = QueueState(costs=(10_000.0, 500.0), running_until=0.0, tokens_per_second=1000.0, max_queue_seconds=5.0)


def test_an_idle_queue_admits_anything() -> None:
    assert queue_time_refusal(QueueState(), 1e12) is None


def test_each_request_ahead_delays_by_at_most_the_smaller_cost() -> None:
    assert STATE.estimated_wait(2000.0, now=1.0) == (2000 + 500) / 1000
    assert queue_time_refusal(STATE, 2000.0, now=1.0) is None  # 2.5 s
    refusal = queue_time_refusal(STATE, 8000.0, now=1.0)  # 8.5 s
    assert isinstance(refusal, QueueFull) and refusal.reason == "QUEUE_FULL"
    assert refusal.retry_after == 4  # ceil(8.5 - 5)
    assert refusal.message.startswith("the server is busy: this request would wait about 8.5 s, more than the 5 s")


def test_the_batch_in_flight_counts_and_retry_after_is_at_least_one() -> None:
    state = QueueState(costs=(), running_until=11.0, tokens_per_second=1000.0, max_queue_seconds=5.0)
    assert queue_time_refusal(state, 1.0, now=10.0) is None
    refusal = queue_time_refusal(state, 1.0, now=5.5)  # 5.5 s in flight
    assert refusal is not None and refusal.retry_after == 1


def _call(endpoint: MetricsEndpoint, query: str, key: str | None = None) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"PATH_INFO": ADMISSION_PATH, "QUERY_STRING": query}
    if key is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    body = b"".join(endpoint.app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_the_endpoint_answers_200_or_the_services_queue_full_error() -> None:
    asked: list[tuple[int, str | None]] = []

    def admission(size: int, model: str | None) -> QueueFull | str:
        asked.append((size, model))
        return (queue_time_refusal(STATE, size / 4) or "a-token") if model != "idle" else ""

    endpoint = MetricsEndpoint(
        CollectorRegistry(), keyring=Keyring.load((), None), require_key=True, admission=admission
    )
    status, headers, body = _call(endpoint, "bytes=4000")
    assert status.startswith("200") and body == b"admit\n"
    assert headers["x-rerank-hold"] == "a-token"  # the place held for the body, for Envoy to pass on
    status, headers, body = _call(endpoint, "bytes=40000")
    assert status.startswith("429")
    assert headers["Retry-After"] == "6" and headers["x-rerank-admission"] == "early"
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["code"] == 8 and error["message"].startswith("the server is busy")
    assert [d["@type"].rsplit(".", 1)[-1] for d in error["details"]] == ["ErrorInfo", "RetryInfo"]
    assert error["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "QUEUE_FULL",
        "domain": "rerank.v1",
        "metadata": {},
    }
    assert error["details"][1]["retry_delay"] == "6s"
    status, headers, _ = _call(endpoint, "bytes=40000&model=idle")
    assert status.startswith("200") and "x-rerank-hold" not in headers
    assert asked[-1] == (40000, "idle")
    assert _call(endpoint, "bytes=lots")[0].startswith("400")


def test_without_an_admission_check_there_is_no_admission_path() -> None:
    endpoint = MetricsEndpoint(CollectorRegistry(), keyring=Keyring.load((), None), require_key=False)
    assert _call(endpoint, "bytes=1")[0].startswith("404")


def test_only_a_caller_with_a_valid_key_is_refused_early() -> None:
    """The others are the service's to answer (401), however busy it is."""
    keyring = Keyring.load(("team-key-0001",), None)
    endpoint = MetricsEndpoint(
        CollectorRegistry(), keyring=keyring, require_key=False, admission=lambda size, model: QueueFull("busy")
    )
    assert _call(endpoint, "bytes=40000")[0].startswith("200")
    assert _call(endpoint, "bytes=40000", key="not-a-key")[0].startswith("200")
    status, headers, _ = _call(endpoint, "bytes=40000", key="team-key-0001")
    assert status.startswith("429")
    assert headers["x-rerank-key"] == keyring.keys[0].name  # the key's name, for Envoy's access log


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_hold_is_taken_once_on_every_model_and_lapses() -> None:
    clock = Clock()
    holds = Holds(seconds=1.0, clock=clock)
    first = holds.place({"a": 300.0, "b": 200.0})
    second = holds.place({"a": 50.0})
    assert first != second
    assert sorted(holds.costs("a")) == [50.0, 300.0] and holds.costs("b") == [200.0]
    assert holds.peek(first) == {"a": 300.0, "b": 200.0}
    holds.take(first)  # taken by the model the body named: gone from the others too
    assert holds.peek(first) is None and holds.costs("a") == [50.0] and holds.costs("b") == []
    clock.now += 1.0
    assert holds.costs("a") == [] and holds.peek(second) is None  # never used: it lapsed


def test_a_holds_outcomes_are_counted_and_a_late_body_is_told_from_one_never_held() -> None:
    clock = Clock()
    outcomes: list[str] = []
    holds = Holds(seconds=1.0, clock=clock, record=outcomes.append)
    kept, slow, unused = (holds.place({"a": 1.0}) for _ in range(3))
    holds.take(kept)
    clock.now += 1.5
    assert holds.costs("a") == []  # the other two lapsed
    holds.take(slow)  # its body came after all
    holds.take(slow)  # counted once
    holds.take("never-placed")
    holds.take(kept)
    assert outcomes == ["placed"] * 3 + ["taken", "lapsed", "lapsed", "late"]
    clock.now += 120
    holds.costs("a")
    holds.take(unused)  # long forgotten: not counted as late
    assert outcomes.count("late") == 1


def idle_batcher(
    tokens_per_second: float, max_queue_seconds: float = 5.0, holds: Holds | None = None
) -> DynamicBatcher:
    """A batcher named ``m`` on a model that scores nothing, at a measured ``tokens_per_second``."""
    return DynamicBatcher(
        lambda batch: np.zeros(len(batch.input_ids)),
        pad_id=0,
        with_types=False,
        config=BatchingConfig(max_queue_seconds=max_queue_seconds),
        metrics=ModelMetrics(),
        name="m",
        throughput=Throughput(tokens_per_second, measured=True),
        holds=holds,
    )


async def test_a_held_place_admits_its_request_and_counts_against_the_others() -> None:
    """Three large bodies checked at once by an idle server: the first is held a place; the
    others see it and are refused early, not admitted early and refused after parsing."""
    holds = Holds()
    batcher = idle_batcher(1000.0, max_queue_seconds=1.0, holds=holds)
    state = batcher.published
    assert queue_time_refusal(state, 4000.0) is None
    token = holds.place({"m": 4000.0})
    with_hold = replace(state, costs=state.costs + tuple(holds.costs("m")))
    refusal = queue_time_refusal(with_hold, 4000.0)  # 4 s behind the held body
    assert refusal is not None and refusal.retry_after == 3
    # A request that was not checked early (a small body, a direct gRPC call) counts it too.
    with pytest.raises(QueueFull):
        batcher.admit(4000.0, 10)
    # The held body arrives, costing more than its early price: admitted without a second look.
    reservation = batcher.admit(4500.0, 10, hold=token)
    assert holds.peek(token) is None and batcher.published.costs == (4500.0,)
    batcher.release(reservation)
    # A token that holds nothing (lapsed, forged, taken) is timed like any request.
    reservation = batcher.admit(4000.0, 10, hold="not-a-token")
    with pytest.raises(QueueFull):
        batcher.admit(4000.0, 10, hold="not-a-token")
    batcher.release(reservation)
    await batcher.close()


async def test_a_refusing_batcher_still_publishes_its_own_speed() -> None:
    """A drain's end refuses everything, but the state the batcher publishes stays its own. It
    used to publish a blank ``QueueState()``, whose default speed (2,000 tokens/s) priced the early
    check's holds hundreds of times too high on a fast model: a stopping replica refused bodies
    with "would wait about 101 s" (a CI failure of the replica test)."""
    batcher = idle_batcher(480_000.0)
    batcher.refuse(Unavailable("the server is shutting down; retry the request"))
    assert batcher.published.tokens_per_second == 480_000.0 and batcher.published.costs == ()
    await batcher.close()
