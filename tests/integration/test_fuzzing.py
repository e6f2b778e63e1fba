"""Fuzzing: generated requests against every face of the real service behind the real Envoy.

Seeded and small here (``make test``); ``make fuzz`` runs the same tests at full size
(``RERANK_FUZZ=full``: at least 10,000 REST requests and 10,000 gRPC calls, random seeds;
``RERANK_FUZZ_SEED=N`` replays one). The strategies and properties are in
:mod:`tests.fuzzing`. The stack is this module's own, so that its memory is the fuzzing's and
no other test shares its state; the last test checks that it still answers as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st

from tests import fuzzing
from tests.fuzzing import FULL, SEED, ServiceWatch, Tally, check_grpc, check_rest, examples, hypothesis_settings
from tests.support import API_KEY, AUTH, DOCS, QUERY
from tests.support.calls import rerank_request
from tests.support.processes import free_port
from tests.support.servers import Stack, start_service

pytestmark = pytest.mark.timeout(1200 if FULL else 300)


@dataclass
class Fuzzed:
    stack: Stack
    metrics_port: int
    log: Path
    watch: ServiceWatch
    tally: Tally
    before: dict[str, Any]
    rest: httpx.Client
    direct: grpc.Channel
    envoy: grpc.Channel
    started: float


def answers(rest: httpx.Client, stub: Any) -> dict[str, Any]:
    """Scores for valid requests on every face: what the stack answers before and after fuzzing."""
    auth = {"authorization": f"Bearer {API_KEY}"}
    docs = [d for d in DOCS if d]
    out: dict[str, Any] = {}
    for model in fuzzing.MODELS:
        response = rest.post("/v1/rerank", json={"model": model, "query": QUERY, "documents": docs}, headers=auth)
        assert response.status_code == 200, response.text
        out[f"v1 {model}"] = [(r["index"], r["relevance_score"]) for r in response.json()["results"]]
    response = rest.post("/v2/rerank", json={"model": "bert-tiny", "query": QUERY, "documents": docs}, headers=auth)
    assert response.status_code == 200, response.text
    out["v2"] = [(r["index"], r["relevance_score"]) for r in response.json()["results"]]
    response = rest.post("/rerank", json={"query": QUERY, "texts": docs, "raw_scores": True}, headers=auth)
    assert response.status_code == 200, response.text
    out["tei"] = [(r["index"], r["score"]) for r in response.json()]
    reply = stub.Rerank(rerank_request("xlmr-tiny", docs), metadata=AUTH, timeout=30)
    out["grpc"] = [(r.index, r.relevance_score) for r in reply.results]
    return out


@pytest.fixture(scope="module")
def fuzzed(models_dir, tmp_path_factory) -> Iterator[Fuzzed]:
    """The real service and the real Envoy, as the session's ``stack`` fixture starts them."""
    from rerank.gateway.envoy import start as start_envoy
    from rerank.service.protocol import rerank_pb2_grpc
    from rerank.service.settings import Settings

    metrics_port = free_port()
    env = {"RERANK_DEFAULT_MODEL": "xlmr-tiny", "RERANK_METRICS_PORT": str(metrics_port)}
    proc, port, log = start_service(models_dir, env=env)
    rest_port = free_port()
    settings = Settings(
        rest_port=rest_port, grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1", metrics_port=metrics_port
    )
    envoy = start_envoy(settings, tmp_path_factory.mktemp("fuzz-envoy"))
    stack = Stack(port, rest_port, models_dir, proc)
    try:
        with (
            httpx.Client(base_url=stack.rest, timeout=60) as rest,
            grpc.insecure_channel(stack.grpc_target) as direct,
            grpc.insecure_channel(f"127.0.0.1:{rest_port}") as through_envoy,
        ):
            before = answers(rest, rerank_pb2_grpc.RerankServiceStub(direct))
            watch = ServiceWatch(proc.pid, proc.alive)  # warmed up: both models have run
            yield Fuzzed(
                stack, metrics_port, log, watch, Tally(), before, rest, direct, through_envoy, time.monotonic()
            )
    finally:
        envoy.stop()
        proc.stop(grace=20)


