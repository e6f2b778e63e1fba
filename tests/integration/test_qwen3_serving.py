"""A Qwen3-Reranker served beside an encoder, with and without a per-request instruction, scoring
as the model card's code does (:mod:`tests.qwen3_reference`): through ``rerank.v1`` gRPC, and
through the real Envoy on every face (Jina, Cohere, TEI REST, ``tei.v1`` and ``rerank.v1`` gRPC)
and both clients, where the same instruction to the encoder is refused.

The real server (in this process, or a subprocess behind Envoy), the real backends and the
converter's real output; the exact fp32 graph is pinned (on ONNX Runtime and on OpenVINO in
process), so that the comparison is to 1e-4."""

from __future__ import annotations

import json
import shutil

import grpc
import httpx
import pytest

from tests.qwen3_reference import model_card, sigmoid
from tests.support import API_KEY, AUTH
from tests.support.calls import fields_of, reasons_of, rerank_request
from tests.support.processes import free_port
from tests.support.servers import service_behind_envoy

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


def test_a_lower_max_input_length_reads_pairs_that_long(served_dir, in_process_server, card):
    """RERANK_MAX_INPUT_LENGTH: a pair is read in at most that many tokens, template kept, and the
    score is the card's for the pair cut there (what bounds a long pair's attention memory)."""
    import copy

    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    server = in_process_server(served_dir, variant="fp32", max_input_length=96)
    short = copy.copy(card)
    short.max_length = 96
    long = "Giant pandas eat bamboo in the mountains of Sichuan. " * 20
    with grpc.insecure_channel(server.target) as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        reply = stub.Rerank(rerank_request("qwen3-tiny", [long], query=QUERY), metadata=AUTH, timeout=60)
        cards = stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data
    (result,) = reply.results
    (ids,) = short.ids([(QUERY, long)])
    assert len(ids) == 96 and result.truncated_tokens > 0
    assert abs(result.relevance_score - short.logit_of(ids)) <= TOLERANCE
    own = json.loads((served_dir / "bert-tiny" / "rerank.json").read_text())["max_length"]
    assert {c.id: c.max_length for c in cards} == {"qwen3-tiny": 96, "bert-tiny": min(96, own)}


