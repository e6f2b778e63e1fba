"""``instruction`` on every face's request (rerank.v1, Cohere, TEI's REST shape, ``tei.v1``
unary and streaming): it reaches a model that reads a prompt and changes its score; left out, the
model's default applies; a model that takes none refuses it (INVALID_ARGUMENT, reason
INSTRUCTION_NOT_SUPPORTED, field ``instruction``), and an empty or over-long one is refused on
every face alike.

Over real gRPC, in process, on stand-in models: ``encoder`` (no prompt) and ``prompted``, whose
prompt puts the instruction's words before the query's, so that the stand-in's word-overlap score
counts them (:func:`tests.support.stand_in.word_overlap` of the instruction and query is the
reference)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from rerank.service.model_folder import PromptTemplate
from tests.support import AUTH
from tests.support.calls import fields_of, reasons_of, rerank_request
from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend, word_overlap, write_stand_in_model

DEFAULT = "forest"
PROMPT = PromptTemplate(query="{instruction} {query}", document="{document}", default_instruction=DEFAULT)
QUERY = "panda"
DOCUMENTS = ["the panda eats bamboo", "bamboo forest", "the river", "the red car"]
INSTRUCTION = "bamboo river"
LIMIT = 64
"""The servers' query limit in characters, which an instruction is held to as well."""


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, grpc.Channel]]:
    """A channel per default model (``tei.v1`` names no model: the default is what it serves),
    each to a server of both models."""
    models = tmp_path_factory.mktemp("models")
    write_stand_in_model(models, "encoder")
    write_stand_in_model(models, "prompted", prompt=PROMPT)
    servers = {
        name: InProcessServer(
            server_settings(models, default_model=name, max_query_chars=LIMIT), backend=StandInBackend.for_folder
        ).start()
        for name in ("encoder", "prompted")
    }
    opened = {name: grpc.insecure_channel(server.target) for name, server in servers.items()}
    yield opened
    for name, channel in opened.items():
        channel.close()
        servers[name].stop()


def _optional(instruction: str | None) -> dict[str, str]:
    return {} if instruction is None else {"instruction": instruction}


def jina(channel: grpc.Channel, model: str, instruction: str | None) -> dict[int, float]:
    from rerank.service.protocol import rerank_pb2_grpc

    request = rerank_request(model, DOCUMENTS, query=QUERY, **_optional(instruction))
    reply = rerank_pb2_grpc.RerankServiceStub(channel).Rerank(request, metadata=AUTH, timeout=10)
    return {r.index: r.relevance_score for r in reply.results}


def cohere(channel: grpc.Channel, model: str, instruction: str | None) -> dict[int, float]:
    from rerank.service.protocol import cohere_pb2, cohere_pb2_grpc

    request = cohere_pb2.CohereRerankRequest(model=model, query=QUERY, documents=DOCUMENTS, **_optional(instruction))
    reply = cohere_pb2_grpc.CohereServiceStub(channel).Rerank(request, metadata=AUTH, timeout=10)
    return {r.index: _logit(r.relevance_score) for r in reply.results}  # Cohere's scores are sigmoid(logit)


def tei_rest(channel: grpc.Channel, model: str, instruction: str | None) -> dict[int, float]:
    from rerank.service.protocol import tei_rest_pb2, tei_rest_pb2_grpc

    request = tei_rest_pb2.TeiRerankRequest(
        model=model, query=QUERY, texts=DOCUMENTS, raw_scores=True, **_optional(instruction)
    )
    reply = tei_rest_pb2_grpc.TeiServiceStub(channel).Rerank(request, metadata=AUTH, timeout=10)
    return {r.index: r.score for r in reply.ranks}


def tei_grpc(channel: grpc.Channel, model: str, instruction: str | None) -> dict[int, float]:
    from rerank.service.protocol import tei_pb2, tei_pb2_grpc

    request = tei_pb2.RerankRequest(query=QUERY, texts=DOCUMENTS, raw_scores=True, **_optional(instruction))
    reply = tei_pb2_grpc.RerankStub(channel).Rerank(request, metadata=AUTH, timeout=10)
    return {r.index: r.score for r in reply.ranks}


def tei_stream(channel: grpc.Channel, model: str, instruction: str | None) -> dict[int, float]:
    """``tei.v1.RerankStream``: the instruction, as every option, is read from the first message."""
    from rerank.service.protocol import tei_pb2, tei_pb2_grpc

    first = tei_pb2.RerankStreamRequest(query=QUERY, text=DOCUMENTS[0], raw_scores=True, **_optional(instruction))
    rest = [tei_pb2.RerankStreamRequest(text=text, instruction="ignored") for text in DOCUMENTS[1:]]
    reply = tei_pb2_grpc.RerankStub(channel).RerankStream(iter([first, *rest]), metadata=AUTH, timeout=10)
    return {r.index: r.score for r in reply.ranks}


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


Face = Callable[[grpc.Channel, str, "str | None"], dict[int, float]]
FACES: dict[str, Face] = {
    "jina": jina,
    "cohere": cohere,
    "tei-rest": tei_rest,
    "tei-grpc": tei_grpc,
    "tei-stream": tei_stream,
}


@pytest.fixture(params=sorted(FACES))
def face(request: pytest.FixtureRequest, channels: dict[str, grpc.Channel]) -> Callable[[str, str | None], Any]:
    """``face(model, instruction)``: the face's call, on the server whose default is ``model``."""
    call = FACES[request.param]
    return lambda model, instruction: call(channels[model], model, instruction)


def expected(instruction: str) -> dict[int, float]:
    return {i: word_overlap(f"{instruction} {QUERY}", d) for i, d in enumerate(DOCUMENTS)}


def test_the_instruction_reaches_the_model_and_changes_its_scores(face: Any) -> None:
    plain, instructed = face("prompted", None), face("prompted", INSTRUCTION)
    assert plain == pytest.approx(expected(DEFAULT), abs=1e-6)  # the model's default instruction
    assert instructed == pytest.approx(expected(INSTRUCTION), abs=1e-6)
    assert plain != pytest.approx(instructed, abs=1e-6)


def test_an_encoder_refuses_an_instruction_and_serves_without_one(face: Any) -> None:
    with pytest.raises(grpc.RpcError) as error:
        face("encoder", INSTRUCTION)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "takes no instruction" in error.value.details()
    assert (fields_of(error.value), reasons_of(error.value)) == (["instruction"], ["INSTRUCTION_NOT_SUPPORTED"])
    assert face("encoder", None) == pytest.approx({i: word_overlap(QUERY, d) for i, d in enumerate(DOCUMENTS)})


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [("", "EMPTY_INSTRUCTION"), (" \u200b ", "EMPTY_INSTRUCTION"), ("x" * (LIMIT + 1), "INSTRUCTION_TOO_LONG")],
    ids=["empty", "invisible", "too-long"],
)
@pytest.mark.parametrize("model", ["encoder", "prompted"])
def test_an_empty_or_over_long_instruction_is_refused(face: Any, model: str, instruction: str, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        face(model, instruction)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (fields_of(error.value), reasons_of(error.value)) == (["instruction"], [reason])
