"""Health follows inference: a replica whose model hangs (its ``run`` blocked, the event loop
alive) reports NOT_SERVING within seconds, its calls are retried on the other replica and
succeed there, and it is SERVING again once the model answers; alone, it answers 503 at once
instead of letting calls wait for the route's timeout. Real Envoy in front of two real servers
(in this process) on stand-in models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rerank.gateway.envoy import Envoy
from rerank.gateway.envoy import start as start_envoy
from rerank.gateway.envoy_config.clusters import Upstream
from rerank.service.backends.base import Batch
from rerank.service.settings import Settings
from tests.support import API_KEY
from tests.support.processes import free_port
from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend, write_stand_in_model

STALL_SECONDS = 1.0
BODY = {"model": "alpha", "query": "panda bear", "documents": ["panda", "bear", "red car"]}


class Hangable(StandInBackend):
    """The stand-in model, whose ``run`` blocks while :attr:`hung` is set (a stuck inference)."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = threading.Event()
        self.released = threading.Event()

    def run(self, batch: Batch) -> np.ndarray:
        if self.hung.is_set():
            self.released.wait(120)
        return super().run(batch)


class Replica:
    def __init__(self, models: Path) -> None:
        self.backend = Hangable()
        settings = server_settings(models, stall_seconds=STALL_SECONDS, max_queue_seconds=5.0)
        self.server = InProcessServer(settings, backend=lambda folder, config: self.backend).start()

    def hang(self) -> None:
        self.backend.released.clear()
        self.backend.hung.set()

    def recover(self) -> None:
        self.backend.hung.clear()
        self.backend.released.set()

    def health(self) -> int:
        with grpc.insecure_channel(self.server.target) as channel:
            request = health_pb2.HealthCheckRequest(service="rerank.v1.RerankService")
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


def gateway(replicas: list[Replica], workdir: Path) -> tuple[str, Envoy]:
    settings = Settings(rest_port=free_port(), admin_port=free_port(), rest_host="127.0.0.1", health_check_interval=0.5)
    endpoints = [Upstream("127.0.0.1", r.server.port) for r in replicas]
    return f"http://127.0.0.1:{settings.rest_port}", start_envoy(settings, workdir, endpoints=endpoints)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    write_stand_in_model(tmp_path / "models", "alpha")
    return tmp_path / "models"


@pytest.fixture
def two(models: Path, tmp_path: Path) -> Iterator[tuple[str, Replica, Replica]]:
    first, second = Replica(models), Replica(models)
    base_url, envoy = gateway([first, second], tmp_path / "envoy")
    try:
        yield base_url, first, second
    finally:
        first.recover()
        envoy.stop()
        first.server.stop()
        second.server.stop()


def post_many(base_url: str, count: int, timeout: float = 60) -> list[tuple[float, httpx.Response]]:
    """``count`` requests at once through Envoy: (seconds each took, response)."""
    results: list[tuple[float, httpx.Response]] = []

    def one() -> None:
        started = time.monotonic()
        response = httpx.post(
            f"{base_url}/v1/rerank", json=BODY, headers={"authorization": f"Bearer {API_KEY}"}, timeout=timeout
        )
        results.append((time.monotonic() - started, response))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return results


def wait_for(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_hung_replica_reports_not_serving_and_its_calls_succeed_on_the_other(two) -> None:
    base_url, hung, healthy = two
    assert [r.status_code for _, r in post_many(base_url, 4)] == [200] * 4
    hung.hang()
    started = time.monotonic()
    results = post_many(base_url, 12)  # about half of them reach the hung replica first
    assert [r.status_code for _, r in results] == [200] * 12, [r.text[:200] for _, r in results]
    assert max(seconds for seconds, _ in results) < 10, sorted(round(s, 1) for s, _ in results)
    assert hung.backend.hung.is_set() and hung.server.server.stalls  # it did hang, and knew it
    assert hung.health() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert time.monotonic() - started < 10
    with grpc.insecure_channel(hung.server.target) as channel:  # /health (REST) is this method
        from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

        with pytest.raises(grpc.RpcError) as unhealthy:
            rerank_pb2_grpc.RerankServiceStub(channel).Health(rerank_pb2.HealthRequest(), timeout=5)
    assert unhealthy.value.code() == grpc.StatusCode.UNAVAILABLE and "stuck" in unhealthy.value.details()
    assert healthy.health() == health_pb2.HealthCheckResponse.SERVING
    hung.recover()  # the stuck micro-batch ends: inference works again
    wait_for(lambda: hung.health() == health_pb2.HealthCheckResponse.SERVING, timeout=10)
    assert [r.status_code for _, r in post_many(base_url, 4)] == [200] * 4


def test_a_lone_hung_replica_answers_503_at_once(models: Path, tmp_path: Path) -> None:
    alone = Replica(models)
    base_url, envoy = gateway([alone], tmp_path / "envoy")
    try:
        alone.hang()
        first = post_many(base_url, 4)  # these meet the hang: answered once it is found
        assert {r.status_code for _, r in first} == {503}, [r.text[:200] for _, r in first]
        assert max(seconds for seconds, _ in first) < STALL_SECONDS + 5
        assert all(r.json()["code"] == 14 for _, r in first)
        later = post_many(base_url, 4)  # refused by the edge's check at once
        assert {r.status_code for _, r in later} == {503} and max(s for s, _ in later) < 1.5
        assert "stuck" in later[0][1].json()["message"]
        health = httpx.get(f"{base_url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["code"] == 14
    finally:
        alone.recover()
        envoy.stop()
        alone.server.stop()
