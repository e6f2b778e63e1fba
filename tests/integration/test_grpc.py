"""The native gRPC face: scores, reflection, health, defaults, logs and shutdown."""

from __future__ import annotations

import shutil
import signal

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.reference import transformers_scores
from tests.support import API_KEY, AUTH, DOCS, QUERY
from tests.support.calls import rerank_request
from tests.support.servers import start_service


@pytest.mark.parametrize(("name", "kind"), [("xlmr-tiny", "xlmr"), ("bert-tiny", "bert")])
def test_grpc_scores_equal_transformers(stub, checkpoint, name, kind):
    reply = stub.Rerank(rerank_request(name, DOCS), metadata=AUTH, timeout=30)
    expected = transformers_scores(checkpoint(kind), QUERY, DOCS)
    assert reply.model == name and reply.object == "list"
    assert len(reply.results) == len(DOCS)
    for r in reply.results:
        assert abs(r.relevance_score - expected[r.index]) <= 1e-4
        assert r.document.text == DOCS[r.index]


def test_grpc_and_rest_agree(stub, rest):
    reply = stub.Rerank(rerank_request("xlmr-tiny", DOCS, top_n=3, return_documents=False), metadata=AUTH, timeout=30)
    body = rest.post(
        "/v1/rerank",
        json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": False},
    ).json()
    assert [(r.index, r.relevance_score) for r in reply.results] == [
        (r["index"], r["relevance_score"]) for r in body["results"]
    ]
    assert all(not r.HasField("document") for r in reply.results)
    assert reply.usage.prompt_tokens == body["usage"]["prompt_tokens"]


def test_reflection_lists_services(grpc_channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc_channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=AUTH, timeout=10
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"rerank.v1.RerankService", "grpc.health.v1.Health"} <= names


def test_single_model_needs_no_name_and_clean_shutdown(models_dir, tmp_path):
    only = tmp_path / "one"
    shutil.copytree(models_dir / "xlmr-tiny", only / "xlmr-tiny")
    proc, port, log = start_service(only)
    try:
        from rerank.service.protocol import rerank_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = rerank_pb2_grpc.RerankServiceStub(channel).Rerank(
                rerank_request("", ["a", "b"]), metadata=AUTH, timeout=30
            )
            assert reply.model == "xlmr-tiny" and len(reply.results) == 2
    finally:
        proc.send(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert API_KEY not in log.read_text()


def test_refuses_to_start_without_keys(models_dir):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    result = subprocess.run(
        [sys.executable, "-m", "rerank.service", "--models-dir", str(models_dir), "--grpc-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "RERANK_API_KEYS" in result.stderr
