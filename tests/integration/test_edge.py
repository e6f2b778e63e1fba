"""The edge, probed as an attacker would, on rerank-stack with two replicas: unauthenticated and
malformed callers are answered by Envoy and never count against a replica's health; a key's
rate limit holds for the stack, not per replica; the check is charged like a call, so a key
cannot place holds past its limit, and a request that never sends its body lets its place go
within a second and is logged with its key; /metrics needs a key on the public listener; a
client's own x-rerank-* headers never reach a replica."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rerank.gateway.envoy import admin_request
from tests.support import API_KEY
from tests.support.prometheus import Samples
from tests.support.stack import StackProcess

LIMITED, SLOW = "limited-key-0001", "slow-key-0002"
RPS = 2.0
SMALL = {"query": "panda", "documents": ["bamboo", "fish"], "return_documents": False}
FRAME = b"\x00\x00\x00\x00\x00"
"""An empty gRPC message, framed."""


@pytest.fixture(scope="module")
def stack(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    folder = tmp_path_factory.mktemp("edge-models")
    shutil.copytree(models_dir / "bert-tiny", folder / "bert-tiny")
    keys = folder.parent / "edge-keys"
    keys.write_text(
        f"{hashlib.sha256(API_KEY.encode()).hexdigest()} name=team\n"
        f"{hashlib.sha256(LIMITED.encode()).hexdigest()} name=limited rps={RPS:g}\n"
        f"{hashlib.sha256(SLOW.encode()).hexdigest()} name=slow rps={RPS:g}\n"
    )
    env = {"RERANK_API_KEYS": "", "RERANK_API_KEYS_FILE": str(keys)}
    running = StackProcess.start(folder, tmp_path_factory.mktemp("edge-stack") / "state", replicas=2, env=env)
    try:
        yield running
    finally:
        running.stop()


def admin_stat(stack: StackProcess, name: str) -> int:
    text = admin_request(stack.admin_port, f"/stats?filter=^{name}$") or ""
    values = [int(line.split(": ")[1]) for line in text.splitlines() if line.startswith(f"{name}: ")]
    assert values, f"Envoy has no stat {name}"
    return values[0]


def scrape(stack: StackProcess) -> Samples:
    response = httpx.get(f"{stack.base_url}/metrics", headers={"authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text[:300]
    return Samples.parse(response.text)


def test_unauthenticated_and_http1_grpc_callers_eject_no_replica(stack: StackProcess) -> None:
    """100 anonymous gRPC requests over HTTP/1.1 (which the service's gRPC server resets, and
    Envoy used to retry and count as gateway failures: 6 gave 6 ejections), and as many REST
    calls without a key: all answered at the edge, no replica ejected, none reached a replica."""
    ejections = "cluster.rerank_grpc.outlier_detection.ejections_enforced_total"
    before, upstream = admin_stat(stack, ejections), admin_stat(stack, "cluster.rerank_grpc.upstream_rq_total")
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for i in range(100):
            grpc_over_http1 = client.post(
                "/rerank.v1.RerankService/Rerank",
                content=b"\x00\x00\x00\x00\x00",
                headers={"content-type": "application/grpc"},
            )
            assert grpc_over_http1.headers.get("grpc-status") == "3", grpc_over_http1.headers
            assert "HTTP/2" in grpc_over_http1.headers["grpc-message"]
            anonymous = client.post("/v1/rerank", json=SMALL, headers={"authorization": f"Bearer wrong-{i}"})
            assert anonymous.status_code == 401 and anonymous.json()["code"] == 16
        keyed = client.post(
            "/rerank.v1.RerankService/Rerank",
            content=FRAME,
            headers={"content-type": "application/grpc", "authorization": f"Bearer {API_KEY}"},
        )
        assert keyed.headers.get("grpc-status") == "3"  # a key does not make HTTP/1.1 gRPC work
    time.sleep(6)  # outlier detection's interval (5 s): an ejection would show by now
    assert admin_stat(stack, ejections) == before
    # Only the edge's checks of the 100 REST calls went upstream (each a gRPC call that succeeds).
    assert admin_stat(stack, "cluster.rerank_grpc.upstream_rq_total") - upstream <= 100 + 20  # + health checks
    assert admin_stat(stack, "cluster.rerank_grpc.membership_healthy") == 2


def test_a_keys_rate_limit_holds_for_the_stack_not_per_replica(stack: StackProcess) -> None:
    """rps=2 with two replicas: at most ~2 requests a second (it was 4.2: each replica counted
    its own), whichever replica each request reaches."""
    served: list[str] = []
    stop = time.monotonic() + 8

    def client() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=30) as session:
            while time.monotonic() < stop:
                response = session.post("/v1/rerank", json=SMALL, headers={"authorization": f"Bearer {LIMITED}"})
                assert response.status_code in (200, 429), response.text[:200]
                if response.status_code == 200:
                    served.append(response.headers.get("x-request-id", ""))

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    rate = (len(served) - RPS) / elapsed  # the bucket's initial burst (its capacity) aside
    assert rate <= 1.1 * RPS, f"{len(served)} served in {elapsed:.1f} s: {rate:.2f}/s for a limit of {RPS:g}/s"
    assert len(served) >= RPS * elapsed * 0.5, f"only {len(served)} served in {elapsed:.1f} s"
    samples = scrape(stack)
    assert samples.total("rerank_edge_checks_total", key="limited", outcome="rate_limited") > 0


def test_a_request_that_never_sends_its_body_is_charged_lets_its_place_go_and_is_logged_with_its_key(
    stack: StackProcess,
) -> None:
    """20 requests with a key of rps=2 that send their headers (an 8 kB body announced) and never
    the body: the check charges each like a call, so the key places no more than its allowance
    (9,368 holds in 10 s did, uncharged), the places it held lapse within a second, and Envoy's
    access log names the key (it said null)."""
    before = scrape(stack)
    run = uuid.uuid4().hex[:8]
    host, port = "127.0.0.1", stack.rest_port
    sockets = []
    for i in range(20):
        connection = socket.create_connection((host, port), timeout=10)
        connection.sendall(
            (
                # 8 kB: a body the queue's bounds admit however many pairs a byte the earlier tests
                # taught the replicas.
                "POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8000\r\n"
                f"Authorization: Bearer {SLOW}\r\nX-Request-Id: headers-only-{run}-{i}\r\n\r\n"
            ).encode()
        )
        sockets.append(connection)
    time.sleep(2)  # the places held lapse after one second
    after = scrape(stack)
    for connection in sockets:
        connection.close()

    def moved(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    placed = moved("rerank_edge_checks_total", key="slow", outcome="held")
    assert 1 <= placed <= RPS + 1, f"{placed} places held for a key of {RPS:g} rps"
    assert moved("rerank_edge_checks_total", key="slow", outcome="rate_limited") == 20 - placed
    assert moved("rerank_early_holds_total", outcome="lapsed") >= placed
    assert after.total("rerank_queue_pairs") == 0
    deadline = time.monotonic() + 15  # Envoy logs a request once it ends
    logged: dict[str, dict] = {}
    while len(logged) < 20 and time.monotonic() < deadline:
        time.sleep(0.5)
        for line in stack.lines("envoy"):
            if f"headers-only-{run}" in line:
                entry = json.loads(line)
                logged[entry["request_id"]] = entry
    assert len(logged) == 20 and {e["key"] for e in logged.values()} == {"slow"}, logged


def test_metrics_need_a_key_on_the_public_listener(stack: StackProcess) -> None:
    anonymous = httpx.get(f"{stack.base_url}/metrics", timeout=10)
    assert anonymous.status_code == 401 and "rerank_" not in anonymous.text
    assert anonymous.json()["code"] == 16
    assert httpx.get(f"{stack.base_url}/metrics", headers={"authorization": "Bearer no"}, timeout=10).status_code == 401
    assert httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).status_code == 401
    samples = scrape(stack)
    assert samples.total("rerank_requests_total") >= 0 and "key-" not in json.dumps(sorted(samples.names()))


def test_a_clients_own_edge_headers_never_reach_a_replica(stack: StackProcess) -> None:
    """A forged token, replica pin or peer secret: dropped by Envoy before anything reads them."""
    before = scrape(stack).total("rerank_early_holds_total", outcome="invalid")
    forged = {
        "authorization": f"Bearer {API_KEY}",
        "x-rerank-hold": "forged-token",
        "x-rerank-replica": "MTI3LjAuMC4xOjE=",  # 127.0.0.1:1
        "x-rerank-peer": "guess",
    }
    for _ in range(5):
        response = httpx.post(f"{stack.base_url}/v1/rerank", json=SMALL, headers=forged, timeout=30)
        assert response.status_code == 200, response.text[:300]
        assert not [h for h in response.headers if h.startswith("x-rerank")]
    assert scrape(stack).total("rerank_early_holds_total", outcome="invalid") == before
