"""The edge's check (``envoy.service.auth.v3.Authorization/Check``), asked over gRPC as Envoy asks
it, of real servers on stand-in models: who is denied and how (the service's own error, as JSON
for REST and as a rich status for native gRPC), what passes without a key, a key's limits charged
by the check (no free holds), places held and pinned, a peer asked before a refusal (and only by
a peer), and the call a token belongs to not charged twice."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2
from prometheus_client import generate_latest

from rerank.service.admission import contract
from tests.support import API_KEY, AUTH
from tests.support.calls import rerank_request
from tests.support.edge import check, denied, ok_headers
from tests.support.prometheus import Samples
from tests.support.servers import InProcessServer, server_settings
from tests.support.stand_in import StandInBackend

LIMITED, CHARGED = "limited-key-0001", "charged-key-0002"
BODY = {"content-length": str(60_000)}
"""A body the stand-in models price at a few thousand padded tokens."""


def keyed(key: str = API_KEY, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **headers}


def serve(models: Path, **settings: object) -> InProcessServer:
    return InProcessServer(server_settings(models, **settings), backend=StandInBackend.for_folder)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    path.write_text(
        f"{hashlib.sha256(API_KEY.encode()).hexdigest()} name=team\n"
        f"{hashlib.sha256(LIMITED.encode()).hexdigest()} name=limited rps=0.01\n"
        f"{hashlib.sha256(CHARGED.encode()).hexdigest()} name=charged rps=0.01\n"
    )
    return path


@pytest.fixture(scope="module")
def server(stand_in_models: Path, keys_file: Path) -> Iterator[InProcessServer]:
    with serve(
        stand_in_models, api_keys=(), api_keys_file=keys_file, replica_address="127.0.0.1:7001", max_queue_seconds=5
    ) as running:
        yield running


def edge_checks(server: InProcessServer, **labels: str) -> float:
    registry = server.server.metrics.registry
    return Samples.parse(generate_latest(registry).decode()).total("rerank_edge_checks_total", **labels)


@pytest.mark.parametrize(("headers", "message"), [({}, "missing API key"), (keyed("nope"), "invalid API key")])
def test_no_valid_key_is_a_401_with_the_services_json_error(server, headers, message) -> None:
    status, reply_headers, body = denied(check(server.target, "/v1/rerank", {**headers, **BODY}))
    assert status == 401 and reply_headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["code"] == 16 and message in error["message"]
    assert error["details"][0]["reason"] == "UNAUTHENTICATED"
    assert API_KEY not in body and "nope" not in body


def test_a_native_grpc_call_is_denied_with_a_rich_status(server) -> None:
    response = check(server.target, "/rerank.v1.RerankService/Rerank", {"content-type": "application/grpc"})
    status, headers, body = denied(response)
    assert status == 401  # (Envoy answers a gRPC call 200 with these headers)
    assert headers["grpc-status"] == "16" and body.startswith("missing API key")  # Envoy: grpc-message
    details = status_pb2.Status.FromString(base64.b64decode(headers["grpc-status-details-bin"]))
    assert details.code == 16 and details.message == body
    assert "key" not in response.dynamic_metadata  # Envoy's access log: null


def test_health_passes_without_a_key_and_metrics_need_one(server, stand_in_models) -> None:
    for path in ("/health", "/grpc.health.v1.Health/Check", "/rerank.v1.RerankService/Health"):
        assert denied(check(server.target, path, method="GET")) is None, path
    assert denied(check(server.target, "/metrics", method="GET"))[0] == 401
    assert denied(check(server.target, "/metrics?x=1", keyed(), method="GET")) is None
    with serve(stand_in_models, metrics_require_key=False) as open_metrics:
        assert denied(check(open_metrics.target, "/metrics", method="GET")) is None


def test_a_call_that_is_not_a_rerank_holds_nothing(server) -> None:
    response = check(server.target, "/v1/models", keyed(), method="GET")
    assert denied(response) is None and ok_headers(response) == {}
    assert response.dynamic_metadata["key"] == "team" and "admission" not in response.dynamic_metadata


@pytest.mark.parametrize("path", ["/v1/rerank", "/v1/rerank/", "/v2/rerank?x=1", "/rerank", "/tei.v1.Rerank/Rerank"])
def test_a_rerank_is_admitted_with_a_token_and_pinned_here(server, path) -> None:
    response = check(server.target, path, keyed(**BODY))
    headers = ok_headers(response)
    assert len(headers[contract.HOLD_HEADER]) >= 22
    assert base64.b64decode(headers[contract.REPLICA_HEADER]) == b"127.0.0.1:7001"
    assert response.dynamic_metadata["key"] == "team"
    assert response.dynamic_metadata["admission"] in (contract.HELD, contract.ADMITTED)


def test_a_keys_limit_is_charged_by_the_check_and_holds_nothing_past_it(server) -> None:
    """An rps limit counts checks like calls: past it, 429 with Retry-After, no token, no place."""
    first = check(server.target, "/v1/rerank", keyed(LIMITED, **BODY))
    assert contract.HOLD_HEADER in ok_headers(first)
    places = len(server.server.holds.costs("alpha"))
    before = edge_checks(server, key="limited", outcome="rate_limited")
    for _ in range(20):
        status, headers, body = denied(check(server.target, "/v1/rerank", keyed(LIMITED, **BODY)))
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert json.loads(body)["details"][0]["reason"] == "RATE_LIMITED"
    assert len(server.server.holds.costs("alpha")) == places
    assert edge_checks(server, key="limited", outcome="rate_limited") == before + 20


def test_the_call_of_a_checked_request_is_not_charged_again(server) -> None:
    """The check charged the key: its call, proving it by its token, goes through; the same call
    without the token (or with it a second time) is charged, and the key is over its limit."""
    from rerank.service.protocol import rerank_pb2_grpc

    token = ok_headers(check(server.target, "/v1/rerank", keyed(CHARGED, **BODY)))  # the allowance, taken
    metadata = (("authorization", f"Bearer {CHARGED}"), (contract.HOLD_HEADER, token[contract.HOLD_HEADER]))
    request = rerank_request("alpha", ["panda"], query="panda")
    with grpc.insecure_channel(server.target) as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        assert stub.Rerank(request, metadata=metadata, timeout=10).results
        with pytest.raises(grpc.RpcError) as replayed:
            stub.Rerank(request, metadata=metadata, timeout=10)
    assert replayed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def tiny_queues(stand_in_models: Path) -> Iterator[tuple[InProcessServer, InProcessServer]]:
    """Two replicas, each the other's peer, each letting a request wait at most 10 ms."""
    # (The fast stand-in models price a second's work at megabytes: bodies that large are allowed.)
    settings = {"max_queue_seconds": 0.01, "peer_secret": "s3cret", "max_request_bytes": 2**30}
    first, second = (serve(stand_in_models, **settings).start() for _ in range(2))
    try:
        for one, other in ((first, second), (second, first)):
            one.server.edge.peers = [other.target]
            one.server.edge.pin = base64.b64encode(one.target.encode()).decode()
        yield first, second
    finally:
        first.stop()
        second.stop()


