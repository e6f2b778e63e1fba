"""The guard around every handler: a bug becomes an opaque INTERNAL naming only a request id,
logged with its traceback, and the server keeps serving."""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
import pytest

from tests.support import AUTH
from tests.support.calls import rerank_request
from tests.support.stand_in import StandInBackend

BOOM = rerank_request("alpha", ["panda", "boom"], query="panda")
"""The stand-in backend fails on any batch holding ``boom``."""


def internal_error(stub: Any, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Rerank(BOOM, metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    return info.value


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rerank.service.router.status" and r.levelno == logging.ERROR]


def test_a_bug_is_internal_with_the_callers_request_id(stand_in_stub: Any, caplog: pytest.LogCaptureFixture) -> None:
    error = internal_error(stand_in_stub, (*AUTH, ("x-request-id", "req-7f3a")))
    assert error.details() == "internal error; request id req-7f3a"
    assert "secret" not in str(error) and "RuntimeError" not in str(error)
    (record,) = logged_errors(caplog)
    assert "req-7f3a" in record.getMessage() and "/rerank.v1.RerankService/Rerank" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert StandInBackend.SECRET in caplog.text and "Traceback" in caplog.text  # for whoever reads the logs


def test_without_a_request_id_one_is_made_up_and_logged(stand_in_stub: Any, caplog: pytest.LogCaptureFixture) -> None:
    error = internal_error(stand_in_stub, AUTH)
    match = re.fullmatch(r"internal error; request id ([0-9a-f]{32})", error.details() or "")
    assert match, error.details()
    (record,) = logged_errors(caplog)
    assert match.group(1) in record.getMessage()


def test_the_server_keeps_serving_after_a_bug(stand_in_stub: Any) -> None:
    internal_error(stand_in_stub, AUTH)
    reply = stand_in_stub.Rerank(rerank_request("alpha", ["panda", "red car"], query="panda"), metadata=AUTH)
    assert [(r.index, r.relevance_score) for r in reply.results] == [(0, 1.0), (1, 0.0)]


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("/rerank.v1.RerankService/Rerank", b"\xff\xff\xff"),  # corrupt wire format
        ("/rerank.v1.RerankService/Rerank", b"\x12\x02\xff\xfe"),  # query: not UTF-8
        ("/tei.v1.Rerank/Rerank", b"\x0a\x02\xff\xfe"),
        ("/rerank.v1.CohereService/Rerank", b"\x1a\x05ab"),  # cut
    ],
)
def test_an_undecodable_message_is_invalid_argument(stand_in_channel: grpc.Channel, method: str, raw: bytes) -> None:
    """Found by fuzzing: gRPC's own answer was UNKNOWN, "Unexpected <class 'DecodeError'>: ..."."""
    with pytest.raises(grpc.RpcError) as info:
        stand_in_channel.unary_unary(method)(raw, metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert f"not a valid message for {method}" in (info.value.details() or "")
    assert "class" not in (info.value.details() or "")


def test_an_undecodable_message_in_a_stream_is_invalid_argument(stand_in_channel: grpc.Channel) -> None:
    stream = stand_in_channel.stream_unary("/tei.v1.Rerank/RerankStream")
    with pytest.raises(grpc.RpcError) as info:
        stream(iter([b"\x0a\x01q\x12\x01a", b"\x12\x02\xff\xfe"]), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
