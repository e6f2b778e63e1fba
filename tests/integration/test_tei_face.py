"""Text Embeddings Inference's faces through the real Envoy, called by a real TEI client
(``tei-client``: its HTTP client on ``/rerank`` and ``/info``, its gRPC client and the
``tei.v1`` stubs it generated from TEI's own proto on our gRPC port): same ranking as
``/v1/rerank``, scores ``sigmoid`` of the same logits (or the logits with ``raw_scores``), TEI's
error shapes, and the same API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tei_client import GrpcClient, HttpClient
from tei_client.models import ModelType, TruncationDirection
from tei_client.stubs import tei_pb2, tei_pb2_grpc

from tests.support import API_KEY, AUTH
from tests.support.calls import best_first, jina_logits, sigmoid

# tei-client registers tei.v1 in protobuf's default pool; so does the service's own module.
pytestmark = pytest.mark.separate_process

MODEL = "xlmr-tiny"  # the stack's RERANK_DEFAULT_MODEL: TEI's API names no model
QUERY = "What is a panda?"
TEXTS = [
    "hi",
    "it is a bear",
    "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China.",
    "Пан­да — млекопитающее. 熊猫 是 中国 的 动物。",
]
T = TypeVar("T")
LONG = "bamboo " * 100 + "The giant panda is a bear species endemic to China. " * 20


@pytest.fixture
def tei_http(stack):
    client = HttpClient(stack.rest, headers={"authorization": f"Bearer {API_KEY}"}, timeout=60)
    yield client
    # The client never closes its httpx clients: their sockets would be ResourceWarnings here.
    client.client.close()
    asyncio.run(client.async_client.aclose())


def _keyed_credentials() -> grpc.ChannelCredentials:
    # Local (loopback, plaintext) credentials may carry call credentials: the API key.
    key = grpc.access_token_call_credentials(API_KEY)
    return grpc.composite_channel_credentials(grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP), key)


def with_tei_grpc(target: str, use: Callable[[GrpcClient], T]) -> T:
    """``use(client)`` with TEI's gRPC client for ``target``. The client also opens a grpc.aio
    channel on the current event loop, and closes it in ``__del__``: give it a loop of its own,
    and drop it while that loop is still current."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        client = GrpcClient(target, credentials=_keyed_credentials())
        result = use(client)
        del client
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_http_client_ranks_like_v1_with_sigmoid_scores(tei_http, rest):
    logits = jina_logits(rest, MODEL, QUERY, TEXTS)
    result = tei_http.rerank(QUERY, TEXTS, return_text=True, truncate=True)
    assert [r.index for r in result.ranks] == best_first(logits)
    for r in result.ranks:
        assert abs(r.score - sigmoid(logits[r.index])) <= 1e-6
        assert r.text == TEXTS[r.index]
    assert len({round(v, 4) for v in logits.values()}) == len(TEXTS)  # the order check can fail


def test_http_raw_scores_are_the_logits(tei_http, rest):
    logits = jina_logits(rest, MODEL, QUERY, TEXTS)
    result = tei_http.rerank(QUERY, TEXTS, raw_scores=True, truncate=True)
    assert {r.index: r.score for r in result.ranks} == pytest.approx(logits, abs=1e-6)
    assert all(r.text is None for r in result.ranks)


def test_http_response_is_a_bare_array(rest):
    body = rest.post("/rerank", json={"query": QUERY, "texts": TEXTS[:2]}).json()
    assert isinstance(body, list) and {tuple(sorted(r)) for r in body} == {("index", "score")}


def test_http_info(tei_http):
    info = tei_http.info()
    assert info.server_model_type == ModelType.Reranker and info.server_model_id == MODEL
    assert info.max_input_length == 128 and info.max_client_batch_size == 1000