def run(test: Any, examples_: int) -> None:
    """Runs the hypothesis test ``test`` with the fuzzing settings (and ``RERANK_FUZZ_SEED``)."""
    test = hypothesis_settings(examples_)(test)
    if SEED is not None:
        test = seed(SEED)(test)
    test()


def send(f: Fuzzed, kind: str, method: str, path: str, body: bytes, headers: dict[str, Any]) -> httpx.Response:
    response = f.rest.request(method, path, content=body, headers=headers)
    f.tally.rest(kind, response.status_code)
    ctype = headers.get("content-type")
    check_rest(response, path, ctype.decode("latin-1") if isinstance(ctype, bytes) else ctype)
    f.watch.check()
    return response


AUTH_HEADER = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}


# --------------------------------------------------------------------------------- REST


def test_rest_schemathesis(fuzzed):
    """schemathesis from the served ``/openapi.json``: cases that fit each operation's schema and
    cases that break it, on every public route, each answer checked by schemathesis (no server
    error, the documented content type) and by :func:`tests.fuzzing.check_rest`."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{fuzzed.stack.rest}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith(("/v1/", "/v2/", "/rerank", "/info", "/health"))
    ]
    assert {op.path for op in operations if op.method.upper() == "POST"} == set(fuzzing.REST_FACES)
    checks = [schemathesis.checks.not_a_server_error]
    for operation in operations:
        post = operation.method.upper() == "POST"
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=strategy, auth=st.sampled_from([f"Bearer {API_KEY}"] * 4 + ["", "Bearer nope"]))
        def exchange(case: Any, auth: str) -> None:
            response = case.call(base_url=fuzzed.stack.rest, headers={"authorization": auth}, timeout=60)
            fuzzed.tally.rest("schemathesis", response.status_code)
            case.validate_response(response, checks=checks)
            assert response.status_code < 500, response.text[:300]
            if response.status_code >= 300:
                body = response.json()
                assert body.get("message") or body.get("error"), response.text[:300]
            fuzzed.watch.check()

        run(exchange, examples(600, 25) if post else examples(30, 3))


@pytest.mark.parametrize("path", fuzzing.REST_FACES)
def test_rest_raw_bodies(fuzzed, path):
    """Hypothesis-built bodies: objects with wrong types, odd Unicode and unknown fields,
    escaped or raw (lone surrogates as invalid UTF-8), cut or corrupted; malformed JSON."""

    @given(body=fuzzing.raw_bodies(path))
    def exchange(body: bytes) -> None:
        send(fuzzed, "bodies", "POST", path, body, AUTH_HEADER)

    run(exchange, examples(2000, 40))


def test_rest_headers(fuzzed):
    """Odd or missing Authorization and Content-Type, headers Envoy and gRPC read
    (grpc-timeout, x-envoy-*), random and huge headers, on valid and invalid bodies."""

    @given(path=st.sampled_from(fuzzing.REST_FACES), headers=fuzzing.header_sets(), data=st.data())
    def exchange(path: str, headers: dict[str, bytes], data: st.DataObject) -> None:
        body = data.draw(st.one_of(fuzzing.raw_bodies(path), st.just(VALID[path])))
        send(fuzzed, "headers", "POST", path, body, headers)

    run(exchange, examples(1900, 50))


def test_rest_paths_and_methods(fuzzed):
    """Every method on the public paths, near-miss paths (case, slashes, encodings, gRPC paths)."""

    @given(request=fuzzing.odd_requests(), auth=st.booleans())
    def exchange(request: tuple[str, str, bytes], auth: bool) -> None:
        method, path, body = request
        headers = AUTH_HEADER if auth else {"content-type": "application/json"}
        send(fuzzed, "paths", method, path, body if method not in ("GET", "HEAD") else b"", headers)

    run(exchange, examples(600, 30))


def test_rest_sizes(fuzzed):
    """Bodies near and over Envoy's 4 MiB limit, documents over the character limit, 1000
    documents: a 4xx or a 200, never a 5xx, and memory stays bounded."""
    for path, body in fuzzing.size_cases():
        send(fuzzed, "sizes", "POST", path, body, AUTH_HEADER)


def test_rest_odd_unicode(fuzzed):
    """Every odd piece of text (NUL, RTL, combining marks, emoji, lone surrogates escaped and raw)
    in an otherwise valid request's query and documents, on every face."""
    for path, body in fuzzing.odd_unicode_cases():
        send(fuzzed, "unicode", "POST", path, body, AUTH_HEADER)


