"""Unit-test fixtures: the real gRPC server, in this process, over a stand-in backend.

No torch, no Envoy, no subprocess: :class:`tests.support.StandInBackend` scores by word overlap
and each model folder holds a real ``tokenizers`` tokenizer built in code, so the servicer,
validation, authentication and error paths run exactly as in production, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend, write_stand_in_model

STAND_IN_LIMITS = {
    "max_documents": 20,
    "max_queue_pairs": 12,
    "max_batch_tokens": 256,
    "max_batch_pairs": 8,
    "max_request_bytes": 64 * 1024,
}
"""Small limits, so the tests reach each of them cheaply."""


@pytest.fixture(scope="session")
def stand_in_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two stand-in model folders, ``alpha`` and ``beta`` (max length 16)."""
    root = tmp_path_factory.mktemp("stand-in-models")
    for name in ("alpha", "beta"):
        write_stand_in_model(root, name, max_length=16)
    return root


@pytest.fixture(scope="session")
def stand_in_server(stand_in_models: Path) -> Iterator[InProcessServer]:
    """``rerank.service.server.RerankServer`` serving the stand-in models, with API keys."""
    settings = server_settings(stand_in_models, **STAND_IN_LIMITS)
    with InProcessServer(settings, backend=StandInBackend.for_folder) as server:
        yield server


@pytest.fixture(scope="session")
def stand_in_channel(stand_in_server: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stand_in_server.target) as channel:
        yield channel


@pytest.fixture(scope="session")
def stand_in_stub(stand_in_channel: grpc.Channel) -> Any:
    from rerank.service.protocol import rerank_pb2_grpc

    return rerank_pb2_grpc.RerankServiceStub(stand_in_channel)
