"""A request that names no model gets the default-model setting's, on every face: what lets the
README's first curl (no ``model``) work whatever else the models directory holds (``make serve``
sets ``RERANK_DEFAULT_MODEL`` to the model it converted)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.support import AUTH
from tests.support.calls import rerank_request
from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend, write_stand_in_model

LONG = "the giant panda eats bamboo in the forest on the mountain by the river"


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    """Two stand-in models that differ in their window, ``wide`` (16 tokens) and ``narrow`` (10,
    the default): a long document shows which one scored it."""
    models = tmp_path_factory.mktemp("models")
    write_stand_in_model(models, "wide", max_length=16)
    write_stand_in_model(models, "narrow", max_length=10)
    settings = server_settings(models, default_model="narrow")
    with (
        InProcessServer(settings, backend=StandInBackend.for_folder) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        yield channel


def test_jina_face(channel: grpc.Channel) -> None:
    from rerank.service.protocol import rerank_pb2_grpc

    stub = rerank_pb2_grpc.RerankServiceStub(channel)
    assert stub.Rerank(rerank_request("", [LONG], query="panda"), metadata=AUTH, timeout=10).model == "narrow"
    assert stub.Rerank(rerank_request("wide", [LONG], query="panda"), metadata=AUTH, timeout=10).model == "wide"


def test_cohere_face(channel: grpc.Channel) -> None:
    from rerank.service.protocol import cohere_pb2, cohere_pb2_grpc

    stub = cohere_pb2_grpc.CohereServiceStub(channel)

    def tokens(model: str) -> int:
        request = cohere_pb2.CohereRerankRequest(model=model, query="panda", documents=[LONG])
        return stub.Rerank(request, metadata=AUTH, timeout=10).meta.tokens.input_tokens

    assert (tokens("narrow"), tokens("wide")) == (10, 16)
    assert tokens("") == 10
