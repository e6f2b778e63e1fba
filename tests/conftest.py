"""Session fixtures: tiny real checkpoints, converted by the real converter, served by the real
gRPC server and the real Envoy, all on free loopback ports."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.supervisor import Child, grpc_serving

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def checkpoint(checkpoint_dir):
    """``checkpoint(kind)``: the fixture checkpoint folder of one architecture, built once."""
    from converters.testing.checkpoints import make_checkpoint  # torch: only for the tests that ask

    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = make_checkpoint(kind, checkpoint_dir / kind, seed=0)
        return cache[kind]

    return get


SERVED = {"xlmr-tiny": "xlmr", "bert-tiny": "bert"}
"""Served model name -> fixture kind, for the end-to-end server."""


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, checkpoint) -> Path:
    """A models directory written by ``rerank-convert`` (the real CLI, in a subprocess)."""
    out = tmp_path_factory.mktemp("models")
    for name, kind in SERVED.items():
        result = subprocess.run(
            [sys.executable, "-m", "converters.cli", str(checkpoint(kind)), "--name", name, "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return out


@dataclass
class Stack:
    grpc_port: int
    rest_port: int
    models_dir: Path
    process: Child

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_service(models_dir: Path, *extra: str, env: dict | None = None) -> tuple[Child, int, Path]:
    """``python -m service`` on a free port, ready (SERVING); its output goes to a log file."""
    port = free_port()
    log = models_dir.parent / f"service-{port}.log"
    full_env = {"RERANK_API_KEYS": f"{API_KEY},{OTHER_KEY}", "RERANK_DRAIN_DELAY": "0", **(env or {})}
    command = [sys.executable, "-m", "service", "--models-dir", str(models_dir), "--grpc-host", "127.0.0.1"]
    child = Child("service", [*command, "--grpc-port", str(port), *extra], env=full_env, cwd=REPO, log_path=log)
    child.start().wait_until(lambda: grpc_serving(port), timeout=120)
    return child, port, log


@pytest.fixture(scope="session")
def stack(models_dir, tmp_path_factory):
    """The real service plus the real Envoy in front of it."""
    from gateway.envoy import start as start_envoy
    from service.settings import Settings

    # RERANK_DEFAULT_MODEL: the model the TEI faces serve (their API names none).
    proc, port, _ = start_service(models_dir, env={"RERANK_DEFAULT_MODEL": "xlmr-tiny"})
    rest_port = free_port()
    envoy = start_envoy(
        Settings(rest_port=rest_port, grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1"),
        tmp_path_factory.mktemp("envoy"),
    )
    try:
        yield Stack(port, rest_port, models_dir, proc)
    finally:
        envoy.stop()
        proc.stop(grace=20)


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
    from service.protocol import rerank_pb2_grpc

    return rerank_pb2_grpc.RerankServiceStub(grpc_channel)


AUTH = (("authorization", f"Bearer {API_KEY}"),)
