"""rerank_client's retries, against a real gRPC server on loopback that answers UNAVAILABLE a
given number of times first (in-process: no model, no Envoy)."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc
from rerank_client import AsyncRerankClient, RerankClient, Retry

FAST = Retry(attempts=4, initial_backoff=0.01, max_backoff=0.02)


class Flaky(rerank_pb2_grpc.RerankServiceServicer):
    """UNAVAILABLE for the first ``failures`` calls, then a fixed answer; records the keys seen."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0
        self.keys: list[str] = []

    def Rerank(self, request, context):
        self.calls += 1
        self.keys += [v for k, v in context.invocation_metadata() if k == "authorization"]
        if self.calls <= self.failures:
            context.abort(self.code, "not now")
        result = rerank_pb2.RerankResult(index=1, relevance_score=2.5, windows=1)
        return rerank_pb2.RerankResponse(model="m", results=[result], usage=rerank_pb2.Usage(prompt_tokens=7))


@pytest.fixture
def serve():
    servers = []

    def start(servicer: Flaky) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        rerank_pb2_grpc.add_RerankServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def test_unavailable_is_retried_then_answered(serve):
    flaky = Flaky(failures=2)
    with RerankClient(serve(flaky), api_key="k", retry=FAST) as client:
        result = client.rerank("q", ["a", "b"])
    assert flaky.calls == 3 and flaky.keys == ["Bearer k"] * 3
    assert result.model == "m" and result.prompt_tokens == 7
    assert result.results[0].index == 1 and result.results[0].score == 2.5 and result.results[0].text is None


def test_gives_up_after_the_attempts(serve):
    flaky = Flaky(failures=10)
    with RerankClient(serve(flaky), api_key="k", retry=FAST) as client, pytest.raises(grpc.RpcError) as info:
        client.rerank("q", ["a"])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and flaky.calls == 4


def test_other_errors_are_not_retried(serve):
    flaky = Flaky(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)
    with RerankClient(serve(flaky), retry=FAST) as client, pytest.raises(grpc.RpcError) as info:
        client.rerank("q", ["a"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and flaky.calls == 1


async def test_async_client_retries_too(serve, monkeypatch):
    monkeypatch.setenv("RERANK_API_KEY", "from-env")
    flaky = Flaky(failures=2)
    async with AsyncRerankClient(serve(flaky), retry=FAST) as client:
        result = await client.rerank("q", ["a", "b"])
    assert flaky.calls == 3 and flaky.keys == ["Bearer from-env"] * 3 and result.results[0].index == 1


def test_backoff_grows_and_is_capped():
    retry = Retry(initial_backoff=0.1, max_backoff=0.3, multiplier=2)
    for _ in range(200):
        assert 0 <= retry.backoff(1) <= 0.1 and 0 <= retry.backoff(5) <= 0.3
