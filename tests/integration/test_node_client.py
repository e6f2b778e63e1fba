"""The Node.js client (``clients/node``: @grpc/grpc-js + @grpc/proto-loader reading ``protos/``)
against the real service, directly and through Envoy: its output equals a gRPC call from Python
with the generated stubs. ``npm ci`` runs once per session, in a copy of the folder
(the ``node_client`` fixture)."""

from __future__ import annotations

import json

import pytest

from tests.support import AUTH

QUERY = "What is a panda?"
DOCS = ["hi", "it is a bear", "The giant panda is a bear species endemic to China.", "bamboo"]


def python_results(stub, top_n: int):
    from rerank.service.protocol import rerank_pb2

    request = rerank_pb2.RerankRequest(model="bert-tiny", query=QUERY, top_n=top_n, return_documents=False)
    for d in DOCS:
        request.documents.add().string_value = d
    reply = stub.Rerank(request, metadata=AUTH, timeout=30)
    return [{"index": r.index, "relevance_score": r.relevance_score} for r in reply.results], reply.usage.prompt_tokens


@pytest.mark.parametrize("through_envoy", [False, True])
def test_node_rerank_equals_python(node_client, stack, stub, through_envoy):
    target = f"127.0.0.1:{stack.rest_port}" if through_envoy else stack.grpc_target
    out = node_client(target, "rerank", "bert-tiny", QUERY, *DOCS, "--top-n", "3")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    results, tokens = python_results(stub, 3)
    assert body == {"model": "bert-tiny", "results": results, "prompt_tokens": tokens}


def test_node_list_models_and_errors(node_client, stack):
    models = node_client(stack.grpc_target, "models")
    assert models.returncode == 0, models.stderr
    assert {m["id"] for m in json.loads(models.stdout)} == {"xlmr-tiny", "bert-tiny"}
    missing = node_client(stack.grpc_target, "rerank", "nope", QUERY, "a")
    assert missing.returncode == 1 and missing.stderr.startswith("NOT_FOUND: ")
