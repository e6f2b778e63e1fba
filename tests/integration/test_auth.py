"""API keys on both paths, through Envoy and directly; health is public.

(Header and key-file parsing, and the interceptor on every method: tests/unit/service/router/test_auth.py.)"""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import API_KEY, OTHER_KEY

BODY = {"model": "xlmr-tiny", "query": "q", "documents": ["a"]}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": f"Basic {API_KEY}"}, 401),
        ({"authorization": "Bearer"}, 401),
        ({"authorization": API_KEY}, 401),
        ({"authorization": f"Bearer {API_KEY}"}, 200),
        ({"authorization": f"bearer {OTHER_KEY}"}, 200),
    ],
)
def test_rest_auth(stack, headers, status):
    for method, path, kwargs in (("POST", "/v1/rerank", {"json": BODY}), ("GET", "/v1/models", {})):
        response = httpx.request(method, stack.rest + path, headers=headers, timeout=30, **kwargs)
        assert response.status_code == status, response.text
        if status == 401:
            assert response.json()["code"] == 16
            assert "API key" in response.json()["message"]
            assert API_KEY not in response.text


@pytest.mark.parametrize(
    ("metadata", "ok"),
    [
        ((), False),
        ((("authorization", "Bearer nope"),), False),
        ((("authorization", f"Bearer {API_KEY}"),), True),
    ],
)
def test_grpc_auth_direct_and_through_envoy(stack, metadata, ok):
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    for target in (stack.grpc_target, f"127.0.0.1:{stack.rest_port}"):
        with grpc.insecure_channel(target) as channel:
            stub = rerank_pb2_grpc.RerankServiceStub(channel)
            request = rerank_pb2.RerankRequest(model="xlmr-tiny", query="q")
            request.documents.add().string_value = "a"
            if ok:
                assert stub.Rerank(request, metadata=metadata, timeout=30).results
            else:
                with pytest.raises(grpc.RpcError) as info:
                    stub.Rerank(request, metadata=metadata, timeout=30)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError):
                    stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=metadata, timeout=30)


def test_health_is_public_on_both_paths(stack):
    for target in (stack.grpc_target, f"127.0.0.1:{stack.rest_port}"):
        with grpc.insecure_channel(target) as channel:
            for service in ("", "rerank.v1.RerankService"):
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
