"""The ``rerank.v1.RerankService`` servicer over real gRPC, in process, on stand-in models:
responses, ListModels, Health, and every bad request's status, reason and field."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from rerank.service.backends.base import Batch
from tests.support import AUTH
from tests.support.calls import fields_of, reasons_of, rerank_request
from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend, word_overlap

QUERY = "what does the panda eat"
DOCUMENTS = ["the red car", "the panda eats bamboo", "a giant panda", "bamboo forest", "the fox"]


def test_results_best_first_with_their_documents(stand_in_stub: Any) -> None:
    reply = stand_in_stub.Rerank(rerank_request("alpha", DOCUMENTS, query=QUERY), metadata=AUTH, timeout=10)
    assert reply.model == "alpha" and reply.object == "list"
    expected = sorted(range(len(DOCUMENTS)), key=lambda i: (-word_overlap(QUERY, DOCUMENTS[i]), i))
    assert [r.index for r in reply.results] == expected
    for r in reply.results:
        assert r.relevance_score == word_overlap(QUERY, DOCUMENTS[r.index])
        assert r.document.text == DOCUMENTS[r.index]
        assert (r.truncated_tokens, r.windows) == (0, 1)
    # [CLS] query [SEP] document [SEP]: one token per word here.
    tokens = sum(3 + len(QUERY.split()) + len(d.split()) for d in DOCUMENTS)
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (tokens, tokens)


def test_options(stand_in_stub: Any) -> None:
    def rerank(**fields: Any) -> Any:
        request = rerank_request("beta", DOCUMENTS, query=QUERY, **fields)
        return stand_in_stub.Rerank(request, metadata=AUTH, timeout=10).results

    full = rerank()
    top = rerank(top_n=2, return_documents=False)
    assert [r.index for r in top] == [r.index for r in full][:2]
    assert not any(r.HasField("document") for r in top)
    assert len(rerank(top_n=50)) == len(DOCUMENTS)
    normalized = rerank(normalize=True)
    assert [r.index for r in normalized] == [r.index for r in full]
    for raw, norm in zip(full, normalized, strict=True):
        assert norm.relevance_score == pytest.approx(1 / (1 + math.exp(-raw.relevance_score)), rel=1e-12)


def test_text_objects_score_like_strings(stand_in_stub: Any) -> None:
    mixed = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, {"text": DOCUMENTS[2], "id": "x"}]
    by_objects = stand_in_stub.Rerank(rerank_request("alpha", mixed, query=QUERY), metadata=AUTH, timeout=10)
    plain = stand_in_stub.Rerank(rerank_request("alpha", DOCUMENTS[:3], query=QUERY), metadata=AUTH, timeout=10)
    assert by_objects.results == plain.results


def test_windows_over_grpc(stand_in_stub: Any) -> None:
    long_document = " ".join(["dog"] * 20 + ["panda"])  # 21 tokens; room for 12 beside "panda"
    request = rerank_request("alpha", [long_document], query="panda", long_documents="window")
    (windowed,) = stand_in_stub.Rerank(request, metadata=AUTH, timeout=10).results
    assert (windowed.relevance_score, windowed.windows, windowed.truncated_tokens) == (1.0, 2, 0)
    (cut,) = stand_in_stub.Rerank(rerank_request("alpha", [long_document], query="panda"), metadata=AUTH).results
    assert (cut.relevance_score, cut.windows, cut.truncated_tokens) == (0.0, 1, 9)


def test_list_models_shows_the_served_models(stand_in_stub: Any) -> None:
    from rerank.service.protocol import rerank_pb2

    stand_in_stub.Rerank(rerank_request("beta", ["panda"], query="panda"), metadata=AUTH, timeout=10)
    reply = stand_in_stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10)
    assert reply.object == "list"
    cards = {c.id: c for c in reply.data}
    assert sorted(cards) == ["alpha", "beta"]
    card = cards["beta"]
    assert (card.object, card.owned_by, card.max_length, card.architecture) == ("model", "rerank", 16, "stand-in")
    assert (card.precision, card.provider, card.variant) == ("fp32", "StandInExecutionProvider", "fp32")
    assert card.source == "stand-in-source" and list(card.notes) == ["a stand-in for the tests"]
    batching = card.batching
    assert (batching.max_batch_tokens, batching.max_batch_pairs, batching.max_queue_pairs) == (256, 8, 12)
    assert batching.max_documents == 20
    assert card.stats.requests >= 1 and card.stats.pairs >= 1 and card.stats.batches >= 1
    assert card.stats.queued_pairs == 0


def test_health_names_the_models(stand_in_stub: Any) -> None:
    from rerank.service.protocol import rerank_pb2

    reply = stand_in_stub.Health(rerank_pb2.HealthRequest(), timeout=10)  # public: no key
    assert (reply.status, list(reply.models)) == ("ok", ["alpha", "beta"])


# --- bad requests --------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"model": "alpha", "query": "panda", "documents": ["a", "b"]}


def bad(**changes: Any) -> dict[str, Any]:
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not ...}


INVALID, NOT_FOUND, EXHAUSTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
CASES = [
    # (request, code, ErrorInfo reason, BadRequest field, text the message must contain)
    (bad(query=""), INVALID, "EMPTY_QUERY", "query", "query"),
    (bad(query=" \u200b "), INVALID, "EMPTY_QUERY", "query", "query"),
    (bad(query=...), INVALID, "EMPTY_QUERY", "query", "query"),
    (bad(query=" ".join(["panda"] * 13)), INVALID, "QUERY_TOO_LONG", "query", "at most 16 tokens"),
    (bad(documents=[]), INVALID, "NO_DOCUMENTS", "documents", "documents"),
    (bad(documents=["ok", 42]), INVALID, "BAD_DOCUMENT", "documents[1]", "is a number"),
    (bad(documents=[None]), INVALID, "BAD_DOCUMENT", "documents[0]", "is null"),
    (bad(documents=[{"txt": "x"}]), INVALID, "BAD_DOCUMENT", "documents[0]", '"text"'),
    (bad(documents=[["nested"]]), INVALID, "BAD_DOCUMENT", "documents[0]", "is a list"),
    (bad(top_n=0), INVALID, "BAD_TOP_N", "top_n", "top_n"),
    (bad(long_documents="chop"), INVALID, "BAD_LONG_DOCUMENTS", "long_documents", "'chop'"),
    (bad(model="gamma"), NOT_FOUND, "MODEL_NOT_FOUND", "model", "alpha, beta"),
    (bad(model=...), INVALID, "MODEL_REQUIRED", "model", "alpha, beta"),
    (bad(documents=["x"] * 21), EXHAUSTED, "TOO_MANY_DOCUMENTS", "documents", "the limit is 20"),
    # 13 pairs, each within the document limit but past the queue's 12 pairs:
    (bad(documents=["x"] * 13), EXHAUSTED, "TOO_MANY_DOCUMENTS", "documents", "more than the queue holds"),
]


def as_value(item: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if item is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(item, str):
        value.string_value = item
    elif isinstance(item, dict):
        value.struct_value.update(item)
    elif isinstance(item, list):
        value.list_value.extend(item)
    else:
        value.number_value = item
    return value


@pytest.mark.parametrize(("body", "code", "reason", "field", "text"), CASES)
def test_bad_requests(
    stand_in_stub: Any, body: dict[str, Any], code: grpc.StatusCode, reason: str, field: str, text: str
) -> None:
    from rerank.service.protocol import rerank_pb2

    request = rerank_pb2.RerankRequest(
        model=body.get("model", ""),
        query=body.get("query", ""),
        documents=[as_value(d) for d in body.get("documents", [])],
        long_documents=body.get("long_documents", ""),
    )
    if "top_n" in body:
        request.top_n = body["top_n"]
    with pytest.raises(grpc.RpcError) as info:
        stand_in_stub.Rerank(request, metadata=AUTH, timeout=10)
    assert info.value.code() == code
    assert text in info.value.details()
    assert (fields_of(info.value), reasons_of(info.value)) == ([field], [reason])


def test_a_message_over_the_limit_is_resource_exhausted(stand_in_stub: Any) -> None:
    request = rerank_request("alpha", ["x" * (64 * 1024)], query="panda")
    with pytest.raises(grpc.RpcError) as info:
        stand_in_stub.Rerank(request, metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_full_queue_is_resource_exhausted(stand_in_models: Path) -> None:
    """While the model holds one pair, the rest of a request waits in the queue; a request that
    would take the queue past its limit is refused at once, and the first one still succeeds."""
    from rerank.service.protocol import rerank_pb2_grpc

    gate = threading.Event()

    class Held(StandInBackend):
        def run(self, batch: Batch) -> np.ndarray:
            assert gate.wait(20), "never released"
            return super().run(batch)

    gate.set()  # the warm-up at start passes
    settings = server_settings(stand_in_models, max_queue_pairs=4, max_batch_pairs=1)
    with InProcessServer(settings, backend=lambda folder, config: Held()) as server:
        gate.clear()
        with grpc.insecure_channel(server.target) as channel:
            stub = rerank_pb2_grpc.RerankServiceStub(channel)
            first = stub.Rerank.future(rerank_request("alpha", ["panda"] * 4, query="panda"), metadata=AUTH, timeout=30)
            deadline = time.monotonic() + 10
            while queued_pairs(stub, "alpha") != 3:  # one pair inside the model, three waiting
                assert time.monotonic() < deadline, "the first request never queued"
                time.sleep(0.01)
            with pytest.raises(grpc.RpcError) as info:
                stub.Rerank(rerank_request("alpha", ["a", "b"], query="panda"), metadata=AUTH, timeout=10)
            gate.set()
            assert len(first.result().results) == 4
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry later" in info.value.details()
    assert reasons_of(info.value) == ["QUEUE_FULL"]
    assert int(dict(info.value.trailing_metadata())["retry-after"]) >= 1


def queued_pairs(stub: Any, model: str) -> int:
    from rerank.service.protocol import rerank_pb2

    cards = stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data
    return int({c.id: c for c in cards}[model].stats.queued_pairs)