def test_truncation_direction(tei_http, rest):
    right = {r.index: r.score for r in tei_http.rerank(QUERY, [LONG], raw_scores=True, truncate=True).ranks}
    left = tei_http.rerank(QUERY, [LONG], raw_scores=True, truncate=True, truncation_direction=TruncationDirection.Left)
    # Right truncation is what /v1/rerank does; left keeps the other end of the text.
    assert right[0] == pytest.approx(jina_logits(rest, MODEL, QUERY, [LONG])[0], abs=1e-6)
    assert abs(left.ranks[0].score - right[0]) > 1e-4


@pytest.mark.parametrize(
    ("body", "status", "error_type", "text"),
    [
        ({"query": QUERY, "texts": [LONG], "truncate": False}, 422, "validation", "document 0"),
        ({"query": QUERY, "texts": []}, 400, "empty", "texts"),
        ({"query": "", "texts": ["a"]}, 422, "validation", "query"),
        ({"query": QUERY}, 400, "empty", "texts"),
        ({"query": QUERY, "texts": ["a"], "truncation_direction": "middle"}, 422, "validation", "right or left"),
        ({"query": QUERY, "texts": ["x"] * 1001}, 429, "overloaded", "1000"),
        ("{not json", 422, "validation", ""),
    ],
)
def test_http_errors_in_teis_shape(rest, body, status, error_type, text):
    if isinstance(body, str):
        response = rest.post("/rerank", content=body, headers={"content-type": "application/json"})
    else:
        response = rest.post("/rerank", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error", "error_type"} and error["error_type"] == error_type
    assert text in error["error"]


def test_http_needs_the_api_key(stack):
    response = httpx.post(f"{stack.rest}/rerank", json={"query": QUERY, "texts": ["a"]}, timeout=30)
    assert response.status_code == 401 and response.json()["error_type"] == "unauthorized"


def test_grpc_client_ranks_like_v1(stack, rest):
    logits = jina_logits(rest, MODEL, QUERY, TEXTS)
    # Through Envoy's listener (native gRPC on the REST port); model_type asks tei.v1.Info.
    model_type, result = with_tei_grpc(
        f"127.0.0.1:{stack.rest_port}",
        lambda client: (client.model_type, client.rerank(QUERY, TEXTS, return_text=True, truncate=True)),
    )
    assert model_type == ModelType.Reranker
    assert [r.index for r in result.ranks] == best_first(logits)
    for r in result.ranks:
        assert abs(r.score - sigmoid(logits[r.index])) <= 1e-6  # float32 on TEI's wire
        assert r.text == TEXTS[r.index]


def test_grpc_stream_and_metadata(stack, rest):
    logits = jina_logits(rest, MODEL, QUERY, TEXTS)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = tei_pb2_grpc.RerankStub(channel)
        messages = [tei_pb2.RerankStreamRequest(query=QUERY, text=t, truncate=True, raw_scores=True) for t in TEXTS]
        reply = stub.RerankStream(iter(messages), metadata=AUTH, timeout=30)
        info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), metadata=AUTH, timeout=30)
    assert [r.index for r in reply.ranks] == best_first(logits)
    assert {r.index: r.score for r in reply.ranks} == pytest.approx(logits, abs=1e-5)
    assert reply.metadata.compute_tokens > 0 and reply.metadata.compute_chars == sum(len(t) for t in TEXTS)
    assert info.model_id == MODEL and info.model_type == tei_pb2.MODEL_TYPE_RERANKER


def test_grpc_errors(stack):
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = tei_pb2_grpc.RerankStub(channel)
        with pytest.raises(grpc.RpcError) as no_key:
            stub.Rerank(tei_pb2.RerankRequest(query=QUERY, texts=["a"]), timeout=30)
        with pytest.raises(grpc.RpcError) as too_long:
            stub.Rerank(tei_pb2.RerankRequest(query=QUERY, texts=[LONG], truncate=False), metadata=AUTH, timeout=30)
    assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "document 0" in too_long.value.details()


def test_reflection_lists_every_face(grpc_channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc_channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=AUTH, timeout=10
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    expected = {"rerank.v1.RerankService", "rerank.v1.CohereService", "rerank.v1.TeiService", "tei.v1.Rerank"}
    assert expected | {"tei.v1.Info", "grpc.health.v1.Health"} <= names
