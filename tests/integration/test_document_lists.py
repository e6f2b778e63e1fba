"""``documents`` must be a JSON list: the transcoder would read a lone string or object as a
list of one, so Envoy refuses it (400, naming the field) before transcoding — without being
fooled by the same key inside strings or nested objects."""

from __future__ import annotations

import pytest

BASE = {"model": "xlmr-tiny", "query": "What is a panda?"}


@pytest.mark.parametrize(
    ("documents", "kind"),
    [("a bear", "a string"), ({"text": "a bear"}, "an object"), (True, "a boolean"), (7, "a number")],
)
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_documents_that_are_not_a_list_are_400(rest, path, documents, kind):
    response = rest.post(path, json={**BASE, "documents": documents})
    assert response.status_code == 400, response.text
    assert f"documents is {kind}; it must be a list" in response.text


@pytest.mark.parametrize(
    "body",
    [
        {**BASE, "documents": ["a bear"]},
        {"query": 'say "documents": "x"', "model": "xlmr-tiny", "documents": ["a bear"]},
        {"meta": {"documents": "x"}, **BASE, "documents": ["a bear"]},
        {"query": 'a \\" "documents": 1', "model": "xlmr-tiny", "documents": [{"text": "a bear"}]},
    ],
)
def test_lists_pass_whatever_else_the_body_says(rest, body):
    response = rest.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text


def test_a_null_list_is_refused_as_null(rest):
    # Transcoded, null would become a list of one null: the message would name documents[0].
    response = rest.post("/v1/rerank", json={**BASE, "documents": None})
    assert response.status_code == 400 and response.json()["message"].startswith("documents is null;")
