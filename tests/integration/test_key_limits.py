"""Per-key limits through the real service and Envoy: a key over its limit gets 429 with
Retry-After and a body naming the limit (gRPC: RESOURCE_EXHAUSTED), other keys are unaffected.
(For the whole stack of several replicas: tests/integration/test_edge.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import shutil

import grpc
import httpx
import pytest

from rerank.gateway.envoy import start as start_envoy
from rerank.service.settings import Settings
from tests.support.processes import free_port
from tests.support.prometheus import Samples
from tests.support.servers import start_service

LIMITED, FREE = "limited-key-0001", "free-key-0002"
BODY = {"query": "what do pandas eat?", "documents": ["bamboo", "fish"]}


@pytest.fixture(scope="module")
def limited_stack(models_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits-models")
    shutil.copytree(models_dir / "bert-tiny", folder / "bert-tiny")
    keys = folder / "keys"
    keys.write_text(
        f"{hashlib.sha256(LIMITED.encode()).hexdigest()} name=search-team rps=0.2\n"
        f"{hashlib.sha256(FREE.encode()).hexdigest()} name=batch-team\n"
    )
    metrics_port = free_port()
    env = {"RERANK_API_KEYS": "", "RERANK_API_KEYS_FILE": str(keys), "RERANK_METRICS_PORT": str(metrics_port)}
    proc, port, _ = start_service(folder, env=env)
    rest_port = free_port()
    envoy = start_envoy(
        Settings(rest_port=rest_port, grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1"),
        tmp_path_factory.mktemp("limits-envoy"),
    )
    try:
        yield f"http://127.0.0.1:{rest_port}", port, metrics_port
    finally:
        envoy.stop()
        proc.stop(grace=30)


def _post(base_url: str, key: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/rerank", json=BODY, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_a_key_over_its_rate_gets_429_naming_the_limit_and_others_do_not(limited_stack):
    base_url, _, _ = limited_stack
    assert _post(base_url, LIMITED).status_code == 200
    over = _post(base_url, LIMITED)  # 0.2 per second: the next one is 5 s away
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 5
    body = over.json()
    assert "search-team" in body["message"] and "requests per second" in body["message"]
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "RATE_LIMITED" and info["metadata"]["limit"] == "requests_per_second"
    assert LIMITED not in over.text  # the key's name, never the key
    for _ in range(5):
        assert _post(base_url, FREE).status_code == 200


def test_grpc_clients_get_resource_exhausted(limited_stack):
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    _, port, _ = limited_stack
    request = rerank_pb2.RerankRequest(query=BODY["query"])
    request.documents.add().string_value = "bamboo"
    metadata = (("authorization", f"Bearer {LIMITED}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        with contextlib.suppress(grpc.RpcError):  # uses the allowance (or finds it used by the REST test)
            stub.Rerank(request, metadata=metadata, timeout=30)
        with pytest.raises(grpc.RpcError) as over:  # so this one is over the limit
            stub.Rerank(request, metadata=metadata, timeout=30)
    assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(over.value.trailing_metadata())["retry-after"]) >= 1


def test_refusals_are_counted_under_the_keys_name_and_reason(limited_stack):
    """Through Envoy the edge's check refuses (the call never reaches the service); a direct gRPC
    call is refused by the service: each counted where it happened, under the key's name."""
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    base_url, port, metrics_port = limited_stack

    def scrape() -> Samples:
        auth = {"authorization": f"Bearer {FREE}"}
        return Samples.parse(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", headers=auth, timeout=10).text)

    _post(base_url, LIMITED)  # uses the allowance, or finds it used
    before = scrape()
    assert _post(base_url, LIMITED).status_code == 429
    request = rerank_pb2.RerankRequest(query=BODY["query"])
    request.documents.add().string_value = "bamboo"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
        rerank_pb2_grpc.RerankServiceStub(channel).Rerank(
            request, metadata=(("authorization", f"Bearer {LIMITED}"),), timeout=30
        )
    after = scrape()

    def moved(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert moved("rerank_edge_checks_total", key="search-team", outcome="rate_limited") == 1
    assert moved("rerank_rejected_requests_total", model="-", reason="rate_limited") == 1  # at the edge
    assert moved("rerank_rejected_requests_total", model="bert-tiny", reason="rate_limited") == 1  # direct
    assert moved("rerank_requests_total", key="search-team", code="RESOURCE_EXHAUSTED") == 1  # direct only
