"""The Jina-compatible JSON API through the real Envoy, against transformers' scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.reference import transformers_scores
from tests.support import DOCS, QUERY


@pytest.mark.parametrize(("name", "kind"), [("xlmr-tiny", "xlmr"), ("bert-tiny", "bert")])
def test_scores_equal_transformers(rest, checkpoint, name, kind):
    response = rest.post("/v1/rerank", json={"model": name, "query": QUERY, "documents": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = transformers_scores(checkpoint(kind), QUERY, DOCS)
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert sorted(got) == list(range(len(DOCS)))
    diff = max(abs(got[i] - expected[i]) for i in range(len(DOCS)))
    assert diff <= 1e-4, (got, expected)
    # The fixture models must tell documents apart, or this test could not fail.
    assert np.std(expected) > 0.05


def test_exact_json_shape(rest):
    body = rest.post("/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS[:3]}).json()
    assert set(body) == {"model", "object", "results", "usage"}
    assert body["model"] == "xlmr-tiny" and body["object"] == "list"
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    assert isinstance(body["usage"]["prompt_tokens"], int) and body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]
    indexes = [r["index"] for r in body["results"]]
    assert 0 in indexes  # "index": 0 is printed
    for result in body["results"]:
        assert isinstance(result["index"], int)
        assert isinstance(result["relevance_score"], float)
        assert result["document"] == {"text": DOCS[result["index"]]}
        assert result["truncated_tokens"] == 0 and result["windows"] == 1
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_usage_counts_fed_tokens(rest, checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint("xlmr")))
    expected = sum(
        len(ids) for ids in tok([QUERY] * len(DOCS), DOCS, truncation="only_second", max_length=128)["input_ids"]
    )
    body = rest.post("/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS}).json()
    assert body["usage"]["prompt_tokens"] == expected


def test_top_n_and_return_documents(rest):
    full = rest.post("/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS}).json()
    top = rest.post(
        "/v1/rerank",
        json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": False},
    ).json()
    assert [r["index"] for r in top["results"]] == [r["index"] for r in full["results"]][:2]
    assert all("document" not in r for r in top["results"])
    over = rest.post("/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS, "top_n": 99}).json()
    assert len(over["results"]) == len(DOCS)


def test_ties_sorted_by_index(rest):
    body = rest.post(
        "/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": ["same", "same", "same"]}
    ).json()
    assert [r["index"] for r in body["results"]] == [0, 1, 2]


def test_mixed_documents_and_model_default(rest, stack):
    docs = ["hi", {"text": "it is a bear"}, DOCS[2]]
    body = rest.post("/v1/rerank", json={"model": "bert-tiny", "query": QUERY, "documents": docs}).json()
    plain = rest.post(
        "/v1/rerank", json={"model": "bert-tiny", "query": QUERY, "documents": ["hi", "it is a bear", DOCS[2]]}
    ).json()
    assert body["results"] == plain["results"]
    assert {r["document"]["text"] for r in body["results"]} == {"hi", "it is a bear", DOCS[2]}


def test_normalize_is_sigmoid_of_logit(rest):
    raw = rest.post("/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS}).json()
    norm = rest.post(
        "/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": DOCS, "normalize": True}
    ).json()
    raw_by = {r["index"]: r["relevance_score"] for r in raw["results"]}
    for r in norm["results"]:
        assert 0.0 < r["relevance_score"] < 1.0
        assert r["relevance_score"] == pytest.approx(1 / (1 + math.exp(-raw_by[r["index"]])), abs=1e-12)
    assert [r["index"] for r in norm["results"]] == [r["index"] for r in raw["results"]]


def test_truncation_reported(rest, checkpoint):
    long_doc = "bamboo forest panda " * 200
    body = rest.post("/v1/rerank", json={"model": "xlmr-tiny", "query": QUERY, "documents": [long_doc, "hi"]}).json()
    by = {r["index"]: r for r in body["results"]}
    assert by[0]["truncated_tokens"] > 0 and by[1]["truncated_tokens"] == 0
    expected = transformers_scores(checkpoint("xlmr"), QUERY, [long_doc])
    assert abs(by[0]["relevance_score"] - expected[0]) <= 1e-4


def test_list_models(rest, models_dir):
    import json

    body = rest.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"]: m for m in body["data"]}
    assert set(ids) == {"xlmr-tiny", "bert-tiny"}
    card = ids["xlmr-tiny"]
    assert card["object"] == "model" and card["max_length"] == 128
    variants = json.loads((models_dir / "xlmr-tiny" / "rerank.json").read_text())["variants"]
    assert card["architecture"] == "xlm-roberta" and card["precision"] == variants[card["variant"]]["precision"]
    assert ids["bert-tiny"]["architecture"] == "bert"
    batching = card["batching"]
    assert batching["max_documents"] == 1000
    # The start-up batch sizing, through the JSON transcoding (int64-free: plain numbers).
    assert batching["batch_tokens"] in {t["tokens"] for t in batching["timed"]}
    assert batching["sizing"].startswith("fastest of") and all(t["tokens_per_second"] > 0 for t in batching["timed"])


def test_health_needs_no_key(rest_anonymous):
    response = rest_anonymous.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": ["bert-tiny", "xlmr-tiny"]}
