"""Envoy's bounds on clients: a client trickling its headers is cut off within the headers
timeout, oversized headers are 431 (never the service's 429), and a native gRPC message over the
body limit is RESOURCE_EXHAUSTED (not UNKNOWN)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import time

import grpc
import pytest

from rerank.gateway.envoy import start as start_envoy
from rerank.service.settings import Settings
from tests.support import AUTH
from tests.support.processes import free_port
from tests.support.servers import start_service


@pytest.fixture(scope="module")
def bounded(models_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bounds-models")
    shutil.copytree(models_dir / "bert-tiny", folder / "bert-tiny")
    proc, port, _ = start_service(folder)
    rest_port = free_port()
    settings = Settings(
        rest_port=rest_port, grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1", headers_timeout=1.0
    )
    envoy = start_envoy(settings, tmp_path_factory.mktemp("bounds-envoy"))
    try:
        yield rest_port
    finally:
        envoy.stop()
        proc.stop(grace=30)


def test_a_client_trickling_its_headers_is_cut_off(bounded):
    with socket.create_connection(("127.0.0.1", bounded), timeout=1) as client:
        client.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 20:
            try:
                client.sendall(b"X-Slow: 1\r\n")
                if client.recv(4096) == b"":
                    break  # closed (possibly after a 408)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the connection stayed open {elapsed:.1f} s with a 1 s headers timeout"


@pytest.mark.parametrize("size", [20_000, 50_000])
def test_oversized_headers_are_431(bounded, size):
    connection = http.client.HTTPConnection("127.0.0.1", bounded, timeout=30)
    connection.request(
        "POST",
        "/v1/rerank",
        body=json.dumps({"query": "q", "documents": ["a"]}),
        headers={"Authorization": "Bearer " + "x" * size, "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 431
    assert body["code"] == 3 and "metadata" not in body["message"]


def test_a_grpc_message_over_the_limit_through_envoy_is_resource_exhausted(bounded):
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    request = rerank_pb2.RerankRequest(query="q")
    for _ in range(5):
        request.documents.add().string_value = "x" * 1_000_000
    options = [("grpc.max_send_message_length", 64 << 20)]
    with (
        grpc.insecure_channel(f"127.0.0.1:{bounded}", options=options) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        rerank_pb2_grpc.RerankServiceStub(channel).Rerank(request, metadata=AUTH, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
