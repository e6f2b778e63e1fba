"""Integration fixtures: tiny real checkpoints, converted by the real converter, served by the
real gRPC server and the real Envoy, all on free loopback ports.

Fixtures only: the helpers they use, and that tests use, are in :mod:`tests.support`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support import API_KEY, REPO
from tests.support.conversions import convert_with_cli
from tests.support.processes import free_port
from tests.support.servers import InProcessServer, server_settings, service_behind_envoy

SEPARATE_PROCESS = {"test_tei_face.py"}
"""Test files that import tei-client, whose ``tei.v1`` module cannot share protobuf's default
descriptor pool with the service's own: importing one at collection time breaks every in-process
server of the run. They are collected only by a run for them alone (``-m separate_process``, as
``make test`` does) or when named on the command line."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name not in SEPARATE_PROCESS:
        return None
    named = any(Path(arg.split("::")[0]).resolve() == collection_path for arg in config.args)
    return not (named or config.getoption("markexpr") == "separate_process")


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def checkpoint(checkpoint_dir):
    """``checkpoint(kind)``: the fixture checkpoint folder of one architecture, built once."""
    from rerank.converters.testing.checkpoints import make_checkpoint  # torch: only for the tests that ask

    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = make_checkpoint(kind, checkpoint_dir / kind, seed=0)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def qwen3_checkpoint(checkpoint_dir):
    """``qwen3_checkpoint(tied=True)``: the tiny Qwen3-Reranker checkpoint
    (:mod:`rerank.converters.testing.qwen3`), built once per layout."""
    from rerank.converters.testing.qwen3 import make_qwen3_checkpoint

    cache: dict[bool, Path] = {}

    def get(tied: bool = True) -> Path:
        if tied not in cache:
            name = "qwen3-reranker-tiny" if tied else "qwen3-reranker-tiny-untied"
            cache[tied] = make_qwen3_checkpoint(checkpoint_dir / name, "tiny", tied=tied)
        return cache[tied]

    return get


@pytest.fixture(scope="session")
def qwen3_folder(qwen3_checkpoint, tmp_path_factory) -> Path:
    """The tiny Qwen3-Reranker converted by ``rerank-convert`` (default variants), as
    ``qwen3-tiny``."""
    return convert_with_cli(qwen3_checkpoint(), tmp_path_factory.mktemp("qwen3-models"), "qwen3-tiny")


SERVED = {"xlmr-tiny": "xlmr", "bert-tiny": "bert"}
"""Served model name -> fixture kind, for the end-to-end server."""


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, checkpoint) -> Path:
    """A models directory written by ``rerank-convert`` (the real CLI, in a subprocess)."""
    out = tmp_path_factory.mktemp("models")
    for name, kind in SERVED.items():
        convert_with_cli(checkpoint(kind), out, name)
    return out


@pytest.fixture(scope="session")
def stack(models_dir, tmp_path_factory):
    """The real service plus the real Envoy in front of it."""
    # RERANK_DEFAULT_MODEL: the model the TEI faces serve (their API names none).
    # RERANK_METRICS_PORT: GET /metrics through Envoy, as rerank-stack routes it.
    env = {"RERANK_DEFAULT_MODEL": "xlmr-tiny", "RERANK_METRICS_PORT": str(free_port())}
    with service_behind_envoy(models_dir, tmp_path_factory.mktemp("envoy"), env) as served:
        yield served


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


@pytest.fixture
def in_process_server():
    """``in_process_server(models_dir, **settings)``: ``rerank.service.server.RerankServer`` with the real
    ONNX backend, started in this process (:class:`tests.support.InProcessServer`) and stopped after
    the test. For a server of its own where a subprocess adds nothing: no signals, exit status or
    command line under test."""
    servers: list[InProcessServer] = []

    def start(models_dir: Path, **settings) -> InProcessServer:
        servers.append(InProcessServer(server_settings(models_dir, **settings)).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def rest(stack):
    with httpx.Client(base_url=stack.rest, headers={"authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        yield client


@pytest.fixture
def rest_anonymous(stack):
    with httpx.Client(base_url=stack.rest, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def grpc_channel(stack):
    with grpc.insecure_channel(stack.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(grpc_channel):
    from rerank.service.protocol import rerank_pb2_grpc

    return rerank_pb2_grpc.RerankServiceStub(grpc_channel)