def big(server: InProcessServer) -> dict[str, str]:
    """A body priced at about a second of the stand-in models' measured speed."""
    model = server.server.models["alpha"]
    size = int(model.batcher._model_speed() / model.price.cost_per_byte)
    return keyed(**{"content-length": str(size)})


def counts(server: InProcessServer) -> tuple[float, ...]:
    """What ``server`` counted of the checks: held, refused, and requests refused."""
    registry = Samples.parse(generate_latest(server.server.metrics.registry).decode())
    return (
        registry.total("rerank_edge_checks_total", outcome="held"),
        registry.total("rerank_edge_checks_total", outcome="refused"),
        registry.total("rerank_rejected_requests_total"),
    )


def test_a_replica_without_room_asks_its_peer_then_refuses_early(tiny_queues) -> None:
    first, second = tiny_queues
    before = [counts(first), counts(second)]

    def moved() -> tuple[tuple[float, ...], ...]:
        now = [counts(first), counts(second)]
        return tuple(tuple(n - b for n, b in zip(*pair, strict=True)) for pair in zip(now, before, strict=True))

    held_here = ok_headers(check(first.target, "/v1/rerank", big(first)))
    assert base64.b64decode(held_here[contract.REPLICA_HEADER]).decode() == first.target
    assert moved() == ((1, 0, 0), (0, 0, 0))
    asked = check(first.target, "/v1/rerank", big(first))  # no room here: the peer holds it
    assert base64.b64decode(ok_headers(asked)[contract.REPLICA_HEADER]).decode() == second.target
    assert asked.dynamic_metadata["admission_checks"] == "2"
    # Each request is counted once, by the replica Envoy asked, with what became of it: the
    # peer's check of it is not another request, and a request a peer held was not refused.
    assert moved() == ((2, 0, 0), (0, 0, 0))
    status, headers, body = denied(check(first.target, "/v1/rerank", big(first)))  # no room anywhere
    assert moved() == ((2, 1, 1), (0, 0, 0))
    assert status == 429 and headers[contract.EARLY_HEADER] == contract.EARLY and int(headers["retry-after"]) >= 1
    error = json.loads(body)
    assert error["code"] == 8 and error["message"].startswith("the server is busy: this request would wait")
    assert {d["@type"].rsplit(".", 1)[-1] for d in error["details"]} == {"ErrorInfo", "RetryInfo"}