VALID = {
    "/v1/rerank": b'{"model": "xlmr-tiny", "query": "q", "documents": ["a", {"text": "b"}]}',
    "/v2/rerank": b'{"model": "bert-tiny", "query": "q", "documents": ["a", "b"]}',
    "/rerank": b'{"query": "q", "texts": ["a", "b"]}',
}


# --------------------------------------------------------------------------------- gRPC


def _call(channel: grpc.Channel, method: fuzzing.Method, request: Any, meta: Any, raw: bool) -> Any:
    if method.streaming:
        stream = channel.stream_unary(method.path, request_serializer=None if raw else _serialize)
        return stream(iter(request), metadata=meta, timeout=30)
    unary = channel.unary_unary(method.path, request_serializer=None if raw else _serialize)
    return unary(request, metadata=meta, timeout=30)


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ["direct", "envoy"])
def test_grpc_messages(fuzzed, route):
    """Hypothesis-built messages of every method, with odd metadata, on the service's port and
    through Envoy."""
    channel = fuzzed.direct if route == "direct" else fuzzed.envoy
    methods = fuzzing.grpc_methods()

    @given(data=st.data(), index=st.integers(0, len(methods) - 1), meta=fuzzing.metadata())
    def exchange(data: st.DataObject, index: int, meta: Any) -> None:
        method = methods[index]
        request = data.draw(method.messages)
        code = check_grpc(lambda: _call(channel, method, request, meta, raw=False))
        fuzzed.tally.grpc(f"messages-{route}", code)
        fuzzed.watch.check()

    run(exchange, examples(2800, 80))


@pytest.mark.parametrize("route", ["direct", "envoy"])
def test_grpc_odd_unicode(fuzzed, route):
    """The same odd text in valid ``Rerank`` messages."""
    from rerank.service.protocol import rerank_pb2_grpc

    stub = rerank_pb2_grpc.RerankServiceStub(fuzzed.direct if route == "direct" else fuzzed.envoy)
    for message in fuzzing.odd_unicode_messages():
        code = check_grpc(lambda message=message: stub.Rerank(message, metadata=AUTH, timeout=30))
        fuzzed.tally.grpc(f"unicode-{route}", code)
        fuzzed.watch.check()


@pytest.mark.parametrize("route", ["direct", "envoy"])
def test_grpc_raw_bytes(fuzzed, route):
    """Raw bytes as the message of a generic unary (or client-streaming) call: random, or a
    valid message mutated; unknown methods too."""
    channel = fuzzed.direct if route == "direct" else fuzzed.envoy
    methods = fuzzing.grpc_methods()
    unknown = [fuzzing.Method(path, st.just(b"")) for path in fuzzing.UNKNOWN_METHODS]

    @given(data=st.data(), index=st.integers(0, len(methods) + len(unknown) - 1), meta=fuzzing.metadata())
    def exchange(data: st.DataObject, index: int, meta: Any) -> None:
        method = [*methods, *unknown][index]
        if method.streaming:
            request: Any = data.draw(st.lists(fuzzing.raw_messages(method.messages.map(lambda m: m[:1])), max_size=4))
        elif index >= len(methods):
            request = data.draw(st.binary(max_size=100))
        else:
            request = data.draw(fuzzing.raw_messages(method.messages))
        code = check_grpc(lambda: _call(channel, method, request, meta, raw=True))
        fuzzed.tally.grpc(f"raw-{route}", code)
        fuzzed.watch.check()

    run(exchange, examples(2300, 60))


