"""The Node.js client (``clients/node``: @grpc/grpc-js + @grpc/proto-loader reading ``protos/``)
against the real service, directly and through Envoy: its output equals a gRPC call from Python
with the generated stubs. ``npm ci`` runs once per session, in a copy of the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.support import API_KEY, AUTH, REPO

QUERY = "What is a panda?"
DOCS = ["hi", "it is a bear", "The giant panda is a bear species endemic to China.", "bamboo"]


@pytest.fixture(scope="session")
def node_client(tmp_path_factory):
    """``node cli.js`` in a copy of clients/node with its locked dependencies installed; the
    copy sits in clients/ beside the original so that ``../../protos`` still resolves."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed (apt-get install nodejs npm)"
    folder = REPO / "clients" / f".node-test-{os.getpid()}"
    shutil.copytree(REPO / "clients" / "node", folder, ignore=shutil.ignore_patterns("node_modules"))
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "RERANK_API_KEY": API_KEY}
            return subprocess.run(
                [node, str(folder / "cli.js"), *args], capture_output=True, text=True, env=env, timeout=60
            )

        yield run
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
