"""A Qwen3-Reranker served beside an encoder through ``rerank.v1`` gRPC, with and without a
per-request instruction, scoring as the model card's code does (:mod:`tests.qwen3_reference`).

The real server (in this process), the real backends and the converter's real output; the
exact fp32 graph is pinned, on ONNX Runtime and on OpenVINO, so that the comparison is to 1e-4."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest
from grpc_status import rpc_status

from tests.qwen3_reference import model_card
from tests.support import AUTH
from tests.support.calls import rerank_request

QUERY = "what do giant pandas eat?"
DOCS = [
    "The giant panda eats bamboo shoots and leaves.",
    "  Stock markets fell on Tuesday.",
    "\n1864 pandas live in the wild.",
    "大熊猫主要以竹子为食。",
    "",
]
INSTRUCTION = "Given a question about animals, find the passage that answers it"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def served_dir(qwen3_folder, models_dir, tmp_path_factory):
    """The tiny Qwen3-Reranker folder beside the bert-tiny encoder folder."""
    out = tmp_path_factory.mktemp("served-qwen3")
    shutil.copytree(qwen3_folder, out / "qwen3-tiny")
    shutil.copytree(models_dir / "bert-tiny", out / "bert-tiny")
    return out


@pytest.fixture(scope="module")
def card(qwen3_checkpoint):
    return model_card(str(qwen3_checkpoint()))


@pytest.fixture(params=["fp32", "ov-fp32"])
def stub(request, served_dir, in_process_server):
    """A stub of the server serving the exact graph on ONNX Runtime, or the same graph on OpenVINO."""
    from rerank.service.protocol import rerank_pb2_grpc

    server = in_process_server(served_dir, variant=request.param)
    with grpc.insecure_channel(server.target) as channel:
        yield rerank_pb2_grpc.RerankServiceStub(channel)


def scores(reply) -> list[float]:
    by_index = {r.index: r.relevance_score for r in reply.results}
    return [by_index[i] for i in range(len(by_index))]


def bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of the call's google.rpc.BadRequest detail."""
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def test_scores_without_and_with_an_instruction_are_the_model_cards(stub, card):
    pairs = [(QUERY, d) for d in DOCS]
    plain = stub.Rerank(rerank_request("qwen3-tiny", DOCS, query=QUERY), metadata=AUTH, timeout=60)
    instructed = stub.Rerank(
        rerank_request("qwen3-tiny", DOCS, query=QUERY, instruction=INSTRUCTION), metadata=AUTH, timeout=60
    )
    for reply, instruction in ((plain, None), (instructed, INSTRUCTION)):
        expected = card.logits(pairs, instruction)
        assert max(abs(a - b) for a, b in zip(scores(reply), expected, strict=True)) <= TOLERANCE
        assert reply.usage.total_tokens == sum(len(ids) for ids in card.ids(pairs, instruction))
    assert max(abs(a - b) for a, b in zip(scores(plain), scores(instructed), strict=True)) > 100 * TOLERANCE


def test_normalized_scores_are_the_model_cards_probabilities(stub, card):
    reply = stub.Rerank(rerank_request("qwen3-tiny", DOCS[:3], query=QUERY, normalize=True), metadata=AUTH, timeout=60)
    expected = [card.probability_of(ids) for ids in card.ids([(QUERY, d) for d in DOCS[:3]])]
    assert max(abs(a - b) for a, b in zip(scores(reply), expected, strict=True)) <= TOLERANCE


def test_a_truncated_document_keeps_the_template(stub, card):
    long = "Giant pandas eat bamboo in the mountains of Sichuan. " * 80
    reply = stub.Rerank(rerank_request("qwen3-tiny", [long], query=QUERY), metadata=AUTH, timeout=60)
    (result,) = reply.results
    (ids,) = card.ids([(QUERY, long)])  # the card cuts the document's tail, its template stays whole
    assert result.truncated_tokens > 0 and len(ids) == card.max_length
    assert abs(result.relevance_score - card.logit_of(ids)) <= TOLERANCE


def test_an_encoder_refuses_an_instruction(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.Rerank(rerank_request("bert-tiny", DOCS, instruction=INSTRUCTION), metadata=AUTH, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "takes no instruction" in error.value.details()
    assert [field for field, _ in bad_request(error.value)] == ["instruction"]
    # Without one it is served as before.
    assert len(stub.Rerank(rerank_request("bert-tiny", DOCS), metadata=AUTH, timeout=30).results) == len(DOCS)


@pytest.mark.parametrize("instruction", ["", "   ", "x" * 20000])
def test_an_empty_or_huge_instruction_is_refused(stub, instruction):
    with pytest.raises(grpc.RpcError) as error:
        stub.Rerank(rerank_request("qwen3-tiny", DOCS, instruction=instruction), metadata=AUTH, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in bad_request(error.value)] == ["instruction"]


def test_the_model_cards_show_the_family_and_default_instruction(stub):
    from rerank.service.protocol import rerank_pb2

    cards = {c.id: c for c in stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data}
    assert cards["qwen3-tiny"].architecture == "qwen3"
    assert cards["qwen3-tiny"].default_instruction == (
        "Given a web search query, retrieve relevant passages that answer the query"
    )
    assert cards["bert-tiny"].default_instruction == ""


def test_a_folder_whose_prompt_was_edited_is_refused_at_start_up(qwen3_folder, tmp_path, in_process_server):
    """The start-up check scores the recorded check pairs through the folder's template: a prompt
    that is not the one the converter verified moves them, and the server does not serve it."""
    from rerank.service.errors import ConfigurationError

    folder = tmp_path / "qwen3-tiny"
    shutil.copytree(qwen3_folder, folder)
    data = json.loads((folder / "rerank.json").read_text())
    data["template"]["prompt"]["default_instruction"] = "Retrieve anything"
    (folder / "rerank.json").write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="check pairs"):
        in_process_server(tmp_path, variant="fp32")