# --------------------------------------------------------------------------------- the admission path


@pytest.mark.parametrize("caller", ["envoy", "peer"])
def test_edge_checks(fuzzed, caller):
    """The edge's check asked directly, as Envoy asks it (or as a client pretending to be a
    replica's peer, with a guessed secret): any path, method, key, body size and content type
    gets an allowance or a denial in the service's own error shape, never a gRPC error."""
    from rerank.service.protocol import external_auth_pb2_grpc

    stub = external_auth_pb2_grpc.AuthorizationStub(fuzzed.direct)
    peer = st.tuples(st.just("x-rerank-peer"), fuzzing.METADATA_VALUE).map(lambda item: (item,))

    @given(request=fuzzing.check_requests(), meta=peer if caller == "peer" else st.just(()))
    def exchange(request: Any, meta: Any) -> None:
        outcome = fuzzing.check_answer(stub.Check(request, metadata=meta, timeout=30))
        fuzzed.tally.grpc(f"edge-{caller}:{outcome}", grpc.StatusCode.OK)
        fuzzed.watch.check()

    run(exchange, examples(2500, 80))


def test_the_metrics_port(fuzzed):
    """Raw requests to the metrics port's HTTP server: odd request lines, methods, paths,
    versions, headers, sizes, cut requests and random bytes; then it still serves a scrape."""
    import socket

    @given(request=fuzzing.metrics_requests())
    def exchange(request: bytes) -> None:
        with socket.create_connection(("127.0.0.1", fuzzed.metrics_port), timeout=15) as connection:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)  # a cut request ends here, not at the read deadline
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        fuzzing.check_metrics_answer(answer)
        fuzzed.tally.rest("metrics", int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0)
        fuzzed.watch.check()

    run(exchange, examples(1500, 60))
    scrape = httpx.get(
        f"http://127.0.0.1:{fuzzed.metrics_port}/metrics", headers={"authorization": f"Bearer {API_KEY}"}, timeout=30
    )
    assert scrape.status_code == 200 and "rerank_requests_total" in scrape.text


# --------------------------------------------------------------------------------- afterwards


def test_after_fuzzing_the_service_answers_as_before(fuzzed):
    """Last: the same valid requests get the same scores, nothing was logged as an internal
    error, memory stayed bounded, and the run sent what it promised."""
    from rerank.service.protocol import rerank_pb2_grpc

    after = answers(fuzzed.rest, rerank_pb2_grpc.RerankServiceStub(fuzzed.direct))
    for face, results in fuzzed.before.items():
        assert [i for i, _ in after[face]] == [i for i, _ in results], face
        assert [s for _, s in after[face]] == pytest.approx([s for _, s in results], rel=1e-6, abs=1e-6), face
    fuzzed.watch.check()
    log = fuzzed.log.read_text(errors="replace")
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
    elapsed = time.monotonic() - fuzzed.started
    tally = fuzzed.tally
    print(
        f"\nfuzzing: {tally.sent['rest']} REST requests, {tally.sent['grpc']} gRPC calls in {elapsed:.0f} s; "
        f"service RSS {fuzzed.watch.baseline / 2**20:.0f} MiB at the start, peak {fuzzed.watch.peak / 2**20:.0f} MiB "
        f"(bound {fuzzed.watch.bound / 2**20:.0f} MiB)\n{tally.summary()}"
    )
    floor = fuzzing.MIN_FULL if FULL else 250
    assert tally.sent["rest"] >= floor and tally.sent["grpc"] >= floor, tally.summary()
