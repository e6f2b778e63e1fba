"""Integration fixtures: tiny real checkpoints, converted by the real converter, served by the
real gRPC server and the real Envoy, all on free loopback ports.

Fixtures only: the helpers they use, and that tests use, are in :mod:`tests.support`.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from tests.support import API_KEY
from tests.support.conversions import convert_with_cli
from tests.support.processes import free_port
from tests.support.servers import InProcessServer, Stack, server_settings, start_service

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
    from rerank.gateway.envoy import start as start_envoy
    from rerank.service.settings import Settings

    # RERANK_DEFAULT_MODEL: the model the TEI faces serve (their API names none).
    # RERANK_METRICS_PORT: GET /metrics through Envoy, as rerank-stack routes it.
    metrics_port = free_port()
    env = {"RERANK_DEFAULT_MODEL": "xlmr-tiny", "RERANK_METRICS_PORT": str(metrics_port)}
    proc, port, _ = start_service(models_dir, env=env)
    rest_port = free_port()
    envoy = start_envoy(
        Settings(
            rest_port=rest_port,
            grpc_port=port,
            admin_port=free_port(),
            rest_host="127.0.0.1",
            metrics_port=metrics_port,
        ),
        tmp_path_factory.mktemp("envoy"),
    )
    try:
        yield Stack(port, rest_port, models_dir, proc)
    finally:
        envoy.stop()
        proc.stop(grace=20)


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
