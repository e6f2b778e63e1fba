"""The one table from error kinds to gRPC status codes, and the handler guard that applies it.

A :class:`~rerank.service.errors.RerankError` becomes a rich status: its code from :data:`STATUS`, its
message, a ``google.rpc.ErrorInfo`` (reason, domain, metadata) and, for a bad field, a
``google.rpc.BadRequest``. Through Envoy (``convert_grpc_status``) that is a JSON body with the
matching HTTP status: ``{"code": 3, "message": "...", "details": [...]}``.

Anything else raised under a handler is a bug: :func:`fail` logs it with its traceback and the
request id, and the client gets ``INTERNAL`` with an opaque message naming only that request id.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from rerank.service.errors import (
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RerankError,
    Unauthenticated,
    Unavailable,
)
from rerank.service.telemetry import context as calls

log = logging.getLogger(__name__)

DOMAIN = "rerank.v1"

STATUS: dict[type[RerankError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,  # HTTP 400
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,  # 401
    ModelNotFound: grpc.StatusCode.NOT_FOUND,  # 404
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
    Unavailable: grpc.StatusCode.UNAVAILABLE,  # 503
}
"""Error kind -> gRPC code. A subclass takes its nearest listed ancestor's code."""


def status_code(error: RerankError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return grpc.StatusCode.UNKNOWN


def to_status(error: RerankError) -> grpc.Status:
    """The rich gRPC status for ``error``."""
    return rpc_status.to_status(status_message(error))


def status_json(error: RerankError) -> dict[str, Any]:
    """``error`` as the JSON body Envoy's transcoder makes of its status: ``{"code", "message",
    "details"}`` (for replies made without the transcoder: the edge's check's denials)."""
    return json_format.MessageToDict(
        status_message(error), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def status_message(error: RerankError) -> status_pb2.Status:
    """The ``google.rpc.Status`` message for ``error``: code, message and packed details."""
    details: list[Any] = []
    if error.field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    details.append(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after)))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    code = status_code(error)
    return status_pb2.Status(code=code.value[0], message=error.message, details=packed)


def _with_metadata(status: grpc.Status, extra: tuple[tuple[str, str], ...]) -> grpc.Status:
    class _Status(grpc.Status):  # grpc.Status is an interface; abort_with_status reads these three
        code = status.code
        details = status.details
        trailing_metadata = (*status.trailing_metadata, *extra)

    return _Status()


def _metadata(context: grpc.aio.ServicerContext[Any, Any], name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Envoy's ``x-request-id`` when the call came through it, else a fresh one."""
    return _metadata(context, "x-request-id") or uuid.uuid4().hex


async def fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    """Aborts the call for ``exc``; never returns."""
    call = calls.current()
    extra: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, RerankError):
        status = to_status(exc)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # HTTP's Retry-After, as a trailer; through Envoy it is a response header.
            extra = (*extra, ("retry-after", str(retry_after)))
        if extra:
            status = _with_metadata(status, extra)
        await context.abort_with_status(status)
    rid = call.request_id if call is not None else request_id(context)
    log.error("internal error in %s (request id %s)", method, rid, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {rid}", trailing_metadata=extra)
