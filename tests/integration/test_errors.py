"""Every bad input gets the stated HTTP status and a JSON body naming the problem, through Envoy.

(The same requests over gRPC, with their ErrorInfo reasons: tests/unit/service/router/test_rerank_service.py.)"""

from __future__ import annotations

import json
import time

import pytest

GOOD = {"model": "xlmr-tiny", "query": "q", "documents": ["a", "b"]}


def bad(**changes):
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not ...}


CASES = [
    # (request body, HTTP status, gRPC code, text the message must contain, field)
    (bad(query=""), 400, 3, "query", "query"),
    (bad(query="   "), 400, 3, "query", "query"),
    (bad(query=...), 400, 3, "query", "query"),
    (bad(documents=[]), 400, 3, "documents", "documents"),
    (bad(documents=...), 400, 3, "documents", "documents"),
    (bad(documents=["ok", 42]), 400, 3, "documents[1]", "documents[1]"),
    (bad(documents=[None]), 400, 3, "documents[0]", "documents[0]"),
    (bad(documents=[{"txt": "x"}]), 400, 3, "documents[0]", "documents[0]"),
    (bad(documents=[{"text": 5}]), 400, 3, "documents[0]", "documents[0]"),
    (bad(documents=[["nested"]]), 400, 3, "documents[0]", "documents[0]"),
    (bad(top_n=0), 400, 3, "top_n", "top_n"),
    (bad(top_n=-3), 400, 3, "top_n", "top_n"),
    (bad(long_documents="chop"), 400, 3, "long_documents", "long_documents"),
    (bad(model="nope"), 404, 5, "bert-tiny, xlmr-tiny", "model"),
    (bad(documents=["x"] * 1001), 429, 8, "1000", "documents"),
]


@pytest.mark.parametrize(("body", "http", "code", "text", "field"), CASES)
def test_rest_errors(rest, body, http, code, text, field):
    response = rest.post("/v1/rerank", json=body)
    assert response.status_code == http, response.text
    error = response.json()
    assert error["code"] == code
    assert text in error["message"]
    violations = [v for d in error["details"] if d["@type"].endswith("BadRequest") for v in d["field_violations"]]
    assert violations and violations[0]["field"] == field


def test_no_model_is_the_default(rest):
    """The stack sets RERANK_DEFAULT_MODEL=xlmr-tiny, so a body naming no model is served by it (the
    README's first curl); with no default and several models it is a 400 (unit: test_validation)."""
    response = rest.post("/v1/rerank", json=bad(model=...))
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "xlmr-tiny"


def test_query_too_long_for_window(rest):
    response = rest.post("/v1/rerank", json=bad(query="panda " * 400))
    assert response.status_code == 400
    assert "query" in response.json()["message"] and "128" in response.json()["message"]


@pytest.mark.parametrize(("raw", "fragment"), [(b"{not json", ""), (b"[1,2]", "")])
def test_malformed_json(rest, raw, fragment):
    response = rest.post("/v1/rerank", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3 and response.json()["message"]


def test_wrong_type_field(rest):
    response = rest.post("/v1/rerank", json={**GOOD, "query": 123})
    assert response.status_code == 400
    assert "query" in response.json()["message"]


def test_unknown_path_and_wrong_method(rest):
    unknown = rest.post("/v1/nothing", json=GOOD)
    assert unknown.status_code == 404 and unknown.json()["message"]
    get = rest.get("/v1/rerank")
    assert get.status_code == 405 and get.json()["message"] == "Method Not Allowed"


def test_unknown_query_parameter_is_ignored(rest):
    response = rest.post("/v1/rerank?foo=bar", json=GOOD)
    assert response.status_code == 200


def test_oversized_body_is_413(rest):
    # Several times, and at once: a body over the limit once stalled for the request timeout (a
    # 408 after 30 s, about one time in three) while Envoy's early admission check was asked.
    for _ in range(6):
        started = time.monotonic()
        response = rest.post("/v1/rerank", json={**GOOD, "documents": ["x" * 1_000_000] * 5})
        assert response.status_code == 413
        assert response.json()["message"]
        assert time.monotonic() - started < 5


def test_server_survives_bad_inputs(rest):
    assert rest.post("/v1/rerank", json=GOOD).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        ("a|b", b"x"),  # a key gRPC metadata cannot hold: was a 500, "Illegal header key"
        ("*t", b"x"),
        ("x-latin", "café".encode("latin-1")),  # a value gRPC metadata cannot hold: a traceback in the log
        ("grpc-encoding", b"snappy"),  # a REST request's grpc-* header: was a 500
        ("grpc-timeout", b"1n"),
        ("x-envoy-upstream-rq-timeout-ms", b"1"),  # was a 504
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/grpc-web+proto"])
@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_headers_grpc_cannot_carry_are_dropped(rest, path, header, content_type):
    """Found by fuzzing (tests/integration/test_fuzzing.py): Envoy drops them before the service."""
    body = GOOD if path == "/v1/rerank" else {"query": "q", "texts": ["a", "b"]}
    response = rest.post(path, content=json.dumps(body), headers={header[0]: header[1], "content-type": content_type})
    assert response.status_code == 200, response.text


def test_grpc_web_errors_envoy_makes_are_json(rest):
    """Found by fuzzing: Envoy's own 400 for a non-list documents was plain text for gRPC-Web
    content types (which this gateway transcodes as REST)."""
    body = json.dumps({**GOOD, "documents": None})
    response = rest.post("/v1/rerank", content=body, headers={"content-type": "application/grpc-web+proto"})
    assert response.status_code == 400
    assert response.json()["code"] == 3 and "documents" in response.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/" + "a" * 15_000, GOOD),  # the transcoder's 404 quoted the whole path
        ("POST", "/v1/rerank", {**GOOD, "top_n": "9" * 200_000}),  # and a field's value
        ("POST", "/v2/rerank", {**GOOD, "query": {"nested": "q" * 100_000}}),
        ("POST", "/rerank", {"query": "q", "texts": ["a"], "truncate": "t" * 100_000}),  # TEI's face
        ("GET", "/v1/models/" + "%41" * 5_000, None),
    ],
)
def test_error_bodies_quote_at_most_a_bounded_prefix_of_the_request(rest, method, path, body):
    response = rest.request(method, path, json=body)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert len(response.content) < 2 * 1024, f"{len(response.content)} bytes: {response.text[:200]}..."
    error = response.json()  # still one valid JSON body
    message = error.get("message", error.get("error", ""))
    assert message, error
