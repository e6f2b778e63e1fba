"""rerank_client (sync and async) and the ``rerank`` command against the real service and
Envoy: the same results as a plain gRPC call with the generated stubs, the key from the
environment, deadlines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from rerank_client import AsyncRerankClient, RerankClient
from tests.support import API_KEY, AUTH

QUERY = "What is a panda?"
DOCS = ["hi", "it is a bear", "The giant panda is a bear species endemic to China.", "bamboo"]


def stub_results(stub, **fields):
    from rerank.service.protocol import rerank_pb2

    request = rerank_pb2.RerankRequest(model="xlmr-tiny", query=QUERY, **fields)
    for d in DOCS:
        request.documents.add().string_value = d
    return [(r.index, r.relevance_score) for r in stub.Rerank(request, metadata=AUTH, timeout=30).results]


@pytest.mark.parametrize("through_envoy", [False, True])
def test_sync_client_matches_the_stubs(stack, stub, through_envoy):
    target = f"127.0.0.1:{stack.rest_port}" if through_envoy else stack.grpc_target
    with RerankClient(target, api_key=API_KEY) as client:
        result = client.rerank(QUERY, DOCS, model="xlmr-tiny", top_n=3, return_documents=True)
        models = client.list_models()
    assert [(r.index, r.score) for r in result.results] == stub_results(stub, top_n=3)
    assert [r.text for r in result.results] == [DOCS[r.index] for r in result.results]
    assert {m.id for m in models} == {"xlmr-tiny", "bert-tiny"}


async def test_async_client_matches_the_stubs(stack, stub, monkeypatch):
    monkeypatch.setenv("RERANK_API_KEY", API_KEY)
    async with AsyncRerankClient(stack.grpc_target) as client:
        result = await client.rerank(QUERY, DOCS, model="xlmr-tiny", normalize=True)
    assert [(r.index, r.score) for r in result.results] == stub_results(stub, normalize=True)


def test_deadline_and_key_errors(stack):
    with RerankClient(stack.grpc_target, api_key=API_KEY) as client, pytest.raises(grpc.RpcError) as late:
        client.rerank(QUERY, DOCS * 200, model="xlmr-tiny", timeout=0.001)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with RerankClient(stack.grpc_target, api_key="wrong") as client, pytest.raises(grpc.RpcError) as denied:
        client.list_models()
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _cli(stack, *args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "rerank"  # the console script installed beside this Python
    env = {**os.environ, "RERANK_API_KEY": API_KEY, "RERANK_TARGET": stack.grpc_target, "COLUMNS": "200"}
    return subprocess.run([str(command), *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_json_and_table(stack, stub, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n\n")
    out = _cli(stack, "query", QUERY, str(docs), "--model", "xlmr-tiny", "--top-n", "3", "--json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert [(r["index"], r["score"]) for r in body["results"]] == stub_results(stub, top_n=3)
    table = _cli(stack, "query", QUERY, str(docs), "--model", "xlmr-tiny", "--top-n", "3")
    assert table.returncode == 0, table.stderr
    best = body["results"][0]
    assert DOCS[best["index"]] in table.stdout and f"{best['score']:.4f}" in table.stdout


def test_cli_reports_errors_in_one_line(stack, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("a\n")
    out = _cli(stack, "query", QUERY, str(docs), "--model", "nope")
    assert out.returncode == 1 and out.stderr.startswith("rerank: NOT_FOUND: ") and out.stderr.count("\n") == 1
