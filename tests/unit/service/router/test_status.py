"""The one table from error kinds to gRPC codes, and the rich status each error becomes."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from rerank.service import errors
from rerank.service.errors import (
    DocumentTooLong,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    QueryTooLong,
    QueueFull,
    RateLimited,
    RerankError,
    TooManyDocuments,
    Unauthenticated,
    Unavailable,
)
from rerank.service.router.status import DOMAIN, status_code, to_status

# What the error table of docs/api.md promises (HTTP through Envoy's transcoder in the comments).
EXPECTED = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,  # 400
    QueryTooLong: grpc.StatusCode.INVALID_ARGUMENT,  # 400
    DocumentTooLong: grpc.StatusCode.INVALID_ARGUMENT,  # 400
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,  # 401
    ModelNotFound: grpc.StatusCode.NOT_FOUND,  # 404
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
    TooManyDocuments: grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
    Unavailable: grpc.StatusCode.UNAVAILABLE,  # 503
}


def kinds() -> list[type[RerankError]]:
    """Every error kind declared in rerank.service.errors."""
    found = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, RerankError)]
    return [k for k in found if k is not RerankError]


@pytest.mark.parametrize("kind", kinds(), ids=lambda k: k.__name__)
def test_every_error_kind_has_its_code(kind: type[RerankError]) -> None:
    assert kind in EXPECTED, f"{kind.__name__} is new: add it to docs/api.md's table and to EXPECTED"
    assert status_code(kind.__new__(kind)) == EXPECTED[kind]  # the code depends on the kind alone


def test_a_subclass_takes_its_nearest_ancestors_code() -> None:
    class Throttled(QueueFull):
        default_reason = "THROTTLED"

    class Disabled(ModelNotFound):
        pass

    assert status_code(Throttled("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code(Disabled("x")) == grpc.StatusCode.NOT_FOUND


def test_an_unlisted_kind_is_unknown() -> None:
    assert status_code(RerankError("x")) == grpc.StatusCode.UNKNOWN


def details(
    status: grpc.Status,
) -> tuple[status_pb2.Status, list[error_details_pb2.BadRequest], error_details_pb2.ErrorInfo]:
    """The ``google.rpc.Status`` a client decodes from the trailers, with its details unpacked."""
    (raw,) = [value for key, value in status.trailing_metadata if key == "grpc-status-details-bin"]
    rich = status_pb2.Status.FromString(raw)
    bad_requests, infos = [], []
    for detail in rich.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_requests.append(error_details_pb2.BadRequest())
            detail.Unpack(bad_requests[-1])
        else:
            infos.append(error_details_pb2.ErrorInfo())
            assert detail.Unpack(infos[-1]), detail.type_url
    (info,) = infos
    return rich, bad_requests, info


def test_a_field_error_names_its_field() -> None:
    error = TooManyDocuments("12 documents; the limit is 10", field="documents", metadata={"limit": "10"})
    status = to_status(error)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED and status.details == error.message
    rich, bad_requests, info = details(status)
    assert rich.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and rich.message == error.message
    (bad_request,) = bad_requests
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("documents", error.message)]
    assert (info.reason, info.domain, dict(info.metadata)) == ("TOO_MANY_DOCUMENTS", DOMAIN, {"limit": "10"})


def test_an_error_without_a_field_has_no_bad_request() -> None:
    rich, bad_requests, info = details(to_status(QueueFull("retry later")))
    assert bad_requests == [] and (info.reason, info.domain) == ("QUEUE_FULL", "rerank.v1")
    assert rich.code == 8


def test_a_reason_can_be_given() -> None:
    _, _, info = details(to_status(InvalidRequest("name one", reason="MODEL_REQUIRED", field="model")))
    assert info.reason == "MODEL_REQUIRED"
    _, _, info = details(to_status(QueryTooLong("too long", field="query")))
    assert info.reason == "QUERY_TOO_LONG"  # the kind's own default