def test_an_encoder_refuses_an_instruction(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.Rerank(rerank_request("bert-tiny", DOCS, instruction=INSTRUCTION), metadata=AUTH, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "takes no instruction" in error.value.details()
    assert fields_of(error.value) == ["instruction"]
    # Without one it is served as before.
    assert len(stub.Rerank(rerank_request("bert-tiny", DOCS), metadata=AUTH, timeout=30).results) == len(DOCS)


@pytest.mark.parametrize("instruction", ["", "   ", "x" * 20000])
def test_an_empty_or_huge_instruction_is_refused(stub, instruction):
    with pytest.raises(grpc.RpcError) as error:
        stub.Rerank(rerank_request("qwen3-tiny", DOCS, instruction=instruction), metadata=AUTH, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error.value) == ["instruction"]


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


# Every face through the real Envoy. TEI's faces name no model (its REST face may, as our
# extension): the stack's default model is the Qwen3 one.


@pytest.fixture(scope="module")
def edge(served_dir, tmp_path_factory):
    """The service (the exact fp32 graphs pinned) behind Envoy: an httpx client of its REST
    port, and a gRPC channel to the same port (Envoy carries native gRPC too)."""
    env = {"RERANK_DEFAULT_MODEL": "qwen3-tiny", "RERANK_VARIANT": "fp32", "RERANK_METRICS_PORT": str(free_port())}
    with (
        service_behind_envoy(served_dir, tmp_path_factory.mktemp("qwen3-envoy"), env) as stack,
        httpx.Client(base_url=stack.rest, headers={"authorization": f"Bearer {API_KEY}"}, timeout=60) as rest,
        grpc.insecure_channel(f"127.0.0.1:{stack.rest_port}") as channel,
    ):
        yield stack, rest, channel


def _with(instruction: str | None) -> dict[str, str]:
    return {} if instruction is None else {"instruction": instruction}


def _post(rest: httpx.Client, path: str, body: dict) -> dict | list:
    response = rest.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def jina_face(edge, model, instruction):
    body = _post(edge[1], "/v1/rerank", {"model": model, "query": QUERY, "documents": DOCS, **_with(instruction)})
    return {r["index"]: r["relevance_score"] for r in body["results"]}


def cohere_face(edge, model, instruction):
    body = _post(edge[1], "/v2/rerank", {"model": model, "query": QUERY, "documents": DOCS, **_with(instruction)})
    return {r["index"]: r["relevance_score"] for r in body["results"]}


def tei_rest_face(edge, model, instruction):
    body = _post(
        edge[1], "/rerank", {"model": model, "query": QUERY, "texts": DOCS, "raw_scores": True, **_with(instruction)}
    )
    return {r["index"]: r["score"] for r in body}


def tei_grpc_face(edge, model, instruction):
    from rerank.service.protocol import tei_pb2, tei_pb2_grpc

    assert model == "qwen3-tiny"  # tei.v1 names no model: the stack's default
    request = tei_pb2.RerankRequest(query=QUERY, texts=DOCS, raw_scores=True, **_with(instruction))
    reply = tei_pb2_grpc.RerankStub(edge[2]).Rerank(request, metadata=AUTH, timeout=60)
    return {r.index: r.score for r in reply.ranks}


def rerank_grpc_face(edge, model, instruction):
    from rerank.service.protocol import rerank_pb2_grpc

    request = rerank_request(model, DOCS, query=QUERY, **_with(instruction))
    reply = rerank_pb2_grpc.RerankServiceStub(edge[2]).Rerank(request, metadata=AUTH, timeout=60)
    return {r.index: r.relevance_score for r in reply.results}


FACES = {
    "jina": (jina_face, False),
    "cohere": (cohere_face, True),
    "tei-rest": (tei_rest_face, False),
    "tei-grpc": (tei_grpc_face, False),
    "rerank-grpc": (rerank_grpc_face, False),
}
"""Face -> (its call, whether its scores are sigmoid(logit))."""


@pytest.mark.parametrize("face", sorted(FACES))
def test_every_face_serves_the_qwen3_model_with_and_without_an_instruction(edge, card, face):
    call, normalized = FACES[face]
    pairs = [(QUERY, d) for d in DOCS]
    got = {}
    for instruction in (None, INSTRUCTION):
        scores = call(edge, "qwen3-tiny", instruction)
        expected = [sigmoid(x) if normalized else x for x in card.logits(pairs, instruction)]
        got[instruction] = [scores[i] for i in range(len(DOCS))]
        # (tei.v1's scores are floats: rounded far below the tolerance)
        assert max(abs(a - b) for a, b in zip(got[instruction], expected, strict=True)) <= TOLERANCE
    assert max(abs(a - b) for a, b in zip(got[None], got[INSTRUCTION], strict=True)) > 100 * TOLERANCE


REFUSALS = {
    # REST path -> (its documents field, the status the face answers)
    "/v1/rerank": ("documents", 400),
    "/v2/rerank": ("documents", 400),
    "/rerank": ("texts", 422),  # TEI's shape: a validation error is its 422
}


@pytest.mark.parametrize("path", sorted(REFUSALS))
def test_the_encoder_refuses_an_instruction_on_every_rest_face(edge, path):
    field, status = REFUSALS[path]
    response = edge[1].post(path, json={"model": "bert-tiny", "query": QUERY, field: DOCS, "instruction": INSTRUCTION})
    assert response.status_code == status, response.text
    body = response.json()
    if path == "/rerank":
        assert body["error_type"] == "validation" and "takes no instruction" in body["error"]
    else:
        assert body["code"] == 3 and "takes no instruction" in body["message"]
        violations = [v for d in body["details"] if d["@type"].endswith("BadRequest") for v in d["field_violations"]]
        assert [v["field"] for v in violations] == ["instruction"]
        reasons = [d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo")]
        assert reasons == ["INSTRUCTION_NOT_SUPPORTED"]
    # Without one the encoder is served as before.
    assert edge[1].post(path, json={"model": "bert-tiny", "query": QUERY, field: DOCS}).status_code == 200


def test_the_encoder_refuses_an_instruction_over_grpc_through_envoy(edge):
    with pytest.raises(grpc.RpcError) as error:
        rerank_grpc_face(edge, "bert-tiny", INSTRUCTION)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (fields_of(error.value), reasons_of(error.value)) == (["instruction"], ["INSTRUCTION_NOT_SUPPORTED"])


def test_the_python_client_sends_the_instruction(edge, card):
    from rerank_client import RerankClient

    pairs = [(QUERY, d) for d in DOCS]
    with RerankClient(f"127.0.0.1:{edge[0].rest_port}", api_key=API_KEY) as client:
        result = client.rerank(QUERY, DOCS, model="qwen3-tiny", instruction=INSTRUCTION)
        with pytest.raises(grpc.RpcError) as refused:
            client.rerank(QUERY, DOCS, model="bert-tiny", instruction=INSTRUCTION)
    expected = card.logits(pairs, INSTRUCTION)
    assert max(abs(r.score - expected[r.index]) for r in result.results) <= TOLERANCE
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_node_client_sends_the_instruction(edge, card, node_client):
    target = f"127.0.0.1:{edge[0].rest_port}"
    out = node_client(target, "rerank", "qwen3-tiny", QUERY, *DOCS, "--instruction", INSTRUCTION)
    assert out.returncode == 0, out.stderr
    expected = card.logits([(QUERY, d) for d in DOCS], INSTRUCTION)
    results = json.loads(out.stdout)["results"]
    assert max(abs(r["relevance_score"] - expected[r["index"]]) for r in results) <= TOLERANCE
    refused = node_client(target, "rerank", "bert-tiny", QUERY, *DOCS, "--instruction", INSTRUCTION)
    assert refused.returncode == 1 and refused.stderr.startswith("INVALID_ARGUMENT: ")
