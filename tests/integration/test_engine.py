"""The engine as a client sees it: concurrent requests, variants, queue limits, stats."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.support import API_KEY, AUTH, DOCS, QUERY, free_port, rerank_request


async def test_concurrent_requests_score_like_single_ones(stack):
    from service.protocol import rerank_pb2, rerank_pb2_grpc

    docs = [f"{d} {i}" for i in range(12) for d in DOCS[:3]]
    request = rerank_request("xlmr-tiny", docs, return_documents=False)
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        single = await stub.Rerank(request, metadata=AUTH, timeout=60)
        replies = await asyncio.gather(*(stub.Rerank(request, metadata=AUTH, timeout=60) for _ in range(8)))
        expected = {r.index: r.relevance_score for r in single.results}
        for reply in replies:
            got = {r.index: r.relevance_score for r in reply.results}
            assert max(abs(got[i] - expected[i]) for i in expected) <= 1e-5
        cards = await stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10)
    stats = {c.id: c.stats for c in cards.data}["xlmr-tiny"]
    assert stats.pairs >= 9 * len(docs) and stats.batches >= 1 and 0 <= stats.padding_fraction < 1
    assert stats.queued_pairs == 0


def test_default_variant_on_cpu_is_fused_fp32(stub):
    from service.protocol import rerank_pb2

    cards = {c.id: c for c in stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data}
    assert cards["xlmr-tiny"].variant == "fp32-fused" and cards["xlmr-tiny"].precision == "fp32"
    assert cards["xlmr-tiny"].provider == "CPUExecutionProvider"


def test_variant_gates_recorded(models_dir):
    import json

    data = json.loads((models_dir / "xlmr-tiny" / "rerank.json").read_text())
    gates = data["verification"]["variant_gates"]
    assert set(gates) == {"fp32-fused", "int8", "fp16"}
    for name, figures in gates.items():
        assert figures["passed"] == (name in data["variants"])
        assert figures["passed"] == (figures["spearman"] >= 0.99 and figures["same_top3"])
    assert gates["fp32-fused"]["max_abs_diff"] <= 1e-4
    assert data["variants"]["fp16"]["device"] == "cuda"


@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_forced_variant_scores_close_to_fp32(models_dir, checkpoint, in_process_server, variant):
    from service.protocol import rerank_pb2, rerank_pb2_grpc
    from tests.reference import transformers_scores

    server = in_process_server(models_dir, variant=variant)
    with grpc.insecure_channel(server.target) as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        reply = stub.Rerank(rerank_request("xlmr-tiny", DOCS, return_documents=False), metadata=AUTH, timeout=60)
        cards = stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data
    card = {c.id: c for c in cards}["xlmr-tiny"]
    assert card.variant == variant
    expected = transformers_scores(checkpoint("xlmr"), QUERY, DOCS)
    got = {r.index: r.relevance_score for r in reply.results}
    tolerance = 1e-4 if variant == "fp32" else 5e-2
    assert max(abs(got[i] - expected[i]) for i in range(len(DOCS))) <= tolerance


def test_queue_limit_is_429_through_envoy(models_dir, in_process_server, tmp_path):
    import httpx

    from gateway.envoy import start as start_envoy
    from service.settings import Settings

    server = in_process_server(models_dir, max_queue_pairs=4)
    rest_port = free_port()
    envoy = start_envoy(
        Settings(rest_port=rest_port, grpc_port=server.port, admin_port=free_port(), rest_host="127.0.0.1"), tmp_path
    )
    try:
        response = httpx.post(
            f"http://127.0.0.1:{rest_port}/v1/rerank",
            headers={"authorization": f"Bearer {API_KEY}"},
            json={"model": "xlmr-tiny", "query": "q", "documents": ["a"] * 5},
            timeout=30,
        )
    finally:
        envoy.stop()
    assert response.status_code == 429
    assert "queue" in response.json()["message"]