def test_only_a_peer_is_spared_the_charge(tiny_queues, stand_in_models, keys_file) -> None:
    """A check that presents the stack's secret is a peer's (which charged the key already); any
    other that claims to be one is charged like any check."""
    with serve(stand_in_models, api_keys=(), api_keys_file=keys_file, peer_secret="s3cret") as replica:
        headers = keyed(LIMITED, **BODY)
        wrong = (("x-rerank-peer", "guess"),)
        assert contract.HOLD_HEADER in ok_headers(check(replica.target, "/v1/rerank", headers, metadata=wrong))
        assert denied(check(replica.target, "/v1/rerank", headers, metadata=wrong))[0] == 429
        peer = (("x-rerank-peer", "s3cret"),)
        assert contract.HOLD_HEADER in ok_headers(check(replica.target, "/v1/rerank", headers, metadata=peer))


def test_a_direct_caller_minting_a_token_for_a_tiny_body_gets_no_place_for_a_big_one(tiny_queues) -> None:
    """A client that reaches the service's port can ask the check itself (charged like a call):
    a token for an empty body proves a place for an empty body, not for a heavy request."""
    from rerank.service.protocol import rerank_pb2_grpc

    first, _ = tiny_queues
    check(first.target, "/v1/rerank", big(first))  # someone else's body on its way: the queue is busy
    minted = ok_headers(check(first.target, "/v1/rerank", keyed(**{"content-length": "0"})))[contract.HOLD_HEADER]
    # Windows over long documents: a few hundredths of a second of the stand-in model's work.
    request = rerank_request("alpha", ["panda bear bamboo " * 100] * 100, query="panda", long_documents="window")
    with grpc.insecure_channel(first.target) as channel:
        stub = rerank_pb2_grpc.RerankServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Rerank(request, metadata=(*AUTH, (contract.HOLD_HEADER, minted)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "would wait" in refused.value.details()


def test_a_body_over_the_limit_passes_unpriced_for_envoy_to_refuse(server) -> None:
    """Too large is 413 (Envoy's buffer filter), which a client must not retry, never a 429."""
    too_large = check(server.target, "/v1/rerank", keyed(**{"content-length": str(64 * 1024 * 1024)}))
    assert denied(too_large) is None and ok_headers(too_large) == {}


def test_bodies_past_the_queues_size_bound_are_refused_before_they_are_read(stand_in_models, keys_file) -> None:
    """The queue holds at most ``max_queue_pairs`` pairs. Priced at the learned pairs a byte, the
    places held for bodies on their way count toward it: a body that would pass it is refused
    early, not read and then refused (the waits allowed here are long: time is not the bound)."""
    with serve(
        stand_in_models, api_keys=(), api_keys_file=keys_file, max_queue_seconds=1e6, max_queue_pairs=100
    ) as replica:
        price = replica.server.models["alpha"].price
        body = int(60 / (0.9 * price.pairs_per_byte))  # about 60 pairs
        assert contract.HOLD_HEADER in ok_headers(check(replica.target, "/v1/rerank", keyed(**length(body))))
        status, headers, body_text = denied(check(replica.target, "/v1/rerank", keyed(**length(body))))
        assert status == 429 and headers[contract.EARLY_HEADER] == contract.EARLY
        assert "the limit is 100" in json.loads(body_text)["message"]
        registry = replica.server.metrics.registry
        refused = Samples.parse(generate_latest(registry).decode())
        assert refused.total("rerank_rejected_requests_total", model="alpha", reason="queue_full") >= 1
        # One body larger than the whole queue is left to the exact check, whose answer (too many
        # documents) a retry would not change.
        assert denied(check(replica.target, "/v1/rerank", keyed(**length(3 * body)))) is None


def length(size: int) -> dict[str, str]:
    return {"content-length": str(size)}
