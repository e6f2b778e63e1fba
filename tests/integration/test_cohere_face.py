"""Cohere's Rerank v2 face (``POST /v2/rerank``) through the real Envoy, called by the official
``cohere`` SDK (``ClientV2`` with ``base_url`` at our Envoy): same ranking as ``/v1/rerank``,
scores ``sigmoid`` of the same logits, and the SDK's own exceptions for our errors."""

from __future__ import annotations

from collections.abc import Iterator

import cohere
import httpx
import pytest
from cohere.core.api_error import ApiError
from transformers import AutoTokenizer

from tests.support import API_KEY
from tests.support.calls import best_first, jina_logits, sigmoid

QUERY = "What is a panda?"
DOCS = [
    "hi",
    "it is a bear",
    "The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply panda, "
    "is a bear species endemic to China.",
    "Пан­да — млекопитающее. 熊猫 是 中国 的 动物。",
    "bamboo forest panda " * 60,
]


def cohere_client(base_url: str, api_key: str) -> Iterator[cohere.ClientV2]:
    """The SDK's client on an httpx client we close: the SDK's own is never closed, and its
    sockets would surface as ResourceWarnings (errors here). max_retries=0: the SDK would
    otherwise retry our 429s and 5xx on its own."""
    with httpx.Client(timeout=60) as http:
        yield cohere.ClientV2(api_key=api_key, base_url=base_url, max_retries=0, timeout=60, httpx_client=http)


@pytest.fixture
def co(stack):
    yield from cohere_client(stack.rest, API_KEY)


@pytest.mark.parametrize("model", ["xlmr-tiny", "bert-tiny"])
def test_same_ranking_and_sigmoid_of_the_same_logits(co, rest, model):
    reply = co.rerank(model=model, query=QUERY, documents=DOCS)
    logits = jina_logits(rest, model, QUERY, DOCS)
    assert [r.index for r in reply.results] == best_first(logits)
    for r in reply.results:
        assert 0.0 < r.relevance_score < 1.0
        assert abs(r.relevance_score - sigmoid(logits[r.index])) <= 1e-6
    # The fixture models tell the documents apart, or the order check could not fail.
    assert len({round(v, 4) for v in logits.values()}) == len(DOCS)


def test_response_shape(co, stack):
    reply = co.rerank(model="xlmr-tiny", query=QUERY, documents=DOCS[:3])
    assert reply.id
    assert reply.meta.api_version.version == "2"
    assert reply.meta.billed_units.search_units == 1
    assert reply.meta.tokens.input_tokens > 0


def test_top_n(co, rest):
    reply = co.rerank(model="xlmr-tiny", query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in reply.results] == best_first(jina_logits(rest, "xlmr-tiny", QUERY, DOCS))[:2]


def test_max_tokens_per_doc_cuts_each_document(co, checkpoint):
    """input_tokens counts what was fed: with a cap of 3, each document contributes at most 3
    tokens (counted here with the checkpoint's own Hugging Face tokenizer)."""
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint("xlmr")))
    query_len = len(tokenizer(QUERY, add_special_tokens=False)["input_ids"])
    doc_lens = [len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in DOCS]
    special = 4  # <s> q </s></s> d </s>
    cap = 3
    capped = co.rerank(model="xlmr-tiny", query=QUERY, documents=DOCS, max_tokens_per_doc=cap)
    assert capped.meta.tokens.input_tokens == sum(special + query_len + min(n, cap) for n in doc_lens)
    room = 128 - special - query_len
    default = co.rerank(model="xlmr-tiny", query=QUERY, documents=DOCS)  # 4096: only the window cuts
    assert default.meta.tokens.input_tokens == sum(special + query_len + min(n, room) for n in doc_lens)
    scores = {r.index: r.relevance_score for r in capped.results}
    assert scores != {r.index: r.relevance_score for r in default.results}


def test_priority_is_accepted(co):
    assert len(co.rerank(model="xlmr-tiny", query=QUERY, documents=DOCS[:2], priority=5).results) == 2


def test_wrong_key_raises_the_sdks_unauthorized_error(stack):
    for bad in cohere_client(stack.rest, "not-a-key"):
        with pytest.raises(cohere.UnauthorizedError) as info:
            bad.rerank(model="xlmr-tiny", query=QUERY, documents=DOCS[:2])
    assert info.value.status_code == 401 and "API key" in info.value.body["message"]


def test_too_many_documents_raises_the_sdks_too_many_requests_error(co):
    with pytest.raises(cohere.TooManyRequestsError) as info:
        co.rerank(model="xlmr-tiny", query=QUERY, documents=["x"] * 1001)
    assert info.value.status_code == 429 and "1000" in info.value.body["message"]


@pytest.mark.parametrize(
    ("fields", "status", "error", "text"),
    [
        ({"query": ""}, 400, cohere.BadRequestError, "query"),
        ({"documents": []}, 400, cohere.BadRequestError, "documents"),
        ({"top_n": 0}, 400, cohere.BadRequestError, "top_n"),
        ({"max_tokens_per_doc": 0}, 400, cohere.BadRequestError, "max_tokens_per_doc"),
        ({"model": "nope"}, 404, cohere.NotFoundError, "xlmr-tiny"),
    ],
)
def test_errors_carry_a_message(co, fields, status, error, text):
    request = {"model": "xlmr-tiny", "query": QUERY, "documents": DOCS[:2], **fields}
    with pytest.raises(ApiError) as info:
        co.rerank(**request)
    assert type(info.value) is error
    assert info.value.status_code == status and text in info.value.body["message"]
