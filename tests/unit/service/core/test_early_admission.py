"""The one admission rule (:func:`queue_time_refusal`), shared by the batcher's exact check and
the early check before a body is read (``GET /admission`` on the metrics port)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from service.core.batching import QueueState, queue_time_refusal
from service.errors import QueueFull
from service.router.auth import Keyring
from service.telemetry.metrics_endpoint import ADMISSION_PATH, MetricsEndpoint

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

    def admission(size: int, model: str | None) -> QueueFull | None:
        asked.append((size, model))
        return queue_time_refusal(STATE, size / 4) if model != "idle" else None

    endpoint = MetricsEndpoint(
        CollectorRegistry(), keyring=Keyring.load((), None), require_key=True, admission=admission
    )
    status, _, body = _call(endpoint, "bytes=4000")
    assert status.startswith("200") and body == b"admit\n"
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
    assert _call(endpoint, "bytes=40000&model=idle")[0].startswith("200")
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
