"""API keys: parsing the header and the key file, and the interceptor on every method but health."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rerank.service.router.auth import ApiKeyInterceptor, Keyring, bearer_token, load_key_digests
from tests.support import API_KEY, OTHER_KEY
from tests.support.calls import rerank_request


def test_key_file_of_digests(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# comment\n{hashlib.sha256(b'k1').hexdigest()}  ops team\n\n")
    assert load_key_digests(("k2",), path) == [hashlib.sha256(b"k2").digest(), hashlib.sha256(b"k1").digest()]
    path.write_text("not-a-digest\n")
    with pytest.raises(ValueError, match="keys:1"):
        load_key_digests((), path)
    path.write_text(hashlib.sha256(b"k1").hexdigest()[:-2] + "\n")  # hex, but not 32 bytes
    with pytest.raises(ValueError, match="not a SHA-256"):
        load_key_digests((), path)


def test_bearer_parsing() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("Authorization", "BEARER  abc "),)) == "abc"
    assert bearer_token((("authorization", b"Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "Token abc"),)) is None
    assert bearer_token((("authorization", "Bearer "),)) is None
    assert bearer_token((("x-other", "Bearer abc"),)) is None
    assert bearer_token(()) is None and bearer_token(None) is None


def test_only_the_configured_keys_are_valid() -> None:
    interceptor = ApiKeyInterceptor(Keyring.load(("k1", "k2"), None))
    assert interceptor.is_valid("k1") and interceptor.is_valid("k2")
    assert not interceptor.is_valid("k3") and not interceptor.is_valid("") and not interceptor.is_valid(None)
    with pytest.raises(ValueError):
        ApiKeyInterceptor(Keyring([]))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing API key"),
        ((("authorization", "Bearer wrong"),), "invalid API key"),
        ((("authorization", f"Basic {API_KEY}"),), "missing API key"),
        ((("authorization", API_KEY),), "missing API key"),
    ],
)
def test_calls_without_a_valid_key_are_unauthenticated(
    stand_in_stub: Any, stand_in_channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    from rerank.service.protocol import rerank_pb2

    calls = [
        lambda: stand_in_stub.Rerank(rerank_request("alpha", ["a"], query="panda"), metadata=metadata, timeout=10),
        lambda: stand_in_stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=metadata, timeout=10),
        # A streaming method is refused in its own shape.
        lambda: list(
            reflection_pb2_grpc.ServerReflectionStub(stand_in_channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=10
            )
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert message in (info.value.details() or "")
        assert API_KEY not in (info.value.details() or "")


@pytest.mark.parametrize("key", [f"Bearer {API_KEY}", f"bearer {OTHER_KEY}"])
def test_any_configured_key_is_accepted(stand_in_stub: Any, stand_in_channel: grpc.Channel, key: str) -> None:
    metadata = (("authorization", key),)
    assert stand_in_stub.Rerank(rerank_request("alpha", ["a"], query="panda"), metadata=metadata, timeout=10).results
    replies = reflection_pb2_grpc.ServerReflectionStub(stand_in_channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=10
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"rerank.v1.RerankService", "grpc.health.v1.Health"} <= names


def test_health_needs_no_key(stand_in_stub: Any, stand_in_channel: grpc.Channel) -> None:
    from rerank.service.protocol import rerank_pb2

    for service in ("", "rerank.v1.RerankService"):
        reply = health_pb2_grpc.HealthStub(stand_in_channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert stand_in_stub.Health(rerank_pb2.HealthRequest(), timeout=10).status == "ok"
